//! The compute thread: one step after another, each a synthetic batch run
//! through every MoE layer on this node's FP8 weights under the current
//! plan; plans are switched only between steps.
//!
//! A step: take the newest plan handed over by the watcher (apply it with
//! [`NodeState::apply`], rebuild the dispatchers, report the version to the
//! acker); apply a requested drift; draw a batch; per layer, count the
//! routing into the telemetry window, dispatch the assignments to replicas,
//! and run the layer (the node's own slots in FP8; assignments to other
//! nodes' slots are counted, as the all-to-all would send them). When the
//! window period has passed, close one window per GPU worker into the
//! outbox. The thread runs on rayon's pool and never blocks on the network.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus::IntCounter;
use tokio::sync::watch;
use tracing::{info, warn};

use super::drift::DriftFile;
use super::error::AgentError;
use super::metrics::AgentMetrics;
use super::outbox::Outbox;
use super::plans::PlanUpdate;
use super::window::WindowCounts;
use crate::error::{ConfigError, MoeError};
use crate::moe::dispatch::{dispatch, fp8_dispatch_bytes, Dispatch, NodeTraffic};
use crate::moe::gate::TopK;
use crate::moe::{DispatchMode, MoeLayer, OptimalDispatcher, Placement};
use crate::node::{ApplyReport, NodeShape, NodeState};
use crate::traffic::TrafficGenerator;

/// Per-layer dispatch under one plan.
#[derive(Debug)]
enum Routes {
    /// Even split or the plan's shares (the placement carries which).
    Split(Vec<Placement>),
    Optimal(Vec<OptimalDispatcher>),
}

