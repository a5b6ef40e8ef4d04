//! Sending each token→expert assignment to a physical replica.
//!
//! [`dispatch`] applies a layer's [`Placement`] to a batch: each expert's
//! assignments, in token order, are cut into contiguous runs whose lengths
//! are the largest-remainder apportionment of the placement's split — exact
//! counts, deterministic, and at most one token off the ideal.
//! [`dispatch_counts`] takes the per-slot token counts of a per-batch router
//! instead (e.g. `ballast_solver::routing`'s optimal routing, see
//! [`optimal`](crate::moe::optimal)); [`DispatchMode`] is a worker's choice
//! among them.
//!
//! A placement with co-visit replicas (`replica_scope`, see
//! [`Placement::with_scope`]) is dispatched by [`dispatch`] under the scope
//! rule: a token's home-node set `H(t)` is the nodes of the home replicas of
//! its chosen experts, the nodes it visits under a node-local plan; a
//! co-visit replica on node `n` takes only tokens with `n ∈ H(t)`. Each
//! expert's assignments are apportioned into per-slot quotas by the shares;
//! eligible tokens fill the co-visit replicas up to their quotas, and every
//! other token goes to the home replicas, in proportion to their shares. So
//! every assignment lands on a node of `H(t)`: a token never visits a node
//! the node-local plan would not have sent it to.
//! [`Dispatch::node_traffic`] measures what the all-to-all sends.

use crate::error::PlanError;
use crate::moe::gate::TopK;
use crate::moe::placement::Placement;

/// How a batch's assignments are split among an expert's replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchMode {
    /// Evenly, ignoring any `replica_share` in the plan.
    Even,
    /// By the plan's `replica_share` (evenly where the plan has none).
    Share,
    /// Exactly optimal per batch: the smallest possible largest GPU load.
    Optimal,
}

/// Where each assignment of a batch goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    top_k: usize,
    /// Physical slot of assignment `t·top_k + i`.
    slot_of: Vec<u32>,
    /// Row of that assignment within its slot's token list.
    row_of: Vec<u32>,
    /// Tokens sent to each slot, in order.
    slot_tokens: Vec<Vec<u32>>,
}

impl Dispatch {
    /// The physical slot and row serving token `t`'s `i`-th expert.
    pub fn target(&self, t: usize, i: usize) -> (usize, usize) {
        let a = t * self.top_k + i;
        (self.slot_of[a] as usize, self.row_of[a] as usize)
    }

    /// Tokens slot `p` processes, in row order.
    pub fn tokens_of(&self, p: usize) -> &[u32] {
        &self.slot_tokens[p]
    }

    /// Physical slots in the layer.
    pub fn slots(&self) -> usize {
        self.slot_tokens.len()
    }

    /// Token→expert assignments dispatched.
    pub fn assignments(&self) -> usize {
        self.slot_of.len()
    }

    /// Tokens per physical slot.
    pub fn slot_counts(&self) -> Vec<usize> {
        self.slot_tokens.iter().map(Vec::len).collect()
    }

