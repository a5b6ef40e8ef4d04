//! Sparse optimal routings, for the budgeted search.
//!
//! A routing whose largest load is at most `T` is a flow of a
//! transportation problem: demands supply their tokens, GPU `g` takes at
//! most `cap[g]` (its whole tokens at `T`), and a slack node supplies the
//! rest of every GPU's capacity. Pushing tokens around a cycle of this
//! graph keeps every total, so the routing stays within `T`; only which
//! replicas carry tokens — what the budget counts — changes.
//!
//! [`fit_budget`] first cancels cycles until the used replicas form a
//! forest (a basis: at most demands + GPUs replicas in all, while the
//! budget allows GPUs × budget), each time emptying a replica on a GPU
//! over budget when it can. Then it pivots: a replica on a GPU with room
//! (or a GPU's slack) enters the forest, closing one cycle, and the cycle
//! is pushed until a replica on a GPU over budget leaves. Every pivot
//! lowers the total overrun by at least one, so it stops; when no pivot
//! helps, the branch and bound takes over.

use super::graph::LayerGraph;
use super::threshold::{Integral, NumberModel};

/// Edge states shared with the search.
pub(crate) const FREE: u8 = 0;
pub(crate) const ON: u8 = 1;
pub(crate) const OFF: u8 = 2;

const NONE: u32 = u32::MAX;

struct Basis<'a> {
    graph: &'a LayerGraph,
    demand_of_edge: &'a [u32],
    state: &'a [u8],
    budget: usize,
    /// Node ids: demands, then GPUs, then the slack node.
    demands: usize,
    /// Edges: the layer's, then one slack edge per GPU.
    flow: Vec<u64>,
    /// Edges that may carry tokens.
    usable: Vec<bool>,
    /// Per GPU: replicas counted against the budget.
    used: Vec<usize>,
    adjacency: Vec<Vec<u32>>,
    parent: Vec<u32>,
    queue: Vec<usize>,
}

/// Rearranges `flow` (an optimal routing over the edges `state` leaves
/// usable, of the demands with `tokens`, with largest load `threshold`)
/// without raising any GPU above `threshold`, towards at most `budget`
/// used replicas per GPU (edges switched on count whether used or not).
/// Leaves `flow` as it was when it is not such a routing.
pub(crate) fn fit_budget(
    graph: &LayerGraph,
    demand_of_edge: &[u32],
    state: &[u8],
    tokens: &[u64],
    budget: usize,
    threshold: f64,
    flow: &mut [u64],
) {
    let edges = graph.num_edges();
    let gpus = graph.num_gpus();
    let mut basis = Basis {
        graph,
        demand_of_edge,
        state,
        budget,
        demands: graph.num_demands(),
        flow: vec![0; edges + gpus],
        usable: vec![false; edges + gpus],
        used: vec![0; gpus],
        adjacency: vec![Vec::new(); graph.num_demands() + gpus + 1],
        parent: vec![NONE; graph.num_demands() + gpus + 1],
        queue: Vec::new(),
    };
    let mut load = vec![0u64; gpus];
    let mut present = vec![false; gpus];
    for e in 0..edges {
        let g = graph.edge_gpu[e] as usize;
        load[g] += flow[e];
        if state[e] != OFF && tokens[demand_of_edge[e] as usize] > 0 {
            basis.usable[e] = true;
            basis.flow[e] = flow[e];
            present[g] = true;
        } else if flow[e] > 0 {
            return;
        }
    }
    for g in (0..gpus).filter(|&g| present[g]) {
        let cap = Integral::capacity(threshold, graph.speeds[g]);
        let Some(slack) = cap.checked_sub(load[g]) else {
            return;
        };
        basis.usable[edges + g] = true;
        basis.flow[edges + g] = slack;
    }
    basis.cancel_cycles();
    while basis.overrun() > 0 && basis.pivot() {}
    flow.copy_from_slice(&basis.flow[..edges]);
}

