//! The whole-token solver of a layer, in the cheapest exact number model.
//!
//! When every GPU has the same speed `s`, the largest load is the largest
//! token count divided by `s`, so the solver minimizes token counts
//! ([`Levels`]) and divides once at the end. Otherwise it works on loads
//! directly ([`Integral`]). Both are exact; the first avoids a floating-point
//! division per capacity.

use super::graph::LayerGraph;
use super::solve::Workspace;
use super::threshold::{load, Integral, Levels};

/// Scratch space and results of whole-token solves for one layer graph.
#[derive(Debug)]
pub(crate) enum WholeTokens {
    Levels(Workspace<Levels>),
    Speeds(Workspace<Integral>),
}

impl WholeTokens {
    pub(crate) fn for_graph(graph: &LayerGraph) -> Self {
        match graph.uniform_speed {
            Some(_) => WholeTokens::Levels(Workspace::default()),
            None => WholeTokens::Speeds(Workspace::default()),
        }
    }

    /// See [`Workspace::solve`].
    pub(crate) fn solve(
        &mut self,
        graph: &LayerGraph,
        amount: &[u64],
        usable: Option<&[bool]>,
        edge_flow: &mut [u64],
    ) {
        match self {
            WholeTokens::Levels(w) => w.solve(graph, amount, usable, edge_flow),
            WholeTokens::Speeds(w) => w.solve(graph, amount, usable, edge_flow),
        }
    }

    /// The optimal largest GPU load (tokens / speed) of the last solve.
    pub(crate) fn optimum(&self, graph: &LayerGraph) -> f64 {
        match self {
            WholeTokens::Levels(w) => load(w.threshold as u64, graph.uniform_speed.unwrap_or(1.0)),
            WholeTokens::Speeds(w) => w.threshold,
        }
    }

    /// The GPUs whose condition pins the optimum, and the tokens only they may take.
    pub(crate) fn certificate(&self) -> (&[u32], u64) {
        match self {
            WholeTokens::Levels(w) => (&w.certificate, w.certificate_amount),
            WholeTokens::Speeds(w) => (&w.certificate, w.certificate_amount),
        }
    }
}
