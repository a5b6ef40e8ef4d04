//! Scoring a placement under the best possible routing of real-valued loads
//! (SPEC `score --routing optimal`).
//!
//! A window's load is a rate, not a batch, so tokens may split in any
//! proportion: the per-layer figure is the LP optimum of the min–max routing
//! problem, `max_B W(B) / S(B)` over GPU sets `B` (Hall's condition with real
//! capacities). It is found by the same parametric max-flow as whole-token
//! routing, in `f64`: the returned value is `W(B) / S(B)` for the set `B`
//! the search ends on, so it is a true lower bound up to one rounding, and a
//! flow carries all but a [`ROUNDING`](crate::tolerance::ROUNDING) share
//! (`1e-12`) of the load at that threshold.

use super::graph::{LayerGraph, Locality, NO_DEMAND};
use super::solve::Workspace;
use super::threshold::Fractional;
use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::score::{self, LayerScore, Score};
use crate::topology::Topology;

/// Scores `plan`'s placement with each layer's load routed optimally among
/// the replicas (the plan's `replica_share`, if any, is ignored).
///
/// `load` and `plan` must have been parsed against `topology`, as for
/// [`score::score`]; the result is never worse than `score::score` gives.
pub fn score_optimal(topology: &Topology, load: &LoadMatrix, plan: &Plan) -> Score {
    let mut amounts = Vec::new();
    let mut flows = Vec::new();
    let layers = plan
        .phy2log()
        .iter()
        .zip(load.layers())
        .map(|(row, layer_load)| {
            let graph = LayerGraph::new(topology, row, Locality::Any);
            amounts.clear();
            amounts.resize(graph.num_demands(), 0.0);
            for (e, &l) in layer_load.iter().enumerate() {
                let d = graph.expert_demand[e];
                if d != NO_DEMAND {
                    amounts[d as usize] += l;
                }
            }
            flows.clear();
            flows.resize(graph.num_edges(), 0.0);
            // A workspace caches its graph's layout: one per layer.
            let mut workspace = Workspace::<Fractional>::default();
            workspace.solve(&graph, &amounts, None, &mut flows);
            LayerScore::new(workspace.threshold, score::ideal_load(topology, layer_load))
        })
        .collect();
    Score::from_layers(
        layers,
        score::groups_off_node(topology, plan),
        score::same_gpu_duplicates(topology, plan),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(speeds: &str) -> Topology {
        Topology::from_json(&format!(
            r#"{{"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 3, "slots_per_gpu": 2 {speeds}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn balances_a_chain_of_replicas() {
        let t = topo("");
        // GPU0: e0 e1 | GPU1: e1 e2 | GPU2: e2 e3; e0 = 9, others 1.
        // Alone GPU0 holds 9; e1 and e2 drain towards GPU2: optimum 9 anyway.
        let load = LoadMatrix::new(vec![vec![9.0, 1.0, 1.0, 1.0]], &t).unwrap();
        let plan = Plan::new(vec![vec![0, 1, 1, 2, 2, 3]], None, &t).unwrap();
        let s = score_optimal(&t, &load, &plan);
        assert!((s.layers[0].max_gpu_load - 9.0).abs() < 1e-9);
        // e0 on GPU0 and GPU2: GPU1 holds at most e1 + e2 = 2, so GPUs 0
        // and 2 share e0 and e3 (10): 5 each, short of the ideal 4.
        let plan = Plan::new(vec![vec![0, 1, 1, 2, 0, 3]], None, &t).unwrap();
        let s = score_optimal(&t, &load, &plan);
        assert!((s.layers[0].max_gpu_load - 5.0).abs() < 1e-9, "{s:?}");
        assert!((s.model_imbalance - 1.25).abs() < 1e-9);
        // Even split puts 4.5 + 1 on GPU2.
        let even = score::score(&t, &load, &plan);
        assert!((even.layers[0].max_gpu_load - 5.5).abs() < 1e-9);
    }

    #[test]
    fn weighs_by_speed() {
        let t = topo(r#", "gpu_speed": [1.0, 3.0, 1.0]"#);
        // e0 on GPU0 and GPU1 with 8 tokens; e1, e2, e3 nearly empty.
        let load = LoadMatrix::new(vec![vec![8.0, 0.0, 0.0, 0.0]], &t).unwrap();
        let plan = Plan::new(vec![vec![0, 1, 0, 2, 2, 3]], None, &t).unwrap();
        let s = score_optimal(&t, &load, &plan);
        // Split 2 : 6 gives load 2 on both GPUs.
        assert!((s.layers[0].max_gpu_load - 2.0).abs() < 1e-9, "{s:?}");
    }
}