impl Basis<'_> {
    /// The two nodes of an edge: (demand, GPU) or (GPU, slack node).
    fn ends(&self, e: usize) -> (usize, usize) {
        let edges = self.graph.num_edges();
        if e < edges {
            let gpu = self.demands + self.graph.edge_gpu[e] as usize;
            (self.demand_of_edge[e] as usize, gpu)
        } else {
            let gpu = self.demands + (e - edges);
            (gpu, self.demands + self.graph.num_gpus())
        }
    }

    /// The GPU whose budget an edge counts against, if any.
    fn budget_gpu(&self, e: usize) -> Option<usize> {
        (e < self.graph.num_edges()).then(|| self.graph.edge_gpu[e] as usize)
    }

    fn overrun(&self) -> usize {
        self.used
            .iter()
            .map(|&u| u.saturating_sub(self.budget))
            .sum()
    }

    fn recount(&mut self) {
        self.used.iter_mut().for_each(|u| *u = 0);
        for e in 0..self.graph.num_edges() {
            let s = self.state[e];
            if s == ON || (s == FREE && self.flow[e] > 0) {
                self.used[self.graph.edge_gpu[e] as usize] += 1;
            }
        }
    }

    /// True when emptying `e` lowers the overrun.
    fn relieves(&self, e: usize) -> bool {
        self.budget_gpu(e)
            .is_some_and(|g| self.state[e] == FREE && self.used[g] > self.budget)
    }

    /// Edges of the forest path from `from` to `to`, in order; the forest
    /// is `adjacency`.
    fn path(&mut self, from: usize, to: usize) -> Option<Vec<usize>> {
        self.parent.iter_mut().for_each(|p| *p = NONE);
        self.queue.clear();
        self.queue.push(from);
        let mut head = 0;
        while head < self.queue.len() && self.parent[to] == NONE {
            let v = self.queue[head];
            head += 1;
            for i in 0..self.adjacency[v].len() {
                let f = self.adjacency[v][i] as usize;
                let (a, b) = self.ends(f);
                let w = if a == v { b } else { a };
                if w != from && self.parent[w] == NONE {
                    self.parent[w] = f as u32;
                    self.queue.push(w);
                }
            }
        }
        if from == to || self.parent[to] == NONE {
            return None;
        }
        let mut edges = Vec::new();
        let mut v = to;
        while v != from {
            let f = self.parent[v] as usize;
            edges.push(f);
            let (a, b) = self.ends(f);
            v = if a == v { b } else { a };
        }
        edges.reverse();
        Some(edges)
    }

    /// The cycle closed by `entering` (ends `(a, b)`) and the forest path
    /// from `b` to `a`: the edges that lose tokens when `entering` gains
    /// (every other one along the path, starting at `b`) and those that gain.
    fn cycle(&mut self, entering: usize) -> Option<(Vec<usize>, Vec<usize>)> {
        let (a, b) = self.ends(entering);
        let path = self.path(b, a)?;
        let (mut losing, mut gaining) = (Vec::new(), vec![entering]);
        for (i, f) in path.into_iter().enumerate() {
            if i % 2 == 0 {
                losing.push(f);
            } else {
                gaining.push(f);
            }
        }
        Some((losing, gaining))
    }

    fn push(&mut self, losing: &[usize], gaining: &[usize], amount: u64) {
        for &f in losing {
            self.flow[f] -= amount;
        }
        for &f in gaining {
            self.flow[f] += amount;
        }
    }

    /// The edge of `side` with the least flow, preferring one that relieves
    /// a GPU over budget.
    fn emptiest(&self, side: &[usize]) -> Option<usize> {
        side.iter()
            .copied()
            .min_by_key(|&f| (self.flow[f], !self.relieves(f)))
    }

    /// Cancels cycles until the edges carrying tokens form a forest.
    ///
    /// Edges join a spanning forest one by one; one that closes a cycle
    /// has the cycle pushed until an edge of it empties. The forest's
    /// components stay the same when exactly one edge leaves; a tie (two
    /// edges emptied) may split one, and the pass starts over.
    fn cancel_cycles(&mut self) {
        let nodes = self.adjacency.len();
        'restart: loop {
            self.recount();
            self.adjacency.iter_mut().for_each(Vec::clear);
            let mut sets = UnionFind::new(nodes);
            for e in 0..self.flow.len() {
                if !self.usable[e] || self.flow[e] == 0 {
                    continue;
                }
                let (a, b) = self.ends(e);
                if sets.union(a, b) {
                    self.link(e);
                    continue;
                }
                let Some((losing, gaining)) = self.cycle(e) else {
                    continue;
                };
                // Either direction empties an edge; take the better one.
                let (Some(l), Some(g)) = (self.emptiest(&losing), self.emptiest(&gaining)) else {
                    continue;
                };
                let (drain, fill) = if self.relieves(g) && !self.relieves(l) {
                    (gaining, losing)
                } else {
                    (losing, gaining)
                };
                let amount = drain.iter().map(|&f| self.flow[f]).min().unwrap_or(0);
                self.push(&drain, &fill, amount);
                let emptied: Vec<usize> =
                    drain.into_iter().filter(|&f| self.flow[f] == 0).collect();
                for &f in &emptied {
                    if let Some(gpu) = self.budget_gpu(f).filter(|_| self.state[f] == FREE) {
                        self.used[gpu] -= 1;
                    }
                }
                match emptied.as_slice() {
                    [f] if *f == e => {}
                    [f] => {
                        self.unlink(*f);
                        self.link(e);
                    }
                    _ => continue 'restart,
                }
            }
            return;
        }
    }

    fn link(&mut self, e: usize) {
        let (a, b) = self.ends(e);
        self.adjacency[a].push(e as u32);
        self.adjacency[b].push(e as u32);
    }

    fn unlink(&mut self, e: usize) {
        let (a, b) = self.ends(e);
        for v in [a, b] {
            self.adjacency[v].retain(|&f| f as usize != e);
        }
    }

    /// One pivot that lowers the overrun; false when there is none.
    fn pivot(&mut self) -> bool {
        for entering in 0..self.flow.len() {
            if !self.usable[entering] || self.flow[entering] > 0 {
                continue;
            }
            let adds = self
                .budget_gpu(entering)
                .filter(|_| self.state[entering] == FREE);
            if adds.is_some_and(|h| self.used[h] >= self.budget) {
                continue;
            }
            let Some((losing, gaining)) = self.cycle(entering) else {
                continue;
            };
            let Some(leaving) = self.emptiest(&losing) else {
                continue;
            };
            if !self.relieves(leaving) || self.budget_gpu(leaving) == adds {
                continue;
            }
            let amount = self.flow[leaving];
            self.push(&losing, &gaining, amount);
            self.rebuild_forest();
            return true;
        }
        false
    }

    /// Counts and adjacency after a pivot (the edges stay a forest).
    fn rebuild_forest(&mut self) {
        self.recount();
        self.adjacency.iter_mut().for_each(Vec::clear);
        for e in 0..self.flow.len() {
            if self.usable[e] && self.flow[e] > 0 {
                let (a, b) = self.ends(e);
                self.adjacency[a].push(e as u32);
                self.adjacency[b].push(e as u32);
            }
        }
    }
}

