//! Local search for one node's even-split placement.
//!
//! The objective is lexicographic: the largest speed-scaled GPU load first,
//! then the "energy" Σ load² / speed, whose decrease pulls every GPU toward
//! its fair share and lets the search walk across plateaus of the max. Moves:
//!
//! * 1-1 swaps between any two GPUs, and 2-2 swaps between one of the
//!   heaviest GPUs and any lighter one (slot counts per GPU are fixed, so
//!   these are the exchanges that keep every GPU at `S` replicas);
//! * recounts: one slot changes expert, so one expert loses a replica and
//!   another gains one — the replica sizes themselves change, which opens
//!   balances no swap can reach;
//! * when no move improves, random kicks around the heaviest GPU followed by
//!   descent (iterated local search), keeping the best placement seen.
//!
//! No move ever creates a same-GPU copy of an expert that is not forced.

use std::time::Instant;

use crate::planner::optimal::packing::EvenPacking;
use crate::planner::optimal::rng::SplitMix;
use crate::tolerance;

/// Heaviest GPUs the 2-2 swaps start from (the max only moves through them).
const HEAVY_GPUS: usize = 3;

/// How long and how hard a search may try.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Effort {
    /// Stop kicking at this instant.
    pub deadline: Instant,
    /// Kick-and-descend rounds at most.
    pub max_kicks: usize,
    /// Consecutive kicks without improvement before giving up.
    pub patience: usize,
}

/// The search key of a packing: (max load, energy).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Key {
    max: f64,
    energy: f64,
}

impl Key {
    fn of(p: &EvenPacking) -> Self {
        Key {
            max: p.max_load(),
            energy: p.energy(),
        }
    }

    fn better_than(self, other: Key) -> bool {
        let tol = tolerance::ROUNDING * other.max.abs().max(1e-300);
        self.max < other.max - tol
            || (self.max <= other.max + tol
                && self.energy < other.energy - tolerance::ROUNDING * other.energy.abs())
    }
}

/// Improves `packing` until its max load reaches `target` or the effort is spent.
pub(crate) fn improve(packing: &mut EvenPacking, target: f64, effort: &Effort, seed: u64) {
    descend(packing, target, effort.deadline);
    if packing.max_load() <= target {
        return;
    }
    let mut rng = SplitMix::new(seed);
    let mut best = packing.clone();
    let mut best_key = Key::of(&best);
    let mut idle = 0;
    for _ in 0..effort.max_kicks {
        if best_key.max <= target || idle >= effort.patience || Instant::now() >= effort.deadline {
            break;
        }
        kick(packing, &mut rng);
        descend(packing, target, effort.deadline);
        let key = Key::of(packing);
        if key.better_than(best_key) {
            if key.max < best_key.max * (1.0 - tolerance::ROUNDING) {
                idle = 0;
            } else {
                idle += 1;
            }
            best.clone_from(packing);
            best_key = key;
        } else {
            idle += 1;
            packing.clone_from(&best);
        }
    }
    packing.clone_from(&best);
}

/// Applies improving moves until none is left, `target` is reached or the
/// deadline passes.
pub(crate) fn descend(packing: &mut EvenPacking, target: f64, deadline: Instant) {
    let mut rounds = 0usize;
    loop {
        rounds += 1;
        if rounds.is_multiple_of(64) {
            packing.refresh();
        }
        if packing.max_load() <= target || Instant::now() >= deadline {
            packing.refresh();
            return;
        }
        if pair_swaps(packing) || double_swaps(packing) || recounts(packing) {
            continue;
        }
        packing.refresh();
        return;
    }
}

/// Energy change when GPU `g` hands `d` raw tokens to GPU `h`, if the
/// larger of the two speed-scaled loads does not grow; `None` otherwise.
fn transfer_gain(packing: &EvenPacking, g: usize, h: usize, d: f64) -> Option<f64> {
    let speeds = packing.problem().speeds;
    let (lg, lh) = (packing.raw_load(g), packing.raw_load(h));
    let before = packing.load(g).max(packing.load(h));
    let after = ((lg - d) / speeds[g]).max((lh + d) / speeds[h]);
    if after > before {
        return None;
    }
    Some(((lg - d) * (lg - d) - lg * lg) / speeds[g] + ((lh + d) * (lh + d) - lh * lh) / speeds[h])
}

