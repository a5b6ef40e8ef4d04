//! Dynamic redundancy: choose which replicas are active (at most `A` per
//! GPU) and route to them, jointly optimal.
//!
//! ## Why a search
//! With a cap on the distinct experts each GPU serves, the problem contains
//! packing splittable items into bins holding at most `A` kinds each (every
//! GPU hosting every expert), which is NP-hard in general; no flow
//! formulation captures it, so this is branch and bound with exact bounds.
//!
//! ## The search
//! Every (expert, GPU) pair is *free*, *on* or *off*. A node's lower bound
//! is the exact whole-token routing over the pairs not switched off — the
//! budget relaxed, which can only help — computed by the same solver as
//! [`Router::route`](super::Router::route). That routing is then made
//! sparse without changing its value ([`basis`](super::basis): cycle
//! cancelling and pivots towards the budgets); if the replicas it uses,
//! plus those switched on, fit every GPU's budget, the node is solved
//! exactly at its bound. On the sample data this settles the DeepSeek-like
//! case (16 hosted, 9 active) at the root or within a few nodes. Otherwise
//! a GPU over budget is picked and its free pair with the least flow is
//! branched on: off first (drop the replica that matters least), then on.
//! Propagation switches off the free pairs of a GPU whose budget is used
//! up and switches on the last usable replica of an expert. A node whose
//! bound reaches the incumbent is pruned.
//!
//! Incumbents: the better of a caller's warm start (e.g. the previous
//! batch's activation) and an assignment of every expert to one GPU within
//! budget (a bipartite b-matching, which also decides feasibility); then the
//! first depth-first descent; then a local search driven by the routing's
//! certificate: a better activation must let an expert confined to the
//! bottleneck set use a replica outside it, so only such swaps are tried.
//!
//! Independent parts of the layer (the nodes of a node-local plan) are
//! searched separately; a part stops as soon as it is no worse than the
//! largest root bound of all parts, which bounds the layer. A part the
//! search leaves unproven goes to an exact MILP on HiGHS
//! ([`exact`](super::exact)) for at most [`SearchLimits::exact_time`]:
//! first "is the budget-free bound reachable?", then "is anything better
//! than the incumbent?", each answer routed exactly or raising the bound.
//!
//! ## Cost
//! Each node costs one routing of the part and its sparsification
//! (microseconds). The first descent takes at most one node per replica;
//! the rest is capped by [`SearchLimits::max_nodes`] and exponential in the
//! worst case, and the MILP by [`SearchLimits::exact_time`]. The result says
//! how far from proven it is ([`BudgetRouting::lower_bound`]).

use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::basis::{self, FREE, OFF, ON};
use super::exact::{self, Verdict};
use super::flow::FlowNetwork;
use super::graph::LayerGraph;
use super::router::Routing;
use super::threshold::load;
use super::whole::WholeTokens;
use super::RoutingError;

/// Bounds on the branch-and-bound search of
/// [`Router::route_with_budget`](super::Router::route_with_budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchLimits {
    /// Search nodes to explore (each one routing of the batch), shared out
    /// among the independent parts of the layer. Each part's first descent
    /// (at most one node per replica) runs regardless.
    pub max_nodes: usize,
    /// Time for the exact MILP (HiGHS) on the parts of the layer the search
    /// leaves unproven (each takes what the previous ones left); zero skips
    /// it. Never spent on a batch the search proves.
    pub exact_time: Duration,
}

impl Default for SearchLimits {
    fn default() -> Self {
        SearchLimits {
            max_nodes: 10_000,
            exact_time: Duration::from_millis(200),
        }
    }
}

/// The best activation and routing found, and how good it provably is.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRouting {
    /// The routing over the active replicas. Its bottleneck proves it
    /// optimal *for this activation*; [`lower_bound`](Self::lower_bound)
    /// covers every activation.
    pub routing: Routing,
    /// Active slots: one per (expert, GPU) that receives tokens, at most
    /// the budget per GPU; every expert with tokens has one.
    pub active: Vec<bool>,
    /// No activation within the budget routes with a smaller largest load.
    pub lower_bound: f64,
    /// Search nodes explored.
    pub nodes: usize,
}

impl BudgetRouting {
    /// True when the search finished: the routing is optimal.
    pub fn is_proven_optimal(&self) -> bool {
        self.routing.max_load() <= self.lower_bound
    }
}

