//! The optimal policy: provably near-best plans that move few experts.
//!
//! A layer decomposes into independent subproblems ([`mod@unit`]) once groups
//! are given to nodes, so the policy never builds one model for a whole
//! layer (such a model does not finish in seconds with any backend).
//! Instead:
//!
//! 1. **Fresh plan** ([`fresh`]): the greedy planner's layer (the exact
//!    group→node split of the node-local bound, water-filling, LPT, swaps) is
//!    the warm start; each node is searched further
//!    ([`even_search`](fresh::even_search): swaps,
//!    2-2 swaps, replica recounts, iterated kicks) until it meets the layer's
//!    lower bound or its time share runs out. Under weighted split each node
//!    then gets its best shares from an LP, after its GPUs are tied together
//!    by load-neutral swaps, and from a warm-started pattern MILP when the LP
//!    falls short ([`weighted`](fresh::weighted)).
//! 2. **Bounds**: the node-local (or even-split) bound of [`crate::bound`]
//!    holds for both splits — with any shares some replica of an expert with
//!    `c` replicas takes at least `1/c` of its tokens — so every layer's gap is
//!    proven against it; a layer that meets its bound is reported optimal.
//! 3. **Re-plan** ([`mod@replan`]) with a previous plan: a ladder of candidates
//!    per layer (kept, the trade-off curves of keeping groups in place and of
//!    the other splits met (`replan::frontier`), repaired to several targets
//!    with the exact group model and a per-node repair, fresh and
//!    relabelled), then one choice per layer for the whole model: fewest
//!    migrations within the balance tolerance (an exact knapsack), or the
//!    best price. A proven floor on the migrations of any plan within the
//!    tolerance ([`crate::bound::replan_migrations`]) is reported beside them.
//!
//! Layers run in parallel (rayon); HiGHS runs single-threaded inside them.
//! `time_limit` is shared out by [`budget::Budget`]. What both kinds of
//! plans work on sits here ([`problem`], [`mod@unit`], [`packing`],
//! [`budget`], [`rng`]); each kind's own parts sit in [`fresh`] and
//! [`mod@replan`].

mod budget;
mod fresh;
mod packing;
mod problem;
mod replan;
mod rng;
mod unit;

use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::bound::{self, ReplanBoundInput};
use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::planner::greedy::{Greedy, Scratch};
use crate::planner::policy::{Placement, Split};
use crate::planner::stats::LayerStatus;
use crate::score;
use crate::topology::Topology;

pub use replan::MigrationPricing;

use budget::Budget;
use fresh::{FreshPlanner, LayerSolution};
use replan::{Candidate, Replanner};
use unit::Layout;

// The co-visit planner repairs its nodes with the same machinery.
pub(super) use problem::NodeProblem;
pub(super) use replan::Repairer;

/// One planning request.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    pub topology: &'a Topology,
    pub placement: Placement,
    pub split: Split,
    /// The plan in force, already checked against `topology`.
    pub previous: Option<&'a Plan>,
    /// Relative model-imbalance slack a re-plan may spend to save migrations.
    pub tolerance: f64,
    pub pricing: Option<MigrationPricing>,
    pub time_limit: Duration,
    /// The caller granted `time_limit` explicitly: spend it on the exact
    /// models that need seconds per node to pay off (the even-split model on
    /// units the searches leave above the bound, min-moves on re-plans).
    /// Without it those are skipped: measured, they rarely improve a plan
    /// within the fraction of a second a default run could give them.
    pub patient: bool,
}

/// What the policy reports per layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerReport {
    pub status: LayerStatus,
    /// Largest GPU load of the chosen plan (tokens / speed).
    pub max_load: f64,
    /// Proven lower bound on it.
    pub bound_load: f64,
    /// Wall time spent on the layer.
    pub seconds: f64,
}

