//! Picks up other replicas' plans and topology changes: at once when
//! PostgreSQL announces one (`LISTEN`), and every `--sync-interval` in any
//! case, so a lost connection or notification only delays a change.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::state::AppState;
use crate::store::{Backend, CHANGES_CHANNEL};

/// Wait before reconnecting a failed listener.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub async fn run(state: AppState) {
    let changed = Arc::new(Notify::new());
    let listener = (state.store.backend() == Backend::Postgres)
        .then(|| tokio::spawn(listen(state.clone(), changed.clone())));
    let mut ticker = tokio::time::interval(state.config.sync_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = changed.notified() => {}
            _ = state.shutting_down() => break,
        }
        if let Err(err) = state.plan_cache.sync().await {
            warn!(error = %err, "sync with the database failed");
        }
    }
    if let Some(listener) = listener {
        listener.abort();
    }
}

/// Forwards change notifications; reconnects after a failure.
async fn listen(state: AppState, changed: Arc<Notify>) {
    loop {
        match PgListener::connect(&state.config.database_url).await {
            Ok(mut listener) => match listener.listen(CHANGES_CHANNEL).await {
                Ok(()) => loop {
                    match listener.recv().await {
                        Ok(note) => {
                            debug!(cluster = note.payload(), "change announced");
                            changed.notify_one();
                        }
                        Err(err) => {
                            warn!(error = %err, "change listener lost its connection");
                            break;
                        }
                    }
                },
                Err(err) => warn!(error = %err, "LISTEN failed"),
            },
            Err(err) => warn!(error = %err, "change listener cannot connect"),
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}
