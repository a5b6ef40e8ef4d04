//! A small max-flow network (Dinic) that keeps its flow between solves.
//!
//! The router raises sink capacities step by step while it searches for the
//! optimal threshold; a raised capacity only adds residual capacity, so each
//! solve continues from the previous flow instead of starting over. All
//! buffers are reused across builds: after warm-up, nothing allocates.

use super::threshold::Amount;

const UNREACHED: u32 = u32::MAX;

/// A directed network in compressed adjacency form, with residual capacities.
#[derive(Debug, Default)]
pub(crate) struct FlowNetwork<A> {
    /// Arcs of node `v`: `first[v]..first[v + 1]`.
    first: Vec<u32>,
    head: Vec<u32>,
    /// The paired arc in the opposite direction.
    pair: Vec<u32>,
    residual: Vec<A>,
    level: Vec<u32>,
    cursor: Vec<u32>,
    queue: Vec<u32>,
    /// Residual capacity at or below this counts as none (0 for integers).
    tolerance: A,
    /// Edges as added, before `finish` lays them out: (from, to, capacity).
    pending: Vec<(u32, u32, A)>,
    /// The forward arc of each added edge, valid after `finish`.
    edge_arc: Vec<u32>,
}

impl<A: Amount> FlowNetwork<A> {
    /// Starts a new network of `nodes` nodes, dropping the previous one.
    pub(crate) fn reset(&mut self, nodes: usize) {
        self.pending.clear();
        self.first.clear();
        self.first.resize(nodes + 1, 0);
    }

    /// Adds an edge with capacity `capacity`; returns its id for
    /// [`flow`](Self::flow) and [`set_capacity`](Self::set_capacity).
    pub(crate) fn add_edge(&mut self, from: usize, to: usize, capacity: A) -> usize {
        self.pending.push((from as u32, to as u32, capacity));
        self.pending.len() - 1
    }

    /// Lays out the added edges; [`restart`](Self::restart) makes it ready
    /// to solve.
    pub(crate) fn finish(&mut self) {
        let nodes = self.first.len() - 1;
        self.first.iter_mut().for_each(|f| *f = 0);
        for &(from, to, _) in &self.pending {
            self.first[from as usize + 1] += 1;
            self.first[to as usize + 1] += 1;
        }
        for v in 0..nodes {
            self.first[v + 1] += self.first[v];
        }
        let arcs = self.first[nodes] as usize;
        self.head.resize(arcs, 0);
        self.pair.resize(arcs, 0);
        self.residual.resize(arcs, A::default());
        self.cursor.clear();
        self.cursor.extend_from_slice(&self.first[..nodes]);
        self.edge_arc.clear();
        for &(from, to, _) in &self.pending {
            let a = self.cursor[from as usize];
            self.cursor[from as usize] += 1;
            let b = self.cursor[to as usize];
            self.cursor[to as usize] += 1;
            self.head[a as usize] = to;
            self.head[b as usize] = from;
            self.pair[a as usize] = b;
            self.pair[b as usize] = a;
            self.edge_arc.push(a);
        }
        self.level.clear();
        self.level.resize(nodes, UNREACHED);
    }

    /// Drops all flow and restores the capacities the edges were added
    /// with. Residual capacity at or below `tolerance` will count as none.
    pub(crate) fn restart(&mut self, tolerance: A) {
        self.tolerance = tolerance;
        for (&(_, _, capacity), &a) in self.pending.iter().zip(&self.edge_arc) {
            self.residual[a as usize] = capacity;
            self.residual[self.pair[a as usize] as usize] = A::default();
        }
    }

    /// The flow on edge `edge`.
    pub(crate) fn flow(&self, edge: usize) -> A {
        let a = self.edge_arc[edge] as usize;
        self.residual[self.pair[a] as usize]
    }

    /// Raises edge `edge`'s capacity to `capacity`, keeping the flow.
    /// Capacities never fall below the flow already on the edge.
    pub(crate) fn set_capacity(&mut self, edge: usize, capacity: A) {
        let a = self.edge_arc[edge] as usize;
        let flow = self.residual[self.pair[a] as usize];
        self.residual[a] = capacity.saturating_minus(flow);
    }

