//! The `stats` object of a plan, computed from the finished plan with the
//! same scoring code `ballast score` uses, so the two always agree.

use rayon::prelude::*;
use serde::Serialize;

use super::policy::{Placement, Policy, Split};
use crate::load::LoadMatrix;
use crate::migration;
use crate::plan::Plan;
use crate::routing;
use crate::score::{self, LayerScore, Score};
use crate::tolerance;
use crate::topology::Topology;

/// How a layer's plan was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerStatus {
    /// Proven optimal under the plan's rules.
    Optimal,
    /// An exact model ran out of time; the best plan found is returned.
    TimeLimit,
    /// Produced by a heuristic, no optimality proof.
    Heuristic,
}

/// Per-layer figures in `stats.layers`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStats {
    pub imbalance: f64,
    /// Lower bound on this layer's imbalance under the same rules.
    pub bound: f64,
    pub status: LayerStatus,
    /// The imbalance the planner claims for the layer (the plan never
    /// scores above it).
    pub objective: f64,
    /// Proven gap: `imbalance / bound - 1`.
    pub gap: f64,
    /// Wall time spent on the layer (its share of the run for greedy).
    pub solve_ms: f64,
}

/// The `stats` object a plan file carries (SPEC fixes the first five fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStats {
    /// Written as the policy's name.
    pub policy: Policy,
    pub solve_ms: f64,
    pub model_imbalance: f64,
    /// Model-level lower bound (Σ layer bound loads / Σ ideal loads).
    pub bound: f64,
    pub placement: Placement,
    pub split: Split,
    pub mean_layer_imbalance: f64,
    pub max_layer_imbalance: f64,
    pub same_gpu_duplicates: usize,
    /// Experts copied onto GPUs that did not hold them (with a previous plan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrations: Option<usize>,
    /// `migrations × expert_bytes`, when the topology gives `expert_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_moved: Option<u64>,
    /// How a migration-aware re-plan compares with its alternatives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replan: Option<ReplanStats>,
    /// The same placement with each layer's load routed optimally among the
    /// replicas (`score --routing optimal`): what per-batch routing reaches.
    pub optimal_routing: RoutedStats,
    pub layers: Vec<LayerStats>,
}

/// `stats.optimal_routing`: imbalance figures under the best routing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutedStats {
    pub model_imbalance: f64,
    pub mean_layer_imbalance: f64,
    pub max_layer_imbalance: f64,
}

/// What the planner knows about one layer of its run.
pub(super) struct LayerFacts {
    /// Lower bound on the largest GPU load it planned against.
    pub bound_load: f64,
    /// The largest GPU load the planner claims; `None` when it claims
    /// nothing beyond the plan itself.
    pub objective_load: Option<f64>,
    /// How the layer was solved; `None` lets the bound decide (optimal
    /// when met, heuristic otherwise).
    pub status: Option<LayerStatus>,
    pub ms: f64,
}

/// What a migration-aware re-plan knows beyond the plan.
pub(super) struct ReplanFacts {
    pub tolerance: f64,
    /// Per layer, the previous plan's largest GPU load under this load.
    pub stale_loads: Vec<f64>,
    /// Per layer, a fresh plan's largest GPU load.
    pub fresh_loads: Vec<f64>,
    /// `(transfer seconds, saved seconds)` under pricing.
    pub price: Option<(f64, f64)>,
    /// Fewest migrations any re-plan within the tolerance can make.
    pub migrations_bound: Option<usize>,
}

/// `stats.replan`: the re-plan against keeping the previous plan and
/// against planning afresh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplanStats {
    pub balance_tolerance: f64,
    /// Model imbalance of the previous plan under this load.
    pub previous_imbalance: f64,
    /// Model imbalance of a fresh plan (the best the planner found).
    pub fresh_imbalance: f64,
    /// With the tolerance (not pricing): no plan under the same rules whose
    /// model imbalance is within the tolerance of the fresh plan's migrates
    /// fewer experts than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrations_bound: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<PriceStats>,
}

/// `stats.replan.price`: is this re-plan worth it?
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceStats {
    /// Seconds to copy the moved experts over the link.
    pub transfer_s: f64,
    /// Compute seconds the new balance saves over the serving horizon.
    pub saved_s: f64,
    pub worth_it: bool,
}

/// What the planner knows about its own run.
pub(super) struct Run<'a> {
    pub policy: Policy,
    pub placement: Placement,
    pub split: Split,
    pub solve_ms: f64,
    pub layers: &'a [LayerFacts],
    pub previous: Option<&'a Plan>,
    pub replan: Option<ReplanFacts>,
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
        .zip(run.layers)
        .map(|(layer, facts)| {
            let bound = LayerScore::new(facts.bound_load, layer.ideal_load).imbalance;
            let objective = facts.objective_load.map_or(layer.imbalance, |o| {
                LayerScore::new(o, layer.ideal_load).imbalance
            });
            let met = layer.imbalance <= bound * (1.0 + tolerance::REACHED);
            LayerStats {
                imbalance: layer.imbalance,
                bound,
                status: match facts.status {
                    _ if met => LayerStatus::Optimal,
                    Some(LayerStatus::Optimal) | None => LayerStatus::Heuristic,
                    Some(status) => status,
                },
                objective,
                gap: if bound > 0.0 {
                    layer.imbalance / bound - 1.0
                } else {
                    0.0
                },
                solve_ms: facts.ms,
            }
        })
        .collect();
    let migrations = run
        .previous
        .map(|previous| migration::migrations(topology, previous, plan));
    let model = |loads: &[f64]| LayerScore::new(loads.iter().sum(), ideal_sum).imbalance;
    let bound_loads: Vec<f64> = run.layers.iter().map(|l| l.bound_load).collect();
    // A co-visit plan's shares are already the best routing under its caps;
    // routing that ignores them would break the rule.
    let routed = if run.placement == Placement::Covisit {
        score.clone()
    } else {
        routing::score_optimal(topology, load, plan)
    };
    PlanStats {
        policy: run.policy,
        solve_ms: run.solve_ms,
        model_imbalance: score.model_imbalance,
        bound: model(&bound_loads),
        placement: run.placement,
        split: run.split,
        mean_layer_imbalance: score.mean_layer_imbalance,
        max_layer_imbalance: score.max_layer_imbalance,
        same_gpu_duplicates: score.same_gpu_duplicates,
        bytes_moved: migrations
            .zip(topology.expert_bytes())
            .map(|(m, bytes)| m as u64 * bytes),
        migrations,
        replan: run.replan.map(|r| ReplanStats {
            balance_tolerance: r.tolerance,
            previous_imbalance: model(&r.stale_loads),
            fresh_imbalance: model(&r.fresh_loads),
            migrations_bound: r.migrations_bound,
            price: r.price.map(|(transfer_s, saved_s)| PriceStats {
                transfer_s,
                saved_s,
                worth_it: saved_s > transfer_s,
            }),
        }),
        optimal_routing: RoutedStats {
            model_imbalance: routed.model_imbalance,
            mean_layer_imbalance: routed.mean_layer_imbalance,
            max_layer_imbalance: routed.max_layer_imbalance,
        },
        layers,
    }
}
