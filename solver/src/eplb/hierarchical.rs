//! `rebalance_experts_hierarchical` for one layer: groups to nodes, replicas
//! within each node, replicas to the node's GPUs.

use super::packing::balanced_packing;
use super::replicate::replicate_experts;
use super::Shape;

/// One layer's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LayerPlan {
    /// The expert of every slot.
    pub phy2log: Vec<u32>,
    /// The replica rank of every slot.
    pub phyrank: Vec<u32>,
}

/// EPLB's `rebalance_experts_hierarchical` for one layer of `f32` weights.
/// The global policy is this with one group and one node.
///
/// Requires what the original asserts: `num_groups` divides the experts,
/// `num_nodes` divides `num_groups` and `num_gpus`, `num_gpus` divides
/// `num_physical_experts`, and at least one slot per expert.
pub(super) fn rebalance_experts_hierarchical(weight: &[f32], shape: &Shape) -> LayerPlan {
    let &Shape {
        num_physical_experts: num_phy,
        num_groups,
        num_nodes,
        num_gpus,
    } = shape;
    let num_log = weight.len();
    assert!(
        num_groups > 0
            && num_nodes > 0
            && num_gpus > 0
            && num_log.is_multiple_of(num_groups)
            && num_groups.is_multiple_of(num_nodes)
            && num_gpus.is_multiple_of(num_nodes)
            && num_phy.is_multiple_of(num_gpus)
            && num_phy >= num_log,
        "EPLB's shape requirements: {shape:?} with {num_log} experts"
    );
    let group_size = num_log / num_groups;
    let groups_per_node = num_groups / num_nodes;
    let phy_per_gpu = num_phy / num_gpus;
    let log_per_node = num_log / num_nodes;
    let phy_per_node = num_phy / num_nodes;
    let gpus_per_node = num_gpus / num_nodes;

    // Step 1: pack groups to nodes. Group loads are summed in f64 and
    // rounded once (exact for integer counts below 2^24).
    let tokens_per_group: Vec<f32> = weight
        .chunks_exact(group_size)
        .map(|group| group.iter().map(|&w| f64::from(w)).sum::<f64>() as f32)
        .collect();
    let groups = balanced_packing(&tokens_per_group, num_nodes);
    // log2mlog maps an expert to its node-major "mlog" id (the node's groups
    // in the order they arrived); mlog2log is its inverse.
    let mut mlog2log = vec![0usize; num_log];
    for expert in 0..num_log {
        let group = expert / group_size;
        let first =
            (groups.pack_index[group] * groups_per_node + groups.rank_in_pack[group]) * group_size;
        mlog2log[first + expert % group_size] = expert;
    }

    let mut phy2log = vec![0u32; num_phy];
    let mut phyrank = vec![0u32; num_phy];
    for node in 0..num_nodes {
        let mlog_base = node * log_per_node;
        let phy_base = node * phy_per_node;
        // Step 2: replicas within the node, over the node's experts in mlog order.
        let tokens_per_mlog: Vec<f32> = mlog2log[mlog_base..mlog_base + log_per_node]
            .iter()
            .map(|&e| weight[e])
            .collect();
        let replicas = replicate_experts(&tokens_per_mlog, phy_per_node);
        // Step 3: pack the node's replicas to its GPUs.
        let tokens_per_phy: Vec<f32> = replicas
            .phy2log
            .iter()
            .map(|&m| tokens_per_mlog[m] / replicas.logcnt[m] as f32)
            .collect();
        let gpus = balanced_packing(&tokens_per_phy, gpus_per_node);
        for (phy, &mlog) in replicas.phy2log.iter().enumerate() {
            let slot = phy_base + gpus.pack_index[phy] * phy_per_gpu + gpus.rank_in_pack[phy];
            phy2log[slot] = mlog2log[mlog_base + mlog] as u32;
            phyrank[slot] = replicas.rank[phy] as u32;
        }
    }
    LayerPlan { phy2log, phyrank }
}
