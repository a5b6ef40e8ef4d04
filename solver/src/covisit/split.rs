//! Group→node splits under the co-visit rule, and the node-level optimum of
//! each: the exact lower bound the planner plans against.
//!
//! With groups fixed to nodes and co-visit replicas capped by the safe
//! shares `u[e][n]`, the least possible load of the busiest node (per unit of
//! speed) is a max-flow threshold. Its min cut has a closed form over node
//! sets `B`: the tokens that must stay inside `B` are, for each expert homed
//! in `B`, what its caps outside `B` cannot take, so
//! `T* = max_B Σ_{home(e) ∈ B} max(0, w_e − Σ_{n ∉ B} u[e][n]) / speed(B)`.
//! No GPU of a node can be below its node's share of that, so `T*` bounds
//! the layer's largest GPU load; the planner takes the split with the least.

use crate::topology::Topology;

use super::safe_share;

/// Above this many equal-size splits the planner does not enumerate them:
/// it keeps the node-local split and the bound falls back to even split.
const MAX_SPLITS: usize = 5_000;

/// Above this many nodes the closed form (2^N node sets) is not used.
const MAX_CUT_NODES: usize = 12;

/// Every equal-size group→node split of a topology (blocks unlabelled: node
/// labels are given by the order of each block's lowest group), or none
/// when there are too many to enumerate.
#[derive(Debug, Clone)]
pub(crate) struct CovisitSplits {
    /// `node_of_group` per split.
    pub splits: Vec<Vec<u32>>,
    /// Per node, the sum of its GPUs' speeds.
    pub node_speed: Vec<f64>,
}

impl CovisitSplits {
    /// `None` when groups do not divide evenly among nodes, or the splits or
    /// nodes are too many for the exact form.
    pub(crate) fn new(topology: &Topology) -> Option<Self> {
        let (k, n) = (topology.num_groups(), topology.num_nodes());
        if !topology.supports_hierarchical() || n > MAX_CUT_NODES {
            return None;
        }
        let mut splits = Vec::new();
        let mut node_of_group = vec![u32::MAX; k];
        if !enumerate(&mut node_of_group, k / n, 0, &mut splits) {
            return None;
        }
        let g = topology.gpus_per_node();
        let node_speed = (0..n)
            .map(|node| topology.gpu_speed()[node * g..(node + 1) * g].iter().sum())
            .collect();
        Some(CovisitSplits { splits, node_speed })
    }
}

/// Fills `splits` with every completion of `node_of_group` (blocks of `size`
/// groups, `next_node` blocks started so far); false when it exceeds
/// [`MAX_SPLITS`].
fn enumerate(
    node_of_group: &mut Vec<u32>,
    size: usize,
    next_node: u32,
    splits: &mut Vec<Vec<u32>>,
) -> bool {
    let Some(first) = node_of_group.iter().position(|&n| n == u32::MAX) else {
        splits.push(node_of_group.clone());
        return splits.len() <= MAX_SPLITS;
    };
    node_of_group[first] = next_node;
    let ok = choose(node_of_group, size - 1, first + 1, size, next_node, splits);
    node_of_group[first] = u32::MAX;
    ok
}

/// Picks `left` more free groups after `from` for block `node`, then recurses.
fn choose(
    node_of_group: &mut Vec<u32>,
    left: usize,
    from: usize,
    size: usize,
    node: u32,
    splits: &mut Vec<Vec<u32>>,
) -> bool {
    if left == 0 {
        return enumerate(node_of_group, size, node + 1, splits);
    }
    for g in from..node_of_group.len() {
        if node_of_group[g] == u32::MAX {
            node_of_group[g] = node;
            let ok = choose(node_of_group, left - 1, g + 1, size, node, splits);
            node_of_group[g] = u32::MAX;
            if !ok {
                return false;
            }
        }
    }
    true
}

/// One split's homes and caps for one layer's load.
#[derive(Debug, Clone, Default)]
pub(crate) struct SplitCaps {
    pub num_nodes: usize,
    /// Home node of each expert.
    pub home: Vec<u32>,
    /// `u[e * N + n]`: tokens of `e` a co-visit replica on `n` may take
    /// (0 on the home node, where home replicas take any token).
    pub cap: Vec<f64>,
}

