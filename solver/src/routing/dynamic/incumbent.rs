//! Incumbents of the search: a feasible seed activation (a b-matching),
//! and local search on an incumbent guided by its certificate.

use super::state::Search;
use crate::routing::basis::{OFF, ON};
use crate::routing::error::RoutingError;
use crate::routing::flow::FlowNetwork;

impl Search<'_> {
    /// A feasible activation: every expert with tokens on one GPU within
    /// budget (a b-matching by max-flow; none means infeasible), then spare
    /// budget filled with more replicas.
    pub(super) fn seed_activation(&self, root: &[u8]) -> Result<Vec<bool>, RoutingError> {
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

    /// Local search on the incumbent guided by its certificate. Any better
    /// activation must let some expert whose active replicas all lie in the
    /// bottleneck set `B` use a replica outside `B` (otherwise `B` still
    /// needs the same threshold), so the moves are exactly those: activate
    /// such a replica, swapping out an active replica on its GPU whose
    /// expert stays covered when the GPU's budget is full. First
    /// improvement is taken; returns the routings spent.
    pub(super) fn improve(&mut self, root: &[u8], max_routings: usize) -> usize {
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