/// One pass of best 1-1 swaps over every ordered pair of GPUs (heavier
/// gives, lighter takes). Returns whether anything changed.
fn pair_swaps(packing: &mut EvenPacking) -> bool {
    let s = packing.problem().slots_per_gpu;
    let g_count = packing.problem().num_gpus();
    let tol = tolerance::ROUNDING * packing.energy();
    let mut changed = false;
    for g in 0..g_count {
        for h in 0..g_count {
            if h == g || packing.load(g) <= packing.load(h) {
                continue;
            }
            let mut best: Option<(f64, usize, usize)> = None;
            for i in g * s..(g + 1) * s {
                let e = packing.expert_at(i);
                let pe = packing.replica_load(e);
                for j in h * s..(h + 1) * s {
                    let f = packing.expert_at(j);
                    let d = pe - packing.replica_load(f);
                    if e == f
                        || d <= 0.0
                        || !packing.may_receive(h, e, f)
                        || !packing.may_receive(g, f, e)
                    {
                        continue;
                    }
                    if let Some(gain) = transfer_gain(packing, g, h, d) {
                        if gain < -tol && best.is_none_or(|(b, _, _)| gain < b) {
                            best = Some((gain, i, j));
                        }
                    }
                }
            }
            if let Some((_, i, j)) = best {
                packing.swap(i, j);
                changed = true;
            }
        }
    }
    changed
}

/// Best 2-2 swap between one of the heaviest GPUs and any lighter GPU.
///
/// For a pair of GPUs the energy change is convex in the load moved, so
/// the best exchange moves the amount closest to the balancing one: pairs of
/// the lighter GPU are sorted by load and, for each pair of the heavier one,
/// the neighbours of the ideal partner are found by binary search.
fn double_swaps(packing: &mut EvenPacking) -> bool {
    let s = packing.problem().slots_per_gpu;
    let g_count = packing.problem().num_gpus();
    if s < 2 {
        return false;
    }
    let speeds = packing.problem().speeds;
    let mut order: Vec<usize> = (0..g_count).collect();
    order.sort_by(|&a, &b| packing.load(b).total_cmp(&packing.load(a)));
    let tol = tolerance::ROUNDING * packing.energy();
    // Pairs of slots on `g` that may move to `to`, with their load.
    let pairs = |packing: &EvenPacking, g: usize, to: usize| -> Vec<(f64, usize, usize)> {
        let mut out = Vec::with_capacity(s * (s - 1) / 2);
        for i in g * s..(g + 1) * s {
            let a = packing.expert_at(i);
            if !packing.may_receive(to, a, u32::MAX) {
                continue;
            }
            for j in i + 1..(g + 1) * s {
                let b = packing.expert_at(j);
                if a != b && packing.may_receive(to, b, u32::MAX) {
                    out.push((packing.replica_load(a) + packing.replica_load(b), i, j));
                }
            }
        }
        out
    };
    /// (energy gain, slots leaving the heavy GPU, slots leaving the light one)
    type Exchange = (f64, (usize, usize), (usize, usize));
    for &g in order.iter().take(HEAVY_GPUS) {
        let mut best: Option<Exchange> = None;
        for &h in order.iter().rev() {
            if packing.load(h) >= packing.load(g) {
                break;
            }
            let give = pairs(packing, g, h);
            let mut take = pairs(packing, h, g);
            if give.is_empty() || take.is_empty() {
                continue;
            }
            take.sort_by(|a, b| a.0.total_cmp(&b.0));
            // The load move that equalises the two speed-scaled loads.
            let ideal = (packing.load(g) - packing.load(h)) / (1.0 / speeds[g] + 1.0 / speeds[h]);
            for &(out, i1, i2) in &give {
                let want = out - ideal;
                let at = take.partition_point(|t| t.0 < want);
                for &(back, j1, j2) in take[at.saturating_sub(1)..(at + 1).min(take.len())].iter() {
                    let moved = out - back;
                    if moved <= 0.0 {
                        continue;
                    }
                    if let Some(gain) = transfer_gain(packing, g, h, moved) {
                        if gain < -tol && best.is_none_or(|(x, _, _)| gain < x) {
                            best = Some((gain, (i1, i2), (j1, j2)));
                        }
                    }
                }
            }
        }
        if let Some((_, (i1, i2), (j1, j2))) = best {
            packing.swap(i1, j1);
            packing.swap(i2, j2);
            return true;
        }
    }
    false
}

