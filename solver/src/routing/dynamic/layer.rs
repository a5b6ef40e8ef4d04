//! The search over a whole layer: infeasibility first, then each
//! independent component (its own branch and bound, then the exact MILP
//! for what it leaves open), worst first.

use std::time::Instant;

use super::api::SearchLimits;
use super::state::{Conflict, Search};
use crate::routing::basis::{FREE, OFF};
use crate::routing::error::RoutingError;
use crate::routing::graph::LayerGraph;
use crate::routing::whole::WholeTokens;

/// The chosen activation: which edges are active, the flow over them and
/// the search's figures.
pub(crate) struct Outcome {
    pub(crate) active: Vec<bool>,
    pub(crate) lower_bound: f64,
    pub(crate) nodes: usize,
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
