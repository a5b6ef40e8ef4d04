//! The exact min–max routing of one batch over one layer graph.
//!
//! ## Model
//! Demand `d` has `t_d` tokens and may use GPUs `N(d)`; GPU `g` has speed
//! `s_g`. Choose `x[d][g] >= 0` with `Σ_g x[d][g] = t_d` minimizing
//! `max_g (Σ_d x[d][g]) / s_g`.
//!
//! ## Optimality
//! For a set of GPUs `B`, let `W(B)` be the tokens of demands with
//! `N(d) ⊆ B`; they must land inside `B`. So the optimum is at least the
//! smallest threshold at which `B`'s GPUs can hold `W(B)` (for whole tokens:
//! the smallest *breakpoint* `k/s_g` with `Σ_{g∈B} cap_g(T) >= W(B)`,
//! [`NumberModel::set_threshold`]). Conversely, a threshold `T` is feasible
//! iff the network `source → d (t_d) → g (∞) → sink (cap_g(T))` carries
//! every token (Hall's condition for this transportation problem, which is
//! also the max-flow/min-cut theorem); whole-token capacities give a
//! whole-token flow. The search starts from the bounds of single GPUs and of
//! the whole component and repeats: run max-flow; if tokens are left over,
//! the GPUs on the source side of the minimum cut form a set `B` that
//! violates its condition, and `T` rises to `B`'s bound. Every `T` visited
//! is a lower bound, the last one is attained by the flow, so it is the
//! optimum; `B` is returned as the certificate. The source sides of
//! successive cuts are nested (capacities only grow), so there are at most
//! `m + 1` rounds for a component of `m` GPUs, and each round continues the
//! previous flow.
//!
//! ## Decomposition
//! Demands with a single usable GPU are fixed load on that GPU. The rest
//! connect GPUs into components, solved independently: a component with one
//! flexible demand (every component when GPUs hold one slot) is solved in
//! closed form; larger ones with the flow above. Without a mask the
//! components and their networks depend only on the plan, so they are built
//! on the first solve and reused; a demand without tokens in a component
//! just brings a source arc of capacity zero.

use super::flow::FlowNetwork;
use super::graph::LayerGraph;
use super::threshold::{Amount, NumberModel};

const NONE: u32 = u32::MAX;

/// Scratch space for [`Workspace::solve`] on one layer graph, sized on
/// first use. A workspace serves a single graph: it caches its layout.
pub(crate) struct Workspace<N: NumberModel> {
    /// Tokens of single-GPU demands, per GPU.
    base: Vec<N::Amount>,
    parent: Vec<u32>,
    component_of_root: Vec<u32>,
    /// GPU index within its component, or `NONE` outside all components.
    local: Vec<u32>,
    flexible: Vec<u32>,
    component_gpu_start: Vec<u32>,
    component_gpus: Vec<u32>,
    component_demand_start: Vec<u32>,
    component_demands: Vec<u32>,
    /// Whether the layout above (and `networks`) is that of the whole
    /// graph, reusable by every solve without a mask.
    whole_graph_layout: bool,
    /// Flow networks of the components with several demands
    /// (`component_network[c]`); a masked solve reuses `networks[0]`.
    networks: Vec<FlowNetwork<N::Amount>>,
    component_network: Vec<u32>,
    /// Network edge ids: per entry of `component_demands` (source arcs),
    /// per entry of `component_gpus` (sink arcs), per graph edge.
    source_edge: Vec<u32>,
    sink_edge: Vec<u32>,
    network_edge: Vec<u32>,
    in_cut: Vec<bool>,
    cut_candidate: Vec<bool>,
    set_gpus: Vec<u32>,
    set_speeds: Vec<f64>,
    caps: Vec<u64>,
    /// The optimum of the last solve.
    pub(crate) threshold: f64,
    /// GPUs whose condition pins the optimum, and the tokens confined to them.
    pub(crate) certificate: Vec<u32>,
    pub(crate) certificate_amount: N::Amount,
}

