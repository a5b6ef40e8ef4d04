//! The best shares of a co-visit placement: one max-flow per threshold.
//!
//! Tokens flow source → expert → (expert, node) → GPU → sink. An expert's
//! arc to its home node is uncapped; its arc to another node is capped at
//! the safe co-visit share `u[e][n]`; a GPU takes at most `T · speed`. The
//! least `T` at which all tokens flow is the placement's optimum under the
//! rule, found by bisection; the flows on the GPU arcs are the shares.

use crate::plan::ANY_TOKEN;
use crate::routing::flow::FlowNetwork;
use crate::topology::Topology;

use super::SplitCaps;

/// Bisection stops when the threshold is known to this relative precision.
const PRECISION: f64 = 1e-5;

/// One layer routed under the rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LayerRouting {
    /// Largest GPU load (tokens / speed) with these shares.
    pub max_load: f64,
    /// Per slot: the share of its expert's tokens.
    pub shares: Vec<f64>,
    /// Per slot: [`ANY_TOKEN`] on the expert's home node, else the node.
    pub scope: Vec<i64>,
}

/// The arcs into the sink of a flow network, each taking `level × speed`:
/// the least level at which all `total` tokens flow is a min-max load.
pub(crate) struct SinkArcs<'a> {
    pub source: usize,
    pub sink: usize,
    pub edges: &'a [usize],
    pub speed: &'a [f64],
    pub total: f64,
}

impl SinkArcs<'_> {
    /// Whether all tokens flow at `level`; the network then holds the flow.
    pub(crate) fn saturate(&self, level: f64, network: &mut FlowNetwork<f64>) -> bool {
        network.restart(self.total * 1e-12);
        for (&edge, &speed) in self.edges.iter().zip(self.speed) {
            network.set_capacity(edge, level * speed);
        }
        network.augment(self.source, self.sink) >= self.total * (1.0 - 1e-9)
    }

    /// The least level in `(lo, hi]` at which all tokens flow, to relative
    /// `precision` (`hi` must be enough), by bisection; the network is left
    /// holding that level's flow.
    pub(crate) fn least_level(
        &self,
        mut lo: f64,
        mut hi: f64,
        precision: f64,
        network: &mut FlowNetwork<f64>,
    ) -> f64 {
        // Balanced layers often reach the lower end: one flow settles them.
        let near = lo * (1.0 + precision);
        if near < hi && self.saturate(near, network) {
            return near;
        }
        while hi - lo > precision * hi.max(f64::MIN_POSITIVE) {
            let mid = 0.5 * (lo + hi);
            if self.saturate(mid, network) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.saturate(hi, network);
        hi
    }
}

