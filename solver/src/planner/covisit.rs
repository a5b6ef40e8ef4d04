//! The `optimal-covisit` policy: node-local groups plus co-visit replicas
//! ([`crate::covisit`] explains the rule).
//!
//! Per layer:
//! 1. **Split.** Every equal-size group→node split gets its node-level
//!    optimum `T*` (a max-flow threshold in closed form); a fresh plan takes
//!    the least, which is also the layer's bound. A re-plan also tries the
//!    split in force, which moves far fewer experts.
//! 2. **Co-visit replicas.** The node-level max-flow at the optimum says how
//!    many tokens of which expert each node should take from other nodes.
//!    Each node has `slots − home experts` spare slots; the largest flows
//!    become co-visit replicas (several budgets are tried: spare slots also
//!    serve to split hot home experts), and the node flow is solved again
//!    with only those.
//! 3. **Packing.** Each node's home experts (less what left them) and its
//!    co-visit replicas are packed on its GPUs by the greedy planner's node
//!    packing (water-filling, LPT, swaps).
//! 4. **Shares.** One layer-wide max-flow with GPU capacities gives the best
//!    shares of the placement under the caps (`replica_share`), and the
//!    scope of every slot (`replica_scope`).
//!
//! Migration-aware: with a previous plan each layer has candidates — the
//! previous placement re-routed, a repair that re-decides only the spare
//! slots, the migration ladder of the split in force ([`mod@ladder`]: node
//! repairs from the placement in force to tighter and tighter targets), a
//! re-plan on the split in force and one on the best split (GPUs matched to
//! the previous ones) — and one candidate per layer is chosen for
//! the whole model: fewest migrations while the sum of the layers' largest
//! GPU loads stays within the balance tolerance of the best candidates'.

mod ladder;

use std::time::Instant;

use rayon::prelude::*;

use super::greedy::{place_experts, Scratch};
use super::policy::{Placement, Policy, Split};
use super::stats::{self, LayerFacts, ReplanFacts};
use super::{PlanError, PlanOptions, PlanOutcome};
use crate::bound::{self, Replication};
use crate::covisit::{
    covisit_bound_load, route_layer, CovisitSplits, LayerRouting, SinkArcs, SplitCaps,
};
use crate::knapsack;
use crate::load::LoadMatrix;
use crate::migration::row_migrations;
use crate::plan::{Plan, ANY_TOKEN};
use crate::routing::flow::FlowNetwork;
use crate::topology::Topology;
use ladder::Replicas;

/// Packings routed per split (the lowest packed loads): measured, routing
/// rarely changes their order, and it costs ten times a packing.
const ROUTED_CANDIDATES: usize = 1;

/// Node-flow bisection stops at this relative precision.
const NODE_PRECISION: f64 = 1e-4;

