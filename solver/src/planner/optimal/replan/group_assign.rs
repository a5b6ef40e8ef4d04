//! Which node hosts which groups: a small exact model of its own.
//!
//! Node `i` takes `m = K / N` whole groups `T`. Each choice has a *load
//! cost* (a lower bound on the node's busiest GPU, supplied by the caller:
//! the even-split bound or, for weighted split, the node mean) and a *move
//! cost* (slots to copy when a group leaves the node it was on). The model
//!
//! ```text
//! minimise  Σ_i move(i, T_i)            (lexicographically first)
//!           max_i load(i, T_i)          (then)
//! s.t.      load(i, T_i) ≤ limit  for every node
//! ```
//!
//! is solved exactly by dynamic programming over bitmasks of groups (the
//! node index is the number of groups placed so far divided by `m`), which
//! is cheap up to [`EXACT_MAX_GROUPS`] groups. Without a previous plan every
//! move cost is zero and the model is the plain best split.

use crate::tolerance;

/// Most groups the bitmask model handles (`2^K` states).
pub(crate) const EXACT_MAX_GROUPS: usize = 20;

/// Most DP transitions tried before falling back to "keep or best split".
const MAX_TRANSITIONS: f64 = 5.0e6;

/// The answer: a node per group, its move cost and worst load cost.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assignment {
    pub node_of_group: Vec<u32>,
    pub moved: f64,
    pub worst: f64,
}

/// What the model needs to know.
pub(crate) struct GroupModel<'a> {
    pub groups: usize,
    pub nodes: usize,
    /// Load cost of node `i` hosting the groups in `mask`.
    pub load: &'a dyn Fn(usize, u32) -> f64,
    /// Cost of group `g` landing on node `i` (0 where it already was).
    pub move_cost: &'a dyn Fn(usize, usize) -> f64,
    /// Largest acceptable load cost.
    pub limit: f64,
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// Every `k`-subset of the bits of `avail`.
fn subsets(avail: u32, k: usize) -> Vec<u32> {
    let bits: Vec<u32> = (0..32)
        .filter(|b| avail & (1 << b) != 0)
        .map(|b| 1 << b)
        .collect();
    let mut out = Vec::new();
    let mut pick = Vec::with_capacity(k);
    fn go(bits: &[u32], k: usize, start: usize, pick: &mut Vec<u32>, out: &mut Vec<u32>) {
        if pick.len() == k {
            out.push(pick.iter().fold(0, |m, b| m | b));
            return;
        }
        for i in start..bits.len() {
            if bits.len() - i < k - pick.len() {
                break;
            }
            pick.push(bits[i]);
            go(bits, k, i + 1, pick, out);
            pick.pop();
        }
    }
    go(&bits, k, 0, &mut pick, &mut out);
    out
}

impl GroupModel<'_> {
    /// The exact optimum, or `None` when the model is too large or no
    /// assignment meets the limit.
    pub(crate) fn solve(&self) -> Option<Assignment> {
        let (k, n) = (self.groups, self.nodes);
        if k > EXACT_MAX_GROUPS || n == 0 || k % n != 0 {
            return None;
        }
        let m = k / n;
        let work: f64 = (0..n)
            .map(|i| binomial(k, i * m) * binomial(k - i * m, m))
            .sum();
        if work > MAX_TRANSITIONS {
            return None;
        }
        let states = 1usize << k;
        let full = (states - 1) as u32;
        let tol = tolerance::ROUNDING * self.limit.abs().max(1.0);
        // best[mask] = (moved, worst); choice[mask] = the last node's subset.
        let mut best = vec![(f64::INFINITY, f64::INFINITY); states];
        let mut choice = vec![0u32; states];
        best[0] = (0.0, 0.0);
        let mut load_cache = std::collections::HashMap::new();
        for mask in 0..full {
            let (moved, worst) = best[mask as usize];
            if !moved.is_finite() || !(mask.count_ones() as usize).is_multiple_of(m) {
                continue;
            }
            let node = mask.count_ones() as usize / m;
            for t in subsets(full & !mask, m) {
                let load = *load_cache
                    .entry((node, t))
                    .or_insert_with(|| (self.load)(node, t));
                if load > self.limit + tol {
                    continue;
                }
                let add: f64 = (0..k)
                    .filter(|g| t & (1 << g) != 0)
                    .map(|g| (self.move_cost)(g, node))
                    .sum();
                let value = (moved + add, worst.max(load));
                let next = (mask | t) as usize;
                let better = value.0 < best[next].0 - tol
                    || (value.0 <= best[next].0 + tol && value.1 < best[next].1 - tol);
                if better {
                    best[next] = value;
                    choice[next] = t;
                }
            }
        }
        let (moved, worst) = best[full as usize];
        if !moved.is_finite() {
            return None;
        }
        let mut node_of_group = vec![0u32; k];
        let mut mask = full;
        while mask != 0 {
            let t = choice[mask as usize];
            let before = mask ^ t;
            let node = (before.count_ones() as usize / m) as u32;
            (0..k)
                .filter(|g| t & (1 << g) != 0)
                .for_each(|g| node_of_group[g] = node);
            mask = before;
        }
        Some(Assignment {
            node_of_group,
            moved,
            worst,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every assignment of `k` groups to `n` nodes, `k / n` each.
    fn brute(model: &GroupModel) -> Option<(f64, f64)> {
        let (k, n) = (model.groups, model.nodes);
        let m = k / n;
        let mut best: Option<(f64, f64)> = None;
        let total = n.pow(k as u32);
        for code in 0..total {
            let mut nodes = vec![0u32; n];
            let mut c = code;
            let mut of = vec![0usize; k];
            for (g, node) in of.iter_mut().enumerate() {
                *node = c % n;
                nodes[c % n] |= 1 << g;
                c /= n;
            }
            if nodes.iter().any(|t| t.count_ones() as usize != m) {
                continue;
            }
            let loads: Vec<f64> = (0..n).map(|i| (model.load)(i, nodes[i])).collect();
            if loads.iter().any(|&l| l > model.limit) {
                continue;
            }
            let moved: f64 = (0..k).map(|g| (model.move_cost)(g, of[g])).sum();
            let worst = loads.iter().copied().fold(0.0, f64::max);
            if best.is_none_or(|(bm, bw)| moved < bm || (moved == bm && worst < bw)) {
                best = Some((moved, worst));
            }
        }
        best
    }

    #[test]
    fn matches_brute_force() {
        let weights = [9.0, 7.0, 6.0, 5.0, 3.0, 2.0];
        let speed = [1.0, 2.0, 1.0];
        let load = |i: usize, mask: u32| -> f64 {
            (0..6)
                .filter(|g| mask & (1 << g) != 0)
                .map(|g| weights[g])
                .sum::<f64>()
                / speed[i]
        };
        let prev = [0usize, 0, 1, 1, 2, 2];
        let move_cost = |g: usize, i: usize| if prev[g] == i { 0.0 } else { 3.0 + g as f64 };
        for limit in [100.0, 12.0, 11.0, 10.0, 9.5] {
            let model = GroupModel {
                groups: 6,
                nodes: 3,
                load: &load,
                move_cost: &move_cost,
                limit,
            };
            let got = model.solve().map(|a| (a.moved, a.worst));
            assert_eq!(got, brute(&model), "limit {limit}");
            if let Some(a) = model.solve() {
                let recomputed: f64 = (0..6)
                    .map(|g| move_cost(g, a.node_of_group[g] as usize))
                    .sum();
                assert_eq!(recomputed, a.moved);
            }
        }
    }
}
