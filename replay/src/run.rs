//! One run: a policy at one re-plan interval, fed windows in order.
//!
//! The order inside [`Run::step`] is what makes the replay causal: the plan
//! in force is scored on the new window *first*, and only then may the
//! policy look at that window to plan for the next one.

use std::collections::VecDeque;
use std::time::Instant;

use ballast_policy::{evaluate, PolicyError, Situation};
use ballast_solver::eplb::{self, EplbError};
use ballast_solver::{
    covisit, migration, routing, score, solve, LoadMatrix, Plan, PlanError, PlanOptions, Topology,
};
use thiserror::Error;

use crate::record::{Hotspot, Series, WindowRecord};
use crate::spec::{Interval, Planner, PolicySpec};

/// Fixed facts every run shares.
#[derive(Debug, Clone)]
pub struct Context {
    pub topology: Topology,
    /// Bytes of one expert's weights (the topology's `expert_bytes` unless
    /// overridden).
    pub expert_bytes: Option<u64>,
    /// Bytes per second into one GPU.
    pub link_bandwidth: Option<f64>,
}

/// Why a policy could not plan.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanFailure {
    #[error(transparent)]
    Service(#[from] PolicyError),
    #[error(transparent)]
    Eplb(#[from] EplbError),
    #[error(transparent)]
    Solver(#[from] PlanError),
}

/// Running totals of one run.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub scored: u64,
    pub experienced: f64,
    pub experienced_optimal_routing: f64,
    pub oracle: f64,
    pub reloaded_slots: u64,
    pub reloaded_bytes: u64,
    pub move_seconds: f64,
    pub plans: u64,
    pub replans: u64,
    pub plan_ms: f64,
    pub plan_ms_max: f64,
    pub worst: Option<(u64, f64)>,
    /// Sum and count of [`WindowRecord::covisit_served`].
    pub covisit_served: f64,
    pub covisit_scored: u64,
    /// Sums of [`WindowRecord::transfers_per_token`] and their count.
    pub transfers_low: f64,
    pub transfers_high: f64,
    pub transfers_estimate: Option<f64>,
    pub transfers_known: u64,
}

/// A policy at one interval, with the plan it has in force.
#[derive(Debug)]
pub struct Run {
    pub spec: PolicySpec,
    pub interval: Interval,
    /// Records the worst window's GPU loads (the report's heat map).
    pub keeps_hotspot: bool,
    plan: Option<Plan>,
    /// The service's newest windows and trigger state.
    recent: VecDeque<LoadMatrix>,
    streak: u32,
    seen: u64,
    pub totals: Totals,
    pub experienced: Series,
    pub reloads: Series,
    pub hotspot: Option<Hotspot>,
}

impl Run {
    pub fn new(spec: PolicySpec, interval: Interval) -> Self {
        Run {
            spec,
            interval,
            keeps_hotspot: false,
            plan: None,
            recent: VecDeque::new(),
            streak: 0,
            seen: 0,
            totals: Totals::default(),
            experienced: Series::default(),
            reloads: Series::default(),
            hotspot: None,
        }
    }

    /// Scores the plan in force on `load` (window `window`), then plans for
    /// the next window if one is due. `index` is this run's place in the
    /// summary; `oracle` the window's own bound.
    pub fn step(
        &mut self,
        context: &Context,
        index: usize,
        window: u64,
        load: &LoadMatrix,
        oracle: f64,
    ) -> Result<WindowRecord, PlanFailure> {
        let topology = &context.topology;
        let mut record = WindowRecord {
            run: index,
            window,
            experienced_imbalance: None,
            experienced_imbalance_optimal_routing: None,
            oracle_imbalance: oracle,
            planned: false,
            replanned: false,
            reloaded_slots: 0,
            reloaded_bytes: None,
            move_seconds: None,
            plan_ms: 0.0,
            covisit_served: None,
            transfers_per_token: None,
        };
        if let Some(plan) = &self.plan {
            let experienced = score::score(topology, load, plan).model_imbalance;
            // Routing that ignored a co-visit plan's caps would break its rule:
            // its shares already route each expert as well as the caps allow.
            let scoped = plan.replica_scope().is_some();
            let routed = if scoped {
                experienced
            } else {
                routing::score_optimal(topology, load, plan).model_imbalance
            };
            if scoped && load.has_covisit() {
                let served = covisit::served_by_covisit(topology, load, plan);
                record.covisit_served = Some(served);
                self.totals.covisit_served += served;
                self.totals.covisit_scored += 1;
            }
            if let Ok(traffic) = covisit::cross_node_traffic(topology, load, plan) {
                let range = traffic.transfers_per_token;
                record.transfers_per_token = Some(range);
                let t = &mut self.totals;
                t.transfers_low += range.low;
                t.transfers_high += range.high;
                t.transfers_known += 1;
                // A run's estimate holds only if every window had one.
                t.transfers_estimate =
                    match (t.transfers_known, t.transfers_estimate, range.estimate) {
                        (1, _, e) => e,
                        (_, Some(sum), Some(e)) => Some(sum + e),
                        _ => None,
                    };
            }
            record.experienced_imbalance = Some(experienced);
            record.experienced_imbalance_optimal_routing = Some(routed);
            let t = &mut self.totals;
            t.scored += 1;
            t.experienced += experienced;
            t.experienced_optimal_routing += routed;
            t.oracle += oracle;
            self.experienced.push(window, experienced);
            if t.worst.is_none_or(|(_, worst)| experienced > worst) {
                t.worst = Some((window, experienced));
                if self.keeps_hotspot {
                    self.hotspot = Some(hotspot(topology, load, plan, index, window, experienced));
                }
            }
        }
        // The service's estimate reads every window, planned after or not.
        if let Planner::Service(settings) = &self.spec.planner {
            let keep = settings.windows_needed();
            self.remember(keep, load);
        }
        if self.plan_due() {
            self.plan_next(context, load, &mut record)?;
        }
        self.seen += 1;
        Ok(record)
    }

    fn plan_due(&self) -> bool {
        if self.plan.is_none() {
            return true;
        }
        match self.interval {
            Interval::Never => false,
            Interval::Every(n) => self.seen.is_multiple_of(u64::from(n.get())),
        }
    }

    fn plan_next(
        &mut self,
        context: &Context,
        load: &LoadMatrix,
        record: &mut WindowRecord,
    ) -> Result<(), PlanFailure> {
        let topology = &context.topology;
        let started = Instant::now();
        let next = match &self.spec.planner {
            Planner::Service(settings) => {
                let windows = self.recent.make_contiguous();
                let decision = evaluate(
                    settings,
                    &Situation {
                        topology,
                        windows,
                        current: self.plan.as_ref(),
                        excluded: &[],
                        streak: self.streak,
                        forced: false,
                    },
                )?;
                self.streak = decision.verdict.streak;
                decision.verdict.publish.then_some(decision.candidate.plan)
            }
            Planner::Eplb(mode) => Some(eplb::rebalance(topology, load, *mode)?.plan),
            Planner::Solver {
                policy,
                split,
                previous,
                balance_tolerance,
                time_limit,
            } => {
                let options = PlanOptions {
                    policy: *policy,
                    split: *split,
                    previous: if *previous { self.plan.clone() } else { None },
                    time_limit: *time_limit,
                    balance_tolerance: *balance_tolerance,
                    pricing: None,
                    down_gpus: Vec::new(),
                };
                Some(solve(topology, load, &options)?.plan)
            }
        };
        let plan_ms = started.elapsed().as_secs_f64() * 1e3;
        record.planned = true;
        record.plan_ms = plan_ms;
        let t = &mut self.totals;
        let first = self.plan.is_none();
        if !first {
            t.plans += 1;
            t.plan_ms += plan_ms;
            t.plan_ms_max = t.plan_ms_max.max(plan_ms);
        }
        let Some(next) = next else {
            return Ok(());
        };
        if let Some(current) = &self.plan {
            if *current == next {
                return Ok(());
            }
            let per_gpu = migration::migrations_per_gpu(topology, current, &next);
            let slots: usize = per_gpu.iter().flatten().sum();
            record.replanned = true;
            record.reloaded_slots = slots as u64;
            record.reloaded_bytes = context.expert_bytes.map(|b| slots as u64 * b);
            record.move_seconds = context
                .expert_bytes
                .zip(context.link_bandwidth)
                .map(|(bytes, bandwidth)| move_seconds(&per_gpu, topology, bytes, bandwidth));
            t.replans += 1;
            t.reloaded_slots += record.reloaded_slots;
            t.reloaded_bytes += record.reloaded_bytes.unwrap_or(0);
            t.move_seconds += record.move_seconds.unwrap_or(0.0);
            self.reloads.push(record.window, slots as f64);
        }
        self.plan = Some(next);
        Ok(())
    }

    /// Keeps the newest windows the service's estimate reads.
    fn remember(&mut self, keep: usize, load: &LoadMatrix) {
        self.recent.push_back(load.clone());
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }
}

/// The busiest GPU's incoming bytes over the link bandwidth: GPUs load their
/// new experts in parallel, layer after layer on the same link.
fn move_seconds(per_gpu: &[Vec<usize>], topology: &Topology, bytes: u64, bandwidth: f64) -> f64 {
    let mut into_gpu = vec![0usize; topology.num_gpus()];
    for layer in per_gpu {
        for (gpu, &n) in layer.iter().enumerate() {
            into_gpu[gpu] += n;
        }
    }
    let busiest = into_gpu.into_iter().max().unwrap_or(0);
    busiest as f64 * bytes as f64 / bandwidth
}

fn hotspot(
    topology: &Topology,
    load: &LoadMatrix,
    plan: &Plan,
    run: usize,
    window: u64,
    model_imbalance: f64,
) -> Hotspot {
    let e = topology.num_logical_experts();
    let gpu_load = load
        .layers()
        .enumerate()
        .map(|(layer, row)| {
            let ideal = score::ideal_load(topology, row);
            let shares = plan.layer_shares(layer, e);
            match load.covisit_layer(layer) {
                Some(counts) => covisit::gpu_loads_under_rule(topology, row, counts, plan, layer),
                None => score::gpu_loads(topology, row, plan.layer(layer), &shares),
            }
            .into_iter()
            .map(|g| if ideal > 0.0 { g / ideal } else { 0.0 })
            .collect()
        })
        .collect();
    Hotspot {
        run,
        window,
        model_imbalance,
        gpu_load,
    }
}