pub(super) fn solve(
    topology: &Topology,
    load: &LoadMatrix,
    options: &PlanOptions,
    previous: Option<&Plan>,
    started: Instant,
) -> Result<PlanOutcome, PlanError> {
    if !load.has_covisit() {
        return Err(PlanError::Unsupported(
            "policy optimal-covisit needs co-visit counts in the load (`covisit` beside `load`)"
                .into(),
        ));
    }
    if !options.down_gpus.is_empty() {
        return Err(PlanError::Unsupported(
            "policy optimal-covisit with down GPUs".into(),
        ));
    }
    let splits = CovisitSplits::new(topology).ok_or_else(|| {
        PlanError::Unsupported(format!(
            "policy optimal-covisit needs num_groups ({}) divisible by num_nodes ({}), at most 12 nodes and 5000 group splits",
            topology.num_groups(),
            topology.num_nodes()
        ))
    })?;
    let context = Context {
        topology,
        splits: &splits,
    };
    let layers: Vec<LayerOutcome> = (0..topology.num_layers())
        .into_par_iter()
        .map_init(Buffers::default, |buffers, l| {
            let started = Instant::now();
            let row = load.layer(l);
            let covisit = load.covisit_layer(l).unwrap_or_default();
            let previous = previous.map(|p| PreviousLayer::new(topology, p, l));
            let mut outcome = context.plan_layer(row, covisit, previous.as_ref(), buffers);
            outcome.ms = started.elapsed().as_secs_f64() * 1e3;
            outcome
        })
        .collect();
    let chosen = choose(&layers, options.balance_tolerance);
    let mut phy2log = Vec::with_capacity(layers.len());
    let mut shares = Vec::with_capacity(layers.len());
    let mut scope = Vec::with_capacity(layers.len());
    let mut facts = Vec::with_capacity(layers.len());
    let (mut stale_loads, mut fresh_loads) = (Vec::new(), Vec::new());
    for (mut layer, pick) in layers.into_iter().zip(chosen) {
        let candidate = layer.candidates.swap_remove(pick).1;
        facts.push(LayerFacts {
            bound_load: layer.bound_load,
            objective_load: Some(candidate.routing.max_load),
            status: None,
            ms: layer.ms,
        });
        stale_loads.push(layer.kept_load.unwrap_or(f64::INFINITY));
        fresh_loads.push(layer.fresh_load);
        phy2log.push(candidate.phy2log);
        shares.push(candidate.routing.shares);
        scope.push(candidate.routing.scope);
    }
    let internal = |e: crate::ParseError| PlanError::Internal(e.to_string());
    let plan = Plan::new(phy2log, Some(shares), topology)
        .and_then(|p| p.with_scope(scope, topology))
        .map_err(internal)?;
    let replan = previous.map(|_| ReplanFacts {
        tolerance: options.balance_tolerance,
        stale_loads,
        fresh_loads,
        price: None,
        migrations_bound: None,
    });
    let stats = stats::plan_stats(
        topology,
        load,
        &plan,
        stats::Run {
            policy: Policy::OptimalCovisit,
            placement: Placement::Covisit,
            split: Split::Weighted,
            solve_ms: started.elapsed().as_secs_f64() * 1e3,
            layers: &facts,
            previous,
            replan,
        },
    );
    Ok(PlanOutcome { plan, stats })
}

struct Context<'a> {
    topology: &'a Topology,
    splits: &'a CovisitSplits,
}

/// Per-thread buffers.
#[derive(Default)]
struct Buffers {
    scratch: Scratch,
    network: FlowNetwork<f64>,
    replication: Replication,
}

/// One planned layer: its candidates with their migrations (one, with no
/// migrations, for a fresh plan).
struct LayerOutcome {
    candidates: Vec<(usize, Candidate)>,
    bound_load: f64,
    /// The previous placement re-routed on this load (re-plans only).
    kept_load: Option<f64>,
    /// The best fresh candidate's largest GPU load.
    fresh_load: f64,
    ms: f64,
}

/// A candidate placement with its routing.
struct Candidate {
    phy2log: Vec<u32>,
    /// Largest GPU load of the packing (each item split evenly); routing
    /// only lowers it.
    packed_load: f64,
    routing: LayerRouting,
}

/// The previous plan's layer and the split it follows, if it follows one.
struct PreviousLayer<'p> {
    row: &'p [u32],
    node_of_group: Option<Vec<u32>>,
}

impl<'p> PreviousLayer<'p> {
    fn new(topology: &Topology, plan: &'p Plan, layer: usize) -> Self {
        let row = plan.layer(layer);
        let scope = plan.replica_scope().map(|s| s[layer].as_slice());
        let (k, n) = (topology.num_groups(), topology.num_nodes());
        let mut votes = vec![0usize; k * n];
        for (slot, &e) in row.iter().enumerate() {
            if scope.is_none_or(|s| s[slot] == ANY_TOKEN) {
                let node = topology.node_of_gpu(topology.gpu_of_slot(slot));
                votes[topology.group_of_expert(e as usize) * n + node] += 1;
            }
        }
        let node_of_group: Vec<u32> = (0..k)
            .map(|g| {
                let v = &votes[g * n..(g + 1) * n];
                (0..n)
                    .max_by_key(|&m| (v[m], std::cmp::Reverse(m)))
                    .unwrap_or(0) as u32
            })
            .collect();
        let even =
            (0..n as u32).all(|m| node_of_group.iter().filter(|&&x| x == m).count() == k / n);
        PreviousLayer {
            row,
            node_of_group: even.then_some(node_of_group),
        }
    }
}

