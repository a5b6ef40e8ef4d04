//! The shared state every handler and background task gets.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::ingest_queue::IngestQueue;
use crate::metrics::Metrics;
use crate::plan_cache::PlanCache;
use crate::store::Store;
use crate::time::now_ms;

/// When the planner loop last made progress; readiness checks its age.
#[derive(Debug, Default)]
pub struct Heartbeat(AtomicI64);

impl Heartbeat {
    pub fn beat(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// Time since the last beat (`None` before the first).
    pub fn age(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            last => Some(Duration::from_millis(
                now_ms().saturating_sub(last).max(0) as u64
            )),
        }
    }
}

/// Handles shared by the API and the background tasks.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServeConfig>,
    pub store: Arc<Store>,
    /// Telemetry windows on their way into the store (group commit).
    pub ingest: IngestQueue,
    pub plan_cache: Arc<PlanCache>,
    pub metrics: Arc<Metrics>,
    pub heartbeat: Arc<Heartbeat>,
    /// Flips to `true` when the service starts shutting down; long-polls and
    /// streams end on it so graceful shutdown never waits on them.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// Resolves when shutdown begins.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.clone();
        // An error means the sender is gone: the service is going away too.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}
