//! Thresholds on GPU load, in the two number models the solver runs in.
//!
//! The objective is `max_g tokens_g / speed_g`, evaluated in `f64` exactly
//! as written. With integral tokens a threshold `T` lets GPU `g` take the
//! largest `k` with `k / speed_g <= T` (evaluated the same way), so the
//! integral optimum is always one of the *breakpoints* `k / speed_g`, and
//! every bound below is the smallest breakpoint satisfying some necessary
//! condition — a value the optimum cannot beat, computed without rounding
//! slack. With real-valued loads the same conditions are plain ratios.

use std::fmt::Debug;
use std::ops::{Add, Sub};

use crate::tolerance;

/// A quantity of tokens: `u64` for batches, `f64` for window loads.
pub(crate) trait Amount:
    Copy + Debug + Default + PartialOrd + Add<Output = Self> + Sub<Output = Self>
{
    /// Larger than any flow the solver pushes (the capacity of uncapped arcs).
    const UNBOUNDED: Self;
    /// `self - other`, or zero when `other` is larger.
    fn saturating_minus(self, other: Self) -> Self;
}

impl Amount for u64 {
    // Far above any batch (batches are capped at 2^52 tokens) with room to add.
    const UNBOUNDED: u64 = 1 << 62;
    fn saturating_minus(self, other: u64) -> u64 {
        self.saturating_sub(other)
    }
}

impl Amount for f64 {
    const UNBOUNDED: f64 = f64::INFINITY;
    fn saturating_minus(self, other: f64) -> f64 {
        (self - other).max(0.0)
    }
}

/// How thresholds turn into capacities and back, for one number model.
pub(crate) trait NumberModel {
    type Amount: Amount;
    /// The largest amount a GPU of speed `speed` takes with load `<= threshold`.
    fn capacity(threshold: f64, speed: f64) -> Self::Amount;
    /// The load of `amount` on a GPU of speed `speed`.
    fn load(amount: Self::Amount, speed: f64) -> f64;
    /// The amount as a real number (exact below 2^53).
    fn to_f64(amount: Self::Amount) -> f64;
    /// The smallest threshold at which GPUs of `speeds` together take `need`:
    /// a lower bound on the optimum whenever `need` tokens can only go to them.
    fn set_threshold(speeds: &[f64], need: Self::Amount, scratch: &mut Vec<u64>) -> f64;
    /// Residual capacity below which an arc counts as saturated, for a
    /// problem whose amounts add up to `total`.
    fn tolerance(total: Self::Amount) -> Self::Amount;
    /// Whether a bound `raised` found after `threshold` failed is worth
    /// another round (always, for whole tokens: it is strictly larger).
    fn improves(raised: f64, threshold: f64) -> bool;
}

/// Whole tokens; exact.
pub(crate) struct Integral;

/// Whole tokens on GPUs of one common speed: thresholds are token counts
/// (minimizing the largest count is the same problem), so no division is
/// needed until the final load.
pub(crate) struct Levels;

/// Real-valued loads; exact up to `f64` rounding, see [`Fractional::tolerance`].
pub(crate) struct Fractional;

/// The load of `tokens` on a GPU of speed `speed`, as the objective measures it.
#[inline]
pub(crate) fn load(tokens: u64, speed: f64) -> f64 {
    tokens as f64 / speed
}

impl NumberModel for Integral {
    type Amount = u64;

    fn capacity(threshold: f64, speed: f64) -> u64 {
        if threshold.is_nan() || threshold <= 0.0 {
            return 0;
        }
        // The product is within a rounding of the answer; step to it exactly.
        let mut k = (threshold * speed).floor() as u64;
        while k > 0 && load(k, speed) > threshold {
            k -= 1;
        }
        while load(k + 1, speed) <= threshold {
            k += 1;
        }
        k
    }

    fn load(amount: u64, speed: f64) -> f64 {
        load(amount, speed)
    }

    fn to_f64(amount: u64) -> f64 {
        amount as f64
    }

