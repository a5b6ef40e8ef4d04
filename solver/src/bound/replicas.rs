//! Water-filling of replicas: how many replicas each expert gets so that the
//! heaviest replica is as light as possible.
//!
//! Giving `R` slots to experts with loads `w_e` (each at least one replica)
//! and splitting every expert evenly, the largest replica load
//! `max_e w_e / c_e` is minimised exactly by handing out the `R - n` extra
//! replicas one at a time, each to the expert whose replicas are currently the
//! heaviest: after every step the counts are optimal for the slots handed out
//! so far (exchange argument), so they are optimal at the end. EPLB uses the
//! same rule; it is both a bound ingredient and the planner's replication step.

use std::cmp::Ordering;
use std::collections::binary_heap::{BinaryHeap, PeekMut};

/// One expert's current replica load in the heap (largest first; ties go to
/// the lower index so results do not depend on heap internals).
#[derive(Debug, Clone, Copy)]
struct Entry {
    replica_load: f64,
    expert: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Loads are finite, so `<` orders them.
        let (a, b) = (self.replica_load, other.replica_load);
        if a != b {
            return if a < b {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        other.expert.cmp(&self.expert)
    }
}

/// Reusable buffers for [`Replication::run`]; one per thread.
#[derive(Debug, Default)]
pub(crate) struct Replication {
    heap: BinaryHeap<Entry>,
    counts: Vec<u32>,
    /// Experts that may take extra replicas.
    candidates: Vec<u32>,
    /// Current replica load of each candidate (linear hand-out).
    replica_load: Vec<f64>,
}

/// Up to this many candidates a linear scan beats a heap.
const LINEAR_CANDIDATES: usize = 16;

impl Replication {
    /// Distributes `slots` replicas over experts with `weights` (at least one
    /// each; the caller guarantees `slots >= weights.len()`) and returns the
    /// smallest possible largest replica load. [`Replication::counts`] then
    /// holds the counts that reach it.
    pub(crate) fn run(&mut self, weights: &[f64], slots: usize) -> f64 {
        self.fill(weights, slots, u32::MAX)
    }

    /// Like [`Replication::run`], but no expert gets more than `cap`
    /// replicas (raised to `ceil(slots / experts)` if needed to use every
    /// slot): with `cap` = the GPUs that may hold an expert, no replica has
    /// to share a GPU with a sibling. Returns the largest replica load.
    pub(crate) fn run_capped(&mut self, weights: &[f64], slots: usize, cap: u32) -> f64 {
        let least = slots.div_ceil(weights.len().max(1));
        self.fill(
            weights,
            slots,
            cap.max(u32::try_from(least).unwrap_or(u32::MAX)),
        )
    }

    fn fill(&mut self, weights: &[f64], slots: usize, cap: u32) -> f64 {
        self.counts.clear();
        self.counts.resize(weights.len(), 1);
        let extra = slots.saturating_sub(weights.len());
        if extra == 0 {
            return weights.iter().copied().fold(0.0, f64::max);
        }
        // Only the `extra + 1` heaviest experts can take an extra replica:
        // one of them keeps a single replica (there are only `extra` extras),
        // and it outweighs every expert outside, which therefore never has
        // the heaviest replicas. This makes a call O(n) plus the handing out.
        self.candidates.clear();
        self.candidates.extend(0..weights.len() as u32);
        if self.candidates.len() > extra + 1 {
            self.candidates.select_nth_unstable_by(extra, |&a, &b| {
                weights[b as usize].total_cmp(&weights[a as usize])
            });
            self.candidates.truncate(extra + 1);
        }
        if self.candidates.len() <= LINEAR_CANDIDATES {
            self.hand_out_linear(weights, extra, cap)
        } else {
            self.hand_out_heap(weights, extra, cap)
        }
    }

    /// Hands out the extras by scanning the candidates for the heaviest
    /// replica each time (fast for the usual few candidates).
    fn hand_out_linear(&mut self, weights: &[f64], extra: usize, cap: u32) -> f64 {
        self.replica_load.clear();
        self.replica_load
            .extend(self.candidates.iter().map(|&e| weights[e as usize]));
        // Experts at the cap drop out; their replica load still counts.
        let mut capped_max: f64 = 0.0;
        for _ in 0..extra {
            let mut top = None;
            for (i, &load) in self.replica_load.iter().enumerate() {
                if load >= 0.0 && top.is_none_or(|t: usize| load > self.replica_load[t]) {
                    top = Some(i);
                }
            }
            let Some(i) = top else {
                break;
            };
            let e = self.candidates[i] as usize;
            self.counts[e] += 1;
            let load = weights[e] / f64::from(self.counts[e]);
            if self.counts[e] >= cap {
                capped_max = capped_max.max(load);
                self.replica_load[i] = f64::NEG_INFINITY;
            } else {
                self.replica_load[i] = load;
            }
        }
        self.replica_load.iter().copied().fold(capped_max, f64::max)
    }

