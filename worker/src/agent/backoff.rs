//! Retry delays: exponential backoff with jitter.
//!
//! Attempt `n` (from 1) waits a uniformly random time in `[d/2, d]`, where
//! `d = min(base · 2^(n-1), max)`. The random half keeps the workers of a
//! cluster from retrying in lockstep after the service comes back; the fixed
//! half keeps a retry from firing immediately.

use std::time::Duration;

use rand::RngExt;

/// Backoff settings (`base <= max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// `max` is raised to `base` if smaller.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
        }
    }

    /// The ceiling of attempt `attempt` (1 for the first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// A jittered delay for attempt `attempt`.
    pub fn delay(&self, attempt: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        ceiling.mul_f64(rng.random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<u128> = (1..7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn delays_stay_within_half_and_full_ceiling(attempt in 1u32..80, seed in 0u64..1000) {
            let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            let d = b.delay(attempt, &mut ChaCha8Rng::seed_from_u64(seed));
            let c = b.ceiling(attempt);
            prop_assert!(d >= c / 2 && d <= c, "{:?} vs {:?}", d, c);
        }
    }
}
