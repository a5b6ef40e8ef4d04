//! Independent parts of a layer: GPU components linked by usable
//! replicas, and scoping the tokens to one of them.

use super::state::Search;
use crate::routing::basis::OFF;

impl Search<'_> {
    /// GPU sets linked by the usable replicas of demands with tokens.
    pub(super) fn components(&self, root: &[u8]) -> Vec<Vec<u32>> {
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
    pub(super) fn scope(&mut self, gpus: &[u32], root: &[u8]) {
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
}