    /// Hands out the extras through a max-heap (many candidates).
    fn hand_out_heap(&mut self, weights: &[f64], extra: usize, cap: u32) -> f64 {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        entries.extend(self.candidates.iter().map(|&e| Entry {
            replica_load: weights[e as usize],
            expert: e,
        }));
        let mut heap = BinaryHeap::from(entries);
        let mut capped_max: f64 = 0.0;
        for _ in 0..extra {
            let Some(mut top) = heap.peek_mut() else {
                break;
            };
            let e = top.expert as usize;
            self.counts[e] += 1;
            top.replica_load = weights[e] / f64::from(self.counts[e]);
            if self.counts[e] >= cap {
                capped_max = capped_max.max(PeekMut::pop(top).replica_load);
            }
        }
        let max = heap
            .peek()
            .map_or(0.0, |top| top.replica_load)
            .max(capped_max);
        self.heap = heap;
        max
    }

    /// Replica count per expert from the last [`Replication::run`].
    pub(crate) fn counts(&self) -> &[u32] {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force over all count vectors (tiny cases only).
    fn brute(weights: &[f64], slots: usize) -> f64 {
        fn go(weights: &[f64], left: usize, acc: f64) -> f64 {
            match weights.split_first() {
                None => {
                    if left == 0 {
                        acc
                    } else {
                        f64::INFINITY
                    }
                }
                Some((w, rest)) => (1..=left.saturating_sub(rest.len()))
                    .map(|c| go(rest, left - c, acc.max(w / c as f64)))
                    .fold(f64::INFINITY, f64::min),
            }
        }
        go(weights, slots, 0.0)
    }

    #[test]
    fn matches_brute_force() {
        let cases: [(&[f64], usize); 4] = [
            (&[10.0, 3.0, 7.0], 5),
            (&[1.0, 1.0, 1.0, 1.0], 4),
            (&[100.0, 1.0, 0.0], 7),
            (&[9.0, 6.0, 5.0, 2.0], 9),
        ];
        let mut r = Replication::default();
        for (weights, slots) in cases {
            let got = r.run(weights, slots);
            assert!(
                (got - brute(weights, slots)).abs() < 1e-12,
                "{weights:?} {slots}"
            );
            assert_eq!(r.counts().iter().sum::<u32>() as usize, slots);
            let reached = weights
                .iter()
                .zip(r.counts())
                .map(|(w, &c)| w / f64::from(c))
                .fold(0.0, f64::max);
            assert!((reached - got).abs() < 1e-12);
        }
    }

    /// The smallest threshold `t` with `Σ max(1, ceil(w / t)) <= slots`.
    fn threshold(weights: &[f64], slots: usize) -> f64 {
        let mut candidates: Vec<f64> = weights
            .iter()
            .flat_map(|&w| (1..=slots).map(move |k| w / k as f64))
            .filter(|&t| t > 0.0)
            .collect();
        candidates.sort_by(f64::total_cmp);
        let needed = |t: f64| -> usize {
            weights
                .iter()
                .map(|&w| ((w / t).ceil() as usize).max(1))
                .sum()
        };
        candidates
            .into_iter()
            .find(|&t| needed(t) <= slots)
            .unwrap_or(0.0)
    }

    #[test]
    fn heap_and_scan_agree_with_the_threshold() {
        let mut r = Replication::default();
        // 61 and 21 candidates take the heap path, 11 the scan.
        for (n, slots) in [(100, 160), (100, 120), (30, 40)] {
            let weights: Vec<f64> = (0..n).map(|i| ((i * 37 % 101) as f64).powf(1.5)).collect();
            let got = r.run(&weights, slots);
            assert!(
                (got - threshold(&weights, slots)).abs() < 1e-9,
                "{n} {slots}"
            );
            assert_eq!(r.counts().iter().sum::<u32>() as usize, slots);
        }
    }

    #[test]
    fn cap_limits_replicas_but_fills_every_slot() {
        let mut r = Replication::default();
        // Uncapped, expert 0 would take all 4 extra slots.
        let max = r.run_capped(&[100.0, 1.0, 1.0], 7, 3);
        assert_eq!(r.counts(), &[3, 2, 2]);
        assert!((max - 100.0 / 3.0).abs() < 1e-12);
        // A cap too small to use every slot is raised.
        r.run_capped(&[100.0, 1.0], 6, 1);
        assert_eq!(r.counts(), &[3, 3]);
    }
}