/// The re-plan's verdict under pricing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PriceVerdict {
    /// Seconds to copy the moved experts over the link.
    pub transfer_s: f64,
    /// Compute seconds the new balance saves over the serving horizon,
    /// against keeping the previous plan.
    pub saved_s: f64,
}

/// Figures of a re-plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplanReport {
    pub migrations: usize,
    /// Per layer, the max GPU load the previous plan has under this load.
    pub stale_loads: Vec<f64>,
    /// Per layer, the max GPU load of the fresh plan.
    pub fresh_loads: Vec<f64>,
    pub price: Option<PriceVerdict>,
    /// Under the tolerance (not pricing): no re-plan within it migrates
    /// fewer experts ([`crate::bound::replan_migrations`]).
    pub migrations_bound: Option<usize>,
}

/// A planned model.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub phy2log: Vec<Vec<u32>>,
    pub shares: Option<Vec<Vec<f64>>>,
    pub layers: Vec<LayerReport>,
    pub replan: Option<ReplanReport>,
}

/// Plans every layer of `load` (shaped for the request's topology).
pub(crate) fn plan(request: &Request, load: &LoadMatrix) -> Outcome {
    let t = request.topology;
    let budget = Budget::new(request.time_limit);
    let layout = Layout {
        topology: t,
        placement: request.placement,
    };
    let greedy = match request.placement {
        Placement::Hierarchical | Placement::Covisit => {
            Greedy::hierarchical(t).unwrap_or_else(|| Greedy::global(t))
        }
        Placement::Global => Greedy::global(t),
    };
    let planner = FreshPlanner {
        layout,
        greedy,
        split: request.split,
        patient: request.patient,
    };
    let rows: Vec<&[f64]> = load.layers().collect();
    let layers = rows.len();
    let fraction = if request.previous.is_some() {
        fresh::FRESH_FRACTION_WITH_REPLAN
    } else {
        1.0
    };
    let fresh: Vec<(LayerSolution, f64)> = rows
        .par_iter()
        .enumerate()
        .map_init(Scratch::default, |scratch, (index, row)| {
            let started = Instant::now();
            let seconds = budget.share(layers, fraction);
            let solution = planner.plan_layer(index, row, scratch, &budget, seconds);
            (solution, started.elapsed().as_secs_f64())
        })
        .collect();
    match request.previous {
        None => finish_fresh(fresh),
        Some(previous) => replan(request, layout, &budget, &rows, previous, fresh),
    }
}

fn finish_fresh(fresh: Vec<(LayerSolution, f64)>) -> Outcome {
    let layers = fresh
        .iter()
        .map(|(s, seconds)| LayerReport {
            status: s.status,
            max_load: s.max_load,
            bound_load: s.bound_load,
            seconds: *seconds,
        })
        .collect();
    let weighted = fresh.iter().all(|(s, _)| s.shares.is_some());
    let mut phy2log = Vec::with_capacity(fresh.len());
    let mut shares = Vec::with_capacity(fresh.len());
    for (s, _) in fresh {
        phy2log.push(s.row);
        shares.push(s.shares.unwrap_or_default());
    }
    Outcome {
        phy2log,
        shares: weighted.then_some(shares),
        layers,
        replan: None,
    }
}

