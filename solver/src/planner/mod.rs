//! Planning entry point: policy choice, options, and the figures a plan carries.
//!
//! [`solve`] is what the CLI and the service call; the algorithms live in the
//! submodules (one per policy family).

mod greedy;
mod stats;

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use thiserror::Error;

use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::topology::Topology;

use greedy::{Greedy, LayerPlan, Scratch};

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
    /// The load matrix was not shaped for this topology.
    #[error("the load does not fit this topology: {0}")]
    LoadMismatch(String),
    /// A valid request this planner cannot serve yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The planner produced an invalid plan: a bug, reported instead of a panic.
    #[error("internal error, please report: {0}")]
    Internal(String),
}

/// Plans every layer of `load` for `topology`.
///
/// Layers are independent and planned in parallel (rayon). Optimal policies
/// run their greedy counterpart until the exact models land; `stats.policy`
/// names the policy that actually ran.
pub fn solve(
    topology: &Topology,
    load: &LoadMatrix,
    options: &PlanOptions,
) -> Result<PlanOutcome, PlanError> {
    let started = Instant::now();
    check_load(topology, load)?;
    if options.split == Split::Weighted {
        return Err(PlanError::Unsupported(
            "--split weighted needs the optimal planner (not built yet)".into(),
        ));
    }
    let previous = options
        .previous
        .as_ref()
        .map(|p| check_previous(topology, p))
        .transpose()?;
    let (ran, placement) = resolve(options.policy, topology)?;
    let greedy = match placement {
        Placement::Hierarchical => {
            Greedy::hierarchical(topology).ok_or_else(|| hierarchical_impossible(ran, topology))?
        }
        Placement::Global => Greedy::global(topology),
    };
    let rows: Vec<&[f64]> = load.layers().collect();
    let layers: Vec<LayerPlan> = rows
        .into_par_iter()
        .map_init(Scratch::default, |scratch, row| {
            greedy.plan_layer(row, scratch)
        })
        .collect();
    let bound_loads: Vec<f64> = layers.iter().map(|l| l.bound_load).collect();
    let phy2log = layers.into_iter().map(|l| l.phy2log).collect();
    let plan =
        Plan::new(phy2log, None, topology).map_err(|e| PlanError::Internal(e.to_string()))?;
    let solve_ms = started.elapsed().as_secs_f64() * 1e3;
    let stats = stats::plan_stats(
        topology,
        load,
        &plan,
        stats::Run {
            policy: ran,
            placement,
            split: options.split,
            solve_ms,
            bound_loads: &bound_loads,
            previous: previous.as_ref(),
        },
    );
    Ok(PlanOutcome { plan, stats })
}

/// The policy that runs for `policy` on `topology`, and its placement rule.
fn resolve(policy: Policy, topology: &Topology) -> Result<(Policy, Placement), PlanError> {
    let ran = match policy {
        Policy::Greedy | Policy::Optimal => Policy::Greedy,
        Policy::GreedyHierarchical | Policy::OptimalHierarchical => Policy::GreedyHierarchical,
        Policy::GreedyGlobal | Policy::OptimalGlobal => Policy::GreedyGlobal,
    };
    let placement = match ran {
        Policy::GreedyGlobal => Placement::Global,
        Policy::GreedyHierarchical if !topology.supports_hierarchical() => {
            return Err(hierarchical_impossible(policy, topology));
        }
        _ if topology.supports_hierarchical() => Placement::Hierarchical,
        _ => Placement::Global,
    };
    Ok((ran, placement))
}

fn hierarchical_impossible(policy: Policy, topology: &Topology) -> PlanError {
    PlanError::HierarchicalImpossible {
        policy: policy.name(),
        groups: topology.num_groups(),
        nodes: topology.num_nodes(),
    }
}

