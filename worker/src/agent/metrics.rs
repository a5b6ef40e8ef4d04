//! The agent's Prometheus metrics (`ballast_worker_` prefix) and the
//! `/metrics` endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;

use super::error::AgentError;

/// Every metric the agent exports, registered in its own registry. Every
/// series carries `cluster` and `node` (constant labels), so the agents of
/// several clusters can share one Prometheus; per-GPU series exist only for
/// this node's own GPUs (`gpus_per_node x layers` of them), which keeps a
/// 40-node cluster's worker series in the tens of thousands.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    registry: Registry,
    /// Token→expert assignments this node's own GPUs computed (`gpu` is the
    /// cluster-wide index), per layer. Only this node's batches reach them in
    /// the simulation; every node draws from the same popularity, so each
    /// node's share is a sample of the GPU's whole load.
    pub gpu_assignments: IntCounterVec,
    /// Assignments of this node's batches that other nodes' GPUs compute
    /// (what the all-to-all carries off the node).
    pub remote_assignments: IntCounter,
    /// Cross-node transfers of this node's tokens, summed over layers: per
    /// token and layer, the distinct other nodes its assignments were
    /// dispatched to (see [`crate::moe::dispatch::NodeTraffic`]).
    pub cross_node_transfers: IntCounter,
    /// Bytes those transfers carry (FP8 hidden state plus scales,
    /// [`crate::moe::dispatch::fp8_dispatch_bytes`]).
    pub cross_node_bytes: IntCounter,
    /// Σ over tokens and layers of the distinct nodes visited (this node
    /// included when it serves one of the token's experts).
    pub nodes_visited: IntCounter,
    /// Tokens × layers dispatched: the denominator of the per-token means.
    pub dispatched_token_layers: IntCounter,
    /// Tokens of the batches run (each makes `top_k` assignments a layer).
    pub tokens: IntCounter,
    pub steps: IntCounter,
    pub step_seconds: Histogram,
    /// Time spent in the FP8 expert kernels (all layers), as a counter so
    /// that its rate over the step time's rate is the expert share of a step.
    pub expert_seconds: Counter,
    /// Weight bytes copied by plan changes, by `source`: `same_gpu`,
    /// `intra_node` (another GPU of this node) or `host` (host copy; stands
    /// for a cross-node fetch too).
    pub moved_bytes: IntCounterVec,
    /// Experts copied onto a GPU from another device (the SPEC's migrations).
    pub migrations: IntCounter,
    /// Plan applications by `result` (`applied`, `failed`).
    pub plan_applies: IntCounterVec,
    pub plan_version: IntGauge,
    /// Telemetry windows by `outcome`: `sent` (accepted), `duplicate`
    /// (accepted by an earlier attempt whose answer was lost), `rejected`
    /// (refused by the service), `dropped` (buffer full, or undelivered at
    /// shutdown).
    pub windows: IntCounterVec,
    /// Failed delivery attempts that were retried.
    pub window_retries: IntCounter,
    /// Windows waiting for delivery (queued or in flight).
    pub windows_buffered: IntGauge,
    /// Popularity shuffles requested through `--drift-file`.
    pub drift_events: IntCounter,
}