impl Context<'_> {
    fn plan_layer(
        &self,
        row: &[f64],
        covisit: &[f64],
        previous: Option<&PreviousLayer>,
        buffers: &mut Buffers,
    ) -> LayerOutcome {
        let t = self.topology;
        let even = bound::even_split_load(t, row, &mut buffers.replication);
        let (bound_load, best_split) = covisit_bound_load(t, self.splits, row, covisit, even);
        let best_split = &self.splits.splits[best_split];
        let best = self.plan_with_split(row, covisit, best_split, buffers);
        let Some(previous) = previous else {
            return LayerOutcome {
                fresh_load: best.routing.max_load,
                candidates: vec![(0, best)],
                bound_load,
                kept_load: None,
                ms: 0.0,
            };
        };
        let s = t.slots_per_gpu();
        // Candidates with their migrations, fewest first on ties of order.
        let mut candidates: Vec<(usize, Candidate)> = Vec::new();
        let mut kept_load = None;
        if let Some(split) = &previous.node_of_group {
            let caps = SplitCaps::new(t, split, row, covisit);
            // Every expert needs a replica at home (plans made under other
            // rules may lack one); then the placement can be kept.
            let mut at_home = vec![false; row.len()];
            for (slot, &e) in previous.row.iter().enumerate() {
                if slot / t.slots_per_node() == caps.home[e as usize] as usize {
                    at_home[e as usize] = true;
                }
            }
            let homed = at_home.iter().all(|&h| h);
            if homed {
                let routing = route_layer(
                    t,
                    row,
                    &caps,
                    previous.row,
                    f64::INFINITY,
                    &mut buffers.network,
                );
                kept_load = Some(routing.max_load);
                candidates.push((
                    0,
                    Candidate {
                        phy2log: previous.row.to_vec(),
                        packed_load: routing.max_load,
                        routing,
                    },
                ));
                let repaired = self.repair(row, covisit, split, previous.row, buffers);
                candidates.push((row_migrations(&repaired.phy2log, previous.row, s), repaired));
                for rung in self.ladder(row, &caps, previous.row, buffers) {
                    candidates.push((row_migrations(&rung.phy2log, previous.row, s), rung));
                }
            }
            if split != best_split {
                let mut same = self.plan_with_split(row, covisit, split, buffers);
                self.match_gpus(&mut same, previous.row, row, covisit, split, buffers);
                candidates.push((row_migrations(&same.phy2log, previous.row, s), same));
            }
        }
        let mut best = best;
        self.match_gpus(&mut best, previous.row, row, covisit, best_split, buffers);
        let fresh_load = candidates
            .iter()
            .map(|(_, c)| c.routing.max_load)
            .fold(best.routing.max_load, f64::min);
        candidates.push((row_migrations(&best.phy2log, previous.row, s), best));
        LayerOutcome {
            candidates,
            bound_load,
            kept_load,
            fresh_load,
            ms: 0.0,
        }
    }

    /// Plans a layer on one split (steps 2–4 of the module doc).
    fn plan_with_split(
        &self,
        row: &[f64],
        covisit: &[f64],
        node_of_group: &[u32],
        buffers: &mut Buffers,
    ) -> Candidate {
        let t = self.topology;
        let n = t.num_nodes();
        let caps = SplitCaps::new(t, node_of_group, row, covisit);
        let node_speed = &self.splits.node_speed;
        let optimum = caps.node_optimum(row, node_speed);
        let all = |_: usize, _: usize| true;
        let flows = node_flows(&caps, row, node_speed, optimum, &all, &mut buffers.network);
        let home_experts = t.num_logical_experts() / n;
        let spare = t.slots_per_node().saturating_sub(home_experts);
        // Candidates: the largest flows of the node-level optimum, or the
        // hottest experts first (which also splits them), each with all
        // spare slots or half of them open to co-visit replicas. Packing
        // is cheap, routing is not: only the best packings are routed.
        let mut candidates: Vec<Candidate> = Vec::new();
        for budget in [spare, spare / 2] {
            let kept = largest_flows(&caps, row.len(), &flows, budget);
            candidates.push(self.pack(row, &caps, &kept, buffers));
            let hot = hottest_first(&caps, row, node_speed, optimum, budget);
            candidates.push(self.pack(row, &caps, &hot, buffers));
        }
        // No co-visit replica: the node-local plan of this split, for the
        // layers where spare slots do more good splitting home experts.
        candidates.push(self.pack(row, &caps, &vec![0.0; flows.len()], buffers));
        candidates.sort_by(|a, b| a.packed_load.total_cmp(&b.packed_load));
        candidates.truncate(ROUTED_CANDIDATES);
        let mut best: Option<Candidate> = None;
        for mut candidate in candidates {
            candidate.routing = route_layer(
                t,
                row,
                &caps,
                &candidate.phy2log,
                candidate.packed_load,
                &mut buffers.network,
            );
            if best
                .as_ref()
                .is_none_or(|b| candidate.routing.max_load < b.routing.max_load)
            {
                best = Some(candidate);
            }
        }
        best.expect("candidates are never empty")
    }

    /// Packs every node: its home experts less what they send away, and its
    /// co-visit replicas with what they take (`flows[e * N + n]`).
    fn pack(
        &self,
        row: &[f64],
        caps: &SplitCaps,
        flows: &[f64],
        buffers: &mut Buffers,
    ) -> Candidate {
        let t = self.topology;
        let n = t.num_nodes();
        let node_speed = &self.splits.node_speed;
        let (g, s, slots_per_node) = (t.gpus_per_node(), t.slots_per_gpu(), t.slots_per_node());
        let mut phy2log = vec![0u32; t.num_slots()];
        let mut worst: f64 = 0.0;
        let (mut experts, mut weights) = (Vec::new(), Vec::new());
        for node in 0..n {
            experts.clear();
            weights.clear();
            for (e, &w) in row.iter().enumerate() {
                let out: f64 = (0..n).map(|m| flows[e * n + m]).sum();
                if caps.home[e] as usize == node {
                    experts.push(e as u32);
                    weights.push((w - out).max(0.0));
                } else if flows[e * n + node] > 0.0 {
                    experts.push(e as u32);
                    weights.push(flows[e * n + node]);
                }
            }
            let speeds = &t.gpu_speed()[node * g..(node + 1) * g];
            let target = weights.iter().sum::<f64>() / node_speed[node];
            let reached = place_experts(
                speeds,
                s,
                target,
                &experts,
                &weights,
                &mut phy2log[node * slots_per_node..(node + 1) * slots_per_node],
                &mut buffers.scratch,
            );
            worst = worst.max(reached);
        }
        Candidate {
            phy2log,
            packed_load: worst,
            routing: LayerRouting::default(),
        }
    }

    /// Keeps every home expert's first replica where it is and re-decides
    /// only the other slots (a node's spare slots): co-visit replicas for
    /// this load's hottest-first flows, duplicates of the heaviest home
    /// experts with the rest. A slot whose expert is still wanted keeps it;
    /// the others take the heaviest items on the least loaded GPUs. Moves at
    /// most the spare slots, however far the load drifted.
    fn repair(
        &self,
        row: &[f64],
        covisit: &[f64],
        node_of_group: &[u32],
        previous: &[u32],
        buffers: &mut Buffers,
    ) -> Candidate {
        let t = self.topology;
        let (n, s, slots_per_node) = (t.num_nodes(), t.slots_per_gpu(), t.slots_per_node());
        let caps = SplitCaps::new(t, node_of_group, row, covisit);
        let node_speed = &self.splits.node_speed;
        let optimum = caps.node_optimum(row, node_speed);
        let spare = slots_per_node.saturating_sub(t.num_logical_experts() / n);
        let flows = hottest_first(&caps, row, node_speed, optimum, spare);
        let sent = |e: usize| (0..n).map(|m| flows[e * n + m]).sum::<f64>();
        let mut out = previous.to_vec();
        for node in 0..n {
            let range = node * slots_per_node..(node + 1) * slots_per_node;
            let mut primary = vec![false; row.len()];
            let mut free = Vec::new();
            for slot in range.clone() {
                let e = previous[slot] as usize;
                if caps.home[e] as usize == node && !primary[e] {
                    primary[e] = true;
                } else {
                    free.push(slot);
                }
            }
            // What the free slots should hold: co-visit replicas by flow,
            // then duplicates by water-filling the home experts' loads.
            let mut remote: Vec<(f64, usize)> = (0..row.len())
                .filter(|&e| flows[e * n + node] > 0.0)
                .map(|e| (flows[e * n + node], e))
                .collect();
            remote.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            remote.truncate(free.len());
            let homes: Vec<usize> = (0..row.len()).filter(|&e| primary[e]).collect();
            let mut count = vec![1u32; row.len()];
            let mut wanted: Vec<u32> = remote.iter().map(|&(_, e)| e as u32).collect();
            for _ in wanted.len()..free.len() {
                let Some(&e) = homes.iter().max_by(|&&a, &&b| {
                    let per = |e: usize| (row[e] - sent(e)).max(0.0) / f64::from(count[e]);
                    per(a).total_cmp(&per(b)).then(b.cmp(&a))
                }) else {
                    break;
                };
                count[e] += 1;
                wanted.push(e as u32);
            }
            let load_of = |e: usize| {
                if caps.home[e] as usize == node {
                    (row[e] - sent(e)).max(0.0) / f64::from(count[e])
                } else {
                    flows[e * n + node]
                }
            };
            // Free slots whose expert is still wanted keep it.
            let mut open = Vec::new();
            for &slot in &free {
                match wanted.iter().position(|&e| e == previous[slot]) {
                    Some(i) => {
                        wanted.swap_remove(i);
                    }
                    None => open.push(slot),
                }
            }
            let mut gpu_load = vec![0.0; t.gpus_per_node()];
            for slot in range.clone().filter(|slot| !open.contains(slot)) {
                gpu_load[(slot - range.start) / s] += load_of(out[slot] as usize);
            }
            wanted.sort_unstable_by(|&a, &b| load_of(b as usize).total_cmp(&load_of(a as usize)));
            for e in wanted {
                // The least loaded GPU with an open slot, preferring one
                // that does not hold the expert yet.
                let Some(&slot) = open.iter().min_by(|&&a, &&b| {
                    let key = |slot: usize| {
                        let gpu = (slot - range.start) / s;
                        let holds =
                            out[gpu * s + range.start..(gpu + 1) * s + range.start].contains(&e);
                        (holds, gpu_load[gpu])
                    };
                    let (ha, la) = key(a);
                    let (hb, lb) = key(b);
                    ha.cmp(&hb).then(la.total_cmp(&lb))
                }) else {
                    break;
                };
                out[slot] = e;
                gpu_load[(slot - range.start) / s] += load_of(e as usize);
                open.retain(|&o| o != slot);
            }
        }
        let routing = route_layer(t, row, &caps, &out, f64::INFINITY, &mut buffers.network);
        Candidate {
            phy2log: out,
            packed_load: routing.max_load,
            routing,
        }
    }

    /// The migration ladders of the split in force, routed: one over the
    /// co-visit replicas the placement holds, one over any.
    fn ladder(
        &self,
        row: &[f64],
        caps: &SplitCaps,
        previous: &[u32],
        buffers: &mut Buffers,
    ) -> Vec<Candidate> {
        let t = self.topology;
        let spare = t
            .slots_per_node()
            .saturating_sub(t.num_logical_experts() / t.num_nodes());
        let held = ladder::held_pairs(t, caps, previous);
        let mut rungs = Vec::new();
        for replicas in [Replicas::Kept, Replicas::Any] {
            let flows = ladder::ladder_flows(
                caps,
                row,
                &self.splits.node_speed,
                &held,
                replicas,
                spare,
                &mut buffers.network,
            );
            for (phy2log, packed_load) in ladder::ladder(t, caps, row, &flows, previous) {
                let routing =
                    route_layer(t, row, caps, &phy2log, packed_load, &mut buffers.network);
                rungs.push(Candidate {
                    phy2log,
                    packed_load,
                    routing,
                });
            }
        }
        rungs
    }

    /// Renumbers each node's GPUs of `candidate` so that each keeps as many
    /// experts of a previous GPU as it can (greedy matching by overlap),
    /// then re-routes it (speeds may differ between GPUs).
    fn match_gpus(
        &self,
        candidate: &mut Candidate,
        previous: &[u32],
        row: &[f64],
        covisit: &[f64],
        node_of_group: &[u32],
        buffers: &mut Buffers,
    ) {
        let t = self.topology;
        let (g, s) = (t.gpus_per_node(), t.slots_per_gpu());
        let mut out = candidate.phy2log.clone();
        for node in 0..t.num_nodes() {
            let gpu = |row: &[u32], i: usize| {
                let start = (node * g + i) * s;
                row[start..start + s].to_vec()
            };
            let mut overlap: Vec<(usize, usize, usize)> = Vec::with_capacity(g * g);
            for new in 0..g {
                let new_slots = gpu(&candidate.phy2log, new);
                for old in 0..g {
                    let kept =
                        s - crate::migration::gpu_migrations(&new_slots, &gpu(previous, old));
                    overlap.push((kept, new, old));
                }
            }
            overlap.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let (mut new_used, mut old_used) = (vec![false; g], vec![false; g]);
            for (_, new, old) in overlap {
                if new_used[new] || old_used[old] {
                    continue;
                }
                new_used[new] = true;
                old_used[old] = true;
                let slots = gpu(&candidate.phy2log, new);
                let start = (node * g + old) * s;
                out[start..start + s].copy_from_slice(&slots);
            }
        }
        if out != candidate.phy2log {
            let caps = SplitCaps::new(t, node_of_group, row, covisit);
            candidate.routing = route_layer(
                t,
                row,
                &caps,
                &out,
                candidate.routing.max_load,
                &mut buffers.network,
            );
            candidate.phy2log = out;
        }
    }
}

