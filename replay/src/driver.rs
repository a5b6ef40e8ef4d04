//! The replay itself: windows go in one at a time, in order; every run sees
//! each of them. Windows are buffered into small chunks and dropped once
//! every run has seen them, so memory does not grow with the history; runs
//! are independent and step through a chunk in parallel (rayon).

use ballast_solver::{model_bounds, LoadMatrix};
use rayon::prelude::*;
use thiserror::Error;

use crate::equal_budget;
use crate::record::{ReportData, RunSummary, Series, Summary, TrafficRange, WindowRecord};
use crate::run::{Context, PlanFailure, Run};
use crate::spec::{Interval, PolicySpec};

/// Windows buffered before the runs step through them.
const CHUNK: usize = 8;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum ReplayError {
    #[error("window {window} comes after window {previous}: a trace must be in window order")]
    OutOfOrder { window: u64, previous: u64 },
    #[error("no window to replay")]
    Empty,
    #[error(
        "policy `{policy}` (interval {interval}) could not plan after window {window}: {source}"
    )]
    Plan {
        policy: String,
        interval: Interval,
        window: u64,
        source: PlanFailure,
    },
}

/// A replay in progress.
pub struct Replay {
    context: Context,
    runs: Vec<Run>,
    pending: Vec<(u64, LoadMatrix)>,
    windows: u64,
    last_window: Option<u64>,
    oracle: Series,
}

impl Replay {
    /// Runs every policy at every interval of `sweep` (a policy that fixes
    /// its own interval runs once). When EPLB is swept without `never`, its
    /// never-re-planned run is added: the zero-movement end of its curve,
    /// which the equal-budget comparison needs.
    pub fn new(context: Context, policies: &[PolicySpec], sweep: &[Interval]) -> Self {
        let mut runs = Vec::new();
        for spec in policies {
            let mut intervals = match spec.interval {
                Some(fixed) => vec![fixed],
                None => sweep.to_vec(),
            };
            if spec.planner.is_eplb()
                && spec.interval.is_none()
                && !intervals.contains(&Interval::Never)
            {
                intervals.push(Interval::Never);
            }
            runs.extend(intervals.into_iter().map(|i| Run::new(spec.clone(), i)));
        }
        if let Some(first) = runs.first_mut() {
            first.keeps_hotspot = true;
        }
        Replay {
            context,
            runs,
            pending: Vec::with_capacity(CHUNK),
            windows: 0,
            last_window: None,
            oracle: Series::default(),
        }
    }

    /// The runs, in summary order.
    pub fn runs(&self) -> impl Iterator<Item = &Run> {
        self.runs.iter()
    }

    /// Windows taken so far.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// Takes the next window (its load parsed against the context's
    /// topology); returns the records of any windows it finished.
    pub fn push(
        &mut self,
        window: u64,
        load: LoadMatrix,
    ) -> Result<Vec<WindowRecord>, ReplayError> {
        if let Some(previous) = self.last_window {
            if window <= previous {
                return Err(ReplayError::OutOfOrder { window, previous });
            }
        }
        self.last_window = Some(window);
        self.windows += 1;
        self.pending.push((window, load));
        if self.pending.len() < CHUNK {
            return Ok(Vec::new());
        }
        self.flush()
    }

    /// Steps every run through the buffered windows.
    fn flush(&mut self) -> Result<Vec<WindowRecord>, ReplayError> {
        let pending = std::mem::take(&mut self.pending);
        let topology = &self.context.topology;
        let oracles: Vec<f64> = pending
            .par_iter()
            .map(|(_, load)| {
                let bounds = model_bounds(topology, load);
                bounds.node_local.unwrap_or(bounds.even_split)
            })
            .collect();
        // The first window is never scored (nothing was in force).
        let first_scored = usize::from(self.windows == pending.len() as u64);
        for ((window, _), &oracle) in pending.iter().zip(&oracles).skip(first_scored) {
            self.oracle.push(*window, oracle);
        }
        let context = &self.context;
        let per_run: Vec<Result<Vec<WindowRecord>, ReplayError>> = self
            .runs
            .par_iter_mut()
            .enumerate()
            .map(|(index, run)| {
                pending
                    .iter()
                    .zip(&oracles)
                    .map(|((window, load), &oracle)| {
                        run.step(context, index, *window, load, oracle)
                            .map_err(|source| ReplayError::Plan {
                                policy: run.spec.name.clone(),
                                interval: run.interval,
                                window: *window,
                                source,
                            })
                    })
                    .collect()
            })
            .collect();
        let mut records = Vec::with_capacity(per_run.len() * pending.len());
        let mut per_run = per_run.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Window by window, runs in order: the order `windows.csv` is in.
        for i in 0..pending.len() {
            for run in &mut per_run {
                records.push(run[i].clone());
            }
        }
        Ok(records)
    }