/// The chosen activation: which edges are active, the flow over them and
/// the search's figures.
pub(crate) struct Outcome {
    pub(crate) active: Vec<bool>,
    pub(crate) lower_bound: f64,
    pub(crate) nodes: usize,
}

/// Conflicts found by propagation.
enum Conflict {
    /// A GPU has more forced replicas than its budget.
    Overfull { gpu: usize, needed: usize },
    /// An expert with tokens has no replica left.
    Uncovered,
}

struct Search<'a> {
    graph: &'a LayerGraph,
    solver: &'a mut WholeTokens,
    tokens: &'a [u64],
    /// `tokens`, with demands outside the component being searched zeroed.
    scoped_tokens: Vec<u64>,
    budget: usize,
    /// Edges of each GPU among demands with tokens: CSR.
    gpu_edge_start: Vec<u32>,
    gpu_edges: Vec<u32>,
    demand_of_edge: Vec<u32>,
    usable: Vec<bool>,
    flow: Vec<u64>,
    incumbent: Option<(f64, Vec<bool>)>,
}

/// Finds the best activation within `budget` active replicas per GPU for
/// `tokens` (per demand of `graph`).
///
/// Components of the replica graph are independent, so each gets its own
/// search, with the others' tokens set aside; the answer is the largest of
/// their optima. A component stops searching once its incumbent is within
/// the largest relaxation bound of all components, which bounds the whole.
pub(crate) fn search(
    graph: &LayerGraph,
    solver: &mut WholeTokens,
    tokens: &[u64],
    budget: usize,
    warm_start: Option<&[bool]>,
    limits: SearchLimits,
) -> Result<Outcome, RoutingError> {
    let mut search = Search::new(graph, solver, tokens, budget);
    let mut root: Vec<u8> = (0..graph.num_edges())
        .map(|e| {
            if tokens[search.demand_of_edge[e] as usize] > 0 {
                FREE
            } else {
                OFF
            }
        })
        .collect();
    match search.propagate(&mut root) {
        Ok(()) => {}
        Err(Conflict::Overfull { gpu, needed }) => {
            return Err(RoutingError::BudgetTooSmall {
                gpu,
                needed,
                budget,
            })
        }
        Err(Conflict::Uncovered) => return Err(RoutingError::BudgetInfeasible { budget }),
    }
    let seed = search.seed_activation(&root)?;
    if search.fits_budget(&root) {
        // Every usable replica can stay active: plain routing is optimal.
        let active: Vec<bool> = root.iter().map(|&s| s != OFF).collect();
        let lower_bound = search.relax(&root);
        return Ok(Outcome {
            active,
            lower_bound,
            nodes: 0,
        });
    }

    // Components of the GPUs linked by usable replicas of one demand.
    let components = search.components(&root);
    let mut bounds = Vec::with_capacity(components.len());
    for gpus in &components {
        search.scope(gpus, &root);
        bounds.push(search.relax(&root).max(search.split_bound(&root)));
    }
    let floor = bounds.iter().copied().fold(0.0, f64::max);
    let mut order: Vec<usize> = (0..components.len()).collect();
    order.sort_by(|&a, &b| bounds[b].total_cmp(&bounds[a]));

    let mut active = vec![false; graph.num_edges()];
    let mut lower_bound = floor;
    let mut nodes = 0;
    let deadline = Instant::now() + limits.exact_time;
    for (i, &c) in order.iter().enumerate() {
        search.scope(&components[c], &root);
        let in_scope: Vec<bool> = (0..graph.num_edges())
            .map(|e| search.scoped_tokens[search.demand_of_edge[e] as usize] > 0)
            .collect();
        let scoped = |from: &[bool]| -> Vec<bool> {
            from.iter()
                .zip(&in_scope)
                .zip(&root)
                .map(|((&a, &s), &r)| a && s && r != OFF)
                .collect()
        };
        let mut seeds = vec![scoped(&seed)];
        if let Some(start) = warm_start {
            seeds.push(scoped(start));
        }
        // The layer's value is the worst component's: share the nodes out.
        let share = limits.max_nodes.saturating_sub(nodes) / (order.len() - i);
        let mut component = search.branch_and_bound(&root, bounds[c], seeds, floor, share);
        if component.lower_bound < component.value && component.value > lower_bound {
            // Most parts finish without it: the first open one may use all.
            let left = deadline.saturating_duration_since(Instant::now());
            search.settle(&root, &mut component, left);
        }
        nodes += component.nodes;
        lower_bound = lower_bound.max(component.lower_bound);
        for (a, (&chosen, &s)) in active
            .iter_mut()
            .zip(component.active.iter().zip(&in_scope))
        {
            *a |= chosen && s;
        }
    }
    debug_assert!((0..graph.num_gpus()).all(|g| {
        search
            .gpu_edges(g)
            .iter()
            .filter(|&&e| active[e as usize])
            .count()
            <= budget
    }));
    Ok(Outcome {
        active,
        lower_bound,
        nodes,
    })
}