    /// The nodes each token's assignments land on, and the cross-node
    /// transfers that takes: see [`NodeTraffic`]. Slot `p` is on node
    /// `p / slots_per_node`; token `t` starts on node `source_node(t)`.
    pub fn node_traffic(
        &self,
        slots_per_node: usize,
        source_node: impl Fn(usize) -> usize,
        bytes_per_transfer: u64,
    ) -> NodeTraffic {
        let slots_per_node = slots_per_node.max(1);
        let tokens = self.slot_of.len() / self.top_k.max(1);
        let mut traffic = NodeTraffic::default();
        let mut nodes: Vec<usize> = Vec::with_capacity(self.top_k);
        for t in 0..tokens {
            nodes.clear();
            for &p in &self.slot_of[t * self.top_k..(t + 1) * self.top_k] {
                let n = p as usize / slots_per_node;
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
            let source = source_node(t);
            let transfers = nodes.iter().filter(|&&n| n != source).count() as u64;
            traffic.tokens += 1;
            traffic.nodes_visited += nodes.len() as u64;
            traffic.transfers += transfers;
            traffic.bytes += transfers * bytes_per_transfer;
        }
        traffic
    }

    /// Cross-node transfers of token `t` alone: the distinct nodes other
    /// than `source` its assignments land on.
    pub fn node_traffic_of(&self, t: usize, slots_per_node: usize, source: usize) -> usize {
        let mut nodes: Vec<usize> = self.slot_of[t * self.top_k..(t + 1) * self.top_k]
            .iter()
            .map(|&p| p as usize / slots_per_node.max(1))
            .filter(|&n| n != source)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.len()
    }

    /// Tokens per GPU, for `slots_per_gpu` consecutive slots per GPU.
    pub fn gpu_counts(&self, slots_per_gpu: usize) -> Vec<usize> {
        self.slot_counts()
            .chunks(slots_per_gpu.max(1))
            .map(|c| c.iter().sum())
            .collect()
    }
}

/// Cross-node traffic of dispatched assignments (one layer, or summed over
/// layers and steps: every field adds up).
///
/// For each token, the distinct nodes its assignments land on are *visited*;
/// each visited node other than the token's source node costs one
/// *transfer*: the token's hidden state is sent there once, however many of
/// its experts that node serves (DeepSeek-V3's node-limited dispatch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeTraffic {
    /// Tokens measured (a token counts once per layer).
    pub tokens: u64,
    /// Σ over tokens of the distinct nodes visited (the source node included
    /// when it serves one of the token's experts).
    pub nodes_visited: u64,
    /// Σ over tokens of the visited nodes other than the source node.
    pub transfers: u64,
    /// `transfers × bytes per transfer` ([`fp8_dispatch_bytes`]).
    pub bytes: u64,
}

impl NodeTraffic {
    pub fn add(&mut self, other: &NodeTraffic) {
        self.tokens += other.tokens;
        self.nodes_visited += other.nodes_visited;
        self.transfers += other.transfers;
        self.bytes += other.bytes;
    }

    /// Mean transfers per token (0 when no token was measured).
    pub fn transfers_per_token(&self) -> f64 {
        self.transfers as f64 / self.tokens.max(1) as f64
    }

    /// Mean bytes sent off the source node per token.
    pub fn bytes_per_token(&self) -> f64 {
        self.bytes as f64 / self.tokens.max(1) as f64
    }

    /// Mean distinct nodes visited per token.
    pub fn nodes_per_token(&self) -> f64 {
        self.nodes_visited as f64 / self.tokens.max(1) as f64
    }
}

/// Token `t`'s cross-node transfers under `placement` without its co-visit
/// replicas: `|H(t) \ {source}|`, `H(t)` the home nodes of its experts, the
/// nodes the node-local plan with the same group homes sends it to. A
/// scoped dispatch never exceeds it. `None` for a placement without scope.
pub fn home_transfers_of(
    routing: &TopK,
    placement: &Placement,
    t: usize,
    source: usize,
) -> Option<usize> {
    let scope = placement.scope()?;
    let mut nodes: Vec<u32> = routing
        .experts_of(t)
        .iter()
        .flat_map(|&e| scope.home_nodes(e as usize).iter().copied())
        .filter(|&n| n as usize != source)
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    Some(nodes.len())
}

/// Bytes one token's hidden state takes on the wire in an FP8 dispatch of
/// width `hidden`: one E4M3 byte per element plus one f32 scale per 1×128
/// tile (the activation quantization of [`crate::fp8::quant`]), i.e.
/// `hidden + 4 · ⌈hidden / 128⌉`: 7392 bytes for DeepSeek-V3's 7168.
pub fn fp8_dispatch_bytes(hidden: usize) -> u64 {
    (hidden + 4 * hidden.div_ceil(crate::fp8::quant::BLOCK)) as u64
}

/// Splits `n` items by `weights` (summing to 1): floors of the quotas, then
/// one more to the largest remainders, ties to the earlier entry.
fn apportion(n: usize, weights: &[f64]) -> Vec<usize> {
    let quotas: Vec<f64> = weights.iter().map(|w| w * n as f64).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let assigned: usize = counts.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (quotas[b] - quotas[b].floor())
            .total_cmp(&(quotas[a] - quotas[a].floor()))
            .then(a.cmp(&b))
    });
    for &i in order.iter().cycle().take(n.saturating_sub(assigned)) {
        counts[i] += 1;
    }
    counts
}

