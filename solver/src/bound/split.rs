//! The node-local bound: which equal-size set of groups each node hosts.
//!
//! Under hierarchical placement node `n` hosts `m = K / N` whole groups `T`
//! and all their replicas on its `G * S` slots. Whatever the plan does inside
//! the node, its busiest GPU carries at least
//!
//! ```text
//! cost(n, T) = max( W_T / speed_n ,  mm_T / max_speed_n )
//! ```
//!
//! where `W_T` is the load of the groups, `speed_n` the node's total GPU speed
//! (the busiest GPU is at least the speed-weighted mean), and `mm_T` the
//! smallest possible heaviest replica when the node's slots are replicated
//! optimally ([`Replication`]), which has to sit on some GPU no faster than the
//! node's fastest. A layer's node-local bound is the best split's worst node:
//! `min over splits of max over nodes of cost(n, T_n)`.
//!
//! The split is found exactly by dynamic programming over bitmasks of groups
//! (`f(mask)` = the best worst-node cost for the groups in `mask` given to the
//! first `|mask| / m` nodes). Identical nodes make the order of nodes
//! irrelevant, so the node that takes the lowest unassigned group is fixed and
//! only `(m-1)`-subsets of the rest are tried. When the state space is too
//! large ([`EXACT_WORK_LIMIT`]) the split falls back to a greedy packing and
//! the bound to weaker, still valid terms ([`SplitSetup::is_exact`] says which).

use super::replicas::Replication;
use crate::topology::Topology;

/// Most groups the exact split handles (the DP keeps `2^K` states).
const EXACT_MAX_GROUPS: usize = 20;

/// Most elementary steps (DP transitions plus per-subset replication work) a
/// layer's exact split may take: 8 groups on 4 nodes need about 2e3, 16
/// groups on 4 nodes about 9e5.
const EXACT_WORK_LIMIT: f64 = 4.0e6;

/// What the bound needs to know about one node's GPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NodeProfile {
    speed_sum: f64,
    max_speed: f64,
    /// Slots on the node's live GPUs (only checked, never part of a cost).
    live_slots: usize,
}

impl NodeProfile {
    fn cost(self, load: f64, max_replica: f64) -> f64 {
        (load / self.speed_sum).max(max_replica / self.max_speed)
    }
}

/// How a topology's splits are computed.
#[derive(Debug, Clone, PartialEq)]
enum Method {
    /// Every split is equivalent (one node, or one group per identical
    /// node): groups go to nodes in order.
    Fixed,
    /// Dynamic programming over the `m`-subsets listed here.
    Exact { subsets: Vec<u32> },
    /// Greedy packing; the bound uses weaker terms.
    Greedy,
}

/// Per-topology facts for splitting groups among nodes; read-only, shared by
/// all layers and threads.
#[derive(Debug, Clone)]
pub(crate) struct SplitSetup {
    groups: usize,
    per_node: usize,
    experts_per_group: usize,
    node_slots: usize,
    profiles: Vec<NodeProfile>,
    /// All nodes have the same profile, so the DP may fix node order.
    symmetric: bool,
    /// `min over nodes of max_speed / speed_sum`: a replica load at most
    /// this times a node's load never decides that node's cost.
    replica_per_mean: f64,
    method: Method,
}

/// A group→node split and the node-local bound it reaches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeSplit {
    /// The node that hosts each group.
    pub node_of_group: Vec<u32>,
    /// Lower bound on the layer's largest GPU load (tokens / speed) under
    /// node-local placement.
    pub bound_load: f64,
}

/// Per-thread buffers for [`SplitSetup::split`].
#[derive(Debug, Default)]
pub(crate) struct SplitScratch {
    group_load: Vec<f64>,
    /// Each group's heaviest loads, heaviest first, `keep` per group.
    group_top: Vec<f64>,
    /// Merge cursors (next, end) into `group_top`, one per group of a subset.
    heads: Vec<(usize, usize)>,
    subset_load: Vec<f64>,
    subset_max_replica: Vec<f64>,
    best: Vec<f64>,
    choice: Vec<u32>,
    weights: Vec<f64>,
    positions: Vec<u32>,
    combo: Vec<usize>,
}

