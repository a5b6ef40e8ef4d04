//! Lower bounds on imbalance: no plan under the same rules can do better.
//!
//! Both bounds are in GPU-load units (tokens / speed) per layer and are
//! reported as imbalance (bound / ideal load), like the plans they judge.
//!
//! - **Even split** (any placement): the busiest GPU carries at least the
//!   speed-weighted mean, `total / total_speed`, and at least the heaviest
//!   replica, which is at best `min over replica counts of max_e w_e / c_e`
//!   (water-filling, `Replication`), on a GPU no faster than the fastest.
//! - **Node-local** (every group's replicas on the group's one node, possible
//!   when `K % N == 0`): the same two terms inside every node, for the best
//!   equal-size group→node split, found exactly up to 20 groups (`split`
//!   explains how); beyond that, weaker terms that hold for every split.
//!
//! At model level a bound is `Σ_l bound load / Σ_l ideal load`, the same
//! aggregation as model imbalance.
//!
//! Re-plans get a third bound, on migrations rather than load
//! (`bound::migrations`): the fewest experts any plan within a load budget must
//! copy, given the plan in force.

mod kept_gpus;
mod migrations;
mod replicas;
mod split;

use rayon::prelude::*;
use serde::Serialize;

use crate::load::LoadMatrix;
use crate::score::{ideal_load, LayerScore};
use crate::topology::Topology;

pub(crate) use migrations::{replan_migrations, ReplanBoundInput};
pub(crate) use replicas::Replication;
pub(crate) use split::{NodeSplit, SplitScratch, SplitSetup};

/// One layer's bounds, as imbalance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerBounds {
    pub even_split: f64,
    /// `None` when node-local placement is impossible (`K % N != 0`).
    pub node_local: Option<f64>,
    /// Under the co-visit rule ([`crate::covisit`]); `None` unless the load
    /// carries co-visit counts and groups divide evenly among nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covisit: Option<f64>,
}

/// A model's bounds, as imbalance (`Σ bound loads / Σ ideal loads`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelBounds {
    pub even_split: f64,
    /// `None` when node-local placement is impossible (`K % N != 0`).
    pub node_local: Option<f64>,
    /// False when the topology has too many groups for the exact group→node
    /// split; `node_local` is then a weaker (still valid) bound.
    pub node_split_exact: bool,
    /// Under the co-visit rule ([`crate::covisit`]); `None` unless the load
    /// carries co-visit counts and groups divide evenly among nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covisit: Option<f64>,
    pub layers: Vec<LayerBounds>,
}

/// Lower bound on one layer's largest GPU load under any placement.
pub(crate) fn even_split_load(
    topology: &Topology,
    row: &[f64],
    replication: &mut Replication,
) -> f64 {
    let max_speed = topology.gpu_speed().iter().copied().fold(0.0, f64::max);
    let max_replica = replication.run(row, topology.num_slots());
    ideal_load(topology, row).max(max_replica / max_speed)
}

/// The GPUs a plan may load, as the bounds see them: a down GPU holds no
/// load, so its speed leaves the mean term and its slots the replication.
#[derive(Debug, Clone)]
pub(crate) struct LiveGpus {
    /// One flag per GPU: true when it is down.
    pub down: Vec<bool>,
    speed_sum: f64,
    max_speed: f64,
    slots: usize,
}

impl LiveGpus {
    /// `down` lists GPUs of `topology` (checked by the caller; repeats are
    /// harmless).
    pub(crate) fn new(topology: &Topology, down: &[usize]) -> Self {
        let mut flags = vec![false; topology.num_gpus()];
        for &gpu in down {
            flags[gpu] = true;
        }
        let live = || {
            topology
                .gpu_speed()
                .iter()
                .zip(&flags)
                .filter(|(_, d)| !**d)
                .map(|(&s, _)| s)
        };
        LiveGpus {
            speed_sum: live().sum(),
            max_speed: live().fold(0.0, f64::max),
            slots: live().count() * topology.slots_per_gpu(),
            down: flags,
        }
    }

    /// Lower bound on one layer's largest GPU load under any placement that
    /// loads only these GPUs: [`even_split_load`] over the live ones.
    pub(crate) fn even_split_load(&self, row: &[f64], replication: &mut Replication) -> f64 {
        let total: f64 = row.iter().sum();
        let max_replica = replication.run(row, self.slots);
        (total / self.speed_sum).max(max_replica / self.max_speed)
    }
}

/// Lower bound on one layer's largest GPU load under node-local placement,
/// with the split that reaches it. Never below the even-split bound (which
/// only matters for the greedy fallback; the exact bound is already above).
pub(crate) fn node_local_split(
    topology: &Topology,
    setup: &SplitSetup,
    row: &[f64],
    even_split_load: f64,
    replication: &mut Replication,
    scratch: &mut SplitScratch,
) -> NodeSplit {
    let mut split = setup.split(row, replication, scratch);
    split.bound_load = split.bound_load.max(even_split_load);
    debug_assert_eq!(split.node_of_group.len(), topology.num_groups());
    split
}

/// Per-layer and model-level bounds of `load` on `topology` (the load must be
/// shaped for the topology, as parsing it against the topology ensures).
pub fn model_bounds(topology: &Topology, load: &LoadMatrix) -> ModelBounds {
    model_bounds_down(topology, load, &[])
}

