//! Cross-node traffic a plan implies, from the co-visit counts of a load.
//!
//! A token sends its hidden state to every node that holds the home replica
//! of one of its experts. The tokens of expert `e` that visit node `n` are
//! unknown token by token, but the counts pin them between two figures: at
//! least the largest `covisit[e][k]` over the groups `k` wholly at home on
//! `n` (a union is at least its largest member), at most the sum over the
//! groups with any expert at home on `n` (capped by `e`'s load). Summed over
//! experts and nodes and divided by the load, that is the number of nodes a
//! token visits (each token counts once per expert it chose on both sides),
//! with no need to know `top_k`. With one group per node both figures are
//! equal and the count is exact. With two groups per node (DeepSeek-V3 on
//! 4 prefill nodes) the range spans about 15 %, and [`pair_estimate`] gives
//! a point inside it from one mild assumption; on DeepSeek-style routing it
//! lands within 0.2 % of the worker's dispatch count.
//!
//! Transfers are visited nodes other than the node the token starts on.
//! Tokens start on every node alike and independently of their routing (data
//! parallel attention), so a token's source is among its visited nodes with
//! probability `visited / N`, and transfers = visited × (1 − 1/N).
//!
//! Co-visit replicas only ever take tokens already visiting their node, so a
//! plan's home replicas fix the figure; co-visit replicas can only lower it
//! (a token whose every expert on a node is served elsewhere skips that
//! node), never raise it.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::load::LoadMatrix;
use crate::plan::{Plan, ANY_TOKEN};
use crate::topology::Topology;

/// A figure known to lie between `low` and `high`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    /// A point estimate inside the range, when every group is at home on
    /// one node and no node holds more than two ([`pair_estimate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
}

impl Interval {
    const ZERO: Interval = Interval {
        low: 0.0,
        high: 0.0,
        estimate: Some(0.0),
    };

    fn scaled(self, by: f64) -> Interval {
        Interval {
            low: self.low * by,
            high: self.high * by,
            estimate: self.estimate.map(|e| e * by),
        }
    }

    pub fn is_exact(&self) -> bool {
        self.high - self.low <= 1e-9 * self.high.abs().max(1.0)
    }
}

/// Per token and layer, over the whole model (layers weighted by their
/// tokens, as a worker's counters sum them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CrossNodeTraffic {
    /// Distinct nodes a token's assignments land on, its source included.
    pub nodes_per_token: Interval,
    /// Of those, the nodes other than the token's source: each one copy of
    /// the token's hidden state sent over the inter-node network.
    pub transfers_per_token: Interval,
}

/// Why a plan's traffic cannot be derived from the counts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrafficUnknown {
    #[error("the load has no co-visit counts")]
    NoCounts,
    #[error(
        "layer {layer}: expert {expert} has any-token replicas on several nodes, so which one a \
         token visits is the engine's choice"
    )]
    SeveralHomes { layer: usize, expert: usize },
    #[error("layer {layer}: expert {expert} has no any-token replica")]
    NoHome { layer: usize, expert: usize },
}

/// The cross-node traffic `plan` implies on `load` (see the module docs).
pub fn cross_node_traffic(
    topology: &Topology,
    load: &LoadMatrix,
    plan: &Plan,
) -> Result<CrossNodeTraffic, TrafficUnknown> {
    let mut visits = Interval::ZERO;
    let mut assignments = 0.0;
    for layer in 0..topology.num_layers() {
        let covisit = load.covisit_layer(layer).ok_or(TrafficUnknown::NoCounts)?;
        let row = load.layer(layer);
        let homes = home_nodes(topology, plan, layer)?;
        let layer_visits = layer_visits(topology, row, covisit, &homes);
        visits.low += layer_visits.low;
        visits.high += layer_visits.high;
        visits.estimate = visits
            .estimate
            .zip(pair_estimate(topology, row, covisit, &homes))
            .map(|(sum, e)| sum + e.clamp(layer_visits.low, layer_visits.high));
        assignments += row.iter().sum::<f64>();
    }
    let nodes_per_token = if assignments > 0.0 {
        visits.scaled(1.0 / assignments)
    } else {
        Interval::ZERO
    };
    let nodes = topology.num_nodes() as f64;
    Ok(CrossNodeTraffic {
        nodes_per_token,
        transfers_per_token: nodes_per_token.scaled(1.0 - 1.0 / nodes),
    })
}

