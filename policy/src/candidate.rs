//! Computing a candidate plan (synchronous and CPU-bound: async callers run
//! it on a blocking pool).
//!
//! The candidate is migration-aware: the solver gets the current plan as
//! `previous`. GPUs that must be excluded go to the solver as down GPUs
//! (`PlanOptions::down_gpus`): their nodes keep their groups on the GPUs
//! left, so the plan stays node-local where the live slots allow, and their
//! slots get `replica_share = 0` while keeping the experts they had (so
//! excluding a GPU moves nothing onto it).

use std::time::Duration;

use ballast_solver::planner::PlanError;
use ballast_solver::{
    score, solve, LoadMatrix, Plan, PlanOptions, PlanStats, Policy, Split, Topology,
};
use thiserror::Error;

/// Everything a candidate needs, owned so it can move to a blocking thread.
#[derive(Debug, Clone)]
pub struct CandidateInput {
    pub topology: Topology,
    pub estimate: LoadMatrix,
    pub current: Option<Plan>,
    pub policy: Policy,
    pub split: Split,
    pub balance_tolerance: f64,
    pub time_limit: Option<Duration>,
    /// GPUs that must carry no load, ascending.
    pub excluded: Vec<usize>,
}

/// A candidate and how it compares with the current plan on the estimate.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub plan: Plan,
    /// The solver's figures.
    pub stats: PlanStats,
    pub solve_seconds: f64,
    /// Model imbalance of the candidate on the estimate.
    pub predicted: f64,
    /// Model imbalance of the current plan on the estimate.
    pub current: Option<f64>,
    /// Experts to load going from the current plan to the candidate.
    pub migrations: Option<usize>,
    /// The current plan routes load to an excluded GPU.
    pub current_uses_excluded: bool,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum CandidateError {
    #[error(transparent)]
    Solve(#[from] PlanError),
    #[error("cannot exclude {excluded} down GPU(s): the {live_slots} slots left cannot hold all {experts} experts")]
    Capacity {
        excluded: usize,
        live_slots: usize,
        experts: usize,
    },
}

pub fn build(input: CandidateInput) -> Result<Candidate, CandidateError> {
    let started = std::time::Instant::now();
    let CandidateInput {
        topology,
        estimate,
        current,
        policy,
        split,
        balance_tolerance,
        time_limit,
        excluded,
    } = input;
    let options = PlanOptions {
        policy,
        split,
        previous: current.clone(),
        time_limit,
        balance_tolerance,
        down_gpus: excluded.clone(),
        ..PlanOptions::default()
    };
    let outcome = solve(&topology, &estimate, &options).map_err(|err| match err {
        PlanError::Capacity {
            down,
            live_slots,
            experts,
        } => CandidateError::Capacity {
            excluded: down,
            live_slots,
            experts,
        },
        err => CandidateError::Solve(err),
    })?;
    let (plan, stats) = (outcome.plan, outcome.stats);
    let solve_seconds = started.elapsed().as_secs_f64();
    let predicted = score::score(&topology, &estimate, &plan).model_imbalance;
    Ok(Candidate {
        current: current
            .as_ref()
            .map(|c| score::score(&topology, &estimate, c).model_imbalance),
        migrations: current
            .as_ref()
            .map(|c| score::migrations(&topology, c, &plan)),
        current_uses_excluded: current
            .as_ref()
            .is_some_and(|c| routes_to(&topology, c, &excluded)),
        plan,
        stats,
        solve_seconds,
        predicted,
    })
}

/// True when `plan` gives any token share to a slot of an `excluded` GPU.
pub fn routes_to(topology: &Topology, plan: &Plan, excluded: &[usize]) -> bool {
    let s = topology.slots_per_gpu();
    (0..plan.num_layers()).any(|layer| {
        let shares = plan.layer_shares(layer, topology.num_logical_experts());
        excluded
            .iter()
            .any(|&gpu| shares[gpu * s..(gpu + 1) * s].iter().any(|&x| x > 0.0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 8, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap()
    }

    fn input(excluded: Vec<usize>) -> CandidateInput {
        let t = topology();
        let rows = vec![vec![8.0, 1.0, 1.0, 1.0, 4.0, 1.0, 1.0, 2.0], vec![1.0; 8]];
        CandidateInput {
            estimate: LoadMatrix::new(rows, &t).unwrap(),
            topology: t,
            current: None,
            policy: Policy::Greedy,
            split: Split::Even,
            balance_tolerance: 0.005,
            time_limit: None,
            excluded,
        }
    }

    #[test]
    fn excluded_gpus_get_no_load_and_all_experts_stay_placed() {
        let first = build(input(vec![])).unwrap();
        let mut next = input(vec![1]);
        next.current = Some(first.plan.clone());
        let c = build(next).unwrap();
        let t = topology();
        assert!(!routes_to(&t, &c.plan, &[1]));
        // GPU 1 keeps the experts it had: excluding it loads nothing onto it.
        for layer in 0..2 {
            assert_eq!(c.plan.layer(layer)[3..6], first.plan.layer(layer)[3..6]);
        }
        assert!(c.current_uses_excluded);
        assert!(c.predicted >= 1.0);
    }

    #[test]
    fn excluding_a_gpu_keeps_its_node_local_plan_node_local() {
        // 2 nodes x 2 GPUs x 3 slots, 4 experts in 2 groups: one GPU down
        // still leaves its node room for its group.
        let t = Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        let estimate = LoadMatrix::new(vec![vec![8.0, 1.0, 4.0, 2.0]], &t).unwrap();
        let input = |current, excluded| CandidateInput {
            topology: t.clone(),
            estimate: estimate.clone(),
            current,
            policy: Policy::Optimal,
            split: Split::Even,
            balance_tolerance: 0.005,
            time_limit: None,
            excluded,
        };
        let first = build(input(None, vec![])).unwrap();
        let c = build(input(Some(first.plan.clone()), vec![2])).unwrap();
        assert!(!routes_to(&t, &c.plan, &[2]));
        assert!(score::score(&t, &estimate, &c.plan).is_node_local());
        assert_eq!(c.plan.layer(0)[6..9], first.plan.layer(0)[6..9]);
    }

    #[test]
    fn refuses_when_live_capacity_is_short() {
        let err = build(input(vec![0, 1, 2])).unwrap_err();
        assert!(
            matches!(
                err,
                CandidateError::Capacity {
                    live_slots: 3,
                    experts: 8,
                    ..
                }
            ),
            "{err}"
        );
    }
}