/// The node-level flow: tokens each expert sends to each non-home node, at
/// the least busiest-node load reachable with the arcs `allowed` permits
/// (bisection between `optimum`, the unrestricted least, and keeping every
/// token at home). `flows[e * N + n]`, 0 on the home node.
fn node_flows(
    caps: &SplitCaps,
    row: &[f64],
    node_speed: &[f64],
    optimum: f64,
    allowed: &dyn Fn(usize, usize) -> bool,
    network: &mut FlowNetwork<f64>,
) -> Vec<f64> {
    let n = caps.num_nodes;
    let experts = row.len();
    let (source, sink) = (0, 1 + experts + n);
    network.reset(sink + 1);
    let total: f64 = row.iter().sum();
    let mut home_load = vec![0.0; n];
    let mut remote_edges = Vec::new();
    for (e, &w) in row.iter().enumerate() {
        network.add_edge(source, 1 + e, w);
        let home = caps.home[e] as usize;
        home_load[home] += w;
        // The home arc first: augmenting paths try it before the others.
        network.add_edge(1 + e, 1 + experts + home, w);
        for m in (0..n).filter(|&m| m != home) {
            let cap = caps.cap[e * n + m];
            if cap > 0.0 && allowed(e, m) {
                let edge = network.add_edge(1 + e, 1 + experts + m, cap);
                remote_edges.push((e, m, edge));
            }
        }
    }
    let sink_edges: Vec<usize> = (0..n)
        .map(|m| network.add_edge(1 + experts + m, sink, 0.0))
        .collect();
    network.finish();
    let sinks = SinkArcs {
        source,
        sink,
        edges: &sink_edges,
        speed: node_speed,
        total,
    };
    let home_only = (0..n)
        .map(|m| home_load[m] / node_speed[m])
        .fold(optimum, f64::max);
    sinks.least_level(optimum, home_only, NODE_PRECISION, network);
    let mut flows = vec![0.0; experts * n];
    for (e, m, edge) in remote_edges {
        flows[e * n + m] = network.flow(edge);
    }
    flows
}