impl AgentMetrics {
    /// The metrics of node `node` of `cluster`.
    pub fn new(cluster: &str, node: usize) -> Result<Self, prometheus::Error> {
        let labels = HashMap::from([
            ("cluster".to_owned(), cluster.to_owned()),
            ("node".to_owned(), node.to_string()),
        ]);
        let registry = Registry::new_custom(None, Some(labels))?;
        let name = |n: &str, help: &str| Opts::new(format!("ballast_worker_{n}"), help);
        let gpu_assignments = IntCounterVec::new(
            name(
                "gpu_expert_assignments_total",
                "Token-expert assignments this node's own GPUs computed, per layer",
            ),
            &["layer", "gpu"],
        )?;
        let remote_assignments = IntCounter::with_opts(name(
            "remote_expert_assignments_total",
            "Token-expert assignments of this node's batches computed by other nodes",
        ))?;
        let cross_node_transfers = IntCounter::with_opts(name(
            "cross_node_transfers_total",
            "Per token and layer, distinct other nodes its experts were dispatched to, summed",
        ))?;
        let cross_node_bytes = IntCounter::with_opts(name(
            "cross_node_bytes_total",
            "Bytes of FP8 hidden states (with scales) sent to other nodes by dispatch",
        ))?;
        let nodes_visited = IntCounter::with_opts(name(
            "nodes_visited_total",
            "Per token and layer, distinct nodes its experts were dispatched to, summed",
        ))?;
        let dispatched_token_layers = IntCounter::with_opts(name(
            "dispatched_token_layers_total",
            "Tokens dispatched, counted once per layer",
        ))?;
        let tokens = IntCounter::with_opts(name("tokens_total", "Tokens of the batches run"))?;
        let steps = IntCounter::with_opts(name("steps_total", "Steps run"))?;
        let step_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ballast_worker_step_duration_seconds",
                "Time of one step, all layers",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 14)?),
        )?;
        let expert_seconds = Counter::with_opts(name(
            "expert_compute_seconds_total",
            "Time spent in the FP8 expert kernels",
        ))?;
        let moved_bytes = IntCounterVec::new(
            name(
                "moved_bytes_total",
                "Expert weight bytes copied by plan changes",
            ),
            &["source"],
        )?;
        let migrations = IntCounter::with_opts(name(
            "migrations_total",
            "Experts copied onto a GPU from another device",
        ))?;
        let plan_applies =
            IntCounterVec::new(name("plan_applies_total", "Plan applications"), &["result"])?;
        let plan_version = IntGauge::with_opts(name("plan_version", "Plan version applied"))?;
        let windows = IntCounterVec::new(
            name("windows_total", "Telemetry windows by outcome"),
            &["outcome"],
        )?;
        let window_retries =
            IntCounter::with_opts(name("window_retries_total", "Retried telemetry deliveries"))?;
        let windows_buffered = IntGauge::with_opts(name(
            "windows_buffered",
            "Telemetry windows waiting for delivery",
        ))?;
        let drift_events =
            IntCounter::with_opts(name("drift_events_total", "Induced popularity shuffles"))?;
        // Every outcome and source exists from the start, at 0: a panel or an
        // alert on `rate(...)` then has data before the first drop or move.
        for outcome in ["sent", "duplicate", "rejected", "dropped"] {
            windows.with_label_values(&[outcome]);
        }
        for source in ["same_gpu", "intra_node", "host"] {
            moved_bytes.with_label_values(&[source]);
        }
        for result in ["applied", "failed"] {
            plan_applies.with_label_values(&[result]);
        }
        registry.register(Box::new(gpu_assignments.clone()))?;
        registry.register(Box::new(remote_assignments.clone()))?;
        registry.register(Box::new(cross_node_transfers.clone()))?;
        registry.register(Box::new(cross_node_bytes.clone()))?;
        registry.register(Box::new(nodes_visited.clone()))?;
        registry.register(Box::new(dispatched_token_layers.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(steps.clone()))?;
        registry.register(Box::new(step_seconds.clone()))?;
        registry.register(Box::new(expert_seconds.clone()))?;
        registry.register(Box::new(moved_bytes.clone()))?;
        registry.register(Box::new(migrations.clone()))?;
        registry.register(Box::new(plan_applies.clone()))?;
        registry.register(Box::new(plan_version.clone()))?;
        registry.register(Box::new(windows.clone()))?;
        registry.register(Box::new(window_retries.clone()))?;
        registry.register(Box::new(windows_buffered.clone()))?;
        registry.register(Box::new(drift_events.clone()))?;
        Ok(AgentMetrics {
            registry,
            gpu_assignments,
            remote_assignments,
            cross_node_transfers,
            cross_node_bytes,
            nodes_visited,
            dispatched_token_layers,
            tokens,
            steps,
            step_seconds,
            expert_seconds,
            moved_bytes,
            migrations,
            plan_applies,
            plan_version,
            windows,
            window_retries,
            windows_buffered,
            drift_events,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// A bound `/metrics` listener.
pub struct MetricsServer {
    listener: TcpListener,
    metrics: Arc<AgentMetrics>,
}

impl MetricsServer {
    pub async fn bind(address: SocketAddr, metrics: Arc<AgentMetrics>) -> Result<Self, AgentError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| AgentError::Listen { address, source })?;
        Ok(MetricsServer { listener, metrics })
    }

    pub fn address(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `stop` resolves.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) {
        let router = Router::new()
            .route("/metrics", get(render))
            .with_state(self.metrics);
        if let Err(err) = axum::serve(self.listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %err, "metrics server stopped");
        }
    }
}

async fn render(State(metrics): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}
