//! Lower bounds of a search node: the exact routing with the budget
//! relaxed, and the bound of the pieces experts must be split into.

use std::collections::BinaryHeap;

use super::state::Search;
use crate::routing::basis::{FREE, OFF, ON};
use crate::routing::threshold::load;

impl Search<'_> {
    /// A bound the budget-free routing misses: every scoped expert needs
    /// one active replica, so the component's GPUs have only
    /// `spare = budget x GPUs - experts` activations to split experts with,
    /// and an expert in `p` pieces (at most one per usable replica) has a
    /// piece of at least `ceil(t / p)` tokens on one GPU. Handing out the
    /// spare pieces greedily to the expert with the largest such piece
    /// minimizes the largest piece, which bounds every activation. With no
    /// spare (e.g. 64 experts on 8 GPUs x 8 active) it is the heaviest
    /// expert. Uniform speeds only (0 otherwise).
    pub(super) fn split_bound(&self, root: &[u8]) -> f64 {
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
    pub(super) fn relax(&mut self, state: &[u8]) -> f64 {
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
    pub(super) fn relaxation_activation(&self, state: &[u8]) -> Vec<bool> {
        state
            .iter()
            .zip(&self.flow)
            .map(|(&s, &f)| s == ON || (s == FREE && f > 0))
            .collect()
    }
}
