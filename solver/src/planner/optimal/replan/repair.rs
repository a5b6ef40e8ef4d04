//! Migration-aware re-planning of one node: start from the placement in force
//! and change as few slots as it takes to bring every GPU under a target load.
//!
//! A migration is one expert copied onto a GPU that did not hold it (SPEC:
//! the per-GPU multiset difference new − old). The repair works on an
//! [`EvenPacking`] and tracks that count exactly:
//!
//! 1. **fill**: slots whose expert left the node (its group moved away) must
//!    change anyway; experts new to the node go there first (heaviest onto
//!    the least loaded GPU), the remaining ones take extra replicas of the
//!    experts with the heaviest replicas;
//! 2. **repair**: while some GPU is above the target, apply the move with the
//!    best excess reduction per migration — swaps (0–2 migrations) and
//!    recounts (0–1), free moves first. Excess is Σ_g max(0, load_g − target);
//! 3. **tidy**: undo changes that are no longer needed (moves that lower the
//!    migration count and keep every GPU under the target).

use std::time::Instant;

use crate::migration::copy_migrations;
use crate::planner::optimal::packing::EvenPacking;
use crate::planner::optimal::problem::NodeProblem;
use crate::tolerance;

/// Overloaded GPUs whose moves one repair round considers.
const OVER_GPUS: usize = 3;

/// How much a slot change costs, relative to the previous placement.
#[derive(Debug, Clone)]
pub(crate) struct History {
    /// Copies of local expert `e` GPU `g` held before, at `g * n + e`.
    old: Vec<u32>,
    num_experts: usize,
}

impl History {
    fn old(&self, g: usize, e: u32) -> u32 {
        self.old[g * self.num_experts + e as usize]
    }

    /// Migrations of `p` against the previous placement.
    pub(crate) fn moves(&self, p: &EvenPacking) -> usize {
        copy_migrations(p.copy_table(), &self.old)
    }

    /// Migrations added by one more copy of `e` on `g`.
    pub(crate) fn add_cost(&self, p: &EvenPacking, g: usize, e: u32) -> i32 {
        i32::from(p.copies(g, e) >= self.old(g, e))
    }

    /// Migrations removed by one copy fewer of `e` on `g` (0 or -1).
    pub(crate) fn remove_cost(&self, p: &EvenPacking, g: usize, e: u32) -> i32 {
        -i32::from(p.copies(g, e) > self.old(g, e))
    }
}

/// A repaired node placement.
#[derive(Debug, Clone)]
pub(crate) struct Repaired {
    /// Local expert of each slot (`G * S`).
    pub slots: Vec<u32>,
    /// Largest speed-scaled GPU load under even split.
    pub max_load: f64,
}

/// One node's repair in progress. Targets are met one after another, each
/// tighter than the last, each starting where the previous one stopped, so a
/// whole ladder of (load, migrations) trade-offs costs about one repair.
#[derive(Debug, Clone)]
pub(crate) struct Repairer<'p> {
    packing: EvenPacking<'p>,
    history: History,
}

impl<'p> Repairer<'p> {
    /// Starts from the node's previous slots `old` (local expert ids, `None`
    /// for experts that are no longer the node's), completed by step 1.
    pub(crate) fn new(problem: NodeProblem<'p>, old: &[Option<u32>]) -> Self {
        let (packing, history) = start(problem, old);
        Repairer { packing, history }
    }

    /// Brings every GPU to at most `target` if the moves allow (and the
    /// deadline), tidies, and returns the placement (the best reached when the
    /// target is out of reach).
    pub(crate) fn reach(&mut self, target: f64, deadline: Instant) -> Repaired {
        repair_loop(&mut self.packing, &self.history, target, deadline);
        let limit = target.max(self.packing.max_load());
        tidy(&mut self.packing, &self.history, limit);
        self.packing.refresh();
        Repaired {
            max_load: self.packing.max_load(),
            slots: self.packing.slots().to_vec(),
        }
    }
}