fn check_load(topology: &Topology, load: &LoadMatrix) -> Result<(), PlanError> {
    if load.num_layers() != topology.num_layers()
        || load.num_experts() != topology.num_logical_experts()
    {
        return Err(PlanError::LoadMismatch(format!(
            "load is {} layers x {} experts, topology has {} x {}",
            load.num_layers(),
            load.num_experts(),
            topology.num_layers(),
            topology.num_logical_experts()
        )));
    }
    Ok(())
}

/// Re-checks a previous plan against this topology (it may have been parsed
/// against another one).
fn check_previous(topology: &Topology, previous: &Plan) -> Result<Plan, PlanError> {
    Plan::new(
        previous.phy2log().to_vec(),
        previous.replica_share().map(<[Vec<f64>]>::to_vec),
        topology,
    )
    .map_err(|e| PlanError::PreviousMismatch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(groups: usize, nodes: usize) -> Topology {
        Topology::from_json(&format!(
            r#"{{"num_layers": 2, "num_logical_experts": 8, "num_groups": {groups},
                "num_nodes": {nodes}, "gpus_per_node": 2, "slots_per_gpu": 3}}"#
        ))
        .unwrap()
    }

    fn load(t: &Topology) -> LoadMatrix {
        LoadMatrix::new(
            vec![
                vec![9.0, 1.0, 4.0, 4.0, 7.0, 2.0, 3.0, 3.0],
                vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 30.0],
            ],
            t,
        )
        .unwrap()
    }

    fn options(policy: Policy) -> PlanOptions {
        PlanOptions {
            policy,
            ..PlanOptions::default()
        }
    }

    #[test]
    fn policies_resolve_to_what_ran() {
        let t = topology(4, 2);
        let l = load(&t);
        let run = |p| solve(&t, &l, &options(p)).unwrap().stats;
        assert_eq!(run(Policy::Greedy).placement, Placement::Hierarchical);
        assert_eq!(run(Policy::GreedyGlobal).placement, Placement::Global);
        let optimal = run(Policy::OptimalHierarchical);
        assert_eq!(optimal.policy, "greedy-hierarchical");
        assert_eq!(optimal.layers[0].status, LayerStatus::Heuristic);

        let odd = topology(1, 2);
        let l = load(&odd);
        assert_eq!(
            solve(&odd, &l, &options(Policy::Greedy))
                .unwrap()
                .stats
                .placement,
            Placement::Global
        );
        assert_eq!(
            solve(&odd, &l, &options(Policy::GreedyHierarchical)).unwrap_err(),
            PlanError::HierarchicalImpossible {
                policy: "greedy-hierarchical",
                groups: 1,
                nodes: 2
            }
        );
    }

    #[test]
    fn previous_plan_gives_migrations() {
        let t = topology(4, 2);
        let l = load(&t);
        let first = solve(&t, &l, &options(Policy::Greedy)).unwrap();
        assert_eq!(first.stats.migrations, None);
        let again = PlanOptions {
            previous: Some(first.plan.clone()),
            ..PlanOptions::default()
        };
        // Same load, deterministic planner: nothing moves.
        assert_eq!(solve(&t, &l, &again).unwrap().stats.migrations, Some(0));

        let other = Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 8, "num_groups": 4,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 4}"#,
        )
        .unwrap();
        let err = solve(&other, &load(&other), &again).unwrap_err();
        assert!(matches!(err, PlanError::PreviousMismatch(_)), "{err}");
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let t = topology(4, 2);
        let weighted = PlanOptions {
            split: Split::Weighted,
            ..PlanOptions::default()
        };
        assert!(matches!(
            solve(&t, &load(&t), &weighted),
            Err(PlanError::Unsupported(_))
        ));
        let other = Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 8, "num_groups": 4,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        let short = LoadMatrix::new(vec![vec![1.0; 8]], &other).unwrap();
        assert!(matches!(
            solve(&t, &short, &PlanOptions::default()),
            Err(PlanError::LoadMismatch(_))
        ));
    }
}