/// Each expert's home node: the node of its any-token replicas.
fn home_nodes(
    topology: &Topology,
    plan: &Plan,
    layer: usize,
) -> Result<Vec<usize>, TrafficUnknown> {
    let slots_per_node = topology.slots_per_node();
    let scope = plan.replica_scope().map(|s| &s[layer][..]);
    let mut home = vec![usize::MAX; topology.num_logical_experts()];
    for (slot, &expert) in plan.layer(layer).iter().enumerate() {
        if scope.is_some_and(|s| s[slot] != ANY_TOKEN) {
            continue;
        }
        let (expert, node) = (expert as usize, slot / slots_per_node);
        match home[expert] {
            usize::MAX => home[expert] = node,
            h if h != node => return Err(TrafficUnknown::SeveralHomes { layer, expert }),
            _ => {}
        }
    }
    match home.iter().position(|&h| h == usize::MAX) {
        Some(expert) => Err(TrafficUnknown::NoHome { layer, expert }),
        None => Ok(home),
    }
}

/// Σ over experts and nodes of the tokens of the expert visiting the node
/// (counted once per expert), bounded as the module docs say.
fn layer_visits(topology: &Topology, row: &[f64], covisit: &[f64], homes: &[usize]) -> Interval {
    let (groups, nodes) = (topology.num_groups(), topology.num_nodes());
    // whole[k][n]: group k is wholly at home on n; some[k][n]: partly.
    let mut whole = vec![true; groups * nodes];
    let mut some = vec![false; groups * nodes];
    for k in 0..groups {
        let members = &homes[group_experts(topology, k)];
        for n in 0..nodes {
            whole[k * nodes + n] = !members.is_empty() && members.iter().all(|&h| h == n);
            some[k * nodes + n] = members.contains(&n);
        }
    }
    let mut total = Interval {
        estimate: None,
        ..Interval::ZERO
    };
    for (e, &load) in row.iter().enumerate() {
        let counts = &covisit[e * groups..(e + 1) * groups];
        for n in 0..nodes {
            if homes[e] == n {
                total.low += load;
                total.high += load;
                continue;
            }
            let (mut largest, mut sum) = (0.0_f64, 0.0);
            for (k, &c) in counts.iter().enumerate() {
                if whole[k * nodes + n] {
                    largest = largest.max(c);
                }
                if some[k * nodes + n] {
                    sum += c;
                }
            }
            total.low += largest.min(load);
            total.high += sum.min(load);
        }
    }
    total
}

/// The layer's visits (as [`layer_visits`] counts them) estimated when
/// every group is wholly at home on one node and no node holds more than two
/// groups. For a node holding groups `a` and `b`, the tokens of `e` visiting
/// it are `covisit[e][a] + covisit[e][b]` less those visiting both; summed
/// over experts, that overlap is `top_k` times the tokens visiting both
/// groups. `Σ_{e in a} covisit[e][b]` counts those tokens once per expert
/// they chose in `a`; dividing by the mean experts per token in `a` among
/// all tokens visiting `a` (`Σ_{e in a} load[e] / tokens visiting a`) gives
/// the overlap, `top_k` cancelling out. The one assumption: tokens visiting
/// both groups choose as many experts in each as the others do. The
/// estimate averages the two sides.
fn pair_estimate(
    topology: &Topology,
    row: &[f64],
    covisit: &[f64],
    homes: &[usize],
) -> Option<f64> {
    let groups = topology.num_groups();
    let mut node_groups: Vec<Vec<usize>> = vec![Vec::new(); topology.num_nodes()];
    for k in 0..groups {
        let members = &homes[group_experts(topology, k)];
        let node = *members.first()?;
        if members.iter().any(|&h| h != node) {
            return None;
        }
        node_groups[node].push(k);
    }
    // S_k: Σ_e covisit[e][k] (top_k × tokens visiting k); L_k: k's load.
    let visiting: Vec<f64> = (0..groups)
        .map(|k| (0..row.len()).map(|e| covisit[e * groups + k]).sum())
        .collect();
    // Σ_{e in a} covisit[e][b] scaled by S_a / L_a.
    let overlap_from = |a: usize, b: usize| -> Option<f64> {
        let load: f64 = row[group_experts(topology, a)].iter().sum();
        let pairs: f64 = group_experts(topology, a)
            .map(|e| covisit[e * groups + b])
            .sum();
        (load > 0.0).then(|| pairs * visiting[a] / load)
    };
    node_groups
        .iter()
        .map(|on_node| match on_node[..] {
            [] => Some(0.0),
            [a] => Some(visiting[a]),
            [a, b] => {
                let overlap = match (overlap_from(a, b), overlap_from(b, a)) {
                    (Some(x), Some(y)) => (x + y) / 2.0,
                    (Some(x), None) | (None, Some(x)) => x,
                    (None, None) => 0.0,
                };
                Some(visiting[a] + visiting[b] - overlap)
            }
            _ => None,
        })
        .sum()
}