/// One component's result.
struct ComponentOutcome {
    active: Vec<bool>,
    /// The largest load of `active`.
    value: f64,
    lower_bound: f64,
    nodes: usize,
}

impl<'a> Search<'a> {
    fn new(
        graph: &'a LayerGraph,
        solver: &'a mut WholeTokens,
        tokens: &'a [u64],
        budget: usize,
    ) -> Self {
        let mut demand_of_edge = vec![0u32; graph.num_edges()];
        for d in 0..graph.num_demands() {
            for edge in graph.edges(d) {
                demand_of_edge[edge] = d as u32;
            }
        }
        let mut gpu_edge_start = vec![0u32; graph.num_gpus() + 1];
        for edge in 0..graph.num_edges() {
            gpu_edge_start[graph.edge_gpu[edge] as usize + 1] += 1;
        }
        for g in 0..graph.num_gpus() {
            gpu_edge_start[g + 1] += gpu_edge_start[g];
        }
        let mut fill = gpu_edge_start.clone();
        let mut gpu_edges = vec![0u32; graph.num_edges()];
        for edge in 0..graph.num_edges() {
            let g = graph.edge_gpu[edge] as usize;
            gpu_edges[fill[g] as usize] = edge as u32;
            fill[g] += 1;
        }
        Search {
            graph,
            solver,
            tokens,
            scoped_tokens: tokens.to_vec(),
            budget,
            gpu_edge_start,
            gpu_edges,
            demand_of_edge,
            usable: vec![false; graph.num_edges()],
            flow: vec![0; graph.num_edges()],
            incumbent: None,
        }
    }

    fn gpu_edges(&self, gpu: usize) -> &[u32] {
        &self.gpu_edges[self.gpu_edge_start[gpu] as usize..self.gpu_edge_start[gpu + 1] as usize]
    }

    /// True when `active` keeps every GPU within budget and gives every
    /// scoped expert with tokens a replica.
    fn admissible(&self, active: &[bool]) -> bool {
        let within = (0..self.graph.num_gpus()).all(|g| {
            self.gpu_edges(g)
                .iter()
                .filter(|&&e| active[e as usize])
                .count()
                <= self.budget
        });
        within
            && (0..self.graph.num_demands())
                .filter(|&d| self.scoped_tokens[d] > 0)
                .all(|d| self.graph.edges(d).any(|e| active[e]))
    }

    /// True when no GPU has more usable replicas than its budget.
    fn fits_budget(&self, state: &[u8]) -> bool {
        (0..self.graph.num_gpus()).all(|g| {
            self.gpu_edges(g)
                .iter()
                .filter(|&&e| state[e as usize] != OFF)
                .count()
                <= self.budget
        })
    }

    /// True when a subtree bounded below by `bound` cannot beat the incumbent.
    fn beaten(&self, bound: f64) -> bool {
        self.incumbent
            .as_ref()
            .is_some_and(|(best, _)| bound >= *best)
    }