impl<N: NumberModel> Default for Workspace<N> {
    fn default() -> Self {
        Workspace {
            base: Vec::new(),
            parent: Vec::new(),
            component_of_root: Vec::new(),
            local: Vec::new(),
            flexible: Vec::new(),
            component_gpu_start: Vec::new(),
            component_gpus: Vec::new(),
            component_demand_start: Vec::new(),
            component_demands: Vec::new(),
            whole_graph_layout: false,
            networks: Vec::new(),
            component_network: Vec::new(),
            source_edge: Vec::new(),
            sink_edge: Vec::new(),
            network_edge: Vec::new(),
            in_cut: Vec::new(),
            cut_candidate: Vec::new(),
            set_gpus: Vec::new(),
            set_speeds: Vec::new(),
            caps: Vec::new(),
            threshold: 0.0,
            certificate: Vec::new(),
            certificate_amount: N::Amount::default(),
        }
    }
}

impl<N: NumberModel> std::fmt::Debug for Workspace<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("threshold", &self.threshold)
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

fn find(parent: &mut [u32], mut v: u32) -> u32 {
    while parent[v as usize] != v {
        let up = parent[parent[v as usize] as usize];
        parent[v as usize] = up;
        v = up;
    }
    v
}

/// Whether `edge` may carry tokens under the optional mask.
fn usable_edge(usable: Option<&[bool]>, edge: usize) -> bool {
    usable.is_none_or(|u| u[edge])
}

impl<N: NumberModel> Workspace<N> {
    /// Routes `amount[d]` tokens of every demand optimally over the graph's
    /// edges (only those with `usable[edge]`, when given). Writes the flow of
    /// every edge to `edge_flow` and sets `threshold` and `certificate`.
    ///
    /// Every demand with tokens must have a usable edge.
    pub(crate) fn solve(
        &mut self,
        graph: &LayerGraph,
        amount: &[N::Amount],
        usable: Option<&[bool]>,
        edge_flow: &mut [N::Amount],
    ) {
        let zero = N::Amount::default();
        let num_gpus = graph.num_gpus();
        edge_flow.iter_mut().for_each(|f| *f = zero);
        if usable.is_some() || !self.whole_graph_layout {
            self.lay_out(graph, amount, usable);
            self.whole_graph_layout = usable.is_none();
        }

        // Fixed loads: demands with tokens and one usable GPU.
        self.base.clear();
        self.base.resize(num_gpus, zero);
        for (d, &t) in amount.iter().enumerate() {
            if t <= zero {
                continue;
            }
            let mut edges = graph.edges(d).filter(|&e| usable_edge(usable, e));
            if let (Some(edge), None) = (edges.next(), edges.next()) {
                let gpu = graph.edge_gpu[edge] as usize;
                self.base[gpu] = self.base[gpu] + t;
                edge_flow[edge] = t;
            }
        }

        // GPUs outside every component just carry their fixed load.
        self.threshold = 0.0;
        self.certificate.clear();
        self.certificate_amount = zero;
        let mut heaviest = (0.0, NONE);
        for g in (0..num_gpus).filter(|&g| self.local[g] == NONE) {
            let key = match graph.uniform_speed {
                Some(_) => N::to_f64(self.base[g]),
                None => N::load(self.base[g], graph.speeds[g]),
            };
            if key > heaviest.0 {
                heaviest = (key, g as u32);
            }
        }
        if heaviest.1 != NONE {
            let g = heaviest.1 as usize;
            let t = N::load(self.base[g], graph.speeds[g]);
            self.set_certificate(t, &[g as u32], self.base[g]);
        }
        for c in 0..self.component_demand_start.len() - 1 {
            let demands = self.component_demand_start[c] as usize
                ..self.component_demand_start[c + 1] as usize;
            if demands.len() == 1 {
                let d = self.component_demands[demands.start] as usize;
                self.solve_star(graph, d, amount[d], usable, edge_flow);
            } else {
                self.solve_network(graph, c, amount, usable, edge_flow);
            }
        }
    }

    fn set_certificate(&mut self, threshold: f64, gpus: &[u32], amount: N::Amount) {
        self.threshold = threshold;
        self.certificate.clear();
        self.certificate.extend_from_slice(gpus);
        self.certificate_amount = amount;
    }

