//! The state of the budgeted search: per-edge *free*/*on*/*off* flags, the
//! graph indexes the steps share, and propagation of the forced moves.

use crate::routing::basis::{FREE, OFF, ON};
use crate::routing::graph::LayerGraph;
use crate::routing::whole::WholeTokens;

/// One layer's budgeted search: the replica graph, the tokens, and the
/// scratch every step of the search shares.
pub(super) struct Search<'a> {
    pub(super) graph: &'a LayerGraph,
    pub(super) solver: &'a mut WholeTokens,
    pub(super) tokens: &'a [u64],
    /// `tokens`, with demands outside the component being searched zeroed.
    pub(super) scoped_tokens: Vec<u64>,
    pub(super) budget: usize,
    /// Edges of each GPU among demands with tokens: CSR.
    gpu_edge_start: Vec<u32>,
    gpu_edges: Vec<u32>,
    pub(super) demand_of_edge: Vec<u32>,
    pub(super) usable: Vec<bool>,
    pub(super) flow: Vec<u64>,
    pub(super) incumbent: Option<(f64, Vec<bool>)>,
}

/// Conflicts found by propagation.
pub(super) enum Conflict {
    /// A GPU has more forced replicas than its budget.
    Overfull { gpu: usize, needed: usize },
    /// An expert with tokens has no replica left.
    Uncovered,
}

/// One component's result.
pub(super) struct ComponentOutcome {
    pub(super) active: Vec<bool>,
    /// The largest load of `active`.
    pub(super) value: f64,
    pub(super) lower_bound: f64,
    pub(super) nodes: usize,
}

impl<'a> Search<'a> {
    pub(super) fn new(
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
}

impl Search<'_> {
    pub(super) fn gpu_edges(&self, gpu: usize) -> &[u32] {
        &self.gpu_edges[self.gpu_edge_start[gpu] as usize..self.gpu_edge_start[gpu + 1] as usize]
    }

    /// True when `active` keeps every GPU within budget and gives every
    /// scoped expert with tokens a replica.
    pub(super) fn admissible(&self, active: &[bool]) -> bool {
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
    pub(super) fn fits_budget(&self, state: &[u8]) -> bool {
        (0..self.graph.num_gpus()).all(|g| {
            self.gpu_edges(g)
                .iter()
                .filter(|&&e| state[e as usize] != OFF)
                .count()
                <= self.budget
        })
    }

    /// True when a subtree bounded below by `bound` cannot beat the incumbent.
    pub(super) fn beaten(&self, bound: f64) -> bool {
        self.incumbent
            .as_ref()
            .is_some_and(|(best, _)| bound >= *best)
    }

    /// Applies the forced moves until nothing changes.
    pub(super) fn propagate(&self, state: &mut [u8]) -> Result<(), Conflict> {
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
}