impl SplitCaps {
    pub(crate) fn new(
        topology: &Topology,
        node_of_group: &[u32],
        row: &[f64],
        covisit: &[f64],
    ) -> Self {
        let (k, n) = (topology.num_groups(), topology.num_nodes());
        let mut caps = SplitCaps {
            num_nodes: n,
            home: Vec::with_capacity(row.len()),
            cap: vec![0.0; row.len() * n],
        };
        for (e, &w) in row.iter().enumerate() {
            let home = node_of_group[topology.group_of_expert(e)];
            caps.home.push(home);
            let counts = &covisit[e * k..(e + 1) * k];
            for node in 0..n as u32 {
                if node != home {
                    let groups = (0..k).filter(|&g| node_of_group[g] == node);
                    caps.cap[e * n + node as usize] = safe_share(counts, groups, w);
                }
            }
        }
        caps
    }

    /// The least possible busiest-node load per unit of speed (`T*`).
    pub(crate) fn node_optimum(&self, row: &[f64], node_speed: &[f64]) -> f64 {
        let n = self.num_nodes;
        let mut cut = NodeCut::new(node_speed);
        for (e, &w) in row.iter().enumerate() {
            if w > 0.0 {
                cut.add(&self.cap[e * n..(e + 1) * n], self.home[e] as usize, w);
            }
        }
        cut.level()
    }
}

/// The closed form of the module doc, one expert at a time: per node set
/// `B`, the tokens that must stay inside it.
struct NodeCut {
    need: Vec<f64>,
    /// Caps inside each set, rebuilt per expert.
    inside: Vec<f64>,
    inverse_speed: Vec<f64>,
}

impl NodeCut {
    fn new(node_speed: &[f64]) -> Self {
        let n = node_speed.len();
        let inverse_speed = (0..1usize << n)
            .map(|set| {
                let speed: f64 = (0..n)
                    .filter(|&m| set & (1 << m) != 0)
                    .map(|m| node_speed[m])
                    .sum();
                if speed > 0.0 {
                    1.0 / speed
                } else {
                    0.0
                }
            })
            .collect();
        NodeCut {
            need: vec![0.0; 1 << n],
            inside: vec![0.0; 1 << n],
            inverse_speed,
        }
    }

    fn clear(&mut self) {
        self.need.iter_mut().for_each(|v| *v = 0.0);
    }

    /// Adds an expert of load `w` homed on `home`, with co-visit caps
    /// `caps` per node (0 at home).
    fn add(&mut self, caps: &[f64], home: usize, w: f64) {
        let all: f64 = caps.iter().sum();
        for set in 1..self.need.len() {
            let low = set.trailing_zeros() as usize;
            self.inside[set] = self.inside[set & (set - 1)] + caps[low];
            if set & (1 << home) != 0 {
                self.need[set] += (w - (all - self.inside[set])).max(0.0);
            }
        }
    }

    /// The busiest set's load per unit of speed: `T*` once every expert is in.
    fn level(&self) -> f64 {
        self.need
            .iter()
            .zip(&self.inverse_speed)
            .map(|(v, inv)| v * inv)
            .fold(0.0, f64::max)
    }
}

