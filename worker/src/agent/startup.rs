//! Getting a node ready before its first step: the cluster's topology, the
//! model, the sequence numbers to continue from, the plan to start on and
//! the node's weights loaded for it. Service calls are retried while the
//! service is unreachable, until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;
use tracing::{info, warn};

use ballast_solver::Topology;

use super::backoff::Backoff;
use super::client::{ClientError, ServiceClient};
use super::config::AgentConfig;
use super::drift::DriftFile;
use super::engine::EngineParts;
use super::error::AgentError;
use super::model;
use super::plans::PlanUpdate;
use crate::node::{NodeShape, NodeState};
use crate::traffic::{TrafficGenerator, TrafficSpec};

/// A node ready to run.
pub struct Ready {
    pub topology: Topology,
    pub parts: EngineParts,
}

/// Prepares the node; `None` when `stop` is set first.
pub async fn prepare(
    config: &AgentConfig,
    client: &ServiceClient,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Ready>, AgentError> {
    let backoff = config.backoff;
    let Some(cluster) =
        until_ok("fetching the cluster", backoff, stop, || client.cluster()).await?
    else {
        return Ok(None);
    };
    let topology = cluster.topology;
    if config.node >= topology.num_nodes() {
        return Err(AgentError::Topology(format!(
            "node {} does not exist: the cluster has {} nodes",
            config.node,
            topology.num_nodes()
        )));
    }
    let shape = NodeShape::new(
        config.node,
        topology.num_nodes(),
        topology.gpus_per_node(),
        topology.slots_per_gpu(),
    )?;
    let moe = model::moe_config(&config.model, &topology)?;
    let (layers, host) = {
        let (moe, count, seed) = (moe.clone(), topology.num_layers(), config.model.seed);
        tokio::task::spawn_blocking(move || model::build(&moe, count, seed))
            .await
            .map_err(|e| AgentError::Engine(e.to_string()))??
    };
    let workers: Vec<String> = (0..shape.gpus_per_node())
        .map(|g| format!("node{}-gpu{g}", config.node))
        .collect();
    let Some(last) = until_ok("reading worker sequence numbers", backoff, stop, || {
        client.last_seqs()
    })
    .await?
    else {
        return Ok(None);
    };
    // A restarted agent continues after what the service already has.
    let seqs: Vec<i64> = workers
        .iter()
        .map(|w| last.get(w).map_or(0, |s| s + 1))
        .collect();
    let Some(latest) = until_ok("fetching the latest plan", backoff, stop, || {
        client.latest_plan(None, Duration::ZERO)
    })
    .await?
    else {
        return Ok(None);
    };
    let plan = match latest.map(|doc| PlanUpdate::parse(&doc, &topology)) {
        Some(Ok(plan)) => plan,
        Some(Err(err)) => {
            warn!(error = %err, "the latest plan does not fit; starting on the default placement");
            PlanUpdate::initial(&topology)
        }
        None => PlanUpdate::initial(&topology),
    };
    let (node, _) = {
        let placements = plan.placements(config.dispatch)?;
        let version = plan.version.unsigned_abs(); // never negative (`PlanUpdate` checks)
        let host = Arc::new(host);
        tokio::task::spawn_blocking(move || NodeState::new(shape, host, &placements, version))
            .await
            .map_err(|e| AgentError::Engine(e.to_string()))??
    };
    info!(
        node = config.node,
        version = plan.version,
        layers = topology.num_layers(),
        experts = topology.num_logical_experts(),
        top_k = moe.top_k(),
        first_seq = ?seqs,
        "node ready"
    );
    let generator = TrafficGenerator::new(
        &moe,
        TrafficSpec {
            layers: topology.num_layers(),
            tokens_per_batch: config.traffic.tokens_per_step,
            skew: config.traffic.skew,
            token_noise: config.traffic.token_noise,
            drift_per_batch: config.traffic.drift_per_step,
            seed: config.traffic.seed,
            stream: config.node as u64,
        },
    )?;

    Ok(Some(Ready {
        parts: EngineParts {
            shape,
            layers,
            node,
            plan,
            generator,
            mode: config.dispatch,
            hidden: moe.hidden(),
            covisit_groups: config.report_covisit.then(|| moe.num_groups()),
            workers,
            seqs,
            window: config.window,
            step_interval: config.traffic.step_interval,
            steps: config.traffic.steps,
            drift: config.traffic.drift_file.clone().map(DriftFile::new),
        },
        topology,
    }))
}

/// Calls `f` until it succeeds, retrying retryable errors with backoff;
/// `None` when `stop` is set first.
async fn until_ok<T, Fut>(
    what: &str,
    backoff: Backoff,
    stop: &mut watch::Receiver<bool>,
    mut f: impl FnMut() -> Fut,
) -> Result<Option<T>, ClientError>
where
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut rng = ChaCha8Rng::from_rng(&mut rand::rng());
    let mut attempt = 0;
    loop {
        if *stop.borrow() {
            return Ok(None);
        }
        match f().await {
            Ok(v) => return Ok(Some(v)),
            Err(err) if err.is_retryable() => {
                attempt += 1;
                let delay = backoff.delay(attempt, &mut rng);
                warn!(error = %err, ?delay, "{what} failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(err) => return Err(err),
        }
    }
}