/// Best recount touching the heaviest GPU: either one of its slots switches
/// to another expert, or another slot switches to one of its experts (which
/// shrinks that expert's replicas on it).
fn recounts(packing: &mut EvenPacking) -> bool {
    let p = packing.problem();
    let (s, n, g_count) = (p.slots_per_gpu, p.num_experts() as u32, p.num_gpus());
    let cap = p.count_cap();
    let top = packing.argmax();
    let current = Key::of(packing);
    // GPUs by load, heaviest first: the new max is the heaviest changed GPU
    // or the heaviest unchanged one.
    let mut order: Vec<usize> = (0..g_count).collect();
    order.sort_by(|&a, &b| packing.load(b).total_cmp(&packing.load(a)));
    let mut delta = Vec::new();
    let mut best: Option<(Key, usize, u32)> = None;
    let mut consider = |packing: &EvenPacking,
                        slot: usize,
                        to: u32,
                        delta: &mut Vec<(usize, f64)>| {
        let from = packing.expert_at(slot);
        let g = slot / s;
        if from == to || packing.counts()[from as usize] < 2 || packing.counts()[to as usize] >= cap
        {
            return;
        }
        if packing.copies(g, to) >= p.per_gpu_limit(packing.counts()[to as usize] + 1) {
            return;
        }
        packing.recount_delta(slot, to, delta);
        let unchanged = order
            .iter()
            .find(|&&h| delta.iter().all(|&(x, _)| x != h))
            .map_or(0.0, |&h| packing.load(h));
        let mut key = Key {
            max: unchanged,
            energy: current.energy,
        };
        for &(h, d) in delta.iter() {
            let (old, raw) = (packing.raw_load(h), packing.raw_load(h) + d);
            key.max = key.max.max(raw / p.speeds[h]);
            key.energy += (raw * raw - old * old) / p.speeds[h];
        }
        if key.better_than(best.map_or(current, |b| b.0)) {
            best = Some((key, slot, to));
        }
    };
    for slot in top * s..(top + 1) * s {
        for to in 0..n {
            consider(packing, slot, to, &mut delta);
        }
    }
    let on_top: Vec<u32> = packing.slots()[top * s..(top + 1) * s].to_vec();
    for slot in 0..g_count * s {
        if slot / s == top {
            continue;
        }
        for &to in &on_top {
            consider(packing, slot, to, &mut delta);
        }
    }
    match best {
        Some((_, slot, to)) => {
            packing.recount(slot, to);
            true
        }
        None => false,
    }
}

/// A random perturbation: one to three swaps, half of them out of the
/// heaviest GPU, ignoring the objective (the descent that follows repairs).
fn kick(packing: &mut EvenPacking, rng: &mut SplitMix) {
    let s = packing.problem().slots_per_gpu;
    let g_count = packing.problem().num_gpus();
    if g_count < 2 {
        return;
    }
    let moves = 1 + rng.below(3);
    for _ in 0..moves {
        for _attempt in 0..8 {
            let g = if rng.below(2) == 0 {
                packing.argmax()
            } else {
                rng.below(g_count)
            };
            let h = (g + 1 + rng.below(g_count - 1)) % g_count;
            let i = g * s + rng.below(s);
            let j = h * s + rng.below(s);
            let (e, f) = (packing.expert_at(i), packing.expert_at(j));
            if e != f && packing.may_receive(h, e, f) && packing.may_receive(g, f, e) {
                packing.swap(i, j);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::optimal::problem::{water_fill, NodeProblem};
    use std::time::Duration;

    fn effort() -> Effort {
        Effort {
            deadline: Instant::now() + Duration::from_secs(5),
            max_kicks: 200,
            patience: 100,
        }
    }

    #[test]
    fn reaches_a_perfect_split_when_one_exists() {
        // 8 experts, 2 GPUs x 4 slots, no spare slot: {8,1,1,0} vs {4,3,2,1} style sets of 10.
        let weights = [8.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 0.0];
        let speeds = [1.0, 1.0];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 4,
        };
        let mut packing = EvenPacking::lpt(p, &[1; 8]);
        improve(&mut packing, p.mean_load(), &effort(), 1);
        assert!(
            (packing.max_load() - 10.0).abs() < 1e-9,
            "{}",
            packing.max_load()
        );
    }

    #[test]
    fn never_worse_than_its_start_and_keeps_invariants() {
        let weights: Vec<f64> = (0..24)
            .map(|i| ((i * 37 % 17) as f64 + 1.0) * 3.5)
            .collect();
        let speeds = [1.0, 1.0, 2.0, 1.0];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 7,
        };
        let counts = water_fill(&weights, p.num_slots(), p.count_cap());
        let start = EvenPacking::lpt(p, &counts);
        let mut packing = start.clone();
        improve(&mut packing, 0.0, &effort(), 3);
        assert!(packing.max_load() <= start.max_load() + 1e-9);
        assert!(packing.max_load() >= p.mean_load() - 1e-9);
        let mut seen = vec![0u32; 24];
        for (slot, &e) in packing.slots().iter().enumerate() {
            seen[e as usize] += 1;
            assert_eq!(packing.copies(slot / 7, e), 1, "copy of {e}");
        }
        assert_eq!(seen, packing.counts());
        assert!(seen.iter().all(|&c| c >= 1));
    }
}