    /// Finds the components: of the demands with several usable edges and
    /// (under a mask) tokens. Without a mask, also builds their networks.
    fn lay_out(&mut self, graph: &LayerGraph, amount: &[N::Amount], usable: Option<&[bool]>) {
        let zero = N::Amount::default();
        self.parent.clear();
        self.parent.extend(0..graph.num_gpus() as u32);
        self.flexible.clear();
        for (d, &t) in amount.iter().enumerate() {
            if usable.is_some() && t <= zero {
                continue;
            }
            let mut edges = graph.edges(d).filter(|&e| usable_edge(usable, e));
            let Some(first) = edges.next() else { continue };
            let mut several = false;
            for edge in edges {
                several = true;
                let a = find(&mut self.parent, graph.edge_gpu[first]);
                let b = find(&mut self.parent, graph.edge_gpu[edge]);
                self.parent[a.max(b) as usize] = a.min(b);
            }
            if several {
                self.flexible.push(d as u32);
            }
        }
        self.collect_components(graph, usable);
        if usable.is_none() {
            self.component_network.clear();
            let mut built = 0;
            for c in 0..self.component_demand_start.len() - 1 {
                let demands = self.component_demand_start[c + 1] - self.component_demand_start[c];
                if demands > 1 {
                    self.component_network.push(built);
                    self.build_network(built as usize, graph, c, None);
                    built += 1;
                } else {
                    self.component_network.push(NONE);
                }
            }
        }
    }

    /// Groups flexible demands and their GPUs by union-find root (CSR lists).
    fn collect_components(&mut self, graph: &LayerGraph, usable: Option<&[bool]>) {
        let num_gpus = graph.num_gpus();
        self.component_of_root.clear();
        self.component_of_root.resize(num_gpus, NONE);
        self.local.clear();
        self.local.resize(num_gpus, NONE);
        let mut components = 0u32;
        // Count demands and GPUs per component (`local` marks counted GPUs).
        self.component_demand_start.clear();
        self.component_gpu_start.clear();
        for &d in &self.flexible {
            let mut edges = graph.edges(d as usize).filter(|&e| usable_edge(usable, e));
            let Some(first) = edges.next() else { continue };
            let root = find(&mut self.parent, graph.edge_gpu[first]) as usize;
            if self.component_of_root[root] == NONE {
                self.component_of_root[root] = components;
                components += 1;
                self.component_demand_start.push(0);
                self.component_gpu_start.push(0);
            }
            let c = self.component_of_root[root] as usize;
            self.component_demand_start[c] += 1;
            for edge in std::iter::once(first).chain(edges) {
                let gpu = graph.edge_gpu[edge] as usize;
                if self.local[gpu] == NONE {
                    self.local[gpu] = 0;
                    self.component_gpu_start[c] += 1;
                }
            }
        }
        prefix_starts(&mut self.component_demand_start);
        prefix_starts(&mut self.component_gpu_start);
        self.component_demands.clear();
        self.component_demands.resize(self.flexible.len(), 0);
        self.component_gpus.clear();
        self.component_gpus
            .resize(*self.component_gpu_start.last().unwrap_or(&0) as usize, 0);
        // Fill: `*_start[c]` advances as a cursor, then shifts back.
        for &d in &self.flexible {
            let edge = graph.edges(d as usize).find(|&e| usable_edge(usable, e));
            let Some(edge) = edge else { continue };
            let root = find(&mut self.parent, graph.edge_gpu[edge]) as usize;
            let c = self.component_of_root[root] as usize;
            self.component_demands[self.component_demand_start[c] as usize] = d;
            self.component_demand_start[c] += 1;
        }
        for g in 0..num_gpus {
            if self.local[g] == NONE {
                continue;
            }
            let root = find(&mut self.parent, g as u32) as usize;
            let c = self.component_of_root[root] as usize;
            let at = self.component_gpu_start[c];
            self.component_gpus[at as usize] = g as u32;
            self.component_gpu_start[c] += 1;
        }
        unshift_starts(&mut self.component_demand_start);
        unshift_starts(&mut self.component_gpu_start);
        for c in 0..components as usize {
            let start = self.component_gpu_start[c];
            for i in start..self.component_gpu_start[c + 1] {
                let g = self.component_gpus[i as usize] as usize;
                self.local[g] = i - start;
            }
        }
    }

