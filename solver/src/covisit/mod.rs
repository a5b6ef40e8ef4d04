//! Co-visit replicas: beyond the node-local bound at no extra cross-node
//! traffic.
//!
//! Under group-limited routing a token already sends its hidden state to
//! every node that hosts one of its chosen groups. A replica of expert `e` on
//! node `n != home(e)` can therefore serve, with no extra transfer, any token
//! that chose `e` and already visits `n`. `covisit[e][k]` counts the tokens
//! that chose `e` and some expert of group `k`; the tokens of `e` that visit
//! `n` number at least `max_{k on n} covisit[e][k]` ([`safe_share`]), so a
//! plan may give the co-visit replicas of `e` on `n` that many of `e`'s tokens.
//!
//! A co-visit plan keeps every group's home replicas on one node (scope
//! [`crate::plan::ANY_TOKEN`]) and marks co-visit replicas with their node in
//! `replica_scope`; `replica_share` says how many of `e`'s tokens each slot
//! takes.

/// The tokens of an expert that a co-visit replica on a node may take: the
/// largest co-visit count over the node's groups, capped by the expert's
/// load. `row` is the expert's `K` co-visit counts.
///
/// Why `max` and nothing larger: the tokens of `e` visiting node `n` are the
/// union over `n`'s groups of the tokens of `e` visiting each group. A union
/// is at least its largest member, and when the members are nested it is
/// exactly that, so no larger figure can be derived from the counts alone.
pub fn safe_share(row: &[f64], node_groups: impl IntoIterator<Item = usize>, load: f64) -> f64 {
    node_groups
        .into_iter()
        .map(|k| row[k])
        .fold(0.0, f64::max)
        .min(load)
}

mod layer_flow;
mod rule;
mod split;
mod traffic;

pub(crate) use layer_flow::{route_layer, LayerRouting, SinkArcs};
pub use rule::{gpu_loads_under_rule, score_under_rule, served_by_covisit};
pub(crate) use split::{covisit_bound_load, CovisitSplits, SplitCaps};
pub use traffic::{cross_node_traffic, CrossNodeTraffic, Interval, TrafficUnknown};
