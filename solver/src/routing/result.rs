//! [`Routing`]: what routing one batch produces, with its proof of
//! optimality. The [`Router`](super::Router) and the budgeted search
//! ([`dynamic`](super::dynamic)) both fill it, so it lives apart from either.

use super::graph::LayerGraph;
use super::threshold::load;
use super::whole::WholeTokens;

/// Tokens from one source GPU to one slot (see
/// [`Router::route_from_sources`](super::Router::route_from_sources)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFlow {
    pub source_gpu: u32,
    pub slot: u32,
    pub tokens: u64,
}

/// An optimal routing of one batch, with its proof.
///
/// `max_load` is the smallest possible largest GPU load (tokens / speed).
/// The bottleneck set proves it: its GPUs are the only ones that may take
/// `bottleneck_tokens` tokens, and at any lower threshold they can hold
/// fewer (see [`Routing::check_bottleneck`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    /// Also read by the router while it writes `source_flows`.
    pub(super) slot_tokens: Vec<u64>,
    gpu_tokens: Vec<u64>,
    max_load: f64,
    bottleneck_gpus: Vec<u32>,
    bottleneck_tokens: u64,
    /// Filled by the router after the slot counts.
    pub(super) source_flows: Vec<SourceFlow>,
}

impl Routing {
    /// An empty routing, to be filled by a [`Router`](super::Router) (reuse
    /// it across batches).
    pub fn new() -> Self {
        Routing::default()
    }

    /// Tokens sent to each physical slot.
    pub fn slot_tokens(&self) -> &[u64] {
        &self.slot_tokens
    }

    /// Tokens each GPU receives (sum over its slots).
    pub fn gpu_tokens(&self) -> &[u64] {
        &self.gpu_tokens
    }

    /// The optimal largest GPU load, `max_g gpu_tokens[g] / speed[g]`.
    pub fn max_load(&self) -> f64 {
        self.max_load
    }

    /// GPUs whose joint capacity pins `max_load`.
    pub fn bottleneck_gpus(&self) -> &[u32] {
        &self.bottleneck_gpus
    }

    /// Tokens that can only go to [`bottleneck_gpus`](Self::bottleneck_gpus).
    pub fn bottleneck_tokens(&self) -> u64 {
        self.bottleneck_tokens
    }

    /// Per (source GPU, slot) tokens, after
    /// [`Router::route_from_sources`](super::Router::route_from_sources).
    pub fn source_flows(&self) -> &[SourceFlow] {
        &self.source_flows
    }

    /// Checks the optimality proof against GPU speeds: below `max_load`, the
    /// bottleneck GPUs hold fewer than `bottleneck_tokens`, so no routing can
    /// do better (the caller checks independently that those tokens have no
    /// replica elsewhere).
    pub fn check_bottleneck(&self, gpu_speed: &[f64]) -> bool {
        if self.max_load == 0.0 {
            return true;
        }
        let held: u64 = self
            .bottleneck_gpus
            .iter()
            .filter_map(|&g| gpu_speed.get(g as usize))
            .map(|&s| {
                // The largest k with k / s strictly below max_load.
                let mut k = (self.max_load * s).ceil() as u64 + 1;
                while k > 0 && load(k, s) >= self.max_load {
                    k -= 1;
                }
                k
            })
            .sum();
        held < self.bottleneck_tokens
    }
}

impl Routing {
    /// Zeroed slot counts for a layer of `num_slots` slots, to fill.
    pub(crate) fn slot_tokens_mut(&mut self, num_slots: usize) -> &mut [u64] {
        self.slot_tokens.clear();
        self.slot_tokens.resize(num_slots, 0);
        &mut self.slot_tokens
    }

    /// Derives GPU totals and the largest load from the slot counts, and
    /// takes the solver's certificate.
    pub(crate) fn finish(&mut self, graph: &LayerGraph, solver: &WholeTokens) {
        let per_gpu = graph.num_slots / graph.num_gpus();
        self.gpu_tokens.clear();
        self.gpu_tokens.extend(
            self.slot_tokens
                .chunks_exact(per_gpu)
                .map(|c| c.iter().sum::<u64>()),
        );
        self.max_load = match graph.uniform_speed {
            Some(speed) => load(self.gpu_tokens.iter().copied().max().unwrap_or(0), speed),
            None => self
                .gpu_tokens
                .iter()
                .zip(&graph.speeds)
                .map(|(&t, &s)| load(t, s))
                .fold(0.0, f64::max),
        };
        debug_assert_eq!(self.max_load, solver.optimum(graph));
        let (gpus, tokens) = solver.certificate();
        self.bottleneck_gpus.clear();
        self.bottleneck_gpus.extend_from_slice(gpus);
        self.bottleneck_tokens = tokens;
        self.source_flows.clear();
    }
}