    /// Builds component `c`'s network `source → demand → GPU → sink` into
    /// `networks[index]`, with capacities left to the solve.
    fn build_network(
        &mut self,
        index: usize,
        graph: &LayerGraph,
        c: usize,
        usable: Option<&[bool]>,
    ) {
        if self.networks.len() <= index {
            self.networks.resize_with(index + 1, FlowNetwork::default);
        }
        self.source_edge.resize(self.component_demands.len(), NONE);
        self.sink_edge.resize(self.component_gpus.len(), NONE);
        self.network_edge.resize(graph.num_edges(), NONE);
        let demands =
            self.component_demand_start[c] as usize..self.component_demand_start[c + 1] as usize;
        let gpus = self.component_gpu_start[c] as usize..self.component_gpu_start[c + 1] as usize;
        let (k, m) = (demands.len(), gpus.len());
        let net = &mut self.networks[index];
        net.reset(k + m + 2);
        let zero = N::Amount::default();
        for (j, i) in demands.enumerate() {
            let d = self.component_demands[i] as usize;
            self.source_edge[i] = net.add_edge(0, 1 + j, zero) as u32;
            for edge in graph.edges(d).filter(|&e| usable_edge(usable, e)) {
                let local = self.local[graph.edge_gpu[edge] as usize] as usize;
                self.network_edge[edge] =
                    net.add_edge(1 + j, 1 + k + local, N::Amount::UNBOUNDED) as u32;
            }
        }
        for (local, i) in gpus.enumerate() {
            self.sink_edge[i] = net.add_edge(1 + k + local, k + m + 1, zero) as u32;
        }
        net.finish();
    }

    /// One flexible demand over GPUs `N(d)` (with fixed loads): fill every
    /// GPU to the optimal threshold, which is the larger of the single-GPU
    /// bounds and the bound of `N(d)` as a whole (Hall's condition has no
    /// other sets here), then hand back the surplus.
    fn solve_star(
        &mut self,
        graph: &LayerGraph,
        d: usize,
        t: N::Amount,
        usable: Option<&[bool]>,
        edge_flow: &mut [N::Amount],
    ) {
        self.set_gpus.clear();
        self.set_speeds.clear();
        let mut need = t;
        let mut base_bound = (0.0, NONE);
        for edge in graph.edges(d).filter(|&e| usable_edge(usable, e)) {
            let g = graph.edge_gpu[edge];
            self.set_gpus.push(g);
            self.set_speeds.push(graph.speeds[g as usize]);
            need = need + self.base[g as usize];
            let b = N::load(self.base[g as usize], graph.speeds[g as usize]);
            if base_bound.1 == NONE || b > base_bound.0 {
                base_bound = (b, g);
            }
        }
        let set_bound = N::set_threshold(&self.set_speeds, need, &mut self.caps);
        let threshold = set_bound.max(base_bound.0);
        let mut surplus = N::Amount::default();
        for edge in graph.edges(d).filter(|&e| usable_edge(usable, e)) {
            let g = graph.edge_gpu[edge] as usize;
            let x = N::capacity(threshold, graph.speeds[g]).saturating_minus(self.base[g]);
            edge_flow[edge] = x;
            surplus = surplus + x;
        }
        let mut surplus = surplus.saturating_minus(t);
        for edge in graph.edges(d).filter(|&e| usable_edge(usable, e)) {
            if surplus <= N::Amount::default() {
                break;
            }
            let x = edge_flow[edge];
            let cut = if x < surplus { x } else { surplus };
            edge_flow[edge] = x - cut;
            surplus = surplus - cut;
        }
        if threshold > self.threshold {
            if set_bound >= base_bound.0 {
                let gpus = std::mem::take(&mut self.set_gpus);
                self.set_certificate(threshold, &gpus, need);
                self.set_gpus = gpus;
            } else {
                let g = base_bound.1;
                self.set_certificate(threshold, &[g], self.base[g as usize]);
            }
        }
    }