/// The co-visit bound on one layer's largest GPU load: the least node-level
/// optimum over every split, and never below the even-split bound (which
/// holds for any placement). Returns the bound and the split reaching it.
///
/// The same closed form as [`SplitCaps::node_optimum`] (`NodeCut`), with
/// caps built in place per split, and a split dropped as soon as its
/// partial level (which only grows) reaches the best optimum found.
pub(crate) fn covisit_bound_load(
    topology: &Topology,
    splits: &CovisitSplits,
    row: &[f64],
    covisit: &[f64],
    even_split_load: f64,
) -> (f64, usize) {
    let (k, n) = (topology.num_groups(), topology.num_nodes());
    let mut cut = NodeCut::new(&splits.node_speed);
    let mut caps = vec![0.0; n];
    // Hot experts first: partial sums then rise fast, so a split that
    // cannot win is dropped early.
    let mut order: Vec<usize> = (0..row.len()).filter(|&e| row[e] > 0.0).collect();
    order.sort_unstable_by(|&a, &b| row[b].total_cmp(&row[a]));
    let (mut best, mut at) = (f64::INFINITY, 0);
    'splits: for (i, node_of_group) in splits.splits.iter().enumerate() {
        cut.clear();
        for (done, &e) in order.iter().enumerate() {
            let w = row[e];
            let counts = &covisit[e * k..(e + 1) * k];
            let home = node_of_group[topology.group_of_expert(e)] as usize;
            caps.iter_mut().for_each(|c| *c = 0.0);
            for (g, &node) in node_of_group.iter().enumerate() {
                let node = node as usize;
                if node != home {
                    caps[node] = f64::max(caps[node], counts[g].min(w));
                }
            }
            cut.add(&caps, home, w);
            // The partial level only grows.
            if done % 8 == 7 && cut.level() >= best {
                continue 'splits;
            }
        }
        let t = cut.level();
        if t < best {
            (best, at) = (t, i);
        }
    }
    (best.max(even_split_load), at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(groups: usize, nodes: usize) -> Topology {
        let slots = groups.div_ceil(nodes) + 1;
        Topology::from_json(&format!(
            r#"{{"num_layers": 1, "num_logical_experts": {groups}, "num_groups": {groups},
                "num_nodes": {nodes}, "gpus_per_node": 1, "slots_per_gpu": {slots}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn enumerates_every_equal_split_once() {
        let count = |g, n| CovisitSplits::new(&topology(g, n)).unwrap().splits.len();
        assert_eq!(count(8, 4), 105);
        assert_eq!(count(8, 2), 35);
        assert_eq!(count(8, 8), 1);
        assert_eq!(count(4, 2), 3);
        let splits = CovisitSplits::new(&topology(8, 4)).unwrap().splits;
        let mut seen = std::collections::HashSet::new();
        for s in &splits {
            for node in 0..4 {
                assert_eq!(s.iter().filter(|&&n| n == node).count(), 2);
            }
            assert!(seen.insert(s.clone()));
        }
    }

    #[test]
    fn node_optimum_is_the_flow_threshold() {
        // Two nodes of speed 1, one expert per group: 10 and 2 on their
        // nodes. Node 1 may take up to 3 of expert 0's tokens: 7 vs 5.
        let t = topology(2, 2);
        let row = [10.0, 2.0];
        let covisit = [10.0, 3.0, 1.0, 2.0];
        let caps = SplitCaps::new(&t, &[0, 1], &row, &covisit);
        assert_eq!(caps.cap, vec![0.0, 3.0, 1.0, 0.0]);
        assert!((caps.node_optimum(&row, &[1.0, 1.0]) - 7.0).abs() < 1e-12);
        // With a cap of 5 or more the nodes can meet at 6.
        let covisit = [10.0, 8.0, 1.0, 2.0];
        let caps = SplitCaps::new(&t, &[0, 1], &row, &covisit);
        assert!((caps.node_optimum(&row, &[1.0, 1.0]) - 6.0).abs() < 1e-12);
    }

    #[test]
    fn bound_takes_the_best_split_and_agrees_with_the_caps() {
        let t = topology(4, 2);
        let splits = CovisitSplits::new(&t).unwrap();
        // Experts (= groups) 0..4; expert 0 is hot, co-visits group 3 often.
        let row = [12.0, 2.0, 2.0, 4.0];
        let covisit = [
            12.0, 1.0, 1.0, 6.0, //
            1.0, 2.0, 1.0, 1.0, //
            1.0, 1.0, 2.0, 1.0, //
            2.0, 1.0, 1.0, 4.0,
        ];
        let (bound, at) = covisit_bound_load(&t, &splits, &row, &covisit, 0.0);
        let by_caps = splits
            .splits
            .iter()
            .map(|s| SplitCaps::new(&t, s, &row, &covisit).node_optimum(&row, &splits.node_speed))
            .fold(f64::INFINITY, f64::min);
        assert!((bound - by_caps).abs() < 1e-12, "{bound} vs {by_caps}");
        // Expert 0 alone on a node with 1 of its 12 tokens' co-visitors
        // elsewhere cannot reach 10 per node; next to group 3 it sends 6.
        assert!(bound < 12.0);
        let caps = SplitCaps::new(&t, &splits.splits[at], &row, &covisit);
        assert!((caps.node_optimum(&row, &splits.node_speed) - bound).abs() < 1e-12);
    }
}
