//! One layer planned from scratch: the greedy plan, improved node by node.
//!
//! The greedy planner's layer (exact group→node split, water-filling,
//! LPT, swaps) is the warm start. Each node (the whole cluster under global
//! placement) is then searched further ([`even_search`]) and, under weighted
//! split, given its best shares ([`weighted::plan_node`]). Every step only
//! accepts improvements, so the result is never worse than greedy's.

mod even_model;
pub(super) mod even_search;
pub(super) mod weighted;

use even_search::Effort;

use crate::planner::greedy::{Greedy, Scratch};
use crate::planner::optimal::budget::Budget;
use crate::planner::optimal::packing::EvenPacking;
use crate::planner::optimal::unit::{Layout, Unit};
use crate::planner::policy::{Placement, Split};
use crate::planner::stats::LayerStatus;
use crate::tolerance;

/// Relative gap above which a node's descent is followed by kicks: the
/// descent alone usually ends within a few millionths of the bound, and
/// each kick costs milliseconds.
const KICK_GAP: f64 = 1e-4;

/// Kick-and-descend rounds a node's search may take, and rounds without
/// progress before it gives up.
const KICKS: usize = 8;
const PATIENCE: usize = 4;

/// Share of the run's time the fresh plans may use when a re-plan follows.
pub(crate) const FRESH_FRACTION_WITH_REPLAN: f64 = 0.5;

/// A planned layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerSolution {
    pub row: Vec<u32>,
    /// Per-slot shares under weighted split.
    pub shares: Option<Vec<f64>>,
    /// Largest GPU load (tokens / speed).
    pub max_load: f64,
    /// Lower bound on it under the same rules.
    pub bound_load: f64,
    pub status: LayerStatus,
}

/// What every layer's fresh plan shares.
pub(crate) struct FreshPlanner<'t> {
    pub layout: Layout<'t>,
    pub greedy: Greedy<'t>,
    pub split: Split,
    /// Run the exact even-split model on units left above the bound.
    pub patient: bool,
}

