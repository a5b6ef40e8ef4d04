//! Planning entry point: policy choice, options, and the figures a plan carries.
//!
//! [`solve`] is what the CLI and the service call; the algorithms live in the
//! submodules (one per policy family).

use std::time::Instant;

use serde::Serialize;
use thiserror::Error;

use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::topology::Topology;

/// Which planner to run (SPEC `--policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Greedy; hierarchical when `K % N == 0`, else global.
    Greedy,
    GreedyHierarchical,
    GreedyGlobal,
    /// Exact models on decomposed subproblems, warm-started from greedy (issue 3).
    Optimal,
    OptimalHierarchical,
    OptimalGlobal,
}

impl Policy {
    pub const ALL: [Policy; 6] = [
        Policy::Greedy,
        Policy::GreedyHierarchical,
        Policy::GreedyGlobal,
        Policy::Optimal,
        Policy::OptimalHierarchical,
        Policy::OptimalGlobal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Greedy => "greedy",
            Policy::GreedyHierarchical => "greedy-hierarchical",
            Policy::GreedyGlobal => "greedy-global",
            Policy::Optimal => "optimal",
            Policy::OptimalHierarchical => "optimal-hierarchical",
            Policy::OptimalGlobal => "optimal-global",
        }
    }

    pub fn parse(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The placement rule a plan follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Every replica of a group's experts on the group's one node.
    Hierarchical,
    /// Replicas anywhere.
    Global,
}

/// How an expert's tokens are split among its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Evenly (what engines do today); the plan has no `replica_share`.
    #[default]
    Even,
    /// The plan carries `replica_share` chosen by the planner.
    Weighted,
}

/// Everything a caller can tune about one planning run.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub policy: Policy,
    pub split: Split,
    /// The plan in force; makes the planner migration-aware.
    pub previous: Option<Plan>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            policy: Policy::Greedy,
            split: Split::Even,
            previous: None,
        }
    }
}

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
}

/// The `stats` object a plan file carries (SPEC fixes the first five fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStats {
    pub policy: String,
    pub solve_ms: f64,
    pub model_imbalance: f64,
    /// Model-level lower bound (Σ layer bound loads / Σ ideal loads).
    pub bound: f64,
    pub placement: Placement,
    pub split: Split,
    pub mean_layer_imbalance: f64,
    pub max_layer_imbalance: f64,
    pub same_gpu_duplicates: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrations: Option<usize>,
    pub layers: Vec<LayerStats>,
}

/// A plan and the figures that describe it.
#[derive(Debug, Clone)]
pub struct PlanOutcome {
    pub plan: Plan,
    pub stats: PlanStats,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanError {
    #[error("policy {policy} needs num_groups ({groups}) divisible by num_nodes ({nodes})")]
    HierarchicalImpossible {
        policy: &'static str,
        groups: usize,
        nodes: usize,
    },
    #[error("the previous plan does not fit this topology: {0}")]
    PreviousMismatch(String),
}

/// Plans every layer of `load` for `topology`.
pub fn solve(
    topology: &Topology,
    load: &LoadMatrix,
    options: &PlanOptions,
) -> Result<PlanOutcome, PlanError> {
    let _started = Instant::now();
    let _ = (topology, load, options);
    todo!("greedy planner (issue 2)")
}
