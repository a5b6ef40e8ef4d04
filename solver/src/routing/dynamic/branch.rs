//! Depth-first branch and bound over one component's activations.

use super::state::{ComponentOutcome, Search};
use crate::routing::basis::{self, FREE, OFF, ON};

impl Search<'_> {
    /// Depth-first branch and bound over the scoped component (whose
    /// relaxation at the root is `root_bound`), starting from the best of
    /// the `seeds` that respect the budget; stops early once the incumbent
    /// is no worse than `floor` (a lower bound on the whole layer).
    pub(super) fn branch_and_bound(
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

    /// The free edge to branch on, if the relaxation breaks a budget: on
    /// the GPU furthest over, the used free edge with the least flow.
    pub(super) fn branch_edge(&self, state: &[u8]) -> Option<usize> {
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

    /// At the end of the first descent, polishes the incumbent by local
    /// search (once).
    pub(super) fn finish_descent(
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
}
