//! The `optimal-covisit` policy (see [`crate::covisit`]).

use std::time::Instant;

use super::{PlanError, PlanOptions, PlanOutcome};
use crate::load::LoadMatrix;
use crate::plan::Plan;
use crate::topology::Topology;

pub(super) fn solve(
    _topology: &Topology,
    _load: &LoadMatrix,
    _options: &PlanOptions,
    _previous: Option<&Plan>,
    _started: Instant,
) -> Result<PlanOutcome, PlanError> {
    Err(PlanError::Unsupported(
        "optimal-covisit is being built".into(),
    ))
}
