//! The time a planning run may take, shared among its subproblems.
//!
//! Layers run in parallel on rayon's threads, so a layer's fair share is the
//! run's limit times the thread count divided by the layer count; no
//! subproblem ever gets more than what is left before the run's deadline.
//! Exact models receive their share as a HiGHS time limit, searches check
//! the clock between moves; both stop early when they are done.

use std::time::{Duration, Instant};

/// Fraction of the limit planned for: the rest absorbs model building,
/// stats and the slack of solvers that overrun their own limits a little.
const PLANNED_FRACTION: f64 = 0.93;

/// A run's time allowance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    start: Instant,
    limit: Duration,
    threads: usize,
}

impl Budget {
    pub(crate) fn new(limit: Duration) -> Self {
        Budget {
            start: Instant::now(),
            limit,
            threads: rayon::current_num_threads().max(1),
        }
    }

    /// When all planning must be over.
    pub(crate) fn deadline(&self) -> Instant {
        self.start + self.limit.mul_f64(PLANNED_FRACTION)
    }

    /// Seconds left before the deadline (0 when past it).
    pub(crate) fn remaining(&self) -> f64 {
        self.deadline()
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    }

    /// A fair share for one of `parts` equal subproblems that run
    /// `self.threads` at a time, within `fraction` of the limit.
    pub(crate) fn share(&self, parts: usize, fraction: f64) -> f64 {
        let total = self.limit.as_secs_f64() * PLANNED_FRACTION * fraction;
        (total * self.threads as f64 / parts.max(1) as f64).min(self.remaining())
    }

    /// The deadline of a subproblem that starts now with `seconds` to spend.
    pub(crate) fn until(&self, seconds: f64) -> Instant {
        (Instant::now() + Duration::from_secs_f64(seconds.max(0.0))).min(self.deadline())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_never_exceed_what_is_left() {
        let budget = Budget::new(Duration::from_secs(2));
        let before = budget.remaining();
        let share = budget.share(1, 1.0);
        assert!(share <= before);
        assert!(budget.share(100, 0.5) <= share);
        assert!(budget.until(100.0) <= budget.deadline());
        let spent = Budget::new(Duration::ZERO);
        assert_eq!(spent.remaining(), 0.0);
        assert_eq!(spent.share(4, 1.0), 0.0);
    }
}