/// One candidate per layer for the whole model: fewest migrations while
/// the sum of the layers' largest GPU loads (the model imbalance's
/// numerator) stays within `tolerance` of the best candidates' sum, as the
/// optimal policy's re-plan chooses (the same exact knapsack). Each layer's
/// least-load candidate meets the budget, so no optimum moves more than
/// the cheapest of those, which bounds the table.
fn choose(layers: &[LayerOutcome], tolerance: f64) -> Vec<usize> {
    let budget: f64 = layers.iter().map(|l| l.fresh_load).sum::<f64>() * (1.0 + tolerance);
    let most: usize = layers
        .iter()
        .map(|l| {
            l.candidates
                .iter()
                .filter(|(_, c)| c.routing.max_load <= l.fresh_load)
                .map(|&(moves, _)| moves)
                .min()
                .unwrap_or(0)
        })
        .sum();
    let items: Vec<Vec<(f64, usize)>> = layers
        .iter()
        .map(|l| {
            l.candidates
                .iter()
                .map(|(moves, c)| (c.routing.max_load, *moves))
                .collect()
        })
        .collect();
    knapsack::fewest_migrations(&items, budget, most).unwrap_or_else(|| {
        // Only rounding can leave no choice: each layer's lightest.
        items
            .iter()
            .map(|c| {
                (0..c.len())
                    .min_by(|&a, &b| c[a].0.total_cmp(&c[b].0))
                    .unwrap_or(0)
            })
            .collect()
    })
}

