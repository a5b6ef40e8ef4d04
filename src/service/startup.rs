//! Building the application from its configuration: database, migrations,
//! in-memory state, background tasks and the HTTP listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::http::{self, HttpLimits};
use super::replica_sync;
use crate::api;
use crate::config::ServeConfig;
use crate::ingest_queue::IngestQueue;
use crate::metrics::Metrics;
use crate::plan_cache::PlanCache;
use crate::planner_loop;
use crate::state::{AppState, Heartbeat};
use crate::store::{redacted, Store};
use crate::time::now_ms;

/// A started (bound, migrated) service that has not begun serving yet.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    stop: watch::Sender<bool>,
}

impl Application {
    /// Connects and migrates the database, loads clusters and plans, binds
    /// the listener (port 0 picks a free port).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        let mut config = config;
        if !config.tokens.enabled() {
            warn!(
                listen = %config.listen,
                "no --worker-token/--admin-token configured: authentication is off and only loopback addresses are allowed"
            );
        } else if config.tokens.admin.is_none() {
            warn!(
                "only --worker-token is configured: the admin routes (PUT topology, rebalance) answer 401 to every caller until --admin-token is set"
            );
        }
        config.max_connections =
            connection_budget(config.max_connections, config.db_max_connections);
        let store = Store::connect_with(
            &config.database_url,
            config.db_max_connections,
            config.sqlite_synchronous,
        )
        .await
        .with_context(|| {
            format!(
                "connecting to the database ({})",
                redacted(&config.database_url)
            )
        })?;
        store.migrate().await.context("applying migrations")?;
        let grid = config.windows();
        let recorded = store
            .record_window_grid(grid, now_ms())
            .await
            .context("recording the load-window grid")?;
        if let Some(before) = recorded.filter(|before| before.len_ms() != grid.len_ms()) {
            warn!(
                before_ms = before.len_ms(),
                now_ms = grid.len_ms(),
                "--window changed: load windows already stored were cut on the old grid, and their times are now read on the new one"
            );
        }
        let store = Arc::new(store);
        let plan_cache = Arc::new(PlanCache::new(store.clone()));
        plan_cache
            .sync()
            .await
            .context("loading clusters and plans")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let (stop, shutdown) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let state = AppState {
            config: Arc::new(config),
            ingest: IngestQueue::start(store.clone(), metrics.clone()),
            store,
            plan_cache,
            metrics,
            heartbeat: Arc::new(Heartbeat::default()),
            shutdown,
        };
        Ok(Application {
            listener,
            state,
            stop,
        })
    }

    pub fn address(&self) -> SocketAddr {
        // A bound listener always has a local address.
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.listen)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal` resolves, then stops accepting, ends
    /// long-polls and streams, lets in-flight requests finish (up to
    /// `--shutdown-timeout`), stops the background tasks and closes the pool.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            state,
            stop,
        } = self;
        let planner = tokio::spawn(planner_loop::run(state.clone()));
        let sync = tokio::spawn(replica_sync::run(state.clone()));
        let checkpoint = tokio::spawn(checkpoint_loop(state.clone()));
        let router = api::router(state.clone());
        let limits = HttpLimits {
            header_read_timeout: state.config.header_read_timeout,
            max_connections: state.config.max_connections,
        };
        let server = http::serve(listener, router, limits, state.shutdown.clone());
        let mut server = tokio::spawn(server);
        tokio::select! {
            _ = signal => {}
            result = &mut server => {
                return result.context("server task")?.context("server");
            }
        }
        info!("shutting down");
        let _ = stop.send(true);
        let timeout = state.config.shutdown_timeout;
        match tokio::time::timeout(timeout, &mut server).await {
            Ok(result) => result.context("server task")?.context("server")?,
            Err(_) => {
                warn!(
                    ?timeout,
                    "in-flight requests did not finish in time; closing them"
                );
                server.abort();
            }
        }
        for task in [planner, sync, checkpoint] {
            finish(task, timeout).await;
        }
        state.store.close().await;
        info!("stopped");
        Ok(())
    }
}

/// Descriptors kept back from `--max-connections` for the database pool,
/// the SQLite files and the process's own.
const RESERVED_DESCRIPTORS: u64 = 64;

/// `--max-connections`, lowered (with a warning) to what the open-file
/// limit can hold once it is raised as far as the hard limit allows: past
/// it, `accept` fails and the database pool cannot open connections.
fn connection_budget(max_connections: usize, db_connections: u32) -> usize {
    let Some(files) = http::raise_open_file_limit() else {
        return max_connections;
    };
    let room = files.saturating_sub(RESERVED_DESCRIPTORS + u64::from(db_connections));
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    if room < max_connections {
        warn!(
            max_connections,
            open_file_limit = files,
            lowered_to = room,
            "--max-connections exceeds what the open-file limit allows; lowered"
        );
        room
    } else {
        info!(open_file_limit = files, max_connections, "connection limit");
        max_connections
    }
}

/// How often the SQLite WAL is checkpointed: at full decode-scale ingest
/// (about 20 MB/s of windows) the log stays in the tens of megabytes.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

async fn finish(task: JoinHandle<()>, timeout: Duration) {
    let abort = task.abort_handle();
    if tokio::time::timeout(timeout, task).await.is_err() {
        abort.abort();
    }
}

/// Keeps the SQLite write-ahead log short (automatic checkpoints are off).
async fn checkpoint_loop(state: AppState) {
    let mut ticker = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = state.shutting_down() => return,
        }
        let checkpoint = state.store.checkpoint();
        if let Err(err) = state.metrics.time_store("checkpoint", checkpoint).await {
            warn!(error = %err, "WAL checkpoint failed");
        }
    }
}