    /// Applies the forced moves until nothing changes.
    fn propagate(&self, state: &mut [u8]) -> Result<(), Conflict> {
        loop {
            let mut changed = false;
            for g in 0..self.graph.num_gpus() {
                let edges = self.gpu_edges(g);
                let on = edges.iter().filter(|&&e| state[e as usize] == ON).count();
                if on > self.budget {
                    return Err(Conflict::Overfull { gpu: g, needed: on });
                }
                if on == self.budget {
                    for &e in edges {
                        if state[e as usize] == FREE {
                            state[e as usize] = OFF;
                            changed = true;
                        }
                    }
                }
            }
            for d in 0..self.graph.num_demands() {
                if self.scoped_tokens[d] == 0 {
                    continue;
                }
                let mut alive = self.graph.edges(d).filter(|&e| state[e] != OFF);
                match (alive.next(), alive.next()) {
                    (None, _) => return Err(Conflict::Uncovered),
                    (Some(e), None) if state[e] == FREE => {
                        state[e] = ON;
                        changed = true;
                    }
                    _ => {}
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }

    /// A bound the budget-free routing misses: every scoped expert needs
    /// one active replica, so the component's GPUs have only
    /// `spare = budget x GPUs - experts` activations to split experts with,
    /// and an expert in `p` pieces (at most one per usable replica) has a
    /// piece of at least `ceil(t / p)` tokens on one GPU. Handing out the
    /// spare pieces greedily to the expert with the largest such piece
    /// minimizes the largest piece, which bounds every activation. With no
    /// spare (e.g. 64 experts on 8 GPUs x 8 active) it is the heaviest
    /// expert. Uniform speeds only (0 otherwise).
    fn split_bound(&self, root: &[u8]) -> f64 {
        let graph = self.graph;
        let Some(speed) = graph.uniform_speed else {
            return 0.0;
        };
        let mut gpu_used = vec![false; graph.num_gpus()];
        let mut pieces = BinaryHeap::new();
        for d in (0..graph.num_demands()).filter(|&d| self.scoped_tokens[d] > 0) {
            let mut replicas = 0u64;
            for e in graph.edges(d).filter(|&e| root[e] != OFF) {
                gpu_used[graph.edge_gpu[e] as usize] = true;
                replicas += 1;
            }
            // (largest piece, tokens, pieces, replicas)
            let t = self.scoped_tokens[d];
            pieces.push((t, t, 1u64, replicas.max(1)));
        }
        let gpus = gpu_used.iter().filter(|&&u| u).count();
        let mut spare = (self.budget * gpus).saturating_sub(pieces.len());
        while spare > 0 {
            let Some(mut top) = pieces.peek_mut() else {
                break;
            };
            let (_, t, p, replicas) = *top;
            if p == replicas {
                break;
            }
            *top = (t.div_ceil(p + 1), t, p + 1, replicas);
            spare -= 1;
        }
        pieces.peek().map_or(0.0, |&(piece, ..)| load(piece, speed))
    }

    /// The exact routing with the budget relaxed; fills `flow`.
    fn relax(&mut self, state: &[u8]) -> f64 {
        for (u, &s) in self.usable.iter_mut().zip(state) {
            *u = s != OFF;
        }
        self.solver.solve(
            self.graph,
            &self.scoped_tokens,
            Some(&self.usable),
            &mut self.flow,
        );
        self.solver.optimum(self.graph)
    }

    /// Replicas the relaxation needs: switched on, or carrying flow.
    fn relaxation_activation(&self, state: &[u8]) -> Vec<bool> {
        state
            .iter()
            .zip(&self.flow)
            .map(|(&s, &f)| s == ON || (s == FREE && f > 0))
            .collect()
    }

    /// The free edge to branch on, if the relaxation breaks a budget: on
    /// the GPU furthest over, the used free edge with the least flow.
    fn branch_edge(&self, state: &[u8]) -> Option<usize> {
        let mut worst: Option<(usize, usize)> = None;
        for g in 0..self.graph.num_gpus() {
            let used = self
                .gpu_edges(g)
                .iter()
                .filter(|&&e| {
                    state[e as usize] == ON
                        || (state[e as usize] == FREE && self.flow[e as usize] > 0)
                })
                .count();
            if used > self.budget && worst.is_none_or(|(_, u)| used > u) {
                worst = Some((g, used));
            }
        }
        let (g, _) = worst?;
        self.gpu_edges(g)
            .iter()
            .map(|&e| e as usize)
            .filter(|&e| state[e] == FREE && self.flow[e] > 0)
            .min_by_key(|&e| self.flow[e])
    }

    /// A feasible activation: every expert with tokens on one GPU within
    /// budget (a b-matching by max-flow; none means infeasible), then spare
    /// budget filled with more replicas.
    fn seed_activation(&self, root: &[u8]) -> Result<Vec<bool>, RoutingError> {
        let graph = self.graph;
        let demands = graph.num_demands();
        let gpus = graph.num_gpus();
        let (source, sink) = (0, 1 + demands + gpus);
        let mut net = FlowNetwork::<u64>::default();
        net.reset(demands + gpus + 2);
        let mut needed = 0;
        let mut edge_id = vec![usize::MAX; graph.num_edges()];
        for d in (0..demands).filter(|&d| self.tokens[d] > 0) {
            needed += 1;
            let _ = net.add_edge(source, 1 + d, 1);
            for edge in graph.edges(d).filter(|&e| root[e] != OFF) {
                let gpu_node = 1 + demands + graph.edge_gpu[edge] as usize;
                edge_id[edge] = net.add_edge(1 + d, gpu_node, 1);
            }
        }
        for g in 0..gpus {
            let _ = net.add_edge(1 + demands + g, sink, self.budget as u64);
        }
        net.finish();
        net.restart(0);
        if net.augment(source, sink) < needed {
            return Err(RoutingError::BudgetInfeasible {
                budget: self.budget,
            });
        }
        let mut chosen: Vec<bool> = edge_id
            .iter()
            .map(|&id| id != usize::MAX && net.flow(id) > 0)
            .collect();
        for g in 0..gpus {
            let mut used = self
                .gpu_edges(g)
                .iter()
                .filter(|&&e| chosen[e as usize])
                .count();
            for &e in self.gpu_edges(g) {
                if used < self.budget && root[e as usize] != OFF && !chosen[e as usize] {
                    chosen[e as usize] = true;
                    used += 1;
                }
            }
        }
        Ok(chosen)
    }

    /// GPU sets linked by the usable replicas of demands with tokens.
    fn components(&self, root: &[u8]) -> Vec<Vec<u32>> {
        let graph = self.graph;
        let mut parent: Vec<usize> = (0..graph.num_gpus()).collect();
        fn find(parent: &mut [usize], mut v: usize) -> usize {
            while parent[v] != v {
                parent[v] = parent[parent[v]];
                v = parent[v];
            }
            v
        }
        let mut touched = vec![false; graph.num_gpus()];
        for d in (0..graph.num_demands()).filter(|&d| self.tokens[d] > 0) {
            let mut first = None;
            for edge in graph.edges(d).filter(|&e| root[e] != OFF) {
                let g = graph.edge_gpu[edge] as usize;
                touched[g] = true;
                match first {
                    None => first = Some(g),
                    Some(f) => {
                        let (a, b) = (find(&mut parent, f), find(&mut parent, g));
                        parent[a.max(b)] = a.min(b);
                    }
                }
            }
        }
        let mut index = vec![usize::MAX; graph.num_gpus()];
        let mut components: Vec<Vec<u32>> = Vec::new();
        for g in (0..graph.num_gpus()).filter(|&g| touched[g]) {
            let root = find(&mut parent, g);
            if index[root] == usize::MAX {
                index[root] = components.len();
                components.push(Vec::new());
            }
            components[index[root]].push(g as u32);
        }
        components
    }

    /// Keeps only the tokens of demands whose usable replicas are on
    /// `gpus` (one component of `root`).
    fn scope(&mut self, gpus: &[u32], root: &[u8]) {
        let graph = self.graph;
        let mut inside = vec![false; graph.num_gpus()];
        for &g in gpus {
            inside[g as usize] = true;
        }
        for d in 0..graph.num_demands() {
            let here = graph
                .edges(d)
                .any(|e| root[e] != OFF && inside[graph.edge_gpu[e] as usize]);
            self.scoped_tokens[d] = if here { self.tokens[d] } else { 0 };
        }
    }

    /// Depth-first branch and bound over the scoped component (whose
    /// relaxation at the root is `root_bound`), starting from the best of
    /// the `seeds` that respect the budget; stops early once the incumbent
    /// is no worse than `floor` (a lower bound on the whole layer).
    fn branch_and_bound(
        &mut self,
        root: &[u8],
        root_bound: f64,
        seeds: Vec<Vec<bool>>,
        floor: f64,
        max_nodes: usize,
    ) -> ComponentOutcome {
        self.incumbent = None;
        for seed in seeds {
            if !self.admissible(&seed) {
                continue;
            }
            self.solver
                .solve(self.graph, &self.scoped_tokens, Some(&seed), &mut self.flow);
            let value = self.solver.optimum(self.graph);
            if !self.beaten(value) {
                self.incumbent = Some((value, seed));
            }
        }
        let mut stack = vec![(root.to_vec(), root_bound)];
        let mut nodes = 0;
        // The first descent always runs to its end (at most one node per
        // replica): it is what turns the seed into a good incumbent.
        let mut descended = false;
        while let Some((state, parent_bound)) = stack.pop() {
            if self.beaten(parent_bound) {
                self.finish_descent(&mut descended, root, &mut nodes, max_nodes);
                continue;
            }
            if self.beaten(floor) || (descended && nodes >= max_nodes) {
                stack.push((state, parent_bound));
                break;
            }
            nodes += 1;
            // The root's bound holds in every subtree (each restricts it).
            let bound = self.relax(&state).max(root_bound);
            if self.beaten(bound) {
                self.finish_descent(&mut descended, root, &mut nodes, max_nodes);
                continue;
            }
            basis::fit_budget(
                self.graph,
                &self.demand_of_edge,
                &state,
                &self.scoped_tokens,
                self.budget,
                bound,
                &mut self.flow,
            );
            let Some(edge) = self.branch_edge(&state) else {
                // The relaxation's replicas fit the budget: solved at its bound.
                let active = self.relaxation_activation(&state);
                self.incumbent = Some((bound, active));
                self.finish_descent(&mut descended, root, &mut nodes, max_nodes);
                continue;
            };
            let depth = stack.len();
            let mut on = state.clone();
            on[edge] = ON;
            if self.propagate(&mut on).is_ok() {
                stack.push((on, bound));
            }
            let mut off = state;
            off[edge] = OFF;
            if self.propagate(&mut off).is_ok() {
                stack.push((off, bound));
            }
            if stack.len() == depth {
                // A dead end also ends the descent, which so takes at most
                // one node per replica.
                self.finish_descent(&mut descended, root, &mut nodes, max_nodes);
            }
        }
        let (best, active) = self.incumbent.take().unwrap_or_default();
        let lower_bound = stack.iter().map(|&(_, b)| b).fold(best, f64::min);
        ComponentOutcome {
            active,
            value: best,
            lower_bound,
            nodes,
        }
    }

    /// Closes the gap the search left on the scoped component with the
    /// exact MILP, within `time`. The budget-free bound is tried first, as
    /// a pure feasibility question (on the sample data it is the optimum
    /// every time); once that is refuted, each probe asks for a strictly
    /// better activation. Activations found are routed exactly, not
    /// trusted; it stops when the incumbent is proven or time runs out.
    fn settle(&mut self, root: &[u8], component: &mut ComponentOutcome, time: Duration) {
        let deadline = Instant::now() + time;
        let usable: Vec<bool> = root.iter().map(|&s| s != OFF).collect();
        let forced: Vec<bool> = root.iter().map(|&s| s == ON).collect();
        let mut at_bound = true;
        while component.lower_bound < component.value {
            let problem = exact::Component {
                graph: self.graph,
                tokens: &self.scoped_tokens,
                usable: &usable,
                forced: &forced,
                budget: self.budget,
            };
            let floor = component.lower_bound;
            let target = match at_bound {
                true => floor,
                false => match problem.below(component.value) {
                    Some(t) => t,
                    None => return,
                },
            };
            let mut left = deadline.saturating_duration_since(Instant::now());
            if at_bound {
                // Keep time for better activations in case the bound is weak.
                left /= 2;
            }
            match exact::probe(&problem, floor, target, left) {
                None => return,
                Some(Verdict::Infeasible) => {
                    component.lower_bound = floor.max(problem.above(target));
                    at_bound = false;
                }
                Some(Verdict::Bounded(bound)) => {
                    component.lower_bound = floor.max(bound);
                    if !at_bound {
                        return;
                    }
                    at_bound = false;
                }
                Some(Verdict::Found { active, bound }) => {
                    component.lower_bound = floor.max(bound);
                    if !self.admissible(&active) {
                        return;
                    }
                    self.solver.solve(
                        self.graph,
                        &self.scoped_tokens,
                        Some(&active),
                        &mut self.flow,
                    );
                    let value = self.solver.optimum(self.graph);
                    if value >= component.value {
                        // Only with speeds where rounding to whole tokens
                        // costs more than the model saw.
                        return;
                    }
                    component.value = value;
                    component.active = active;
                }
            }
        }
    }

    /// At the end of the first descent, polishes the incumbent by local
    /// search (once).
    fn finish_descent(
        &mut self,
        descended: &mut bool,
        root: &[u8],
        nodes: &mut usize,
        max_nodes: usize,
    ) {
        if !*descended {
            *descended = true;
            let budget = max_nodes.saturating_sub(*nodes) / 2;
            *nodes += self.improve(root, budget);
        }
    }

    /// Local search on the incumbent guided by its certificate. Any better
    /// activation must let some expert whose active replicas all lie in the
    /// bottleneck set `B` use a replica outside `B` (otherwise `B` still
    /// needs the same threshold), so the moves are exactly those: activate
    /// such a replica, swapping out an active replica on its GPU whose
    /// expert stays covered when the GPU's budget is full. First
    /// improvement is taken; returns the routings spent.
    fn improve(&mut self, root: &[u8], max_routings: usize) -> usize {
        let Some((mut value, mut active)) = self.incumbent.take() else {
            return 0;
        };
        let graph = self.graph;
        let mut routings = 0;
        let mut in_bottleneck = vec![false; graph.num_gpus()];
        'moves: while routings < max_routings {
            self.solver
                .solve(graph, &self.scoped_tokens, Some(&active), &mut self.flow);
            routings += 1;
            in_bottleneck.iter_mut().for_each(|b| *b = false);
            for &g in self.solver.certificate().0 {
                in_bottleneck[g as usize] = true;
            }
            for d in (0..graph.num_demands()).filter(|&d| self.scoped_tokens[d] > 0) {
                let confined = graph
                    .edges(d)
                    .filter(|&e| active[e])
                    .all(|e| in_bottleneck[graph.edge_gpu[e] as usize]);
                if !confined {
                    continue;
                }
                for edge in graph.edges(d) {
                    let h = graph.edge_gpu[edge] as usize;
                    if root[edge] == OFF || active[edge] || in_bottleneck[h] {
                        continue;
                    }
                    let used = self
                        .gpu_edges(h)
                        .iter()
                        .filter(|&&e| active[e as usize])
                        .count();
                    // Replicas on `h` that can go: their expert has another
                    // active replica, and they are not forced on.
                    let removable: Vec<usize> = if used < self.budget {
                        vec![usize::MAX]
                    } else {
                        self.gpu_edges(h)
                            .iter()
                            .map(|&e| e as usize)
                            .filter(|&e| active[e] && root[e] != ON)
                            .filter(|&e| {
                                let owner = self.demand_of_edge[e] as usize;
                                graph.edges(owner).filter(|&o| active[o]).count() > 1
                            })
                            .collect()
                    };
                    for removed in removable {
                        if routings >= max_routings {
                            break 'moves;
                        }
                        active[edge] = true;
                        if removed != usize::MAX {
                            active[removed] = false;
                        }
                        self.solver.solve(
                            graph,
                            &self.scoped_tokens,
                            Some(&active),
                            &mut self.flow,
                        );
                        routings += 1;
                        let tried = self.solver.optimum(graph);
                        if tried < value {
                            value = tried;
                            continue 'moves;
                        }
                        active[edge] = false;
                        if removed != usize::MAX {
                            active[removed] = true;
                        }
                    }
                }
            }
            break;
        }
        self.incumbent = Some((value, active));
        routings
    }
}

/// Fills `out` with the routing over the `active` edges: each used edge's
/// tokens go to its first slot, which becomes the active one.
pub(crate) fn route_active(
    graph: &LayerGraph,
    solver: &mut WholeTokens,
    tokens: &[u64],
    active: &[bool],
    flow: &mut [u64],
    out: &mut Routing,
    active_slots: &mut Vec<bool>,
) {
    solver.solve(graph, tokens, Some(active), flow);
    active_slots.clear();
    active_slots.resize(graph.num_slots, false);
    let slot_tokens = out.slot_tokens_mut(graph.num_slots);
    for (edge, &x) in flow.iter().enumerate() {
        if x > 0 {
            if let Some(&slot) = graph.edge_slots(edge).first() {
                slot_tokens[slot as usize] = x;
                active_slots[slot as usize] = true;
            }
        }
    }
    out.finish(graph, solver);
}

#[cfg(test)]
mod tests {
    use crate::routing::{Router, RoutingError, SearchLimits};
    use crate::{Plan, Topology};

    fn router(topology: &str, row: Vec<u32>) -> Router {
        let t = Topology::from_json(topology).unwrap();
        let p = Plan::new(vec![row], None, &t).unwrap();
        Router::new(&t, &p, 0).unwrap()
    }

    const THREE_GPUS: &str = r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 1,
        "num_nodes": 1, "gpus_per_node": 3, "slots_per_gpu": 3}"#;

    #[test]
    fn budget_forces_a_choice() {
        // GPU0: e0 e1 e2 | GPU1: e0 e1 e3 | GPU2: e2 e3 e0
        let mut r = router(THREE_GPUS, vec![0, 1, 2, 0, 1, 3, 2, 3, 0]);
        let tokens = [12, 6, 6, 6];
        let free = r
            .route_with_budget(&tokens, 3, None, SearchLimits::default())
            .unwrap();
        assert_eq!(free.routing.max_load(), 10.0);
        assert!(free.is_proven_optimal());
        // Two active per GPU: 4 experts need 4 of the 6 activations, and the
        // best is e.g. GPU0 {e0, e1}, GPU1 {e0, e3}, GPU2 {e2, e3}: 10 each.
        let two = r
            .route_with_budget(&tokens, 2, None, SearchLimits::default())
            .unwrap();
        assert!(two.is_proven_optimal());
        assert_eq!(two.routing.max_load(), 10.0);
        // One active per GPU: each GPU serves one expert, but there are four.
        assert!(matches!(
            r.route_with_budget(&tokens, 1, None, SearchLimits::default()),
            Err(RoutingError::BudgetInfeasible { budget: 1 })
        ));
        // With e3 idle, one each works: e0 alone on a GPU, e1 and e2 on the others.
        let one = r
            .route_with_budget(&[12, 6, 6, 0], 1, None, SearchLimits::default())
            .unwrap();
        assert!(one.is_proven_optimal());
        assert_eq!(one.routing.max_load(), 12.0);
        for gpu in one.active.chunks(3) {
            assert!(gpu.iter().filter(|&&a| a).count() <= 1);
        }
    }

    #[test]
    fn warm_start_is_never_lost() {
        let mut r = router(THREE_GPUS, vec![0, 1, 2, 0, 1, 3, 2, 3, 0]);
        let tokens = [12, 6, 6, 6];
        // GPU0 {e0, e1}, GPU1 {e0, e3}, GPU2 {e2, e3}: optimal at 10.
        let start = [true, true, false, true, false, true, true, true, false];
        let none = SearchLimits {
            max_nodes: 0,
            exact_time: std::time::Duration::ZERO,
        };
        let warm = r.route_with_budget(&tokens, 2, Some(&start), none).unwrap();
        assert_eq!(warm.routing.max_load(), 10.0);
        assert!(warm.is_proven_optimal());
        // A start over budget is ignored, not trusted.
        let over = [true; 9];
        let result = r.route_with_budget(&tokens, 2, Some(&over), none).unwrap();
        for gpu in result.active.chunks(3) {
            assert!(gpu.iter().filter(|&&a| a).count() <= 2);
        }
        assert!(matches!(
            r.route_with_budget(&tokens, 2, Some(&[true; 4]), none),
            Err(RoutingError::Shape { .. })
        ));
    }

    #[test]
    fn without_spare_activations_no_expert_splits() {
        // Both GPUs host e0 and e1; one active each, so neither splits: the
        // heavy expert alone bounds the load (the budget-free bound is 6).
        let two = r#"{"num_layers": 1, "num_logical_experts": 2, "num_groups": 1,
            "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 2}"#;
        let mut r = router(two, vec![0, 1, 0, 1]);
        let none = SearchLimits {
            max_nodes: 0,
            exact_time: std::time::Duration::ZERO,
        };
        let outcome = r.route_with_budget(&[10, 2], 1, None, none).unwrap();
        assert_eq!(outcome.lower_bound, 10.0);
        assert_eq!(outcome.routing.max_load(), 10.0);
        assert!(outcome.is_proven_optimal());
    }

    #[test]
    fn sole_hosts_over_budget_are_reported() {
        // GPU0 is the only host of e1 and e2.
        let mut r = router(THREE_GPUS, vec![0, 1, 2, 0, 3, 3, 0, 3, 3]);
        assert!(matches!(
            r.route_with_budget(&[1, 1, 1, 1], 1, None, SearchLimits::default()),
            Err(RoutingError::BudgetTooSmall {
                gpu: 0,
                needed: 2,
                budget: 1
            })
        ));
    }
}