    /// Steps the runs through what is left and sums up.
    pub fn finish(mut self) -> Result<(Vec<WindowRecord>, ReportData), ReplayError> {
        if self.windows == 0 {
            return Err(ReplayError::Empty);
        }
        let records = self.flush()?;
        let summary = self.summary();
        let hottest = self.runs.first().and_then(|run| run.hotspot.clone());
        let data = ReportData {
            summary,
            experienced: self.runs.iter().map(|r| r.experienced.clone()).collect(),
            reloads: self.runs.iter().map(|r| r.reloads.clone()).collect(),
            oracle: self.oracle,
            hottest,
        };
        Ok((records, data))
    }

    fn summary(&self) -> Summary {
        let topology = &self.context.topology;
        let total_slots = (topology.num_layers() * topology.num_slots()) as u64;
        let scored = self.windows.saturating_sub(1);
        let mut policies: Vec<RunSummary> = self
            .runs
            .iter()
            .map(|run| {
                let t = &run.totals;
                let per_scored = |sum: f64| {
                    if t.scored > 0 {
                        sum / t.scored as f64
                    } else {
                        f64::NAN
                    }
                };
                let per_window = |sum: f64| if scored > 0 { sum / scored as f64 } else { 0.0 };
                RunSummary {
                    name: run.spec.name.clone(),
                    interval: run.interval.windows(),
                    experienced_imbalance: per_scored(t.experienced),
                    experienced_imbalance_optimal_routing: per_scored(
                        t.experienced_optimal_routing,
                    ),
                    oracle_imbalance: per_scored(t.oracle),
                    reloaded_slots_per_window: per_window(t.reloaded_slots as f64)
                        / total_slots as f64,
                    bytes_per_window: self
                        .context
                        .expert_bytes
                        .map(|_| per_window(t.reloaded_bytes as f64)),
                    move_seconds_per_window: self
                        .context
                        .expert_bytes
                        .zip(self.context.link_bandwidth)
                        .map(|_| per_window(t.move_seconds)),
                    plans: t.plans,
                    replans: t.replans,
                    plan_ms: if t.plans > 0 {
                        t.plan_ms / t.plans as f64
                    } else {
                        0.0
                    },
                    plan_ms_max: t.plan_ms_max,
                    worst_window: t.worst.map(|w| w.0),
                    worst_imbalance: t.worst.map(|w| w.1),
                    eplb_at_equal_budget: None,
                    vs_eplb_at_equal_budget: None,
                    covisit_served: (t.covisit_scored > 0)
                        .then(|| t.covisit_served / t.covisit_scored as f64),
                    transfers_per_token: (t.transfers_known > 0).then(|| {
                        let known = t.transfers_known as f64;
                        TrafficRange {
                            low: t.transfers_low / known,
                            high: t.transfers_high / known,
                            estimate: t.transfers_estimate.map(|sum| sum / known),
                        }
                    }),
                    transfers_known_windows: t.transfers_known,
                }
            })
            .collect();
        let baseline: Vec<bool> = self
            .runs
            .iter()
            .map(|r| Some(&r.spec.name) == self.eplb_name().as_ref())
            .collect();
        let is_eplb: Vec<bool> = self.runs.iter().map(|r| r.spec.planner.is_eplb()).collect();
        equal_budget::fill(&mut policies, &baseline, &is_eplb);
        Summary {
            windows: self.windows,
            scored_windows: scored,
            total_slots,
            expert_bytes: self.context.expert_bytes,
            link_bandwidth: self.context.link_bandwidth,
            policies,
        }
    }

