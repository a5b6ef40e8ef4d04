//! The worker agent (`ballast-worker run`): one process per node of the
//! cluster, between the Ballast service and the node's GPUs.
//!
//! ```text
//!             ┌──────────── compute thread (engine) ─────────────┐
//!  plans ───▶ │ step boundary: apply plan ─▶ batch ─▶ MoE layers │ ─▶ windows ─▶ outbox ─▶ POST telemetry
//!  (long-poll)│                        └─▶ applied version ──────│─▶ acks ─▶ POST .../ack
//!             └──────────────────────────────────────────────────┘
//! ```
//!
//! - [`config`]: command line and checked settings.
//! - [`client`]: the service's HTTP API.
//! - [`startup`]: topology, model, sequence numbers, first plan, weights;
//!   [`model`]: layer shape and seeded weights.
//! - [`engine`]: the compute loop (its own thread; rayon inside).
//! - [`window`]: per-GPU telemetry windows; [`outbox`]: buffered, retried,
//!   in-order delivery; [`backoff`]: retry delays.
//! - [`plans`]: plan documents and the long-poll; [`acks`]: acknowledgements.
//! - [`drift`]: the drift control file; [`metrics`]: Prometheus metrics.
//!
//! Shutdown (SIGINT/SIGTERM, or `--steps` reached): the engine finishes its
//! step and closes its last window, the plan watcher and acker stop, the
//! outbox gets `--shutdown-timeout` to deliver what is buffered, and the
//! rest is counted as dropped.

pub mod acks;
pub mod backoff;
pub mod client;
pub mod config;
pub mod drift;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod plans;
pub mod startup;
pub mod window;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use client::ServiceClient;
pub use config::{AgentConfig, RunArgs};
use engine::{Engine, Links};
pub use error::AgentError;
use metrics::{AgentMetrics, MetricsServer};
use outbox::Outbox;
use startup::Ready;

/// Runs the agent until `shutdown` resolves (or `--steps` are done).
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let metrics = Arc::new(AgentMetrics::new(&config.cluster, config.node)?);
    let stop_flag = Arc::new(AtomicBool::new(false));
    let (stop_tx, mut stop) = watch::channel(false);
    {
        let (flag, stop_tx) = (stop_flag.clone(), stop_tx.clone());
        tokio::spawn(async move {
            shutdown.await;
            info!("shutdown requested");
            flag.store(true, Ordering::SeqCst);
            stop_tx.send_replace(true);
        });
    }
    let (drained_tx, drained) = watch::channel(false);
    let metrics_task = match config.metrics_listen {
        Some(address) => {
            let server = MetricsServer::bind(address, metrics.clone()).await?;
            if let Some(address) = server.address() {
                info!(metrics_address = %address, "serving /metrics");
            }
            let mut drained = drained.clone();
            Some(tokio::spawn(server.serve(async move {
                let _ = drained.wait_for(|d| *d).await;
            })))
        }
        None => None,
    };

    let client = ServiceClient::new(&config.service, &config.cluster, config.token.as_deref())?;
    let backoff = config.backoff;
    let Some(Ready { topology, parts }) = startup::prepare(&config, &client, &mut stop).await?
    else {
        return Ok(());
    };
    let workers = parts.workers.clone();
    let start_version = parts.plan.version;
    let outbox = Arc::new(Outbox::new(config.queue_capacity, metrics.clone()));
    let (plans_tx, plans_rx) = watch::channel(None);
    let (applied_tx, applied_rx) = watch::channel(start_version);
    let engine = Engine::new(
        parts,
        Links {
            plans: plans_rx,
            applied: applied_tx,
            outbox: outbox.clone(),
            metrics: metrics.clone(),
            stop: stop_flag,
        },
    )?;

    let watcher = tokio::spawn(plans::watch_plans(
        client.clone(),
        topology.clone(),
        (start_version > 0).then_some(start_version),
        config.long_poll,
        backoff,
        plans_tx,
        stop.clone(),
    ));
    let acker = tokio::spawn(acks::ack_applied(
        client.clone(),
        workers,
        backoff,
        applied_rx,
        stop.clone(),
    ));
    let sender = tokio::spawn(outbox.clone().deliver(client, backoff, drained.clone()));

    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("ballast-compute".into())
        .spawn(move || {
            let _ = done_tx.send(engine.run());
        })
        .map_err(|e| AgentError::Engine(e.to_string()))?;
    let result = done_rx
        .await
        .map_err(|_| AgentError::Engine("the compute thread panicked".into()))?;

    // Drain: no more plans or acks (an ack for a plan the node is leaving
    // is moot), deliver what is buffered in bounded time.
    stop_tx.send_replace(true);
    watcher.abort();
    acker.abort();
    drained_tx.send_replace(true);
    let pending = outbox.pending();
    match tokio::time::timeout(config.shutdown_timeout, sender).await {
        Ok(_) => info!(pending, "telemetry buffer flushed"),
        Err(_) => {
            let lost = outbox.abandon();
            warn!(
                lost,
                "shutdown timeout: undelivered telemetry windows dropped"
            );
        }
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    let steps = result?;
    info!(steps, "stopped");
    Ok(())
}