/// Routes `row` over placement `phy2log` (one layer) with homes and caps
/// from `caps`. `hint` is a GPU load known to be reachable (or infinity).
pub(crate) fn route_layer(
    topology: &Topology,
    row: &[f64],
    caps: &SplitCaps,
    phy2log: &[u32],
    hint: f64,
    network: &mut FlowNetwork<f64>,
) -> LayerRouting {
    let (n, s) = (caps.num_nodes, topology.slots_per_gpu());
    let experts = row.len();
    let gpus = topology.num_gpus();
    let slots_per_node = topology.slots_per_node();
    // (expert, node) pairs that hold a replica, numbered in slot order.
    let mut pair_of = vec![u32::MAX; experts * n];
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (slot, &e) in phy2log.iter().enumerate() {
        let key = e as usize * n + slot / slots_per_node;
        if pair_of[key] == u32::MAX {
            pair_of[key] = pairs.len() as u32;
            pairs.push((e as usize, slot / slots_per_node));
        }
    }
    let source = 0;
    let expert_node = |e: usize| 1 + e;
    let pair_node = |p: usize| 1 + experts + p;
    let gpu_node = |g: usize| 1 + experts + pairs.len() + g;
    let sink = 1 + experts + pairs.len() + gpus;
    network.reset(sink + 1);
    let total: f64 = row.iter().sum();
    for (e, &w) in row.iter().enumerate() {
        network.add_edge(source, expert_node(e), w);
    }
    for (p, &(e, node)) in pairs.iter().enumerate() {
        let capacity = if caps.home[e] as usize == node {
            row[e]
        } else {
            caps.cap[e * n + node]
        };
        network.add_edge(expert_node(e), pair_node(p), capacity);
    }
    // One arc per GPU and pair, even when the GPU holds the expert twice.
    let mut gpu_arcs: Vec<(usize, usize, usize)> = Vec::new(); // (pair, gpu, edge)
    for g in 0..gpus {
        let mut seen: Vec<u32> = Vec::with_capacity(s);
        for slot in g * s..(g + 1) * s {
            let e = phy2log[slot];
            if seen.contains(&e) {
                continue;
            }
            seen.push(e);
            let p = pair_of[e as usize * n + slot / slots_per_node] as usize;
            let edge = network.add_edge(pair_node(p), gpu_node(g), f64::INFINITY);
            gpu_arcs.push((p, g, edge));
        }
    }
    let sink_edges: Vec<usize> = (0..gpus)
        .map(|g| network.add_edge(gpu_node(g), sink, 0.0))
        .collect();
    network.finish();

    let speed = topology.gpu_speed();
    let sinks = SinkArcs {
        source,
        sink,
        edges: &sink_edges,
        speed,
        total,
    };
    let min_speed = speed.iter().copied().fold(f64::INFINITY, f64::min);
    let mut hi = total / min_speed;
    if hint.is_finite() && hint < hi && sinks.saturate(hint, network) {
        hi = hint;
    }
    sinks.least_level(total / topology.total_speed(), hi, PRECISION, network);

    // Shares from the GPU arcs, split among the expert's slots on the GPU.
    let mut flow_of = std::collections::HashMap::with_capacity(gpu_arcs.len());
    for &(p, g, edge) in &gpu_arcs {
        flow_of.insert((p, g), network.flow(edge));
    }
    let mut copies = std::collections::HashMap::<(usize, usize), u32>::new();
    for (slot, &e) in phy2log.iter().enumerate() {
        let p = pair_of[e as usize * n + slot / slots_per_node] as usize;
        *copies.entry((p, slot / s)).or_default() += 1;
    }
    let mut shares = vec![0.0; phy2log.len()];
    let mut scope = vec![ANY_TOKEN; phy2log.len()];
    let mut sums = vec![0.0; experts];
    let mut home_slots = vec![0u32; experts];
    for (slot, &e) in phy2log.iter().enumerate() {
        let e = e as usize;
        let node = slot / slots_per_node;
        if caps.home[e] as usize != node {
            scope[slot] = node as i64;
        } else {
            home_slots[e] += 1;
        }
        let p = pair_of[e * n + node] as usize;
        let key = (p, slot / s);
        if row[e] > 0.0 {
            shares[slot] = flow_of[&key] / f64::from(copies[&key]) / row[e];
        }
        sums[e] += shares[slot];
    }
    let counts = crate::plan::replica_counts(phy2log, experts);
    for (slot, &e) in phy2log.iter().enumerate() {
        let e = e as usize;
        if sums[e] > 0.0 {
            shares[slot] /= sums[e];
        } else if home_slots[e] == 0 {
            // No replica at home (a plan made under other rules): even.
            shares[slot] = 1.0 / f64::from(counts[e]);
        } else if scope[slot] == ANY_TOKEN {
            shares[slot] = 1.0 / f64::from(home_slots[e]);
        }
    }
    let max_load = (0..gpus)
        .map(|g| {
            (g * s..(g + 1) * s)
                .map(|slot| row[phy2log[slot] as usize] * shares[slot])
                .sum::<f64>()
                / speed[g]
        })
        .fold(0.0, f64::max);
    LayerRouting {
        max_load,
        shares,
        scope,
    }
}