/// [`model_bounds`] for plans that give the GPUs in `down` no load (as
/// `PlanOptions::down_gpus` asks). Imbalance stays relative to the whole
/// cluster's ideal, like the plans' scores, so a down GPU shows as a bound
/// above 1. `node_local` is `None` when some node's live slots cannot hold
/// its groups' experts. GPUs out of range are ignored.
pub fn model_bounds_down(topology: &Topology, load: &LoadMatrix, down: &[usize]) -> ModelBounds {
    let down: Vec<usize> = down
        .iter()
        .copied()
        .filter(|&g| g < topology.num_gpus())
        .collect();
    let live = LiveGpus::new(topology, &down);
    let setup = SplitSetup::live(topology, &live.down);
    // The co-visit bound needs the counts, and no GPU down (the rule's
    // planner does not plan around outages).
    let covisit_splits = (load.has_covisit() && down.is_empty())
        .then(|| crate::covisit::CovisitSplits::new(topology))
        .flatten();
    let per_layer: Vec<(f64, f64, Option<f64>, Option<f64>)> = (0..load.num_layers())
        .into_par_iter()
        .map_init(
            || (Replication::default(), SplitScratch::default()),
            |(replication, scratch), l| {
                let row = load.layer(l);
                let even = live.even_split_load(row, replication);
                let node_local = setup.as_ref().map(|setup| {
                    node_local_split(topology, setup, row, even, replication, scratch).bound_load
                });
                let covisit =
                    covisit_splits
                        .as_ref()
                        .zip(load.covisit_layer(l))
                        .map(|(splits, counts)| {
                            crate::covisit::covisit_bound_load(topology, splits, row, counts, even)
                                .0
                        });
                (ideal_load(topology, row), even, node_local, covisit)
            },
        )
        .collect();
    let ideal_sum: f64 = per_layer.iter().map(|l| l.0).sum();
    let aggregate = |sum: f64| LayerScore::new(sum, ideal_sum).imbalance;
    let even_split = aggregate(per_layer.iter().map(|l| l.1).sum());
    let node_local = setup
        .as_ref()
        .map(|_| aggregate(per_layer.iter().filter_map(|l| l.2).sum()));
    let covisit = covisit_splits
        .as_ref()
        .map(|_| aggregate(per_layer.iter().filter_map(|l| l.3).sum()));
    let layers = per_layer
        .iter()
        .map(|&(ideal, even, node_local, covisit)| LayerBounds {
            even_split: LayerScore::new(even, ideal).imbalance,
            node_local: node_local.map(|b| LayerScore::new(b, ideal).imbalance),
            covisit: covisit.map(|b| LayerScore::new(b, ideal).imbalance),
        })
        .collect();
    ModelBounds {
        even_split,
        node_local,
        node_split_exact: setup.as_ref().is_none_or(SplitSetup::is_exact),
        covisit,
        layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(text: &str) -> Topology {
        Topology::from_json(text).unwrap()
    }

    #[test]
    fn even_split_takes_mean_or_heaviest_replica() {
        // 2 GPUs x 2 slots, experts 8, 2, 1: counts (2, 1, 1) give replica 4,
        // below the mean 5.5.
        let t = topo(
            r#"{"num_layers": 1, "num_logical_experts": 3, "num_groups": 1,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 2}"#,
        );
        let load = LoadMatrix::new(vec![vec![8.0, 2.0, 1.0]], &t).unwrap();
        let b = model_bounds(&t, &load);
        assert_eq!(b.layers[0].even_split, 1.0);
        // One node: the node-local bound is the even-split bound.
        assert_eq!(b.layers[0].node_local, Some(1.0));

        // No redundant slot: expert 40 stays whole against a mean of 22.
        let t = topo(
            r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 1,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 2}"#,
        );
        let load = LoadMatrix::new(vec![vec![40.0, 2.0, 1.0, 1.0]], &t).unwrap();
        let b = model_bounds(&t, &load);
        assert!((b.even_split - 40.0 / 22.0).abs() < 1e-12);
    }

    #[test]
    fn node_local_bound_counts_the_best_split() {
        // 2 nodes x 1 GPU x 2 slots; groups of one expert: 5, 4, 3, 2.
        // Best split {5, 2} / {4, 3}: 7 per node; mean 7; ideal 7.
        let t = topo(
            r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 4,
                "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 2}"#,
        );
        let load = LoadMatrix::new(vec![vec![5.0, 4.0, 3.0, 2.0]], &t).unwrap();
        let b = model_bounds(&t, &load);
        assert_eq!(b.node_local, Some(1.0));
        assert!(b.node_split_exact);

        // Heavier first group: {9, 2} = 11 vs {4, 3} = 7; ideal 9.
        let load = LoadMatrix::new(vec![vec![9.0, 4.0, 3.0, 2.0]], &t).unwrap();
        let b = model_bounds(&t, &load);
        assert!((b.layers[0].node_local.unwrap() - 11.0 / 9.0).abs() < 1e-12);
        assert!((b.layers[0].even_split - 1.0).abs() < 1e-12);
    }

    #[test]
    fn no_node_local_bound_without_even_groups() {
        let t = topo(
            r#"{"num_layers": 1, "num_logical_experts": 3, "num_groups": 3,
                "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 2}"#,
        );
        let load = LoadMatrix::new(vec![vec![1.0, 1.0, 1.0]], &t).unwrap();
        let b = model_bounds(&t, &load);
        assert_eq!(b.node_local, None);
        assert_eq!(b.layers[0].node_local, None);
    }
}
