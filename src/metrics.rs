//! Prometheus metrics, all prefixed `ballast_`, units in the names.
//!
//! Label sets stay bounded: `cluster` (created by an operator), `layer`
//! (at most the model's MoE layer count), `reason`/`result`/`state`/
//! `encoding`/`route` (fixed vocabularies). Never a worker name.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the service exports, on a registry of its own (so several
/// services can run in one process, as the tests do).
pub struct Metrics {
    registry: Registry,
    pub ingest_windows: IntCounterVec,
    pub ingest_bytes: IntCounterVec,
    pub ingest_rejections: IntCounterVec,
    pub ingest_seconds: Histogram,
    pub observed_layer_imbalance: GaugeVec,
    pub observed_model_imbalance: GaugeVec,
    pub predicted_model_imbalance: GaugeVec,
    pub plan_version: IntGaugeVec,
    pub solve_seconds: HistogramVec,
    pub plan_migrations: IntGaugeVec,
    pub plan_migrations_bound: IntGaugeVec,
    pub migrations_total: IntCounterVec,
    pub planner_decisions: IntCounterVec,
    pub planner_errors: IntCounter,
    pub planner_heartbeat: GaugeVec,
    pub workers: IntGaugeVec,
    pub rollout_pending_gpus: IntGaugeVec,
    pub rollout_lag_seconds: GaugeVec,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
}

/// Registration only fails on a duplicate name: a programming error that the
/// unit test below catches, never something input can cause.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(
        registry,
        GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Metrics {
            ingest_windows: counter(&r, "ballast_ingest_windows_total", "Telemetry windows received, by result (accepted, duplicate).", &["result"]),
            ingest_bytes: counter(&r, "ballast_ingest_bytes_total", "Telemetry request body bytes, by encoding (json, binary).", &["encoding"]),
            ingest_rejections: counter(&r, "ballast_ingest_rejections_total", "Telemetry windows refused, by reason (the error code).", &["reason"]),
            ingest_seconds: register(&r, Histogram::with_opts(HistogramOpts::new("ballast_ingest_duration_seconds", "Time to validate and durably store one window.").buckets(LATENCY_BUCKETS.to_vec())).expect("valid metric")),
            observed_layer_imbalance: gauge(&r, "ballast_observed_layer_imbalance_ratio", "Per-layer imbalance of the current plan on the latest load window.", &["cluster", "layer"]),
            observed_model_imbalance: gauge(&r, "ballast_observed_model_imbalance_ratio", "Model imbalance of the current plan on the latest load window.", &["cluster"]),
            predicted_model_imbalance: gauge(&r, "ballast_predicted_model_imbalance_ratio", "Model imbalance of the latest candidate on the load estimate.", &["cluster"]),
            plan_version: int_gauge(&r, "ballast_plan_version", "Latest published plan version.", &["cluster"]),
            solve_seconds: register(&r, HistogramVec::new(HistogramOpts::new("ballast_solve_duration_seconds", "Time to compute a candidate plan.").buckets(LATENCY_BUCKETS.to_vec()), &["cluster"]).expect("valid metric")),
            plan_migrations: int_gauge(&r, "ballast_plan_migrations_experts", "Experts the latest plan loads relative to its predecessor.", &["cluster"]),
            plan_migrations_bound: int_gauge(&r, "ballast_plan_migrations_bound_experts", "Fewest experts any plan within the balance tolerance could have loaded instead of the latest plan (0 without a predecessor).", &["cluster"]),
            migrations_total: counter(&r, "ballast_migrations_experts_total", "Experts loaded by all published plans.", &["cluster"]),
            planner_decisions: counter(&r, "ballast_planner_decisions_total", "Planner decisions, by reason.", &["cluster", "reason"]),
            planner_errors: register(&r, IntCounter::new("ballast_planner_errors_total", "Planner cycles that failed (database or solver).").expect("valid metric")),
            planner_heartbeat: gauge(&r, "ballast_planner_heartbeat_timestamp_seconds", "When this replica's planner loop last made progress (Unix seconds).", &[]),
            workers: int_gauge(&r, "ballast_workers", "Workers by state (up, down, unknown = never reported).", &["cluster", "state"]),
            rollout_pending_gpus: int_gauge(&r, "ballast_rollout_pending_gpus", "GPUs that have not acknowledged the latest plan.", &["cluster"]),
            rollout_lag_seconds: gauge(&r, "ballast_rollout_lag_seconds", "Time since the latest plan was published while GPUs still run an older one (0 when complete).", &["cluster"]),
            http_requests: counter(&r, "ballast_http_requests_total", "HTTP requests, by route template, method and status.", &["route", "method", "status"]),
            http_seconds: register(&r, HistogramVec::new(HistogramOpts::new("ballast_http_request_duration_seconds", "HTTP request latency by route template.").buckets(LATENCY_BUCKETS.to_vec()), &["route"]).expect("valid metric")),
            registry: r,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_once() {
        let m = Metrics::new();
        m.ingest_windows.with_label_values(&["accepted"]).inc();
        m.planner_heartbeat
            .with_label_values(&[] as &[&str])
            .set(1.0);
        let text = m.render();
        assert!(
            text.contains("ballast_ingest_windows_total{result=\"accepted\"} 1"),
            "{text}"
        );
        let families = m.registry.gather().len();
        assert!(families >= 3, "{families}");
        assert!(text
            .lines()
            .filter(|l| l.starts_with("# TYPE"))
            .all(|l| l.contains("ballast_")));
    }
}