fn replan(
    request: &Request,
    layout: Layout,
    budget: &Budget,
    rows: &[&[f64]],
    previous: &Plan,
    fresh: Vec<(LayerSolution, f64)>,
) -> Outcome {
    let t = request.topology;
    let replanner = Replanner {
        layout,
        split: request.split,
        tolerance: request.tolerance,
        // Shared as if each layer had one curve per unit: the previous
        // split's. Layers whose group model picks other splits draw more
        // (about 1.5x the re-plan time on the samples), within the budget.
        curve_work: replan::work_per_curve(rows.len() * layout.units()),
    };
    let ladders: Vec<(Vec<Candidate>, f64)> = fresh
        .par_iter()
        .enumerate()
        .map(|(index, (solution, _))| {
            let started = Instant::now();
            let ladder =
                replanner.ladder(index, rows[index], previous.layer(index), solution, budget);
            (ladder, started.elapsed().as_secs_f64())
        })
        .collect();
    let stale_loads: Vec<f64> = (0..rows.len())
        .map(|l| score::score_layer(t, rows[l], previous, l).max_gpu_load)
        .collect();
    let (candidates, ladder_seconds): (Vec<Vec<Candidate>>, Vec<f64>) = ladders.into_iter().unzip();
    let seconds_per_migration = request.pricing.and_then(|p| {
        t.expert_bytes()
            .map(|bytes| bytes as f64 / p.link_bytes_per_s)
    });
    let priced = request.pricing.is_some() && seconds_per_migration.is_some();
    // Before the refinement, which takes whatever time is left.
    let fresh_loads: Vec<f64> = fresh.iter().map(|(s, _)| s.max_load).collect();
    let migrations_bound = (!priced).then(|| {
        let floor_loads: Vec<f64> = fresh.iter().map(|(s, _)| s.bound_load).collect();
        bound::replan_migrations(&ReplanBoundInput {
            topology: t,
            rows,
            previous,
            hierarchical: layout.placement == Placement::Hierarchical,
            even_split: request.split == Split::Even,
            floor_loads: &floor_loads,
            budget: fresh_loads.iter().sum::<f64>() * (1.0 + request.tolerance),
        })
    });
    let choice = match (request.pricing, seconds_per_migration) {
        (Some(p), Some(per)) => {
            replan::choose_priced(&candidates, &stale_loads, per, p.serve_seconds)
        }
        _ => replan::choose_within(&candidates, request.tolerance),
    };
    // A patient run polishes every chosen candidate that moves experts with
    // the exact min-moves model, in the time that is left.
    let refine_seconds = if request.patient {
        budget.share(rows.len(), 1.0)
    } else {
        0.0
    };
    let picked: Vec<Candidate> = candidates
        .into_par_iter()
        .zip(&choice)
        .enumerate()
        .map(|(l, (mut ladder, &k))| {
            // Every ladder starts with the fresh candidate, and choices index
            // into their ladder.
            let chosen = ladder.swap_remove(k.min(ladder.len() - 1));
            replanner.refine(rows[l], previous.layer(l), chosen, budget, refine_seconds)
        })
        .collect();
    let mut phy2log = Vec::with_capacity(rows.len());
    let mut shares = Vec::with_capacity(rows.len());
    let mut layers = Vec::with_capacity(rows.len());
    let mut migrations = 0;
    let mut new_sum = 0.0;
    for (((&k, chosen), ladder_s), (solution, fresh_s)) in
        choice.iter().zip(picked).zip(ladder_seconds).zip(&fresh)
    {
        migrations += chosen.migrations;
        new_sum += chosen.max_load;
        layers.push(LayerReport {
            // Only the fresh candidate carries the fresh plan's proof.
            status: if k == 0 {
                solution.status
            } else {
                LayerStatus::Heuristic
            },
            max_load: chosen.max_load,
            bound_load: solution.bound_load,
            seconds: fresh_s + ladder_s,
        });
        phy2log.push(chosen.row);
        shares.push(chosen.shares.unwrap_or_default());
    }
    let stale_sum: f64 = stale_loads.iter().sum();
    let price = match (request.pricing, seconds_per_migration) {
        (Some(p), Some(per)) => Some(PriceVerdict {
            transfer_s: migrations as f64 * per,
            saved_s: if stale_sum > 0.0 {
                p.serve_seconds * (stale_sum - new_sum) / stale_sum
            } else {
                0.0
            },
        }),
        _ => None,
    };
    Outcome {
        phy2log,
        shares: (request.split == Split::Weighted).then_some(shares),
        layers,
        replan: Some(ReplanReport {
            migrations,
            stale_loads,
            fresh_loads,
            price,
            migrations_bound,
        }),
    }
}