/// Where every repair of a node starts: the node's previous slots `old`
/// (local expert ids, `None` for experts that are no longer the node's)
/// completed by step 1, and the copies it held for counting migrations.
pub(crate) fn start<'p>(
    problem: NodeProblem<'p>,
    old: &[Option<u32>],
) -> (EvenPacking<'p>, History) {
    let mut packing = EvenPacking::from_slots(problem, fill(problem, old));
    packing.spread_copies();
    let n = problem.num_experts();
    let s = problem.slots_per_gpu;
    let mut history = History {
        old: vec![0; problem.num_gpus() * n],
        num_experts: n,
    };
    for (slot, e) in old.iter().enumerate() {
        if let Some(e) = e {
            history.old[(slot / s) * n + *e as usize] += 1;
        }
    }
    (packing, history)
}

/// Step 1: a complete slot table that keeps every still-valid slot.
fn fill(problem: NodeProblem, old: &[Option<u32>]) -> Vec<u32> {
    let n = problem.num_experts();
    let s = problem.slots_per_gpu;
    let w = problem.weights;
    let mut slots: Vec<Option<u32>> = old.to_vec();
    let mut counts = vec![0u32; n];
    for e in slots.iter().flatten() {
        counts[*e as usize] += 1;
    }
    let mut missing: Vec<u32> = (0..n as u32).filter(|&e| counts[e as usize] == 0).collect();
    missing.sort_by(|&a, &b| w[b as usize].total_cmp(&w[a as usize]));
    // Too few free slots for the newcomers: drop the replicas whose loss
    // hurts least (their expert's remaining replicas stay lightest).
    let free = slots.iter().filter(|e| e.is_none()).count();
    for _ in free..missing.len() {
        let victim = (0..slots.len())
            .filter(|&p| slots[p].is_some_and(|e| counts[e as usize] >= 2))
            .min_by(|&a, &b| {
                let after = |p: usize| {
                    let e = slots[p].map_or(0, |e| e as usize);
                    w[e] / f64::from(counts[e] - 1)
                };
                after(a).total_cmp(&after(b))
            });
        if let Some(p) = victim {
            if let Some(e) = slots[p].take() {
                counts[e as usize] -= 1;
            }
        }
    }
    let gpu_load = |slots: &[Option<u32>], counts: &[u32], g: usize| -> f64 {
        slots[g * s..(g + 1) * s]
            .iter()
            .flatten()
            .map(|&e| w[e as usize] / f64::from(counts[e as usize].max(1)))
            .sum::<f64>()
            / problem.speeds[g]
    };
    for e in missing {
        let hole = (0..slots.len())
            .filter(|&p| slots[p].is_none())
            .min_by(|&a, &b| {
                gpu_load(&slots, &counts, a / s).total_cmp(&gpu_load(&slots, &counts, b / s))
            });
        if let Some(p) = hole {
            slots[p] = Some(e);
            counts[e as usize] += 1;
        }
    }
    // Remaining free slots: an extra replica of the expert whose replicas
    // are heaviest among those the GPU does not hold yet.
    let cap = problem.count_cap();
    for p in 0..slots.len() {
        if slots[p].is_some() {
            continue;
        }
        let g = p / s;
        let on_gpu: Vec<u32> = slots[g * s..(g + 1) * s]
            .iter()
            .flatten()
            .copied()
            .collect();
        let pick = (0..n as u32)
            .filter(|e| counts[*e as usize] < cap && !on_gpu.contains(e))
            .max_by(|&a, &b| {
                (w[a as usize] / f64::from(counts[a as usize]))
                    .total_cmp(&(w[b as usize] / f64::from(counts[b as usize])))
            })
            .unwrap_or(0);
        slots[p] = Some(pick);
        counts[pick as usize] += 1;
    }
    slots.into_iter().map(|e| e.unwrap_or(0)).collect()
}

/// Σ_g max(0, load_g − target).
fn excess(p: &EvenPacking, target: f64) -> f64 {
    (0..p.problem().num_gpus())
        .map(|g| (p.load(g) - target).max(0.0))
        .sum()
}

/// A candidate edit of the packing.
#[derive(Debug, Clone, Copy)]
enum Move {
    Swap(usize, usize),
    Recount(usize, u32),
}