    fn set_threshold(speeds: &[f64], need: u64, caps: &mut Vec<u64>) -> f64 {
        if need == 0 || speeds.is_empty() {
            return 0.0;
        }
        let first = speeds[0];
        if speeds.iter().all(|&s| s == first) {
            // Equal speeds: every GPU takes the same k, so k = ceil(need / m).
            let m = speeds.len() as u64;
            return load(need.div_ceil(m), first);
        }
        // Start a hair below the fractional bound need / Σs, where the total
        // capacity is certainly short of `need`, then walk the breakpoints
        // upwards in order. Each step raises the total by at least one and
        // the start is short by at most about one token per GPU.
        let total_speed: f64 = speeds.iter().sum();
        let mut start = need as f64 / total_speed * (1.0 - tolerance::ROUNDING);
        let mut have = loop {
            caps.clear();
            caps.extend(speeds.iter().map(|&s| Self::capacity(start, s)));
            let have: u64 = caps.iter().sum();
            if have < need {
                break have;
            }
            // Only reachable through extreme rounding; halve until short.
            start *= 0.5;
        };
        let mut threshold = start;
        while have < need {
            threshold = speeds
                .iter()
                .zip(caps.iter())
                .map(|(&s, &k)| load(k + 1, s))
                .fold(f64::INFINITY, f64::min);
            for (&s, k) in speeds.iter().zip(caps.iter_mut()) {
                while load(*k + 1, s) <= threshold {
                    *k += 1;
                    have += 1;
                }
            }
        }
        threshold
    }

    fn tolerance(_total: u64) -> u64 {
        0
    }

    fn improves(raised: f64, threshold: f64) -> bool {
        raised > threshold
    }
}

impl NumberModel for Levels {
    type Amount = u64;

    fn capacity(threshold: f64, _speed: f64) -> u64 {
        // Thresholds here are whole token counts below 2^53.
        threshold.max(0.0) as u64
    }

    fn load(amount: u64, _speed: f64) -> f64 {
        amount as f64
    }

    fn to_f64(amount: u64) -> f64 {
        amount as f64
    }

    fn set_threshold(speeds: &[f64], need: u64, _scratch: &mut Vec<u64>) -> f64 {
        match speeds.len() as u64 {
            0 => 0.0,
            m => need.div_ceil(m) as f64,
        }
    }

    fn tolerance(_total: u64) -> u64 {
        0
    }

    fn improves(raised: f64, threshold: f64) -> bool {
        raised > threshold
    }
}

impl NumberModel for Fractional {
    type Amount = f64;

    fn capacity(threshold: f64, speed: f64) -> f64 {
        (threshold * speed).max(0.0)
    }

    fn load(amount: f64, speed: f64) -> f64 {
        amount / speed
    }

    fn to_f64(amount: f64) -> f64 {
        amount
    }

    fn set_threshold(speeds: &[f64], need: f64, _scratch: &mut Vec<u64>) -> f64 {
        let total_speed: f64 = speeds.iter().sum();
        if need <= 0.0 || total_speed <= 0.0 {
            return 0.0;
        }
        need / total_speed
    }

    /// An arc with less than a rounding share of the total load left
    /// counts as saturated.
    fn tolerance(total: f64) -> f64 {
        total * tolerance::ROUNDING
    }

    /// A bound that improves by less than a rounding share ends the search.
    fn improves(raised: f64, threshold: f64) -> bool {
        raised > threshold * (1.0 + tolerance::ROUNDING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brute-force definition: the smallest breakpoint k/s at which the
    /// capacities add up to `need`.
    fn brute_threshold(speeds: &[f64], need: u64) -> f64 {
        let mut candidates: Vec<f64> = speeds
            .iter()
            .flat_map(|&s| (0..=need).map(move |k| load(k, s)))
            .collect();
        candidates.sort_by(f64::total_cmp);
        candidates
            .into_iter()
            .find(|&t| {
                speeds
                    .iter()
                    .map(|&s| Integral::capacity(t, s))
                    .sum::<u64>()
                    >= need
            })
            .unwrap()
    }

    #[test]
    fn capacity_is_the_largest_fitting_count() {
        for &speed in &[1.0, 0.3, 1.7, 3.0, 0.1] {
            for k in 0..200u64 {
                let t = load(k, speed);
                let cap = Integral::capacity(t, speed);
                assert!(load(cap, speed) <= t);
                assert!(load(cap + 1, speed) > t);
                assert!(cap >= k);
            }
        }
        assert_eq!(Integral::capacity(-1.0, 1.0), 0);
        assert_eq!(Integral::capacity(0.5, 1.0), 0);
    }

    #[test]
    fn set_threshold_matches_brute_force() {
        let mut scratch = Vec::new();
        let cases: [&[f64]; 5] = [
            &[1.0, 1.0, 1.0],
            &[1.0, 2.0],
            &[0.3, 1.7, 1.1],
            &[0.1, 0.1, 0.7, 2.5],
            &[1.0 / 3.0, 2.0 / 3.0],
        ];
        for speeds in cases {
            for need in 0..60u64 {
                let fast = Integral::set_threshold(speeds, need, &mut scratch);
                let want = if need == 0 {
                    0.0
                } else {
                    brute_threshold(speeds, need)
                };
                assert_eq!(fast, want, "speeds {speeds:?} need {need}");
            }
        }
    }
}
