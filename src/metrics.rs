//! Prometheus metrics, all prefixed `ballast_`, units in the names.
//!
//! Label sets stay bounded: `cluster` (created by an operator), `layer`
//! (at most the model's MoE layer count), `gpu` (the cluster's GPUs, for
//! one gauge), `reason`/`result`/`state`/`encoding`/`route`/`operation`
//! (fixed vocabularies). Never a worker name nor an expert: at decode scale
//! (58 layers, 320 GPUs) a cluster costs the service about 400 series.

use std::future::Future;
use std::time::Instant;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the service exports, on a registry of its own (so several
/// services can run in one process, as the tests do).
pub struct Metrics {
    registry: Registry,
    pub ingest_windows: IntCounterVec,
    pub ingest_bytes: IntCounterVec,
    pub ingest_rejections: IntCounterVec,
    pub ingest_seconds: HistogramVec,
    pub telemetry_latest_window: GaugeVec,
    pub observed_layer_imbalance: GaugeVec,
    pub observed_model_imbalance: GaugeVec,
    pub observed_gpu_load: GaugeVec,
    pub observed_window: GaugeVec,
    pub predicted_model_imbalance: GaugeVec,
    pub estimated_model_imbalance: GaugeVec,
    pub bound_model_imbalance: GaugeVec,
    pub net_gain: GaugeVec,
    pub armed_cycles: IntGaugeVec,
    pub gain_threshold: GaugeVec,
    pub plan_version: IntGaugeVec,
    pub plan_published: GaugeVec,
    pub plan_publishes: IntCounterVec,
    pub solve_seconds: HistogramVec,
    pub plan_migrations: IntGaugeVec,
    pub plan_migrations_bound: IntGaugeVec,
    pub plan_moved_bytes: IntGaugeVec,
    pub migrations_total: IntCounterVec,
    pub moved_bytes_total: IntCounterVec,
    pub planner_decisions: IntCounterVec,
    pub planner_errors: IntCounter,
    pub planner_heartbeat: GaugeVec,
    pub workers: IntGaugeVec,
    pub rollout_pending_gpus: IntGaugeVec,
    pub rollout_seconds: GaugeVec,
    pub store_seconds: HistogramVec,
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

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )
        .expect("valid metric"),
    )
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Metrics {
            ingest_windows: counter(&r, "ballast_ingest_windows_total", "Telemetry windows received, by result (accepted, duplicate).", &["cluster", "result"]),
            ingest_bytes: counter(&r, "ballast_ingest_bytes_total", "Telemetry request body bytes, by encoding (json, binary).", &["cluster", "encoding"]),
            ingest_rejections: counter(&r, "ballast_ingest_rejections_total", "Telemetry windows refused, by reason (the error code); cluster is empty when it does not exist.", &["cluster", "reason"]),
            ingest_seconds: histogram(&r, "ballast_ingest_duration_seconds", "Time to validate and durably store one window.", &["cluster"]),
            telemetry_latest_window: gauge(&r, "ballast_telemetry_latest_window_end_timestamp_seconds", "End of the newest telemetry window accepted (Unix seconds).", &["cluster"]),
            observed_layer_imbalance: gauge(&r, "ballast_observed_layer_imbalance_ratio", "Per-layer imbalance of the plan in force on the latest closed load window (absent when that window is stale).", &["cluster", "layer"]),
            observed_model_imbalance: gauge(&r, "ballast_observed_model_imbalance_ratio", "Model imbalance of the plan in force on the latest closed load window (absent when that window is stale).", &["cluster"]),
            observed_gpu_load: gauge(&r, "ballast_observed_gpu_load_ratio", "A GPU's load summed over layers, over the ideal (1 = its fair share), on the latest closed load window.", &["cluster", "gpu"]),
            observed_window: gauge(&r, "ballast_observed_window_end_timestamp_seconds", "End of the closed load window the observed figures come from (Unix seconds).", &["cluster"]),
            predicted_model_imbalance: gauge(&r, "ballast_predicted_model_imbalance_ratio", "Model imbalance of the latest candidate on the load estimate.", &["cluster"]),
            estimated_model_imbalance: gauge(&r, "ballast_estimated_model_imbalance_ratio", "Model imbalance of the plan in force on the load estimate (what the candidate is compared with).", &["cluster"]),
            bound_model_imbalance: gauge(&r, "ballast_bound_model_imbalance_ratio", "Lower bound on the model imbalance of any plan on the load estimate.", &["cluster"]),
            net_gain: gauge(&r, "ballast_planner_net_gain_ratio", "Imbalance gain of the latest candidate net of its move cost (the trigger's input).", &["cluster"]),
            armed_cycles: int_gauge(&r, "ballast_planner_armed_cycles", "Consecutive cycles the trigger has been armed (0: disarmed).", &["cluster"]),
            gain_threshold: gauge(&r, "ballast_planner_gain_threshold_ratio", "Net gain at which the trigger arms (--gain-threshold); it disarms below threshold minus hysteresis.", &["cluster"]),
            plan_version: int_gauge(&r, "ballast_plan_version", "Latest published plan version.", &["cluster"]),
            plan_published: gauge(&r, "ballast_plan_published_timestamp_seconds", "When the latest plan was published (Unix seconds).", &["cluster"]),
            plan_publishes: counter(&r, "ballast_plan_publishes_total", "Plans published, by reason (forced re-plans included).", &["cluster", "reason"]),
            solve_seconds: histogram(&r, "ballast_solve_duration_seconds", "Time to compute a candidate plan.", &["cluster"]),
            plan_migrations: int_gauge(&r, "ballast_plan_migrations", "Experts the latest plan loads onto GPUs that did not hold them.", &["cluster"]),
            plan_migrations_bound: int_gauge(&r, "ballast_plan_migrations_bound", "Fewest migrations any plan within the balance tolerance could have made instead of the latest plan (0 without a predecessor).", &["cluster"]),
            plan_moved_bytes: int_gauge(&r, "ballast_plan_moved_bytes", "Expert weight bytes the latest plan moves (migrations x expert_bytes; absent when the topology has no expert_bytes).", &["cluster"]),
            migrations_total: counter(&r, "ballast_migrations_total", "Experts loaded onto GPUs by all published plans.", &["cluster"]),
            moved_bytes_total: counter(&r, "ballast_moved_bytes_total", "Expert weight bytes moved by all published plans (topologies with expert_bytes).", &["cluster"]),
            planner_decisions: counter(&r, "ballast_planner_decisions_total", "Planner decisions, scheduled and forced, by reason.", &["cluster", "reason"]),
            planner_errors: register(&r, IntCounter::new("ballast_planner_errors_total", "Planner cycles that failed (database or solver).").expect("valid metric")),
            planner_heartbeat: gauge(&r, "ballast_planner_heartbeat_timestamp_seconds", "When this replica's planner loop last made progress (Unix seconds).", &[]),
            workers: int_gauge(&r, "ballast_workers", "Workers by state (up, down, unknown = never reported).", &["cluster", "state"]),
            rollout_pending_gpus: int_gauge(&r, "ballast_rollout_pending_gpus", "GPUs that have not acknowledged the latest plan.", &["cluster"]),
            rollout_seconds: gauge(&r, "ballast_rollout_duration_seconds", "How long the latest plan has been rolling out; once every GPU acknowledged it, how long that took (to --tick resolution).", &["cluster"]),
            store_seconds: histogram(&r, "ballast_store_operation_duration_seconds", "Database operations, by operation (ingest_batch, load_windows, publish, record_decision, checkpoint).", &["operation"]),
            http_requests: counter(&r, "ballast_http_requests_total", "HTTP requests, by route template, method and status.", &["route", "method", "status"]),
            http_seconds: histogram(&r, "ballast_http_request_duration_seconds", "HTTP request latency by route template.", &["route"]),
            registry: r,
        }
    }

    /// Times a database operation into `ballast_store_operation_duration_seconds`.
    pub async fn time_store<T>(&self, operation: &str, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = work.await;
        self.store_seconds
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        out
    }

    /// Forgets a deleted cluster's series (`layers` x `gpus` its topology's
    /// shape), so its last figures do not linger on the dashboards.
    pub fn forget_cluster(&self, cluster: &str, layers: usize, gpus: usize) {
        self.forget_observed(cluster, layers, gpus);
        // Removing a series that was never set fails harmlessly.
        for family in [
            &self.telemetry_latest_window,
            &self.observed_window,
            &self.predicted_model_imbalance,
            &self.estimated_model_imbalance,
            &self.bound_model_imbalance,
            &self.net_gain,
            &self.gain_threshold,
            &self.plan_published,
            &self.rollout_seconds,
        ] {
            let _ = family.remove_label_values(&[cluster]);
        }
        for family in [
            &self.armed_cycles,
            &self.plan_version,
            &self.plan_migrations,
            &self.plan_migrations_bound,
            &self.plan_moved_bytes,
            &self.rollout_pending_gpus,
        ] {
            let _ = family.remove_label_values(&[cluster]);
        }
        for state in ["up", "down", "unknown"] {
            let _ = self.workers.remove_label_values(&[cluster, state]);
        }
    }

    /// Drops the observed figures of `cluster`: its newest closed window is
    /// too old to describe the cluster now (every worker silent), and a
    /// gauge frozen at its last value would say otherwise.
    pub fn forget_observed(&self, cluster: &str, layers: usize, gpus: usize) {
        let _ = self
            .observed_model_imbalance
            .remove_label_values(&[cluster]);
        for layer in 0..layers {
            let _ = self
                .observed_layer_imbalance
                .remove_label_values(&[cluster, &layer.to_string()]);
        }
        for gpu in 0..gpus {
            let _ = self
                .observed_gpu_load
                .remove_label_values(&[cluster, &gpu.to_string()]);
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
        m.ingest_windows
            .with_label_values(&["demo", "accepted"])
            .inc();
        m.planner_heartbeat
            .with_label_values(&[] as &[&str])
            .set(1.0);
        let text = m.render();
        assert!(
            text.contains("ballast_ingest_windows_total{cluster=\"demo\",result=\"accepted\"} 1"),
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
