//! Why a batch cannot be routed.

use thiserror::Error;

/// Why a batch cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoutingError {
    #[error("layer {layer} does not exist (the plan has {layers} layers)")]
    NoSuchLayer { layer: usize, layers: usize },
    #[error("layer {layer} of the plan does not fit the topology")]
    PlanMismatch { layer: usize },
    #[error("token counts have {found} entries, expected {expected} ({what})")]
    Shape {
        found: usize,
        expected: usize,
        what: &'static str,
    },
    #[error("the batch has more than {limit} tokens")]
    TooManyTokens { limit: u64 },
    #[error(
        "expert {expert} has replicas on several nodes; node-local routing needs per-source counts"
    )]
    AmbiguousNode { expert: usize },
    #[error(
        "source GPU {source_gpu} has tokens for expert {expert}, which has no replica on its node"
    )]
    Unreachable { source_gpu: usize, expert: usize },
    #[error("GPU {gpu} is the only host of {needed} experts with tokens, above its budget of {budget} active replicas")]
    BudgetTooSmall {
        gpu: usize,
        needed: usize,
        budget: usize,
    },
    #[error("no choice of {budget} active replicas per GPU covers every expert with tokens")]
    BudgetInfeasible { budget: usize },
}