/// Step 2: cheapest excess reduction first until no GPU is above `target`.
fn repair_loop(packing: &mut EvenPacking, history: &History, target: f64, deadline: Instant) {
    let p = packing.problem();
    let (s, g_count, n) = (p.slots_per_gpu, p.num_gpus(), p.num_experts() as u32);
    let tol = tolerance::ROUNDING * target;
    let mut delta = Vec::new();
    for round in 0..4 * p.num_slots() {
        let current = excess(packing, target);
        if current <= tol || Instant::now() >= deadline {
            return;
        }
        // Moves start from the most overloaded GPUs (a few suffice: the
        // others get their turn once these are fixed).
        let mut over: Vec<usize> = (0..g_count)
            .filter(|&g| packing.load(g) > target + tol)
            .collect();
        over.sort_by(|&a, &b| packing.load(b).total_cmp(&packing.load(a)));
        over.truncate(OVER_GPUS);
        // Score: excess removed per migration (free moves score as 1/4 of one).
        let mut best: Option<(f64, Move)> = None;
        let mut offer = |gain: f64, cost: i32, mv: Move| {
            if gain <= tol {
                return;
            }
            let score = gain / f64::from(cost.max(0)).max(0.25);
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, mv));
            }
        };
        for &g in &over {
            for i in g * s..(g + 1) * s {
                let a = packing.expert_at(i);
                let pa = packing.replica_load(a);
                for j in 0..g_count * s {
                    let h = j / s;
                    let b = packing.expert_at(j);
                    if h == g
                        || a == b
                        || !packing.may_receive(h, a, b)
                        || !packing.may_receive(g, b, a)
                    {
                        continue;
                    }
                    let d = pa - packing.replica_load(b);
                    if d <= 0.0 {
                        continue;
                    }
                    // Only the two GPUs change: the excess moves by their terms.
                    let over_by = |x: usize, raw: f64| (raw / p.speeds[x] - target).max(0.0);
                    let gain = over_by(g, packing.raw_load(g))
                        - over_by(g, packing.raw_load(g) - d)
                        + over_by(h, packing.raw_load(h))
                        - over_by(h, packing.raw_load(h) + d);
                    let cost = history.add_cost(packing, h, a)
                        + history.remove_cost(packing, g, a)
                        + history.add_cost(packing, g, b)
                        + history.remove_cost(packing, h, b);
                    offer(gain, cost, Move::Swap(i, j));
                }
            }
        }
        let mut recount =
            |slot: usize, to: u32, packing: &EvenPacking, delta: &mut Vec<(usize, f64)>| {
                if !packing.may_recount(slot, to) {
                    return;
                }
                let from = packing.expert_at(slot);
                let g = slot / s;
                packing.recount_delta(slot, to, delta);
                let gain: f64 = delta
                    .iter()
                    .map(|&(x, d)| {
                        let raw = packing.raw_load(x);
                        (raw / p.speeds[x] - target).max(0.0)
                            - ((raw + d) / p.speeds[x] - target).max(0.0)
                    })
                    .sum();
                let cost = history.add_cost(packing, g, to) + history.remove_cost(packing, g, from);
                offer(gain, cost, Move::Recount(slot, to));
            };
        for &g in &over {
            for slot in g * s..(g + 1) * s {
                let leaving = packing.replica_load(packing.expert_at(slot));
                for to in 0..n {
                    // The slot's GPU must get lighter for this to help it.
                    let arriving =
                        p.weights[to as usize] / f64::from(packing.counts()[to as usize] + 1);
                    if arriving < leaving {
                        recount(slot, to, packing, &mut delta);
                    }
                }
            }
            for k in 0..s {
                let to = packing.expert_at(g * s + k);
                for slot in 0..g_count * s {
                    recount(slot, to, packing, &mut delta);
                }
            }
        }
        match best {
            Some((_, Move::Swap(i, j))) => packing.swap(i, j),
            Some((_, Move::Recount(slot, to))) => packing.recount(slot, to),
            None => return,
        }
        if round % 32 == 31 {
            packing.refresh();
        }
    }
}

