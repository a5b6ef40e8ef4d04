//! The SPEC metrics: GPU loads, imbalance, locality, duplicates (migrations
//! are [`crate::migration`]'s).

use serde::Serialize;

use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::topology::Topology;

// Re-exported: the CLI and the service count migrations as part of a score.
pub use crate::migration::migrations;

/// How one layer of a plan does on one layer of load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LayerScore {
    /// Largest GPU load (tokens / speed).
    pub max_gpu_load: f64,
    /// Total load / total speed: the GPU load of a perfect plan.
    pub ideal_load: f64,
    /// `max_gpu_load / ideal_load` (1.0 for an empty layer).
    pub imbalance: f64,
}

impl LayerScore {
    pub fn new(max_gpu_load: f64, ideal_load: f64) -> Self {
        let imbalance = if ideal_load > 0.0 {
            max_gpu_load / ideal_load
        } else {
            1.0
        };
        LayerScore {
            max_gpu_load,
            ideal_load,
            imbalance,
        }
    }
}

/// A whole plan's figures on a load matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Σ max GPU load / Σ ideal load: the headline figure.
    pub model_imbalance: f64,
    pub mean_layer_imbalance: f64,
    pub max_layer_imbalance: f64,
    /// Groups whose experts' replicas sit on more than one node, summed over layers.
    pub groups_off_node: usize,
    /// Replicas that share a GPU with another replica of the same expert.
    pub same_gpu_duplicates: usize,
    pub layers: Vec<LayerScore>,
}

impl Score {
    /// Aggregates per-layer scores into the model figures.
    pub fn from_layers(
        layers: Vec<LayerScore>,
        groups_off_node: usize,
        same_gpu_duplicates: usize,
    ) -> Self {
        let max_sum: f64 = layers.iter().map(|l| l.max_gpu_load).sum();
        let ideal_sum: f64 = layers.iter().map(|l| l.ideal_load).sum();
        let model_imbalance = if ideal_sum > 0.0 {
            max_sum / ideal_sum
        } else {
            1.0
        };
        let n = layers.len().max(1) as f64;
        Score {
            model_imbalance,
            mean_layer_imbalance: layers.iter().map(|l| l.imbalance).sum::<f64>() / n,
            max_layer_imbalance: layers.iter().map(|l| l.imbalance).fold(1.0, f64::max),
            groups_off_node,
            same_gpu_duplicates,
            layers,
        }
    }

    /// True when every group stays on one node in every layer.
    pub fn is_node_local(&self) -> bool {
        self.groups_off_node == 0
    }
}

/// Per-GPU load of one layer: the sum of slot loads, divided by GPU speed.
pub fn gpu_loads(topology: &Topology, load: &[f64], phy2log: &[u32], shares: &[f64]) -> Vec<f64> {
    let s = topology.slots_per_gpu();
    phy2log
        .chunks_exact(s)
        .zip(shares.chunks_exact(s))
        .zip(topology.gpu_speed())
        .map(|((experts, shares), speed)| {
            experts
                .iter()
                .zip(shares)
                .map(|(&e, share)| load[e as usize] * share)
                .sum::<f64>()
                / speed
        })
        .collect()
}

/// Scores one layer of a plan.
pub fn score_layer(topology: &Topology, load: &[f64], plan: &Plan, layer: usize) -> LayerScore {
    let shares = plan.layer_shares(layer, topology.num_logical_experts());
    let loads = gpu_loads(topology, load, plan.layer(layer), &shares);
    let max = loads.iter().copied().fold(0.0, f64::max);
    LayerScore::new(max, ideal_load(topology, load))
}

/// Total load / total speed.
pub fn ideal_load(topology: &Topology, load: &[f64]) -> f64 {
    load.iter().sum::<f64>() / topology.total_speed()
}

/// Scores a plan against a load matrix (both already shaped for `topology`).
/// A plan with co-visit replicas on a load with co-visit counts is scored
/// under the co-visit rule ([`crate::covisit::score_under_rule`]).
pub fn score(topology: &Topology, load: &LoadMatrix, plan: &Plan) -> Score {
    crate::covisit::score_under_rule(topology, load, plan)
}

