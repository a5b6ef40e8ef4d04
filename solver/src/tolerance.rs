//! Float comparison tolerances, one per meaning, for the whole crate.
//!
//! All are relative: a site compares `a <= b * (1.0 + X)` or scales `X` by
//! the magnitude it compares. They differ in size because they absorb
//! different errors: the rounding of our own sums, the distance between two
//! computations of one quantity, or a solver's own tolerances.

/// Loads (sums of loads, flows) this close are equal: the rounding noise
/// of incremental `f64` updates. A change smaller than this is no progress,
/// an overshoot smaller than this is none.
pub(crate) const ROUNDING: f64 = 1e-12;

/// A load this close above a bound, target or limit has reached it: the two
/// sides come from different computations (a closed-form bound, a search's
/// incremental loads, a solver's shares), which may disagree in more than
/// the last bits.
pub(crate) const REACHED: f64 = 1e-9;

/// A placement read back from a MILP reaches the objective HiGHS claims for
/// it within this (HiGHS's feasibility tolerance is 1e-7).
pub(crate) const SOLVER_CLAIM: f64 = 1e-7;

/// The relative gap the planner's optimality-proving MILPs are asked to
/// close; a plan this close to such a MILP's objective is proven by it.
pub(crate) const MIP_GAP: f64 = 1e-6;

/// Taken off a dual bound HiGHS reports before relying on it: its
/// feasibility tolerance is 1e-7 absolute, on loads of up to millions of
/// tokens.
pub(crate) const HIGHS_BOUND: f64 = 1e-6;

/// Each expert's `replica_share` entries must sum to 1 within this: shares
/// come from floating-point solvers.
pub(crate) const SHARE_SUM: f64 = 1e-6;
