//! The `stats` object of a plan, computed from the finished plan with the
//! same scoring code `ballast score` uses, so the two always agree.

use rayon::prelude::*;

use super::{LayerStats, LayerStatus, Placement, PlanStats, Policy, Split};
use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::score::{self, LayerScore, Score};
use crate::topology::Topology;

/// What the planner knows about its own run.
pub(super) struct Run<'a> {
    pub policy: Policy,
    pub placement: Placement,
    pub split: Split,
    pub solve_ms: f64,
    /// Per layer, the lower bound on the largest GPU load it planned against.
    pub bound_loads: &'a [f64],
    pub previous: Option<&'a Plan>,
}

pub(super) fn plan_stats(
    topology: &Topology,
    load: &LoadMatrix,
    plan: &Plan,
    run: Run<'_>,
) -> PlanStats {
    // `score::score`, with the per-layer part spread over the rayon pool.
    let layer_scores = (0..topology.num_layers())
        .into_par_iter()
        .map(|l| score::score_layer(topology, load.layer(l), plan, l))
        .collect();
    let score = Score::from_layers(
        layer_scores,
        score::groups_off_node(topology, plan),
        score::same_gpu_duplicates(topology, plan),
    );
    let ideal_sum: f64 = score.layers.iter().map(|l| l.ideal_load).sum();
    let layers = score
        .layers
        .iter()
        .zip(run.bound_loads)
        .map(|(layer, &bound)| LayerStats {
            imbalance: layer.imbalance,
            bound: LayerScore::new(bound, layer.ideal_load).imbalance,
            status: LayerStatus::Heuristic,
        })
        .collect();
    PlanStats {
        policy: run.policy.name().to_string(),
        solve_ms: run.solve_ms,
        model_imbalance: score.model_imbalance,
        bound: LayerScore::new(run.bound_loads.iter().sum(), ideal_sum).imbalance,
        placement: run.placement,
        split: run.split,
        mean_layer_imbalance: score.mean_layer_imbalance,
        max_layer_imbalance: score.max_layer_imbalance,
        same_gpu_duplicates: score.same_gpu_duplicates,
        migrations: run
            .previous
            .map(|previous| score::migrations(topology, previous, plan)),
        layers,
    }
}
