//! Dynamic redundancy: choose which replicas are active (at most `A` per
//! GPU) and route to them, jointly optimal.
//!
//! ## Why a search
//! With a cap on the distinct experts each GPU serves, the problem contains
//! packing splittable items into bins holding at most `A` kinds each (every
//! GPU hosting every expert), which is NP-hard in general; no flow
//! formulation captures it, so this is branch and bound with exact bounds.
//!
//! ## The search
//! Every (expert, GPU) pair is *free*, *on* or *off*. A node's lower bound
//! is the exact whole-token routing over the pairs not switched off — the
//! budget relaxed, which can only help — computed by the same solver as
//! [`Router::route`](super::Router::route). That routing is then made
//! sparse without changing its value ([`basis`](super::basis): cycle
//! cancelling and pivots towards the budgets); if the replicas it uses,
//! plus those switched on, fit every GPU's budget, the node is solved
//! exactly at its bound. On the sample data this settles the DeepSeek-like
//! case (16 hosted, 9 active) at the root or within a few nodes. Otherwise
//! a GPU over budget is picked and its free pair with the least flow is
//! branched on: off first (drop the replica that matters least), then on.
//! Propagation switches off the free pairs of a GPU whose budget is used
//! up and switches on the last usable replica of an expert. A node whose
//! bound reaches the incumbent is pruned.
//!
//! Incumbents: the better of a caller's warm start (e.g. the previous
//! batch's activation) and an assignment of every expert to one GPU within
//! budget (a bipartite b-matching, which also decides feasibility); then the
//! first depth-first descent; then a local search driven by the routing's
//! certificate: a better activation must let an expert confined to the
//! bottleneck set use a replica outside it, so only such swaps are tried.
//!
//! Independent parts of the layer (the nodes of a node-local plan) are
//! searched separately; a part stops as soon as it is no worse than the
//! largest root bound of all parts, which bounds the layer. A part the
//! search leaves unproven goes to an exact MILP on HiGHS
//! ([`exact`](super::exact)) for at most [`SearchLimits::exact_time`]:
//! first "is the budget-free bound reachable?", then "is anything better
//! than the incumbent?", each answer routed exactly or raising the bound.
//!
//! ## Cost
//! Each node costs one routing of the part and its sparsification
//! (microseconds). The first descent takes at most one node per replica;
//! the rest is capped by [`SearchLimits::max_nodes`] and exponential in the
//! worst case, and the MILP by [`SearchLimits::exact_time`]. The result says
//! how far from proven it is ([`BudgetRouting::lower_bound`]).

mod api;
mod bounds;
mod branch;
mod incumbent;
mod layer;
mod parts;
mod route;
mod settle;
mod state;

pub use api::{BudgetRouting, SearchLimits};
pub(crate) use layer::search;
pub(crate) use route::route_active;

#[cfg(test)]
mod tests {
    use crate::routing::{Router, RoutingError, SearchLimits};
    use crate::{Plan, Topology};

    fn router(topology: &str, row: Vec<u32>) -> Router {
        let t = Topology::from_json(topology).unwrap();
        let p = Plan::new(vec![row], None, &t).unwrap();
        Router::new(&t, &p, 0).unwrap()
    }

    const THREE_GPUS: &str = r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 1,
        "num_nodes": 1, "gpus_per_node": 3, "slots_per_gpu": 3}"#;

    #[test]
    fn budget_forces_a_choice() {
        // GPU0: e0 e1 e2 | GPU1: e0 e1 e3 | GPU2: e2 e3 e0
        let mut r = router(THREE_GPUS, vec![0, 1, 2, 0, 1, 3, 2, 3, 0]);
        let tokens = [12, 6, 6, 6];
        let free = r
            .route_with_budget(&tokens, 3, None, SearchLimits::default())
            .unwrap();
        assert_eq!(free.routing.max_load(), 10.0);
        assert!(free.is_proven_optimal());
        // Two active per GPU: 4 experts need 4 of the 6 activations, and the
        // best is e.g. GPU0 {e0, e1}, GPU1 {e0, e3}, GPU2 {e2, e3}: 10 each.
        let two = r
            .route_with_budget(&tokens, 2, None, SearchLimits::default())
            .unwrap();
        assert!(two.is_proven_optimal());
        assert_eq!(two.routing.max_load(), 10.0);
        // One active per GPU: each GPU serves one expert, but there are four.
        assert!(matches!(
            r.route_with_budget(&tokens, 1, None, SearchLimits::default()),
            Err(RoutingError::BudgetInfeasible { budget: 1 })
        ));
        // With e3 idle, one each works: e0 alone on a GPU, e1 and e2 on the others.
        let one = r
            .route_with_budget(&[12, 6, 6, 0], 1, None, SearchLimits::default())
            .unwrap();
        assert!(one.is_proven_optimal());
        assert_eq!(one.routing.max_load(), 12.0);
        for gpu in one.active.chunks(3) {
            assert!(gpu.iter().filter(|&&a| a).count() <= 1);
        }
    }

    #[test]
    fn warm_start_is_never_lost() {
        let mut r = router(THREE_GPUS, vec![0, 1, 2, 0, 1, 3, 2, 3, 0]);
        let tokens = [12, 6, 6, 6];
        // GPU0 {e0, e1}, GPU1 {e0, e3}, GPU2 {e2, e3}: optimal at 10.
        let start = [true, true, false, true, false, true, true, true, false];
        let none = SearchLimits {
            max_nodes: 0,
            exact_time: std::time::Duration::ZERO,
        };
        let warm = r.route_with_budget(&tokens, 2, Some(&start), none).unwrap();
        assert_eq!(warm.routing.max_load(), 10.0);
        assert!(warm.is_proven_optimal());
        // A start over budget is ignored, not trusted.
        let over = [true; 9];
        let result = r.route_with_budget(&tokens, 2, Some(&over), none).unwrap();
        for gpu in result.active.chunks(3) {
            assert!(gpu.iter().filter(|&&a| a).count() <= 2);
        }
        assert!(matches!(
            r.route_with_budget(&tokens, 2, Some(&[true; 4]), none),
            Err(RoutingError::Shape { .. })
        ));
    }

    #[test]
    fn without_spare_activations_no_expert_splits() {
        // Both GPUs host e0 and e1; one active each, so neither splits: the
        // heavy expert alone bounds the load (the budget-free bound is 6).
        let two = r#"{"num_layers": 1, "num_logical_experts": 2, "num_groups": 1,
            "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 2}"#;
        let mut r = router(two, vec![0, 1, 0, 1]);
        let none = SearchLimits {
            max_nodes: 0,
            exact_time: std::time::Duration::ZERO,
        };
        let outcome = r.route_with_budget(&[10, 2], 1, None, none).unwrap();
        assert_eq!(outcome.lower_bound, 10.0);
        assert_eq!(outcome.routing.max_load(), 10.0);
        assert!(outcome.is_proven_optimal());
    }

    #[test]
    fn sole_hosts_over_budget_are_reported() {
        // GPU0 is the only host of e1 and e2.
        let mut r = router(THREE_GPUS, vec![0, 1, 2, 0, 3, 3, 0, 3, 3]);
        assert!(matches!(
            r.route_with_budget(&[1, 1, 1, 1], 1, None, SearchLimits::default()),
            Err(RoutingError::BudgetTooSmall {
                gpu: 0,
                needed: 2,
                budget: 1
            })
        ));
    }
}