/// Step 3: moves that save migrations and keep every GPU at most `limit`.
pub(crate) fn tidy(packing: &mut EvenPacking, history: &History, limit: f64) {
    let p = packing.problem();
    let (s, g_count) = (p.slots_per_gpu, p.num_gpus());
    let cap = p.count_cap();
    let tol = tolerance::ROUNDING * limit;
    let mut delta = Vec::new();
    loop {
        let mut done = true;
        for i in 0..g_count * s {
            let (g, a) = (i / s, packing.expert_at(i));
            // Only slots that cost a migration can save one.
            if history.remove_cost(packing, g, a) == 0 {
                continue;
            }
            for j in 0..g_count * s {
                let (h, b) = (j / s, packing.expert_at(j));
                if h == g
                    || a == b
                    || !packing.may_receive(h, a, b)
                    || !packing.may_receive(g, b, a)
                {
                    continue;
                }
                let cost = history.add_cost(packing, h, a)
                    + history.remove_cost(packing, g, a)
                    + history.add_cost(packing, g, b)
                    + history.remove_cost(packing, h, b);
                let d = packing.replica_load(a) - packing.replica_load(b);
                let fits = (packing.raw_load(g) - d) / p.speeds[g] <= limit + tol
                    && (packing.raw_load(h) + d) / p.speeds[h] <= limit + tol;
                if cost < 0 && fits {
                    packing.swap(i, j);
                    done = false;
                    break;
                }
            }
            let a = packing.expert_at(i);
            if history.remove_cost(packing, g, a) == 0 || packing.counts()[a as usize] < 2 {
                continue;
            }
            // Give the slot back to an expert it held before.
            for to in 0..p.num_experts() as u32 {
                if history.old(g, to) <= packing.copies(g, to)
                    || packing.counts()[to as usize] >= cap
                {
                    continue;
                }
                packing.recount_delta(i, to, &mut delta);
                let fits = delta
                    .iter()
                    .all(|&(x, d)| (packing.raw_load(x) + d) / p.speeds[x] <= limit + tol);
                if fits {
                    packing.recount(i, to);
                    done = false;
                    break;
                }
            }
        }
        if done {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repair(problem: NodeProblem, old: &[Option<u32>], target: f64) -> Repaired {
        Repairer::new(problem, old)
            .reach(target, Instant::now() + std::time::Duration::from_secs(60))
    }

    /// Migrations of a repaired table against `old` (departed experts count
    /// as changed).
    fn moved(r: &Repaired, old: &[Option<u32>], s: usize) -> usize {
        let old: Vec<u32> = old.iter().map(|e| e.unwrap_or(u32::MAX)).collect();
        crate::migration::row_migrations(&r.slots, &old, s)
    }

    fn problem<'a>(weights: &'a [f64], speeds: &'a [f64], s: usize) -> NodeProblem<'a> {
        NodeProblem {
            weights,
            speeds,
            slots_per_gpu: s,
        }
    }

    #[test]
    fn keeps_a_placement_that_already_fits() {
        let weights = [4.0, 3.0, 3.0, 2.0];
        let speeds = [1.0, 1.0];
        let p = problem(&weights, &speeds, 2);
        let old = [Some(0), Some(3), Some(1), Some(2)];
        let r = repair(p, &old, 6.0);
        assert_eq!(moved(&r, &old, 2), 0);
        assert_eq!(r.slots, vec![0, 3, 1, 2]);
    }

    #[test]
    fn one_swap_fixes_a_drifted_layer() {
        // Load drifted: GPU0 = 6 + 5, GPU1 = 1 + 2; the swap 5 <-> 2 gives 8 | 6.
        let weights = [6.0, 5.0, 1.0, 2.0];
        let speeds = [1.0, 1.0];
        let p = problem(&weights, &speeds, 2);
        let old = [Some(0), Some(1), Some(2), Some(3)];
        let r = repair(p, &old, 8.0);
        assert!(r.max_load <= 8.0 + 1e-9, "{}", r.max_load);
        assert_eq!(moved(&r, &old, 2), 2);
    }

    #[test]
    fn fills_slots_of_departed_experts_and_counts_them() {
        let weights = [5.0, 1.0, 1.0, 1.0];
        let speeds = [1.0, 1.0, 1.0];
        let p = problem(&weights, &speeds, 2);
        // Expert 3 is new to the node; two slots held experts that left.
        let old = [Some(0), None, Some(1), Some(2), Some(0), None];
        let r = repair(p, &old, 3.0);
        let mut counts = [0; 4];
        r.slots.iter().for_each(|&e| counts[e as usize] += 1);
        assert!(counts.iter().all(|&c| c >= 1));
        assert_eq!(moved(&r, &old, 2), 2);
        assert!(r.max_load <= 3.0 + 1e-9, "{}", r.max_load);
    }
}