impl Routes {
    fn new(
        mode: DispatchMode,
        placements: Vec<Placement>,
        shape: &NodeShape,
    ) -> Result<Self, ConfigError> {
        let per_gpu = shape.slots_per_gpu();
        let gpus = shape.cluster_slots() / per_gpu;
        // A scoped plan is dispatched by its shares in every mode (see
        // `PlanUpdate::placements`): the optimal router ignores scope.
        let scoped = placements.iter().any(|p| p.scope().is_some());
        Ok(match mode {
            DispatchMode::Even | DispatchMode::Share => Routes::Split(placements),
            DispatchMode::Optimal if scoped => Routes::Split(placements),
            DispatchMode::Optimal => Routes::Optimal(
                placements
                    .into_iter()
                    .map(|p| OptimalDispatcher::new(p, gpus, per_gpu))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn dispatch(&mut self, layer: usize, routing: &TopK) -> Result<Dispatch, MoeError> {
        match self {
            Routes::Split(placements) => Ok(dispatch(routing, &placements[layer])),
            Routes::Optimal(dispatchers) => dispatchers[layer].dispatch(routing),
        }
    }
}

/// Everything the compute thread owns.
pub struct EngineParts {
    pub shape: NodeShape,
    pub layers: Vec<MoeLayer>,
    pub node: NodeState,
    /// The plan `node` holds.
    pub plan: PlanUpdate,
    pub generator: TrafficGenerator,
    pub mode: DispatchMode,
    /// Model width, for the bytes a cross-node transfer carries.
    pub hidden: usize,
    /// Count and report co-visits for experts in this many groups (`None`:
    /// not reported).
    pub covisit_groups: Option<usize>,
    pub workers: Vec<String>,
    /// The next `seq` of each worker.
    pub seqs: Vec<i64>,
    pub window: Duration,
    pub step_interval: Duration,
    pub steps: Option<u64>,
    pub drift: Option<DriftFile>,
}

/// How the compute thread talks to the async side.
pub struct Links {
    pub plans: watch::Receiver<Option<Arc<PlanUpdate>>>,
    pub applied: watch::Sender<i64>,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<AgentMetrics>,
    pub stop: Arc<AtomicBool>,
}

pub struct Engine {
    parts: EngineParts,
    links: Links,
    routes: Routes,
    version: i64,
    counts: WindowCounts,
    window_started: Instant,
    /// `gpu_expert_assignments` counters of this node's own GPUs,
    /// `[layer][local gpu]`.
    gpu_assignments: Vec<Vec<IntCounter>>,
}

impl Engine {
    pub fn new(parts: EngineParts, links: Links) -> Result<Self, AgentError> {
        let routes = Routes::new(parts.mode, parts.plan.placements(parts.mode)?, &parts.shape)?;
        let layers = parts.layers.len();
        let shape = &parts.shape;
        let gpu_assignments = (0..layers)
            .map(|l| {
                (0..shape.gpus_per_node())
                    .map(|g| {
                        links
                            .metrics
                            .gpu_assignments
                            .with_label_values(&[&l.to_string(), &shape.global_gpu(g).to_string()])
                    })
                    .collect()
            })
            .collect();
        let mut counts = WindowCounts::new(
            SystemTime::now(),
            parts.shape.gpus_per_node(),
            layers,
            parts.plan.num_experts(),
        );
        if let Some(groups) = parts.covisit_groups {
            counts = counts.with_covisit(groups);
        }
        links.metrics.plan_version.set(parts.plan.version);
        Ok(Engine {
            version: parts.plan.version,
            parts,
            links,
            routes,
            counts,
            window_started: Instant::now(),
            gpu_assignments,
        })
    }

    /// Runs until the stop flag is set or the step limit is reached; the
    /// last, partial window is closed into the outbox. Returns the steps run.
    pub fn run(mut self) -> Result<u64, AgentError> {
        let mut steps = 0u64;
        while !self.links.stop.load(Ordering::SeqCst)
            && self.parts.steps.is_none_or(|limit| steps < limit)
        {
            let started = Instant::now();
            self.take_plan();
            self.take_drift(started);
            self.step()?;
            steps += 1;
            let took = started.elapsed();
            self.links.metrics.steps.inc();
            self.links.metrics.step_seconds.observe(took.as_secs_f64());
            if self.window_started.elapsed() >= self.parts.window {
                self.close_window();
            }
            if let Some(rest) = self.parts.step_interval.checked_sub(took) {
                std::thread::sleep(rest);
            }
        }
        if self.counts.steps() > 0 {
            self.close_window();
        }
        Ok(steps)
    }

    /// Runs one batch through every layer; returns the cross-node traffic
    /// its dispatch caused (all layers), which the metrics count as well.
    pub fn step(&mut self) -> Result<NodeTraffic, AgentError> {
        let batch = self.parts.generator.next_batch();
        let hidden = self.parts.generator.hidden_states();
        let weights = self.parts.node.snapshot();
        let shape = &self.parts.shape;
        let own_gpus = shape.global_gpu(0)..shape.global_gpu(shape.gpus_per_node());
        let slots_per_node = shape.local_slots();
        let bytes_per_transfer = fp8_dispatch_bytes(self.parts.hidden);
        let mut traffic = NodeTraffic::default();
        let m = &self.links.metrics;
        if let Some(first) = batch.routings.first() {
            m.tokens.inc_by(first.tokens() as u64);
        }
        for (l, routing) in batch.routings.into_iter().enumerate() {
            self.counts.add(l, &routing);
            let dispatch = self.routes.dispatch(l, &routing)?;
            // Every token of this node's batch starts on this node.
            traffic.add(&dispatch.node_traffic(
                slots_per_node,
                |_| shape.node(),
                bytes_per_transfer,
            ));
            let per_gpu = dispatch.gpu_counts(shape.slots_per_gpu());
            for (counter, tokens) in self.gpu_assignments[l]
                .iter()
                .zip(&per_gpu[own_gpus.clone()])
            {
                counter.inc_by(*tokens as u64);
            }
            let started = Instant::now();
            let out = self.parts.layers[l].forward_dispatched(
                &hidden,
                routing,
                dispatch,
                &weights.layer(l),
            )?;
            m.expert_seconds.inc_by(started.elapsed().as_secs_f64());
            m.remote_assignments.inc_by(out.remote_assignments as u64);
        }
        m.cross_node_transfers.inc_by(traffic.transfers);
        m.cross_node_bytes.inc_by(traffic.bytes);
        m.nodes_visited.inc_by(traffic.nodes_visited);
        m.dispatched_token_layers.inc_by(traffic.tokens);
        self.counts.end_step();
        Ok(traffic)
    }

    fn close_window(&mut self) {
        let windows =
            self.counts
                .close(SystemTime::now(), &self.parts.workers, &mut self.parts.seqs);
        for w in windows {
            self.links.outbox.push(w);
        }
        self.window_started = Instant::now();
    }

    /// Switches to the newest plan handed over, if it is newer.
    fn take_plan(&mut self) {
        if !self.links.plans.has_changed().unwrap_or(false) {
            return;
        }
        let Some(update) = self.links.plans.borrow_and_update().clone() else {
            return;
        };
        if update.version <= self.version {
            return;
        }
        match self.apply(&update) {
            Ok(report) => {
                let m = &self.links.metrics;
                m.plan_applies.with_label_values(&["applied"]).inc();
                m.moved_bytes
                    .with_label_values(&["same_gpu"])
                    .inc_by(report.same_gpu_bytes);
                m.moved_bytes
                    .with_label_values(&["intra_node"])
                    .inc_by(report.intra_node_bytes);
                m.moved_bytes
                    .with_label_values(&["host"])
                    .inc_by(report.host_bytes);
                m.migrations.inc_by(report.migrations as u64);
                m.plan_version.set(update.version);
                info!(
                    version = update.version,
                    migrations = report.migrations,
                    kept_slots = report.kept_slots,
                    intra_node_bytes = report.intra_node_bytes,
                    host_bytes = report.host_bytes,
                    "applied plan"
                );
                self.version = update.version;
                self.links.applied.send_replace(update.version);
            }
            Err(err) => {
                self.links
                    .metrics
                    .plan_applies
                    .with_label_values(&["failed"])
                    .inc();
                warn!(version = update.version, error = %err, "could not apply plan; keeping the current one");
            }
        }
    }

    fn apply(&mut self, update: &PlanUpdate) -> Result<ApplyReport, AgentError> {
        let placements = update.placements(self.parts.mode)?;
        let routes = Routes::new(self.parts.mode, placements.clone(), &self.parts.shape)?;
        // Plan versions are never negative (`PlanUpdate` checks).
        let report = self
            .parts
            .node
            .apply(&placements, update.version.unsigned_abs())?;
        self.routes = routes;
        Ok(report)
    }

    fn take_drift(&mut self, now: Instant) {
        if let Some(fraction) = self.parts.drift.as_mut().and_then(|d| d.poll(now)) {
            self.parts.generator.induce_drift(fraction);
            self.links.metrics.drift_events.inc();
            info!(fraction, "induced traffic drift");
        }
    }
}