impl FreshPlanner<'_> {
    /// Plans layer `index` (per-expert load `row`) within its share of `budget`.
    pub(crate) fn plan_layer(
        &self,
        index: usize,
        row: &[f64],
        scratch: &mut Scratch,
        budget: &Budget,
        seconds: f64,
    ) -> LayerSolution {
        let layout = self.layout;
        let t = layout.topology;
        let s = t.slots_per_gpu();
        let start = self.greedy.plan_layer(row, scratch);
        let target = start.bound_load;
        let mut out = start.phy2log;
        let mut shares = (self.split == Split::Weighted).then(|| vec![0.0; out.len()]);
        let units = layout.units();
        let unit_seconds = seconds / units as f64;
        let mut results = Vec::with_capacity(units);
        for u in 0..units {
            let range = layout.slots(u);
            let unit = Unit::of_slots(&out[range.clone()], row);
            let problem = unit.problem(layout.speeds(u), s);
            let local = unit.local_slots(&out[range.clone()]);
            let mut packing = EvenPacking::from_slots(problem, local);
            // The descent may run past the unit's share (it is what makes
            // the plan good), never past the run's deadline.
            even_search::descend(&mut packing, target, budget.deadline());
            if packing.max_load() > target * (1.0 + KICK_GAP) {
                let effort = Effort {
                    deadline: budget.until(unit_seconds),
                    max_kicks: KICKS,
                    patience: PATIENCE,
                };
                even_search::improve(&mut packing, target, &effort, (index * 1009 + u) as u64);
            }
            let (slots, result) = match shares.as_mut() {
                None => {
                    let max_load = packing.max_load();
                    (packing.into_slots(), UnitResult::searched(max_load))
                }
                Some(shares) => {
                    let left = budget.remaining().min(unit_seconds);
                    let node = weighted::plan_node(problem, packing.into_slots(), target, left);
                    shares[range.clone()].copy_from_slice(&node.shares);
                    let result = UnitResult {
                        max_load: node.max_load,
                        modelled: true,
                        timed_out: node.timed_out,
                        dual_bound: node.bound,
                    };
                    (node.slots, result)
                }
            };
            for (dst, &e) in out[range].iter_mut().zip(&slots) {
                *dst = unit.global(e);
            }
            results.push(result);
        }
        if shares.is_none() && self.patient {
            self.model_busiest(row, &mut out, &mut results, target, budget, seconds);
        }
        let worst = (0..units)
            .max_by(|&a, &b| results[a].max_load.total_cmp(&results[b].max_load))
            .map_or(UnitResult::searched(0.0), |u| results[u]);
        // A unit's proven bound bounds the layer only when no other split
        // could do better: one unit, or one group per identical node.
        let bound_load = if self.units_bound_layer() {
            results.iter().map(|r| r.dual_bound).fold(target, f64::max)
        } else {
            target
        };
        LayerSolution {
            row: out,
            shares,
            max_load: worst.max_load,
            bound_load,
            status: status(
                worst.max_load,
                bound_load,
                worst.modelled && worst.timed_out,
            ),
        }
    }

    /// Gives the busiest unit, while it is above the bound, to the exact
    /// even-split model (each unit at most once, within the layer's time).
    fn model_busiest(
        &self,
        row: &[f64],
        out: &mut [u32],
        results: &mut [UnitResult],
        target: f64,
        budget: &Budget,
        seconds: f64,
    ) {
        let layout = self.layout;
        let s = layout.topology.slots_per_gpu();
        let started = std::time::Instant::now();
        while let Some(u) =
            (0..results.len()).max_by(|&a, &b| results[a].max_load.total_cmp(&results[b].max_load))
        {
            let left = (seconds - started.elapsed().as_secs_f64()).min(budget.remaining());
            if results[u].modelled
                || results[u].max_load <= target * (1.0 + KICK_GAP)
                || left <= 0.0
            {
                return;
            }
            results[u].modelled = true;
            let range = layout.slots(u);
            let unit = Unit::of_slots(&out[range.clone()], row);
            let problem = unit.problem(layout.speeds(u), s);
            let local = unit.local_slots(&out[range.clone()]);
            let packing = EvenPacking::from_slots(problem, local);
            let Some((table, solved)) = even_model::solve(problem, &packing, target, left) else {
                continue;
            };
            results[u].timed_out = !solved.proven;
            results[u].dual_bound = solved.dual_bound;
            if let Some(table) = table {
                results[u].max_load = EvenPacking::from_slots(problem, table.clone()).max_load();
                for (dst, &e) in out[range].iter_mut().zip(&table) {
                    *dst = unit.global(e);
                }
            }
        }
    }

    /// Whether a bound proven for one unit holds for the whole layer.
    fn units_bound_layer(&self) -> bool {
        let t = self.layout.topology;
        match self.layout.placement {
            Placement::Global => true,
            Placement::Hierarchical | Placement::Covisit => {
                let speeds = t.gpu_speed();
                let g = t.gpus_per_node();
                t.num_nodes() == 1
                    || (t.num_groups() == t.num_nodes()
                        && speeds.chunks_exact(g).all(|node| node == &speeds[..g]))
            }
        }
    }
}

/// How one unit of a layer came out.
#[derive(Debug, Clone, Copy)]
struct UnitResult {
    max_load: f64,
    /// An exact model ran on it.
    modelled: bool,
    /// That model ran out of time.
    timed_out: bool,
    /// What that model proved about the unit (0 without a model).
    dual_bound: f64,
}

impl UnitResult {
    fn searched(max_load: f64) -> Self {
        UnitResult {
            max_load,
            modelled: false,
            timed_out: false,
            dual_bound: 0.0,
        }
    }
}

/// Optimal when the bound proves it; time limit when an exact model on the
/// busiest unit ran out of time; heuristic otherwise.
pub(crate) fn status(max_load: f64, bound_load: f64, timed_out: bool) -> LayerStatus {
    if max_load <= bound_load * (1.0 + tolerance::REACHED) {
        LayerStatus::Optimal
    } else if timed_out {
        LayerStatus::TimeLimit
    } else {
        LayerStatus::Heuristic
    }
}