    /// A component with several flexible demands: parametric max-flow.
    fn solve_network(
        &mut self,
        graph: &LayerGraph,
        c: usize,
        amount: &[N::Amount],
        usable: Option<&[bool]>,
        edge_flow: &mut [N::Amount],
    ) {
        let index = match usable {
            Some(_) => {
                self.build_network(0, graph, c, usable);
                0
            }
            None => self.component_network[c] as usize,
        };
        let mut net = std::mem::take(&mut self.networks[index]);
        let demands =
            self.component_demand_start[c] as usize..self.component_demand_start[c + 1] as usize;
        let gpus = self.component_gpu_start[c] as usize..self.component_gpu_start[c + 1] as usize;
        let (k, m) = (demands.len(), gpus.len());
        let (source, sink) = (0, k + m + 1);
        let gpu_node = |local: usize| 1 + k + local;

        let mut flexible_total = N::Amount::default();
        let mut base_total = N::Amount::default();
        for &d in &self.component_demands[demands.clone()] {
            flexible_total = flexible_total + amount[d as usize];
        }
        self.set_speeds.clear();
        let mut base_bound = (0.0, NONE);
        for &g in &self.component_gpus[gpus.clone()] {
            let (b, s) = (self.base[g as usize], graph.speeds[g as usize]);
            base_total = base_total + b;
            self.set_speeds.push(s);
            let t = N::load(b, s);
            if base_bound.1 == NONE || t > base_bound.0 {
                base_bound = (t, g);
            }
        }
        net.restart(N::tolerance(flexible_total + base_total));
        for i in demands.clone() {
            let d = self.component_demands[i] as usize;
            net.set_capacity(self.source_edge[i] as usize, amount[d]);
        }

        let whole_need = flexible_total + base_total;
        let whole_bound = N::set_threshold(&self.set_speeds, whole_need, &mut self.caps);
        let mut threshold = whole_bound.max(base_bound.0);
        // The certificate of the current threshold: the whole component or one GPU.
        let mut cut_bound: Option<N::Amount> = None;
        if whole_bound >= base_bound.0 {
            self.in_cut.clear();
            self.in_cut.resize(m, true);
            cut_bound = Some(whole_need);
        }
        let mut flow = N::Amount::default();
        let slack = N::tolerance(flexible_total) + N::tolerance(flexible_total);
        for _round in 0..=m + 1 {
            for i in gpus.clone() {
                let g = self.component_gpus[i] as usize;
                let cap = N::capacity(threshold, graph.speeds[g]).saturating_minus(self.base[g]);
                net.set_capacity(self.sink_edge[i] as usize, cap);
            }
            flow = flow + net.augment(source, sink);
            if flow + slack >= flexible_total {
                break;
            }
            // Tokens are left over: the source side of the cut is a set of
            // GPUs that cannot hold what only they can take.
            self.cut_candidate.clear();
            self.cut_candidate
                .extend((0..m).map(|l| net.on_source_side(gpu_node(l))));
            let mut need = N::Amount::default();
            self.set_speeds.clear();
            for (local, &g) in self.component_gpus[gpus.clone()].iter().enumerate() {
                if self.cut_candidate[local] {
                    need = need + self.base[g as usize];
                    self.set_speeds.push(graph.speeds[g as usize]);
                }
            }
            for &d in &self.component_demands[demands.clone()] {
                let confined = graph
                    .edges(d as usize)
                    .filter(|&e| usable_edge(usable, e))
                    .all(|e| self.cut_candidate[self.local[graph.edge_gpu[e] as usize] as usize]);
                if confined {
                    need = need + amount[d as usize];
                }
            }
            let raised = N::set_threshold(&self.set_speeds, need, &mut self.caps);
            // Whole tokens always improve; real loads stop when rounding
            // leaves nothing to gain.
            if !N::improves(raised, threshold) {
                break;
            }
            threshold = raised;
            cut_bound = Some(need);
            std::mem::swap(&mut self.in_cut, &mut self.cut_candidate);
        }

        for &d in &self.component_demands[demands] {
            for edge in graph.edges(d as usize).filter(|&e| usable_edge(usable, e)) {
                edge_flow[edge] = net.flow(self.network_edge[edge] as usize);
            }
        }
        self.networks[index] = net;
        if threshold > self.threshold {
            match cut_bound {
                Some(need) => {
                    self.set_gpus.clear();
                    for (local, &g) in self.component_gpus[gpus].iter().enumerate() {
                        if self.in_cut[local] {
                            self.set_gpus.push(g);
                        }
                    }
                    let set = std::mem::take(&mut self.set_gpus);
                    self.set_certificate(threshold, &set, need);
                    self.set_gpus = set;
                }
                None => {
                    let g = base_bound.1;
                    self.set_certificate(threshold, &[g], self.base[g as usize]);
                }
            }
        }
    }
}

/// Turns per-bucket counts into start offsets (with a final total).
fn prefix_starts(counts: &mut Vec<u32>) {
    let mut sum = 0;
    for c in counts.iter_mut() {
        let n = *c;
        *c = sum;
        sum += n;
    }
    counts.push(sum);
}

/// After filling with `starts[c]` as a cursor, each start equals the next
/// bucket's start; shift them back.
fn unshift_starts(starts: &mut [u32]) {
    for c in (1..starts.len()).rev() {
        starts[c] = starts[c - 1];
    }
    if let Some(first) = starts.first_mut() {
        *first = 0;
    }
}
