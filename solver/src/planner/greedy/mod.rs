//! The greedy planner: one layer at a time, fast enough to run every window.
//!
//! Hierarchical placement first splits the groups among the nodes with the
//! split that reaches the node-local bound ([`crate::bound`]; exact up to 20
//! groups, greedy beyond); global placement treats the cluster as one node.
//! Inside each node, busiest node first:
//! 1. **replicate**: water-filling replica counts (optimal for the heaviest
//!    replica, [`Replication`]), at most one replica per GPU when speeds are
//!    equal;
//! 2. **pack**: cardinality-aware LPT without same-GPU duplicates
//!    ([`pack`]), then a repair pass for duplicates LPT could not avoid;
//! 3. **refine**: swaps and replica-count moves until the busiest GPU reaches
//!    the layer's bound (or the level a busier node already ended at: the
//!    layer's imbalance cannot go below it) or nothing helps
//!    ([`local_search`]).

mod local_search;
mod pack;

use crate::bound::{self, NodeSplit, Replication, SplitScratch, SplitSetup};
use crate::topology::Topology;

use local_search::Search;
use pack::Packing;

/// How replicas may be spread.
#[derive(Debug)]
pub(crate) struct Greedy<'t> {
    topology: &'t Topology,
    /// `Some` for hierarchical placement.
    split: Option<SplitSetup>,
}

/// One planned layer: its `phy2log` row and the bound it was planned against.
#[derive(Debug, Clone)]
pub(crate) struct LayerPlan {
    pub phy2log: Vec<u32>,
    /// Lower bound on the largest GPU load under the same placement rule.
    pub bound_load: f64,
}

/// Per-thread buffers, reused across layers.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    replication: Replication,
    split: SplitScratch,
    packing: Packing,
    search: Search,
    experts: Vec<u32>,
    weights: Vec<f64>,
}

impl<'t> Greedy<'t> {
    /// A hierarchical planner, or `None` when `K % N != 0`.
    pub(crate) fn hierarchical(topology: &'t Topology) -> Option<Self> {
        SplitSetup::new(topology).map(|setup| Greedy {
            topology,
            split: Some(setup),
        })
    }

    /// A planner that may put any replica anywhere.
    pub(crate) fn global(topology: &'t Topology) -> Self {
        Greedy {
            topology,
            split: None,
        }
    }

    /// Plans one layer for per-expert load `row`.
    pub(crate) fn plan_layer(&self, row: &[f64], scratch: &mut Scratch) -> LayerPlan {
        let t = self.topology;
        let even = bound::even_split_load(t, row, &mut scratch.replication);
        let mut phy2log = vec![0u32; t.num_slots()];
        let Some(setup) = &self.split else {
            scratch.experts.clear();
            scratch.experts.extend(0..t.num_logical_experts() as u32);
            scratch.weights.clear();
            scratch.weights.extend_from_slice(row);
            // The even-split bound just replicated this row over all slots.
            place(
                t.gpu_speed(),
                t.slots_per_gpu(),
                even,
                &mut phy2log,
                scratch,
                true,
            );
            return LayerPlan {
                phy2log,
                bound_load: even,
            };
        };
        let NodeSplit {
            node_of_group,
            bound_load,
        } = bound::node_local_split(
            t,
            setup,
            row,
            even,
            &mut scratch.replication,
            &mut scratch.split,
        );
        let per_group = t.experts_per_group();
        let (gpus, slots) = (t.gpus_per_node(), t.slots_per_node());
        // Busiest nodes first: once one ends above the bound, the others
        // need not get below the level it reached.
        let mut node_load = vec![0.0; t.num_nodes()];
        for (g, &n) in node_of_group.iter().enumerate() {
            node_load[n as usize] += row[g * per_group..(g + 1) * per_group].iter().sum::<f64>();
        }
        let speed = |n: usize| t.gpu_speed()[n * gpus..(n + 1) * gpus].iter().sum::<f64>();
        let mut nodes: Vec<(f64, usize)> = (0..t.num_nodes())
            .map(|n| (node_load[n] / speed(n), n))
            .collect();
        nodes.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut target = bound_load;
        for (_, node) in nodes {
            scratch.experts.clear();
            scratch.weights.clear();
            for (g, _) in node_of_group
                .iter()
                .enumerate()
                .filter(|(_, &n)| n as usize == node)
            {
                let experts = g * per_group..(g + 1) * per_group;
                scratch.experts.extend(experts.clone().map(|e| e as u32));
                scratch.weights.extend_from_slice(&row[experts]);
            }
            let reached = place(
                &t.gpu_speed()[node * gpus..(node + 1) * gpus],
                t.slots_per_gpu(),
                target,
                &mut phy2log[node * slots..(node + 1) * slots],
                scratch,
                false,
            );
            target = target.max(reached);
        }
        LayerPlan {
            phy2log,
            bound_load,
        }
    }
}

/// Places `scratch.experts` (loads `scratch.weights`) on GPUs with `speeds`
/// and writes their slots to `out`; local search stops at `target`. With
/// `replicated`, `scratch.replication` already holds uncapped counts for
/// these weights and slots, kept when they respect the cap. Returns the
/// busiest GPU's relative load.
fn place(
    speeds: &[f64],
    slots_per_gpu: usize,
    target: f64,
    out: &mut [u32],
    scratch: &mut Scratch,
    replicated: bool,
) -> f64 {
    let Scratch {
        replication,
        packing,
        search,
        experts,
        weights,
        ..
    } = scratch;
    // With equal speeds an expert never needs two replicas on one GPU (its
    // load spread over every GPU is at most the mean), so cap its replicas at
    // the GPU count; unequal speeds may want a fast GPU to take two.
    let uniform = speeds.iter().all(|&s| s == speeds[0]);
    let cap = if uniform {
        speeds.len() as u32
    } else {
        u32::MAX
    };
    // Counts that never reached the cap are what the capped run would give.
    if !(replicated && replication.counts().iter().all(|&c| c <= cap)) {
        replication.run_capped(weights, out.len(), cap);
    }
    packing.reset(weights, replication.counts(), speeds, slots_per_gpu);
    packing.lpt();
    if packing.forced_duplicates {
        packing.repair_duplicates();
    }
    local_search::improve(packing, target, search);
    for (slot, &local) in out.iter_mut().zip(&packing.slot) {
        *slot = experts[local as usize];
    }
    packing.busiest().1
}

/// Places `experts` with loads `weights` (at most `out.len()` of them) on
/// GPUs with `speeds`, filling every slot of `out` (spare slots replicate
/// the heaviest); local search stops at `target`. Returns the busiest GPU's
/// relative load. The co-visit planner packs each node with it.
pub(crate) fn place_experts(
    speeds: &[f64],
    slots_per_gpu: usize,
    target: f64,
    experts: &[u32],
    weights: &[f64],
    out: &mut [u32],
    scratch: &mut Scratch,
) -> f64 {
    scratch.experts.clear();
    scratch.experts.extend_from_slice(experts);
    scratch.weights.clear();
    scratch.weights.extend_from_slice(weights);
    place(speeds, slots_per_gpu, target, out, scratch, false)
}