/// The node-level optimum's flows, keeping per node only the `budget`
/// largest (what the others carried stays home).
fn largest_flows(caps: &SplitCaps, experts: usize, flows: &[f64], budget: usize) -> Vec<f64> {
    let n = caps.num_nodes;
    let mut kept = vec![0.0; experts * n];
    for node in 0..n {
        let mut remote: Vec<(f64, usize)> = (0..experts)
            .filter(|&e| flows[e * n + node] > 0.0)
            .map(|e| (flows[e * n + node], e))
            .collect();
        remote.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(f, e) in remote.iter().take(budget) {
            kept[e * n + node] = f;
        }
    }
    kept
}

/// Co-visit flows that relieve the busiest nodes with their hottest
/// experts first, towards the node-level optimum `level` (per unit of
/// speed): each hot expert then also gets split, which its GPU needs.
/// At most `budget` co-visit replicas per node.
fn hottest_first(
    caps: &SplitCaps,
    row: &[f64],
    node_speed: &[f64],
    level: f64,
    budget: usize,
) -> Vec<f64> {
    let n = caps.num_nodes;
    let mut flows = vec![0.0; row.len() * n];
    let mut load = vec![0.0; n];
    for (e, &w) in row.iter().enumerate() {
        load[caps.home[e] as usize] += w;
    }
    let mut slots_left = vec![budget; n];
    let mut by_load: Vec<usize> = (0..row.len()).collect();
    by_load.sort_unstable_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    let mut heavy: Vec<usize> = (0..n).collect();
    heavy
        .sort_unstable_by(|&a, &b| (load[b] / node_speed[b]).total_cmp(&(load[a] / node_speed[a])));
    for h in heavy {
        for &e in by_load.iter().filter(|&&e| caps.home[e] as usize == h) {
            if load[h] <= level * node_speed[h] {
                break;
            }
            loop {
                let excess = load[h] - level * node_speed[h];
                let sent: f64 = (0..n).map(|m| flows[e * n + m]).sum();
                // The roomiest node that may still take some of `e`.
                let target = (0..n)
                    .filter(|&m| m != h)
                    .filter(|&m| slots_left[m] > 0 || flows[e * n + m] > 0.0)
                    .filter(|&m| caps.cap[e * n + m] > flows[e * n + m])
                    .map(|m| (level * node_speed[m] - load[m], m))
                    .filter(|&(room, _)| room > 0.0)
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                let Some((room, m)) = target else { break };
                let amount = excess
                    .min(room)
                    .min(caps.cap[e * n + m] - flows[e * n + m])
                    .min(row[e] - sent);
                if amount <= row[e] * 1e-9 {
                    break;
                }
                if flows[e * n + m] == 0.0 {
                    slots_left[m] -= 1;
                }
                flows[e * n + m] += amount;
                load[h] -= amount;
                load[m] += amount;
                if excess - amount <= 0.0 {
                    break;
                }
            }
        }
    }
    flows
}