/// [`score`] taking every share as given (no co-visit rule).
pub(crate) fn score_plain(topology: &Topology, load: &LoadMatrix, plan: &Plan) -> Score {
    let layers = (0..topology.num_layers())
        .map(|l| score_layer(topology, load.layer(l), plan, l))
        .collect();
    Score::from_layers(
        layers,
        groups_off_node(topology, plan),
        same_gpu_duplicates(topology, plan),
    )
}

/// Σ over layers of the groups whose replicas are spread over more than one node.
pub fn groups_off_node(topology: &Topology, plan: &Plan) -> usize {
    let slots_per_node = topology.slots_per_node();
    plan.phy2log()
        .iter()
        .enumerate()
        .map(|(layer, row)| {
            let scope = plan.replica_scope().map(|s| s[layer].as_slice());
            let mut home = vec![usize::MAX; topology.num_groups()];
            let mut spread = vec![false; topology.num_groups()];
            for (slot, &e) in row.iter().enumerate() {
                if scope.is_some_and(|s| s[slot] != crate::plan::ANY_TOKEN) {
                    continue;
                }
                let group = topology.group_of_expert(e as usize);
                let node = slot / slots_per_node;
                if home[group] == usize::MAX {
                    home[group] = node;
                } else if home[group] != node {
                    spread[group] = true;
                }
            }
            spread.iter().filter(|s| **s).count()
        })
        .sum()
}

/// Σ over layers and GPUs of (replicas of an expert on the GPU − 1).
pub fn same_gpu_duplicates(topology: &Topology, plan: &Plan) -> usize {
    let s = topology.slots_per_gpu();
    let mut seen: Vec<u32> = Vec::with_capacity(s);
    let mut total = 0;
    for row in plan.phy2log() {
        for gpu in row.chunks_exact(s) {
            seen.clear();
            seen.extend_from_slice(gpu);
            seen.sort_unstable();
            total += seen.windows(2).filter(|w| w[0] == w[1]).count();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 3,
                "gpu_speed": [1.0, 2.0]}"#,
        )
        .unwrap()
    }

    #[test]
    fn scores_with_speed_and_shares() {
        let t = topo();
        let load = LoadMatrix::new(vec![vec![6.0, 3.0, 3.0, 6.0]], &t).unwrap();
        // GPU0: e0, e1, e0 -> 6 + 3 = 9; GPU1: e2, e3, e3 -> (3 + 6) / 2 = 4.5
        let plan = Plan::new(vec![vec![0, 1, 0, 2, 3, 3]], None, &t).unwrap();
        let s = score(&t, &load, &plan);
        let ideal = 18.0 / 3.0;
        assert!((s.model_imbalance - 9.0 / ideal).abs() < 1e-12);
        assert_eq!(s.same_gpu_duplicates, 2);
        assert!(s.is_node_local());

        let shares = vec![vec![0.25, 1.0, 0.75, 1.0, 0.5, 0.5]];
        let weighted = Plan::new(vec![vec![0, 1, 0, 2, 3, 3]], Some(shares), &t).unwrap();
        assert!((score(&t, &load, &weighted).layers[0].max_gpu_load - 9.0).abs() < 1e-12);
    }

    #[test]
    fn counts_migrations_and_spread() {
        let t = topo();
        let a = Plan::new(vec![vec![0, 1, 0, 2, 3, 3]], None, &t).unwrap();
        let b = Plan::new(vec![vec![1, 0, 2, 3, 3, 0]], None, &t).unwrap();
        // GPU0 {0,1,2} vs {0,0,1}: +2; GPU1 {0,3,3} vs {2,3,3}: +0
        assert_eq!(migrations(&t, &a, &b), 1 + 1);
        assert_eq!(migrations(&t, &a, &a), 0);
        assert_eq!(groups_off_node(&t, &b), 2);
    }
}