fn binomial(n: usize, k: usize) -> f64 {
    if k > n {
        return 0.0;
    }
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Calls `visit` with every mask made of `k` of the bits in `avail`.
fn for_each_combination(
    avail: u32,
    k: usize,
    positions: &mut Vec<u32>,
    combo: &mut Vec<usize>,
    mut visit: impl FnMut(u32),
) {
    positions.clear();
    let mut bits = avail;
    while bits != 0 {
        positions.push(bits & bits.wrapping_neg());
        bits &= bits - 1;
    }
    let r = positions.len();
    if k > r {
        return;
    }
    combo.clear();
    combo.extend(0..k);
    loop {
        visit(combo.iter().fold(0, |mask, &i| mask | positions[i]));
        // Advance the rightmost index that can still move, reset the rest.
        let Some(j) = (0..k).rev().find(|&j| combo[j] < r - k + j) else {
            return;
        };
        combo[j] += 1;
        for t in j + 1..k {
            combo[t] = combo[t - 1] + 1;
        }
    }
}

impl SplitSetup {
    /// Prepares splitting for `topology`; `None` when node-local placement
    /// is impossible (`K % N != 0`).
    pub(crate) fn new(topology: &Topology) -> Option<Self> {
        Self::live(topology, &[])
    }

    /// Like [`SplitSetup::new`] with the GPUs flagged in `down` (one flag per
    /// GPU; empty: none) holding no load: a node's profile counts its live
    /// GPUs only. `None` also when some node's live slots cannot hold the
    /// experts of its `K / N` groups (then no node-local plan exists).
    ///
    /// Every node is still credited with all its slots for replication: with
    /// fewer, the heaviest replica can only get heavier, so the bound stays
    /// valid (a little weaker on the degraded node).
    pub(crate) fn live(topology: &Topology, down: &[bool]) -> Option<Self> {
        if !topology.supports_hierarchical() {
            return None;
        }
        let groups = topology.num_groups();
        let nodes = topology.num_nodes();
        let per_node = groups / nodes;
        let gpus = topology.gpus_per_node();
        let is_down = |gpu: usize| down.get(gpu).copied().unwrap_or(false);
        let profiles: Vec<NodeProfile> = topology
            .gpu_speed()
            .chunks_exact(gpus)
            .enumerate()
            .map(|(node, speeds)| {
                let live = || {
                    speeds
                        .iter()
                        .enumerate()
                        .filter(move |(i, _)| !is_down(node * gpus + i))
                        .map(|(_, &s)| s)
                };
                NodeProfile {
                    speed_sum: live().sum(),
                    max_speed: live().fold(0.0, f64::max),
                    live_slots: live().count() * topology.slots_per_gpu(),
                }
            })
            .collect();
        let hosted = per_node * topology.experts_per_group();
        if profiles.iter().any(|p| p.live_slots < hosted) {
            return None;
        }
        let symmetric = profiles.iter().all(|p| *p == profiles[0]);
        let replica_per_mean = profiles
            .iter()
            .map(|p| p.max_speed / p.speed_sum)
            .fold(f64::INFINITY, f64::min);
        let experts_per_group = topology.experts_per_group();
        let method = if nodes == 1 || (per_node == 1 && symmetric) {
            Method::Fixed
        } else if groups <= EXACT_MAX_GROUPS
            && exact_work(groups, per_node, nodes, experts_per_group, symmetric) <= EXACT_WORK_LIMIT
        {
            let mut subsets = Vec::new();
            let (mut positions, mut combo) = (Vec::new(), Vec::new());
            let full = (1u32 << groups) - 1;
            for_each_combination(full, per_node, &mut positions, &mut combo, |t| {
                subsets.push(t)
            });
            Method::Exact { subsets }
        } else {
            Method::Greedy
        };
        Some(SplitSetup {
            groups,
            per_node,
            experts_per_group,
            node_slots: topology.slots_per_node(),
            profiles,
            symmetric,
            replica_per_mean,
            method,
        })
    }

    /// True when every layer's split (and bound) will be exact.
    pub(crate) fn is_exact(&self) -> bool {
        self.method != Method::Greedy
    }

    /// The best split of one layer (`row` = per-expert load) and its bound.
    pub(crate) fn split(
        &self,
        row: &[f64],
        replication: &mut Replication,
        scratch: &mut SplitScratch,
    ) -> NodeSplit {
        scratch.group_load.clear();
        scratch.group_load.extend(
            row.chunks_exact(self.experts_per_group)
                .map(|g| g.iter().sum::<f64>()),
        );
        match &self.method {
            Method::Fixed => self.fixed(row, replication, scratch),
            Method::Exact { subsets } => self.exact(row, subsets, replication, scratch),
            Method::Greedy => self.greedy(row, replication, scratch),
        }
    }

    /// Keeps each group's heaviest `extra + 1` loads (`extra` = the slots a
    /// node has beyond its experts), heaviest first: only those can take a
    /// node's extra replicas (see [`Replication`]), so a subset's best
    /// heaviest replica is computed from them alone.
    fn keep_group_tops(&self, row: &[f64], scratch: &mut SplitScratch) -> (usize, usize) {
        let extra = self.node_slots - self.per_node * self.experts_per_group;
        let keep = (extra + 1).min(self.experts_per_group);
        scratch.group_top.clear();
        for group in row.chunks_exact(self.experts_per_group) {
            scratch.weights.clear();
            scratch.weights.extend_from_slice(group);
            if keep < group.len() {
                scratch
                    .weights
                    .select_nth_unstable_by(keep - 1, |a, b| b.total_cmp(a));
            }
            let top = &mut scratch.weights[..keep];
            top.sort_unstable_by(|a, b| b.total_cmp(a));
            scratch.group_top.extend_from_slice(top);
        }
        (keep, extra)
    }

    /// Load and heaviest-replica term of the groups in `mask` on one node,
    /// from the group tops of [`SplitSetup::keep_group_tops`]: their merged
    /// `extra + 1` heaviest loads are all the water-filling needs. The term
    /// is the best heaviest replica, or an upper bound on it that is already
    /// below the mean term on every node (same cost either way).
    fn subset_figures(
        &self,
        mask: u32,
        (keep, extra): (usize, usize),
        replication: &mut Replication,
        scratch: &mut SplitScratch,
    ) -> (f64, f64) {
        scratch.heads.clear();
        let mut load = 0.0;
        let mut bits = mask;
        while bits != 0 {
            let g = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            scratch.heads.push((g * keep, (g + 1) * keep));
            load += scratch.group_load[g];
        }
        scratch.weights.clear();
        let wanted = (extra + 1).min(keep * scratch.heads.len());
        while scratch.weights.len() < wanted {
            let mut best: Option<usize> = None;
            for (i, &(head, end)) in scratch.heads.iter().enumerate() {
                if head < end
                    && best.is_none_or(|b| {
                        scratch.group_top[head] > scratch.group_top[scratch.heads[b].0]
                    })
                {
                    best = Some(i);
                }
            }
            let Some(i) = best else {
                break;
            };
            scratch.weights.push(scratch.group_top[scratch.heads[i].0]);
            scratch.heads[i].0 += 1;
        }
        // Giving each of the `extra` heaviest one more replica is feasible;
        // when even that leaves the replicas below every node's mean load,
        // the mean decides the cost and the exact value is not needed.
        let (heaviest, rest) = (scratch.weights[0], scratch.weights.get(extra));
        let feasible = if extra == 0 {
            heaviest
        } else {
            (heaviest / 2.0).max(rest.copied().unwrap_or(0.0))
        };
        if feasible <= load * self.replica_per_mean {
            return (load, feasible);
        }
        let slots = scratch.weights.len() + extra;
        (load, replication.run(&scratch.weights, slots))
    }

    fn fixed(
        &self,
        row: &[f64],
        replication: &mut Replication,
        scratch: &mut SplitScratch,
    ) -> NodeSplit {
        let node_of_group: Vec<u32> = (0..self.groups)
            .map(|g| (g / self.per_node) as u32)
            .collect();
        let bound_load = self.bound_of(row, &node_of_group, replication, scratch);
        NodeSplit {
            node_of_group,
            bound_load,
        }
    }

    /// The worst node cost of a given split.
    fn bound_of(
        &self,
        row: &[f64],
        node_of_group: &[u32],
        replication: &mut Replication,
        scratch: &mut SplitScratch,
    ) -> f64 {
        let mut worst: f64 = 0.0;
        for (n, profile) in self.profiles.iter().enumerate() {
            // Fixed and greedy splits may have more than 32 groups, so the
            // node's groups are gathered from the list, not from a mask.
            scratch.weights.clear();
            let mut load = 0.0;
            for (g, &node) in node_of_group.iter().enumerate() {
                if node as usize == n {
                    let start = g * self.experts_per_group;
                    scratch
                        .weights
                        .extend_from_slice(&row[start..start + self.experts_per_group]);
                    load += scratch.group_load[g];
                }
            }
            let max_replica = replication.run(&scratch.weights, self.node_slots);
            worst = worst.max(profile.cost(load, max_replica));
        }
        worst
    }

    fn exact(
        &self,
        row: &[f64],
        subsets: &[u32],
        replication: &mut Replication,
        scratch: &mut SplitScratch,
    ) -> NodeSplit {
        let states = 1usize << self.groups;
        let full = (states - 1) as u32;
        scratch.subset_load.clear();
        scratch.subset_load.resize(states, 0.0);
        scratch.subset_max_replica.clear();
        scratch.subset_max_replica.resize(states, 0.0);
        let tops = self.keep_group_tops(row, scratch);
        for &t in subsets {
            let (load, max_replica) = self.subset_figures(t, tops, replication, scratch);
            scratch.subset_load[t as usize] = load;
            scratch.subset_max_replica[t as usize] = max_replica;
        }
        scratch.best.clear();
        scratch.best.resize(states, f64::INFINITY);
        scratch.choice.clear();
        scratch.choice.resize(states, 0);
        scratch.best[0] = 0.0;
        let SplitScratch {
            subset_load,
            subset_max_replica,
            best,
            choice,
            positions,
            combo,
            ..
        } = scratch;
        for mask in 0..full {
            let so_far = best[mask as usize];
            if !so_far.is_finite() || !(mask.count_ones() as usize).is_multiple_of(self.per_node) {
                continue;
            }
            let node = mask.count_ones() as usize / self.per_node;
            let profile = self.profiles[node];
            let rest = full & !mask;
            let (anchor, avail, k) = if self.symmetric {
                let low = rest & rest.wrapping_neg();
                (low, rest ^ low, self.per_node - 1)
            } else {
                (0, rest, self.per_node)
            };
            for_each_combination(avail, k, positions, combo, |picked| {
                let t = (picked | anchor) as usize;
                let value = so_far.max(profile.cost(subset_load[t], subset_max_replica[t]));
                let next = mask as usize | t;
                if value < best[next] {
                    best[next] = value;
                    choice[next] = t as u32;
                }
            });
        }
        let mut node_of_group = vec![0u32; self.groups];
        let mut mask = full;
        while mask != 0 {
            let t = choice[mask as usize];
            let before = mask ^ t;
            let node = (before.count_ones() as usize / self.per_node) as u32;
            let mut bits = t;
            while bits != 0 {
                node_of_group[bits.trailing_zeros() as usize] = node;
                bits &= bits - 1;
            }
            mask = before;
        }
        NodeSplit {
            node_of_group,
            bound_load: best[full as usize],
        }
    }

    /// Heaviest group first onto the node it leaves least loaded; the bound
    /// keeps only terms that hold for every split (see [`SplitSetup`]).
    fn greedy(
        &self,
        row: &[f64],
        replication: &mut Replication,
        scratch: &mut SplitScratch,
    ) -> NodeSplit {
        let nodes = self.profiles.len();
        let mut order: Vec<usize> = (0..self.groups).collect();
        let group_load = &scratch.group_load;
        order.sort_by(|&a, &b| group_load[b].total_cmp(&group_load[a]).then(a.cmp(&b)));
        let mut node_load = vec![0.0; nodes];
        let mut hosted = vec![0usize; nodes];
        let mut node_of_group = vec![0u32; self.groups];
        for &g in &order {
            let w = group_load[g];
            let best = (0..nodes)
                .filter(|&n| hosted[n] < self.per_node)
                .min_by(|&a, &b| {
                    let la = (node_load[a] + w) / self.profiles[a].speed_sum;
                    let lb = (node_load[b] + w) / self.profiles[b].speed_sum;
                    la.total_cmp(&lb).then(a.cmp(&b))
                })
                // The nodes have K slots for groups in all, so one is free.
                .unwrap_or(0);
            node_load[best] += w;
            hosted[best] += 1;
            node_of_group[g] = best as u32;
        }
        let bound_load = self.split_free_bound(row, &order, replication, scratch);
        NodeSplit {
            node_of_group,
            bound_load,
        }
    }

    /// A node-local bound that holds for every split: the node hosting the
    /// heaviest group carries at least it plus the `m - 1` lightest others on
    /// at most the largest node speed, and every group's own heaviest replica
    /// lands on some node.
    fn split_free_bound(
        &self,
        row: &[f64],
        heaviest_first: &[usize],
        replication: &mut Replication,
        scratch: &mut SplitScratch,
    ) -> f64 {
        let max_speed_sum = self
            .profiles
            .iter()
            .map(|p| p.speed_sum)
            .fold(0.0, f64::max);
        let max_speed = self
            .profiles
            .iter()
            .map(|p| p.max_speed)
            .fold(0.0, f64::max);
        let heaviest = heaviest_first
            .first()
            .map_or(0.0, |&g| scratch.group_load[g]);
        let lightest: f64 = heaviest_first
            .iter()
            .rev()
            .take(self.per_node - 1)
            .map(|&g| scratch.group_load[g])
            .sum();
        let mut bound = (heaviest + lightest) / max_speed_sum;
        for g in 0..self.groups {
            let start = g * self.experts_per_group;
            let max_replica =
                replication.run(&row[start..start + self.experts_per_group], self.node_slots);
            bound = bound.max(max_replica / max_speed);
        }
        bound
    }
}

/// Elementary steps of the exact split for one layer (see [`EXACT_WORK_LIMIT`]).
fn exact_work(
    groups: usize,
    per_node: usize,
    nodes: usize,
    experts_per_group: usize,
    symmetric: bool,
) -> f64 {
    let transitions: f64 = (0..nodes)
        .map(|i| {
            let done = i * per_node;
            let rest = groups - done;
            let tried = if symmetric {
                binomial(rest.saturating_sub(1), per_node - 1)
            } else {
                binomial(rest, per_node)
            };
            binomial(groups, done) * tried
        })
        .sum();
    let replication = binomial(groups, per_node) * (per_node * experts_per_group) as f64;
    transitions + replication
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::TopologySpec;

    fn topology(groups: i64, nodes: i64, speed: Option<Vec<f64>>) -> Topology {
        Topology::new(TopologySpec {
            num_layers: 1,
            num_logical_experts: groups * 2,
            num_groups: groups,
            num_nodes: nodes,
            gpus_per_node: 2,
            slots_per_gpu: groups / nodes + 1,
            gpu_speed: speed,
            expert_bytes: None,
            num_hidden_layers: None,
            first_moe_layer: None,
            mtp_layers: None,
        })
        .unwrap()
    }

    /// Every assignment of groups to nodes with `m` groups each.
    fn brute(setup: &SplitSetup, row: &[f64]) -> f64 {
        let mut r = Replication::default();
        let mut s = SplitScratch {
            group_load: row
                .chunks_exact(setup.experts_per_group)
                .map(|g| g.iter().sum())
                .collect(),
            ..SplitScratch::default()
        };
        let nodes = setup.profiles.len();
        let mut best = f64::INFINITY;
        let total = nodes.pow(setup.groups as u32);
        for code in 0..total {
            let split: Vec<u32> = (0..setup.groups)
                .map(|g| ((code / nodes.pow(g as u32)) % nodes) as u32)
                .collect();
            let even = (0..nodes)
                .all(|n| split.iter().filter(|&&x| x as usize == n).count() == setup.per_node);
            if even {
                best = best.min(setup.bound_of(row, &split, &mut r, &mut s));
            }
        }
        best
    }

    #[test]
    fn combinations_are_complete() {
        let (mut p, mut c) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        for_each_combination(0b1011_0110, 3, &mut p, &mut c, |m| seen.push(m));
        assert_eq!(seen.len(), 10);
        assert!(seen
            .iter()
            .all(|m| m.count_ones() == 3 && m & !0b1011_0110 == 0));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn exact_split_matches_brute_force() {
        let rows: [&[f64]; 3] = [
            &[9.0, 1.0, 4.0, 4.0, 7.0, 2.0, 3.0, 3.0, 8.0, 0.0, 5.0, 5.0],
            &[30.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 9.0, 9.0],
            &[1.0; 12],
        ];
        let symmetric = topology(6, 3, None);
        let skewed = topology(6, 3, Some(vec![1.0, 1.0, 2.0, 1.0, 0.5, 0.5]));
        for t in [symmetric, skewed] {
            let setup = SplitSetup::new(&t).unwrap();
            assert!(matches!(setup.method, Method::Exact { .. }));
            for row in rows {
                let mut r = Replication::default();
                let mut s = SplitScratch::default();
                let got = setup.split(row, &mut r, &mut s);
                assert!(
                    (got.bound_load - brute(&setup, row)).abs() < 1e-12,
                    "{row:?}"
                );
                // The returned split reaches the bound it reports.
                let reached = setup.bound_of(row, &got.node_of_group, &mut r, &mut s);
                assert!((reached - got.bound_load).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn greedy_fallback_stays_below_exact() {
        let t = topology(6, 3, None);
        let setup = SplitSetup::new(&t).unwrap();
        let greedy = SplitSetup {
            method: Method::Greedy,
            ..setup.clone()
        };
        let row = [9.0, 1.0, 4.0, 4.0, 7.0, 2.0, 3.0, 3.0, 8.0, 0.0, 5.0, 5.0];
        let (mut r, mut s) = (Replication::default(), SplitScratch::default());
        let exact = setup.split(&row, &mut r, &mut s);
        let weak = greedy.split(&row, &mut r, &mut s);
        assert!(!greedy.is_exact() && weak.bound_load <= exact.bound_load + 1e-12);
        let per_node: Vec<usize> = (0..3)
            .map(|n| weak.node_of_group.iter().filter(|&&x| x == n).count())
            .collect();
        assert_eq!(per_node, vec![2, 2, 2]);
    }
}
