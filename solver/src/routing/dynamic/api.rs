//! What callers of the budgeted search give and get: its limits and the
//! activation it found, with how good it provably is.

use std::time::Duration;

use crate::routing::result::Routing;

/// Bounds on the branch-and-bound search of
/// [`Router::route_with_budget`](crate::routing::Router::route_with_budget).
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
