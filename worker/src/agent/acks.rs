//! Acknowledging applied plans: every GPU worker of the node acks the
//! version the compute thread switched to, retried until the service takes
//! it or a newer version replaces it.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;
use tracing::{info, warn};

use super::backoff::Backoff;
use super::client::ServiceClient;

/// Acks each version published on `applied` (0 means "no service plan" and
/// is not acked) for all `workers`, until `stop` is set.
pub async fn ack_applied(
    client: ServiceClient,
    workers: Vec<String>,
    backoff: Backoff,
    mut applied: watch::Receiver<i64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = ChaCha8Rng::from_rng(&mut rand::rng());
    // The version the node started with counts as a change.
    applied.mark_changed();
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
        let version = *applied.borrow_and_update();
        if version == 0 {
            continue;
        }
        let mut pending: Vec<&String> = workers.iter().collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            let mut failed = Vec::new();
            for worker in pending {
                match client.ack(worker, version).await {
                    Ok(()) => {}
                    Err(err) if err.is_retryable() => {
                        warn!(%worker, version, error = %err, "ack failed; retrying");
                        failed.push(worker);
                    }
                    Err(err) => warn!(%worker, version, error = %err, "the service refused an ack"),
                }
            }
            pending = failed;
            if pending.is_empty() {
                info!(version, "acked plan");
                break;
            }
            attempt += 1;
            tokio::select! {
                _ = tokio::time::sleep(backoff.delay(attempt, &mut rng)) => {}
                // A newer version supersedes this one: ack that instead.
                _ = applied.changed() => { applied.mark_changed(); break }
                _ = stop.changed() => return,
            }
        }
    }
}