    /// The first EPLB policy's name: its runs form the baseline curve.
    fn eplb_name(&self) -> Option<String> {
        self.runs
            .iter()
            .find(|r| r.spec.planner.is_eplb())
            .map(|r| r.spec.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Generator, TraceShape};
    use ballast_solver::{score, Topology};
    use proptest::prelude::*;

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 3, "num_logical_experts": 16, "num_groups": 4,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 5, "expert_bytes": 1000}"#,
        )
        .unwrap()
    }

    fn context() -> Context {
        Context {
            topology: topology(),
            expert_bytes: Some(1000),
            link_bandwidth: Some(500.0),
        }
    }

    fn specs(texts: &[&str]) -> Vec<PolicySpec> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn windows(n: usize, seed: u64) -> Vec<LoadMatrix> {
        let shape = TraceShape {
            assignments_per_layer: 1e4,
            seed,
            ..TraceShape::default()
        };
        let mut generator = Generator::new(&topology(), shape);
        (0..n).map(|_| generator.next_window()).collect()
    }

    fn replay(
        texts: &[&str],
        sweep: &[Interval],
        loads: &[LoadMatrix],
    ) -> (Vec<WindowRecord>, ReportData) {
        let mut replay = Replay::new(context(), &specs(texts), sweep);
        let mut records = Vec::new();
        for (i, load) in loads.iter().enumerate() {
            records.extend(replay.push(i as u64, load.clone()).unwrap());
        }
        let (rest, data) = replay.finish().unwrap();
        records.extend(rest);
        (records, data)
    }

    #[test]
    fn each_plan_is_scored_on_the_window_after_the_one_it_was_made_from() {
        let loads = windows(5, 3);
        let (records, data) = replay(&["eplb"], &[Interval::ONE], &loads);
        // eplb every window, plus its never-re-planned run.
        assert_eq!(data.summary.policies.len(), 2);
        assert_eq!(records.len(), 10);
        let every: Vec<&WindowRecord> = records.iter().filter(|r| r.run == 0).collect();
        assert_eq!(every[0].experienced_imbalance, None);
        for i in 1..5 {
            let plan = ballast_solver::eplb::rebalance_experts(&topology(), &loads[i - 1]).unwrap();
            let expected = score::score(&topology(), &loads[i], &plan).model_imbalance;
            assert_eq!(every[i].experienced_imbalance, Some(expected), "window {i}");
        }
        let never: Vec<&WindowRecord> = records.iter().filter(|r| r.run == 1).collect();
        let first = ballast_solver::eplb::rebalance_experts(&topology(), &loads[0]).unwrap();
        let expected = score::score(&topology(), &loads[4], &first).model_imbalance;
        assert_eq!(never[4].experienced_imbalance, Some(expected));
        assert!(never.iter().all(|r| !r.replanned));
    }

    #[test]
    fn intervals_set_when_plans_are_made_and_reloads_are_counted_with_bytes() {
        let loads = windows(9, 4);
        let (records, data) = replay(
            &["optimal"],
            &[Interval::parse_list("4").unwrap()[0]],
            &loads,
        );
        let planned: Vec<u64> = records
            .iter()
            .filter(|r| r.planned)
            .map(|r| r.window)
            .collect();
        assert_eq!(planned, [0, 4, 8]);
        let summary = &data.summary.policies[0];
        assert_eq!(summary.plans, 2);
        let reloaded: u64 = records.iter().map(|r| r.reloaded_slots).sum();
        assert_eq!(
            summary.replans,
            records.iter().filter(|r| r.replanned).count() as u64
        );
        let expected = reloaded as f64 / 8.0 / data.summary.total_slots as f64;
        assert!((summary.reloaded_slots_per_window - expected).abs() < 1e-12);
        for r in records.iter().filter(|r| r.replanned) {
            assert_eq!(r.reloaded_bytes, Some(r.reloaded_slots * 1000));
            assert!(r.move_seconds.unwrap() > 0.0);
        }
    }

    #[test]
    fn the_service_policy_publishes_the_first_plan_and_then_only_paying_ones() {
        let loads = windows(6, 5);
        let (records, data) = replay(
            &["service", "service:threshold=1,hysteresis=0"],
            &[Interval::ONE],
            &loads,
        );
        assert!(records.iter().filter(|r| r.run == 0).all(|r| r.planned));
        // A gain of 1.0 never pays: the first plan stays in force.
        assert_eq!(data.summary.policies[1].replans, 0);
        assert!(data.hottest.is_some());
    }

    #[test]
    fn windows_must_come_in_order_and_at_least_one() {
        let loads = windows(2, 6);
        let mut replay = Replay::new(context(), &specs(&["static"]), &[Interval::ONE]);
        replay.push(5, loads[0].clone()).unwrap();
        assert_eq!(
            replay.push(5, loads[1].clone()).unwrap_err(),
            ReplayError::OutOfOrder {
                window: 5,
                previous: 5
            }
        );
        let empty = Replay::new(context(), &specs(&["static"]), &[Interval::ONE]);
        assert_eq!(empty.finish().unwrap_err(), ReplayError::Empty);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]

        /// No node-local plan beats a window's own node-local bound, and
        /// routing optimally never does worse than the plan's split.
        #[test]
        fn experienced_is_never_below_the_oracle(seed in 0u64..1000, n in 2usize..7) {
            let loads = windows(n, seed);
            let (records, _) = replay(&["eplb", "greedy", "optimal:previous"], &[Interval::ONE], &loads);
            for r in records {
                if let (Some(even), Some(routed)) =
                    (r.experienced_imbalance, r.experienced_imbalance_optimal_routing)
                {
                    prop_assert!(routed <= even + 1e-9);
                    prop_assert!(routed >= r.oracle_imbalance - 1e-9);
                }
            }
        }
    }
}