/// Assigns every token→expert pair of `routing` to a replica under
/// `placement`, splitting each expert's tokens by the placement's shares.
///
/// # Panics
/// If `routing` names an expert `placement` does not have (both come from
/// the same validated layer configuration).
pub fn dispatch(routing: &TopK, placement: &Placement) -> Dispatch {
    if let Some(scope) = placement.scope() {
        return dispatch_scoped(routing, placement, scope);
    }
    assign(routing, placement, |expert, tokens| {
        let shares: Vec<f64> = placement
            .replicas_of(expert)
            .iter()
            .map(|&p| placement.share(p))
            .collect();
        apportion(tokens, &shares)
    })
}

/// Like [`dispatch`], with the number of tokens each slot takes given
/// (`slot_counts`, one per physical slot); they must add up to each expert's
/// tokens in the batch.
///
/// # Panics
/// As [`dispatch`].
pub fn dispatch_counts(
    routing: &TopK,
    placement: &Placement,
    slot_counts: &[u64],
) -> Result<Dispatch, PlanError> {
    if slot_counts.len() != placement.slots() {
        return Err(PlanError::Length {
            what: "slot token counts",
            expected: placement.slots(),
            actual: slot_counts.len(),
        });
    }
    let expert_tokens = routing.expert_counts();
    for (expert, &expected) in expert_tokens.iter().enumerate() {
        let actual: u64 = placement
            .replicas_of(expert)
            .iter()
            .map(|&p| slot_counts[p])
            .sum();
        if actual != expected {
            return Err(PlanError::CountSum {
                expert,
                expected: expected as usize,
                actual,
            });
        }
    }
    Ok(assign(routing, placement, |expert, _| {
        placement
            .replicas_of(expert)
            .iter()
            .map(|&p| slot_counts[p] as usize)
            .collect()
    }))
}