/// The experts of group `k`: consecutive indices.
fn group_experts(topology: &Topology, k: usize) -> std::ops::Range<usize> {
    let size = topology.experts_per_group();
    k * size..(k + 1) * size
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Top-2 tokens over 4 experts: {0,1} ×3, {0,2} ×2, {1,3} ×1, {2,3} ×4.
    fn tokens() -> Vec<[usize; 2]> {
        let mut t = vec![[0, 1]; 3];
        t.extend([[0, 2]; 2]);
        t.push([1, 3]);
        t.extend([[2, 3]; 4]);
        t
    }

    /// 2 layers of 4 experts in `groups` groups, 2 nodes of 2 slots.
    fn topology(groups: usize) -> Topology {
        Topology::from_json(&format!(
            r#"{{"num_layers": 2, "num_logical_experts": 4, "num_groups": {groups},
                "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 2}}"#
        ))
        .unwrap()
    }

    /// The load and co-visit counts of `tokens`, token by token.
    fn load_of(tokens: &[[usize; 2]], t: &Topology) -> LoadMatrix {
        let k = t.num_groups();
        let (mut load, mut covisit) = (vec![0.0; 4], vec![vec![0.0; k]; 4]);
        for tok in tokens {
            for &e in tok {
                load[e] += 1.0;
                let mut seen = vec![false; k];
                tok.iter().for_each(|&o| seen[t.group_of_expert(o)] = true);
                for (g, s) in seen.into_iter().enumerate() {
                    covisit[e][g] += f64::from(u8::from(s));
                }
            }
        }
        LoadMatrix::new(vec![load; 2], t)
            .unwrap()
            .with_covisit(vec![covisit; 2], t)
            .unwrap()
    }

    /// Distinct nodes per token when expert `e` lives on node `e / 2`.
    fn true_nodes_per_token(tokens: &[[usize; 2]]) -> f64 {
        let visits: usize = tokens
            .iter()
            .map(|[a, b]| if a / 2 == b / 2 { 1 } else { 2 })
            .sum();
        visits as f64 / tokens.len() as f64
    }

    #[test]
    fn one_group_per_node_is_exact() {
        let t = topology(2);
        let plan = Plan::new(vec![vec![0, 1, 2, 3]; 2], None, &t).unwrap();
        let traffic = cross_node_traffic(&t, &load_of(&tokens(), &t), &plan).unwrap();
        // Node sets {0} ×3, {0,1} ×3, {1} ×4: 13 visits over 10 tokens.
        assert_eq!(true_nodes_per_token(&tokens()), 1.3);
        assert!(traffic.nodes_per_token.is_exact(), "{traffic:?}");
        assert!((traffic.nodes_per_token.low - 1.3).abs() < 1e-12);
        assert!((traffic.transfers_per_token.high - 0.65).abs() < 1e-12);
        assert_eq!(
            traffic.nodes_per_token.estimate,
            Some(traffic.nodes_per_token.low)
        );
    }

    #[test]
    fn two_groups_per_node_bracket_the_truth() {
        // Groups of one expert each, two per node.
        let t = topology(4);
        let plan = Plan::new(vec![vec![0, 1, 2, 3]; 2], None, &t).unwrap();
        let v = cross_node_traffic(&t, &load_of(&tokens(), &t), &plan)
            .unwrap()
            .nodes_per_token;
        let truth = true_nodes_per_token(&tokens());
        assert!(v.low <= truth + 1e-12 && truth <= v.high + 1e-12, "{v:?}");
        assert!(v.low >= 1.0 && v.high <= 2.0, "{v:?}");
        // Tokens visiting both groups of a node chose one expert in each,
        // like every other token here: the estimate is exact.
        let estimate = v.estimate.unwrap();
        assert!((estimate - truth).abs() < 1e-12, "{estimate} vs {truth}");
    }

    #[test]
    fn unknowable_traffic_says_why() {
        let t = topology(2);
        let plan = Plan::new(vec![vec![0, 1, 2, 3]; 2], None, &t).unwrap();
        let bare = LoadMatrix::new(vec![vec![1.0; 4]; 2], &t).unwrap();
        assert_eq!(
            cross_node_traffic(&t, &bare, &plan).unwrap_err(),
            TrafficUnknown::NoCounts
        );
        // Expert 0 has any-token replicas on both nodes in layer 0.
        let t4 = Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        let spread = Plan::new(
            vec![vec![0, 1, 2, 0, 3, 3], vec![0, 1, 1, 2, 3, 3]],
            None,
            &t4,
        )
        .unwrap();
        assert_eq!(
            cross_node_traffic(&t4, &load_of(&tokens(), &t4), &spread).unwrap_err(),
            TrafficUnknown::SeveralHomes {
                layer: 0,
                expert: 0
            }
        );
    }
}