/// Disjoint sets of `0..n`, for spanning forests.
struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind((0..n).collect())
    }

    fn find(&mut self, mut v: usize) -> usize {
        while self.0[v] != v {
            self.0[v] = self.0[self.0[v]];
            v = self.0[v];
        }
        v
    }

    /// Joins the sets of `a` and `b`; false when they were one already.
    fn union(&mut self, a: usize, b: usize) -> bool {
        let (a, b) = (self.find(a), self.find(b));
        self.0[a.max(b)] = a.min(b);
        a != b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::graph::Locality;
    use crate::Topology;

    /// Two GPUs each hosting experts 0, 1 and 2.
    fn both_host_all() -> LayerGraph {
        let t = Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 3, "num_groups": 1,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        LayerGraph::new(&t, &[0, 1, 2, 0, 1, 2], Locality::Any)
    }

    fn demand_of_edge(graph: &LayerGraph) -> Vec<u32> {
        let mut of = vec![0; graph.num_edges()];
        for d in 0..graph.num_demands() {
            for e in graph.edges(d) {
                of[e] = d as u32;
            }
        }
        of
    }

    #[test]
    fn an_even_split_becomes_one_within_budget() {
        let graph = both_host_all();
        let of = demand_of_edge(&graph);
        let tokens = [4, 4, 4];
        // Every expert split 2/2: three replicas used on each GPU.
        let mut flow = vec![2; graph.num_edges()];
        let state = vec![FREE; graph.num_edges()];
        fit_budget(&graph, &of, &state, &tokens, 2, 6.0, &mut flow);
        let mut load = [0; 2];
        let mut used = [0; 2];
        for (d, &t) in tokens.iter().enumerate() {
            let edges = graph.edges(d);
            assert_eq!(edges.clone().map(|e| flow[e]).sum::<u64>(), t);
            for e in edges {
                let g = graph.edge_gpu[e] as usize;
                load[g] += flow[e];
                used[g] += usize::from(flow[e] > 0);
            }
        }
        assert_eq!(load, [6, 6]);
        assert!(used.iter().all(|&u| u <= 2), "{used:?}");
    }

    #[test]
    fn a_flow_off_the_usable_edges_is_left_alone() {
        let graph = both_host_all();
        let of = demand_of_edge(&graph);
        let mut flow = vec![2; graph.num_edges()];
        let mut state = vec![FREE; graph.num_edges()];
        state[0] = OFF;
        fit_budget(&graph, &of, &state, &[4, 4, 4], 2, 6.0, &mut flow);
        assert_eq!(flow, vec![2; graph.num_edges()]);
    }
}