/// [`dispatch`] under `replica_scope` (see the module documentation).
///
/// Per expert `e` with `m` assignments in the batch: the quotas are the
/// apportionment of `m` by the shares. Tokens are offered to the co-visit
/// replicas most constrained first (fewest eligible co-visit replicas, then
/// token order), each to the eligible replica with the
/// most quota left (ties to the lower slot), so that tokens eligible on
/// several nodes do not use up a node that others need. The tokens left —
/// ineligible, or beyond the co-visit quotas — go to the home replicas, in
/// token order, apportioned by the home replicas' shares (evenly if those
/// are all zero).
fn dispatch_scoped(
    routing: &TopK,
    placement: &Placement,
    scope: &crate::moe::placement::Scope,
) -> Dispatch {
    let top_k = routing.top_k();
    let tokens = routing.tokens();
    // H(t) of every token, flat: `top_k` entries per token at most.
    let mut home: Vec<Vec<u32>> = Vec::with_capacity(tokens);
    let mut per_expert: Vec<Vec<usize>> = vec![Vec::new(); placement.num_experts()];
    for t in 0..tokens {
        let mut nodes: Vec<u32> = Vec::with_capacity(top_k);
        for (i, &e) in routing.experts_of(t).iter().enumerate() {
            per_expert[e as usize].push(t * top_k + i);
            for &n in scope.home_nodes(e as usize) {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        home.push(nodes);
    }
    let mut slot_of = vec![0u32; tokens * top_k];
    for (e, list) in per_expert.iter().enumerate() {
        let replicas = placement.replicas_of(e);
        let shares: Vec<f64> = replicas.iter().map(|&p| placement.share(p)).collect();
        let quotas = apportion(list.len(), &shares);
        let covisit: Vec<(usize, u32)> = replicas
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| scope.covisit_node(p).map(|n| (i, n)))
            .collect();
        let mut left: Vec<usize> = quotas.clone();
        let mut taken = vec![false; list.len()];
        if !covisit.is_empty() {
            let eligible = |a: usize| -> Vec<usize> {
                let h = &home[a / top_k];
                covisit
                    .iter()
                    .filter(|(_, n)| h.contains(n))
                    .map(|&(i, _)| i)
                    .collect()
            };
            let mut candidates: Vec<(usize, Vec<usize>)> = list
                .iter()
                .enumerate()
                .map(|(j, &a)| (j, eligible(a)))
                .filter(|(_, c)| !c.is_empty())
                .collect();
            candidates.sort_by_key(|(j, c)| (c.len(), *j));
            for (j, options) in candidates {
                let best = options
                    .iter()
                    .copied()
                    .filter(|&i| left[i] > 0)
                    .max_by(|&a, &b| left[a].cmp(&left[b]).then(b.cmp(&a)));
                if let Some(i) = best {
                    left[i] -= 1;
                    taken[j] = true;
                    slot_of[list[j]] = replicas[i] as u32;
                }
            }
        }
        let homes: Vec<usize> = (0..replicas.len())
            .filter(|&i| scope.covisit_node(replicas[i]).is_none())
            .collect();
        let home_total: f64 = homes.iter().map(|&i| shares[i]).sum();
        let home_weights: Vec<f64> = if home_total > 0.0 {
            homes.iter().map(|&i| shares[i] / home_total).collect()
        } else {
            vec![1.0 / homes.len() as f64; homes.len()]
        };
        let rest: Vec<usize> = (0..list.len()).filter(|&j| !taken[j]).collect();
        let mut next = rest.iter();
        for (&i, count) in homes.iter().zip(apportion(rest.len(), &home_weights)) {
            for &j in next.by_ref().take(count) {
                slot_of[list[j]] = replicas[i] as u32;
            }
        }
    }
    from_slots(top_k, placement.slots(), slot_of)
}

/// A dispatch from each assignment's slot: rows in token order per slot.
fn from_slots(top_k: usize, slots: usize, slot_of: Vec<u32>) -> Dispatch {
    let mut row_of = vec![0u32; slot_of.len()];
    let mut slot_tokens: Vec<Vec<u32>> = vec![Vec::new(); slots];
    for (a, &p) in slot_of.iter().enumerate() {
        let list = &mut slot_tokens[p as usize];
        row_of[a] = list.len() as u32;
        list.push((a / top_k.max(1)) as u32);
    }
    Dispatch {
        top_k,
        slot_of,
        row_of,
        slot_tokens,
    }
}

/// Cuts each expert's assignments (in token order) into contiguous runs, one
/// per replica in slot order, of the lengths `split(expert, tokens)` returns.
fn assign(
    routing: &TopK,
    placement: &Placement,
    split: impl Fn(usize, usize) -> Vec<usize>,
) -> Dispatch {
    let top_k = routing.top_k();
    let assignments = routing.tokens() * top_k;
    let mut per_expert: Vec<Vec<usize>> = vec![Vec::new(); placement.num_experts()];
    for t in 0..routing.tokens() {
        for (i, &e) in routing.experts_of(t).iter().enumerate() {
            per_expert[e as usize].push(t * top_k + i);
        }
    }
    let mut slot_of = vec![0u32; assignments];
    let mut row_of = vec![0u32; assignments];
    let mut slot_tokens = vec![Vec::new(); placement.slots()];
    for (e, list) in per_expert.iter().enumerate() {
        let mut next = list.iter();
        for (&p, count) in placement.replicas_of(e).iter().zip(split(e, list.len())) {
            for &a in next.by_ref().take(count) {
                slot_of[a] = p as u32;
                row_of[a] = slot_tokens[p].len() as u32;
                slot_tokens[p].push((a / top_k) as u32);
            }
        }
    }
    Dispatch {
        top_k,
        slot_of,
        row_of,
        slot_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Matrix;
    use crate::moe::config::{small_spec, MoeConfig, MoeSpec};
    use crate::moe::gate::select;
    use proptest::prelude::*;

    #[test]
    fn apportion_is_exact_and_close_to_quotas() {
        assert_eq!(apportion(10, &[0.5, 0.5]), vec![5, 5]);
        assert_eq!(apportion(7, &[1.0 / 3.0; 3]), vec![3, 2, 2]);
        assert_eq!(apportion(10, &[0.25, 0.75]), vec![3, 7]);
        assert_eq!(apportion(0, &[0.3, 0.7]), vec![0, 0]);
        assert_eq!(apportion(5, &[0.0, 1.0]), vec![0, 5]);
    }

    fn routing(tokens: usize, seed: u64) -> TopK {
        let config = MoeConfig::new(small_spec()).unwrap();
        let scores = Matrix::from_fn(tokens, 16, |t, e| {
            let h = (t as u64 * 2654435761 + e as u64 * 40503 + seed * 97) % 1000;
            0.01 + h as f32 / 1001.0
        });
        select(&config, &scores, &[0.0; 16])
    }

    #[test]
    fn even_split_and_shares_give_expected_counts() {
        let r = routing(64, 1);
        let counts = r.expert_counts();
        // Expert 0 twice (slots 0 and 16), the others once.
        let mut row: Vec<u32> = (0..16).collect();
        row.push(0);
        let even = dispatch(&r, &Placement::new(row.clone(), 16, None).unwrap());
        let c = even.slot_counts();
        assert_eq!(c[0] + c[16], counts[0] as usize);
        assert!(c[0].abs_diff(c[16]) <= 1);
        let mut shares = vec![1.0; 17];
        shares[0] = 0.25;
        shares[16] = 0.75;
        let weighted = dispatch(&r, &Placement::new(row, 16, Some(shares)).unwrap());
        let c = weighted.slot_counts();
        assert_eq!(c[16], apportion(counts[0] as usize, &[0.25, 0.75])[1]);
        assert_eq!(weighted.gpu_counts(17), vec![64 * 4]);
    }

    #[test]
    fn given_slot_counts_are_followed_exactly() {
        let r = routing(64, 2);
        let counts = r.expert_counts();
        let mut row: Vec<u32> = (0..16).collect();
        row.push(3);
        let placement = Placement::new(row, 16, None).unwrap();
        // Expert 3's tokens all go to its second replica (slot 16).
        let mut slot_counts: Vec<u64> = counts.clone();
        slot_counts.push(counts[3]);
        slot_counts[3] = 0;
        let d = dispatch_counts(&r, &placement, &slot_counts).unwrap();
        assert_eq!(
            d.slot_counts()
                .iter()
                .map(|&c| c as u64)
                .collect::<Vec<_>>(),
            slot_counts
        );
        slot_counts[16] += 1;
        assert!(matches!(
            dispatch_counts(&r, &placement, &slot_counts),
            Err(PlanError::CountSum { expert: 3, .. })
        ));
        assert!(matches!(
            dispatch_counts(&r, &placement, &counts),
            Err(PlanError::Length { .. })
        ));
    }

    #[test]
    fn fp8_transfer_bytes_include_the_scales() {
        assert_eq!(fp8_dispatch_bytes(7168), 7168 + 56 * 4);
        assert_eq!(fp8_dispatch_bytes(128), 132);
    }

    #[test]
    fn node_traffic_counts_distinct_other_nodes() {
        // 4 slots, 2 per node; 2 tokens, top-2 over 4 experts.
        let config = MoeConfig::new(MoeSpec {
            hidden: 128,
            expert_width: 128,
            num_experts: 4,
            num_groups: 2,
            topk_groups: 2,
            top_k: 2,
            routed_scaling: 1.0,
        })
        .unwrap();
        // Token 0 picks experts 0 and 1 (both on node 0), token 1 picks 1
        // and 2 (nodes 0 and 1).
        let scores = Matrix::from_fn(2, 4, |t, e| if e == t || e == t + 1 { 0.9 } else { 0.1 });
        let r = select(&config, &scores, &[0.0; 4]);
        let d = dispatch(&r, &Placement::new(vec![0, 1, 2, 3], 4, None).unwrap());
        // Both tokens come from node 1: token 0 sends one transfer (to
        // node 0), token 1 one (to node 0; node 1 is its own).
        let from_1 = d.node_traffic(2, |_| 1, 100);
        assert_eq!(
            from_1,
            NodeTraffic {
                tokens: 2,
                nodes_visited: 3,
                transfers: 2,
                bytes: 200
            }
        );
        let from_0 = d.node_traffic(2, |_| 0, 100);
        assert_eq!((from_0.transfers, from_0.bytes), (1, 100));
        assert_eq!(from_0.transfers_per_token(), 0.5);
    }

    /// 2 nodes × 12 slots; 16 experts in 4 groups, groups 0-1 at home on
    /// node 0 (experts 0-7 in slots 0-7), groups 2-3 on node 1 (experts
    /// 8-15 in slots 12-19); `extra` fills slots 8-11 and 20-23. An extra
    /// expert from the other node is a co-visit replica (scope = its node).
    fn scoped_placement(extra: &[u32], shares: Option<Vec<f64>>) -> Placement {
        let mut row: Vec<u32> = (0..8).collect();
        row.extend(&extra[..4]);
        row.extend(8..16);
        row.extend(&extra[4..]);
        let scope: Vec<i64> = row
            .iter()
            .enumerate()
            .map(|(p, &e)| {
                let (node, home) = (p / 12, e as usize / 8);
                if node == home {
                    -1
                } else {
                    node as i64
                }
            })
            .collect();
        Placement::new(row, 16, shares)
            .unwrap()
            .with_scope(&scope, 12)
            .unwrap()
    }

    /// `H(t)`: the home nodes of a token's chosen experts.
    fn home_nodes(r: &TopK, t: usize) -> Vec<usize> {
        let mut h: Vec<usize> = r.experts_of(t).iter().map(|&e| e as usize / 8).collect();
        h.sort();
        h.dedup();
        h
    }

    #[test]
    fn covisit_replicas_take_only_tokens_visiting_their_node_up_to_quota() {
        let r = routing(200, 5);
        let counts = r.expert_counts();
        // Expert 0 (home node 0) has a co-visit replica on node 1 (slot
        // 20) meant to take 60% of its tokens; expert 9 (home node 1) one
        // on node 0 (slot 8) with 30%.
        let extra = [9, 1, 2, 3, 0, 13, 14, 15];
        let mut shares = vec![1.0; 24];
        shares[0] = 0.4;
        shares[20] = 0.6;
        shares[13] = 0.7; // expert 9's home replica
        shares[8] = 0.3;
        // Experts 1-3 and 13-15 twice, at home: half each.
        for p in [1, 2, 3, 9, 10, 11, 17, 18, 19, 21, 22, 23] {
            shares[p] = 0.5;
        }
        let placement = scoped_placement(&extra, Some(shares));
        let d = dispatch(&r, &placement);
        for t in 0..200 {
            let h = home_nodes(&r, t);
            for (i, &e) in r.experts_of(t).iter().enumerate() {
                let (p, _) = d.target(t, i);
                assert_eq!(placement.phy2log()[p], e);
                assert!(h.contains(&(p / 12)), "token {t} sent to node {}", p / 12);
            }
        }
        let c = d.slot_counts();
        let eligible = |e: u32, node: usize| {
            (0..200)
                .filter(|&t| r.experts_of(t).contains(&e) && home_nodes(&r, t).contains(&node))
                .count()
        };
        // Co-visit replicas fill up to their quota with the eligible tokens.
        let quota0 = apportion(counts[0] as usize, &[0.4, 0.6])[1];
        assert_eq!(c[20], quota0.min(eligible(0, 1)));
        assert_eq!(c[0] + c[20], counts[0] as usize);
        let quota9 = apportion(counts[9] as usize, &[0.3, 0.7])[0];
        assert_eq!(c[8], quota9.min(eligible(9, 0)));
        assert!(c[20] > 0 && c[8] > 0, "{c:?}");
    }

    #[test]
    fn an_all_home_scope_dispatches_as_before() {
        let r = routing(64, 7);
        let row: Vec<u32> = (0..16).chain(0..8).collect();
        let plain = Placement::new(row.clone(), 16, None).unwrap();
        let scoped = plain.clone().with_scope(&[-1; 24], 12).unwrap();
        assert_eq!(dispatch(&r, &plain), dispatch(&r, &scoped));
    }

    proptest! {
        /// Under any scoped placement, every assignment lands on a replica
        /// of its expert on a node of H(t), co-visit replicas stay within
        /// their quotas, and so no token makes more cross-node transfers
        /// than under the node-local placement (its co-visit slots holding
        /// home experts instead), from whichever node it starts.
        #[test]
        fn scoped_dispatch_never_leaves_the_home_nodes(
            tokens in 0usize..60,
            seed in 0u64..200,
            extra in prop::collection::vec(0u32..16, 8),
            raw_shares in prop::collection::vec(0.0f64..1.0, 24),
        ) {
            let r = routing(tokens, seed);
            let unnormalized = scoped_placement(&extra, None);
            let mut sums = [0.0f64; 16];
            let weights: Vec<f64> = raw_shares.iter().map(|s| s + 0.01).collect();
            for (p, &e) in unnormalized.phy2log().iter().enumerate() {
                sums[e as usize] += weights[p];
            }
            let shares: Vec<f64> = unnormalized
                .phy2log()
                .iter()
                .enumerate()
                .map(|(p, &e)| weights[p] / sums[e as usize])
                .collect();
            let placement = scoped_placement(&extra, Some(shares.clone()));
            let d = dispatch(&r, &placement);
            let counts = r.expert_counts();
            prop_assert_eq!(d.slot_counts().iter().sum::<usize>(), tokens * 4);
            for t in 0..tokens {
                let h = home_nodes(&r, t);
                for (i, &e) in r.experts_of(t).iter().enumerate() {
                    let (p, row_in_slot) = d.target(t, i);
                    prop_assert_eq!(placement.phy2log()[p], e);
                    prop_assert_eq!(d.tokens_of(p)[row_in_slot] as usize, t);
                    prop_assert!(h.contains(&(p / 12)));
                }
            }
            let scope = placement.scope();
            for (e, &count) in counts.iter().enumerate() {
                let replicas = placement.replicas_of(e);
                let s: Vec<f64> = replicas.iter().map(|&p| shares[p]).collect();
                let quotas = apportion(count as usize, &s);
                for (&p, q) in replicas.iter().zip(quotas) {
                    if scope.is_some_and(|sc| sc.covisit_node(p).is_some()) {
                        prop_assert!(d.slot_counts()[p] <= q);
                    }
                }
            }
            // The node-local plan: extras replaced by the slot's own experts.
            let local_extra: Vec<u32> = (0..4).chain(8..12).collect();
            let local = dispatch(&r, &Placement::new(
                (0..8).chain(local_extra[..4].iter().copied()).chain(8..16).chain(local_extra[4..].iter().copied()).collect(),
                16,
                None,
            ).unwrap());
            for t in 0..tokens {
                for source in 0..2 {
                    let ours = d.node_traffic_of(t, 12, source);
                    let theirs = local.node_traffic_of(t, 12, source);
                    prop_assert!(ours <= theirs, "token {} from {}: {} > {}", t, source, ours, theirs);
                    prop_assert_eq!(theirs, home_nodes(&r, t).iter().filter(|&&n| n != source).count());
                    // Extras that all hold home experts leave no scope.
                    match home_transfers_of(&r, &placement, t, source) {
                        Some(home) => prop_assert_eq!(home, theirs),
                        None => prop_assert!(placement.scope().is_none()),
                    }
                }
            }
            let (a, b) = (d.node_traffic(12, |t| t % 2, 1), local.node_traffic(12, |t| t % 2, 1));
            prop_assert!(a.transfers <= b.transfers && a.nodes_visited <= b.nodes_visited);
        }

        /// Every assignment lands on a replica of its expert, and each slot's
        /// token list is consistent with the per-assignment targets.
        #[test]
        fn dispatch_is_a_consistent_partition(tokens in 0usize..40, seed in 0u64..100, extra in prop::collection::vec(0u32..16, 0..10)) {
            let r = routing(tokens, seed);
            let mut row: Vec<u32> = (0..16).collect();
            row.extend(extra);
            let placement = Placement::new(row.clone(), 16, None).unwrap();
            let d = dispatch(&r, &placement);
            prop_assert_eq!(d.slot_counts().iter().sum::<usize>(), tokens * 4);
            for t in 0..tokens {
                for (i, &e) in r.experts_of(t).iter().enumerate() {
                    let (p, row_in_slot) = d.target(t, i);
                    prop_assert_eq!(row[p], e);
                    prop_assert_eq!(d.tokens_of(p)[row_in_slot] as usize, t);
                }
            }
            for e in 0..16 {
                let counts: Vec<usize> = placement.replicas_of(e).iter().map(|&p| d.slot_counts()[p]).collect();
                let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                prop_assert!(hi - lo <= 1, "uneven split {:?}", counts);
            }
        }
    }
}