    /// Augments the current flow to a maximum one; returns the flow added.
    pub(crate) fn augment(&mut self, source: usize, sink: usize) -> A {
        let mut added = A::default();
        while self.label(source, sink) {
            self.cursor.clear();
            self.cursor
                .extend_from_slice(&self.first[..self.first.len() - 1]);
            loop {
                let pushed = self.push(source, sink, A::UNBOUNDED);
                if pushed <= self.tolerance {
                    break;
                }
                added = added + pushed;
            }
        }
        added
    }

    /// After [`augment`](Self::augment): whether `node` is on the source side
    /// of the minimum cut (reachable from the source in the residual network).
    pub(crate) fn on_source_side(&self, node: usize) -> bool {
        self.level[node] != UNREACHED
    }

    /// Breadth-first levels from `source` over arcs with residual capacity;
    /// true when `sink` is reachable.
    fn label(&mut self, source: usize, sink: usize) -> bool {
        self.level.iter_mut().for_each(|l| *l = UNREACHED);
        self.queue.clear();
        self.level[source] = 0;
        self.queue.push(source as u32);
        let mut i = 0;
        while i < self.queue.len() {
            let v = self.queue[i] as usize;
            i += 1;
            for a in self.first[v] as usize..self.first[v + 1] as usize {
                let w = self.head[a] as usize;
                if self.level[w] == UNREACHED && self.residual[a] > self.tolerance {
                    self.level[w] = self.level[v] + 1;
                    self.queue.push(w as u32);
                }
            }
        }
        self.level[sink] != UNREACHED
    }

    /// One augmenting path along increasing levels (depth-first with
    /// per-node cursors, so dead arcs are never retried within a phase).
    fn push(&mut self, v: usize, sink: usize, limit: A) -> A {
        if v == sink {
            return limit;
        }
        while self.cursor[v] < self.first[v + 1] {
            let a = self.cursor[v] as usize;
            let w = self.head[a] as usize;
            let residual = self.residual[a];
            if residual > self.tolerance && self.level[w] == self.level[v] + 1 {
                let bottleneck = if residual < limit { residual } else { limit };
                let pushed = self.push(w, sink, bottleneck);
                if pushed > self.tolerance {
                    self.residual[a] = self.residual[a] - pushed;
                    let back = self.pair[a] as usize;
                    self.residual[back] = self.residual[back] + pushed;
                    return pushed;
                }
            }
            self.cursor[v] += 1;
        }
        A::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_max_flow_and_cut_and_continues_after_raising() {
        // s=0 -> a=1 (5), s -> b=2 (5), a -> t=3 (2), b -> t (9), a -> b (1)
        let mut net = FlowNetwork::<u64>::default();
        net.reset(4);
        let _ = net.add_edge(0, 1, 5);
        let _ = net.add_edge(0, 2, 5);
        let at = net.add_edge(1, 3, 2);
        let _ = net.add_edge(2, 3, 9);
        let ab = net.add_edge(1, 2, 1);
        net.finish();
        net.restart(0);
        assert_eq!(net.augment(0, 3), 8);
        assert_eq!(net.flow(ab), 1);
        // Min cut {s, a} | {b, t}: a is on the source side.
        assert!(net.on_source_side(1));
        assert!(!net.on_source_side(3));
        net.set_capacity(at, 4);
        assert_eq!(net.augment(0, 3), 2);
        assert_eq!(net.flow(at) + net.flow(ab), 5);
        // A restart forgets the flow and the raised capacity.
        net.restart(0);
        assert_eq!(net.flow(ab), 0);
        assert_eq!(net.augment(0, 3), 8);
    }

    #[test]
    fn real_valued_flow() {
        let mut net = FlowNetwork::<f64>::default();
        net.reset(3);
        let _ = net.add_edge(0, 1, 0.3);
        let e = net.add_edge(1, 2, 0.1 + 0.2);
        net.finish();
        net.restart(1e-12);
        let f = net.augment(0, 2);
        assert!((f - 0.3).abs() < 1e-12);
        assert!((net.flow(e) - 0.3).abs() < 1e-12);
    }
}
