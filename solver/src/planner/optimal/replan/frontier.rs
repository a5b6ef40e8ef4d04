//! The trade-off curve of one node's re-plan: for each number of
//! migrations, the lowest max load a short sequence of slot edits reaches.
//!
//! The target-driven repair ([`super::repair`]) makes one greedy choice per
//! step, so the placements it passes through are good for its target but
//! not necessarily the cheapest way to each load on the way. Here a beam
//! search walks the same edits (swaps and recounts that relieve the busiest
//! GPUs) level by level, a level being the exact migration count of the
//! states on it (SPEC: per-GPU multiset difference from the previous
//! placement). Each level keeps its [`WIDTH`] best states by max load, then
//! by Σ load²/speed (which rewards progress on ties between busy GPUs). The
//! best state of every level is a point of the curve; the re-planner turns
//! the curve into candidates, so the lexicographic choice can spend few
//! migrations where they buy the most balance.

use std::collections::HashSet;
use std::time::Instant;

use super::repair::{self, History};
use crate::planner::optimal::packing::EvenPacking;
use crate::tolerance;

/// States kept per migration level.
const WIDTH: usize = 6;

/// Busiest GPUs whose relief a state's edits aim at.
const BUSY_GPUS: usize = 1;

/// Work a whole re-plan may spend on curves, shared equally among them, in
/// GPU-load updates (an edit's evaluation updates every GPU's load: about a
/// millisecond per 10⁶ on one core). A curve gets as many levels as its
/// share pays for, none on large nodes of large models, so that a re-plan
/// stays within hundreds of milliseconds.
const RUN_WORK: usize = 60_000_000;

/// Most work one curve may spend.
const CURVE_WORK: usize = 1_000_000;

/// Free-edit rounds after each built state (the start gets as many as it
/// has slots: its slots whose expert left the node are all free to refill).
const CHILD_ROUNDS: usize = 2;

/// Most levels a curve spans.
const MAX_LEVELS: usize = 24;

/// One point of the curve.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub migrations: usize,
    pub max_load: f64,
    /// Local expert of each slot.
    pub slots: Vec<u32>,
}

/// An edit of a state: exchange two slots, or switch a slot's expert.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Edit {
    Swap(usize, usize),
    Recount(usize, u32),
}

/// A child not yet built: its rank, parent and edit.
#[derive(Debug, Clone, Copy)]
struct Child {
    max_load: f64,
    energy: f64,
    level: usize,
    parent: usize,
    edit: Edit,
}

/// The work each of `curves` curves of one re-plan may spend.
pub(crate) fn work_per_curve(curves: usize) -> usize {
    (RUN_WORK / curves.max(1)).min(CURVE_WORK)
}

/// The curve from `start` (migrations counted by `history`) within `work`
/// work (see [`RUN_WORK`]), Pareto-pruned: migrations ascending, max load
/// strictly descending; the first point is `start` after its free edits.
/// Empty when `work` does not pay for one level.
pub(crate) fn frontier(
    mut start: EvenPacking,
    history: &History,
    work: usize,
    deadline: Instant,
) -> Vec<Point> {
    let p = start.problem();
    let s = p.slots_per_gpu;
    // One state's edits, each updating every GPU's load.
    let per_state = BUSY_GPUS * s * (2 * p.num_slots() + p.num_experts()) * p.num_gpus();
    let levels = (work / (WIDTH * (1 + CHILD_ROUNDS) * per_state).max(1)).min(MAX_LEVELS);
    if levels == 0 {
        return Vec::new();
    }
    let mut delta = Vec::new();
    let rounds = p.num_slots().min(work / per_state.max(1));
    descend_free(&mut start, history, rounds, &mut delta);
    start.refresh();
    let base = history.moves(&start);
    // states[k]: built states with `base + k` migrations.
    let mut states: Vec<Vec<EvenPacking>> = vec![Vec::new(); levels + 1];
    let mut pending: Vec<Vec<Child>> = vec![Vec::new(); levels + 1];
    let mut seen: HashSet<Vec<u32>> = HashSet::new();
    seen.insert(signature(&start));
    states[0].push(start);
    let mut curve: Vec<Point> = Vec::new();
    for k in 0..=levels {
        // Build this level from its best pending children.
        let mut children = std::mem::take(&mut pending[k]);
        children.sort_by(|a, b| {
            a.max_load
                .total_cmp(&b.max_load)
                .then(a.energy.total_cmp(&b.energy))
        });
        for c in children {
            if states[k].len() >= WIDTH {
                break;
            }
            let mut child = states[c.level][c.parent].clone();
            match c.edit {
                Edit::Swap(i, j) => child.swap(i, j),
                Edit::Recount(slot, to) => child.recount(slot, to),
            }
            descend_free(&mut child, history, CHILD_ROUNDS, &mut delta);
            if history.moves(&child) == base + k && seen.insert(signature(&child)) {
                states[k].push(child);
            }
        }
        if let Some(best) = states[k]
            .iter()
            .min_by(|a, b| a.max_load().total_cmp(&b.max_load()))
        {
            // Edits a later one made unnecessary are undone.
            let mut tidied = best.clone();
            repair::tidy(&mut tidied, history, best.max_load());
            tidied.refresh();
            curve.push(Point {
                migrations: history.moves(&tidied),
                max_load: tidied.max_load(),
                slots: tidied.into_slots(),
            });
        }
        if k == levels || Instant::now() >= deadline {
            break;
        }
        for (parent, state) in states[k].iter().enumerate() {
            expand(state, history, k, parent, levels, &mut pending, &mut delta);
        }
        // Only the best few children of a level can be built: keep the
        // buffers small.
        for buffer in pending.iter_mut().skip(k + 1) {
            if buffer.len() > 64 * WIDTH {
                buffer.sort_by(|a, b| {
                    a.max_load
                        .total_cmp(&b.max_load)
                        .then(a.energy.total_cmp(&b.energy))
                });
                buffer.truncate(4 * WIDTH);
            }
        }
    }
    curve.sort_by(|a, b| {
        a.migrations
            .cmp(&b.migrations)
            .then(a.max_load.total_cmp(&b.max_load))
    });
    let mut pruned: Vec<Point> = Vec::with_capacity(curve.len());
    for q in curve {
        if pruned.last().is_none_or(|last| q.max_load < last.max_load) {
            pruned.push(q);
        }
    }
    pruned
}

/// Per-GPU sorted contents: states equal up to slot order inside a GPU are
/// the same placement.
fn signature(p: &EvenPacking) -> Vec<u32> {
    let s = p.problem().slots_per_gpu;
    let mut out = p.slots().to_vec();
    out.chunks_mut(s).for_each(|gpu| gpu.sort_unstable());
    out
}

/// Rank of the loads `raw` (tokens) after adding `changes` to them.
fn rank(p: &EvenPacking, raw: &mut [f64], changes: &[(usize, f64)]) -> (f64, f64) {
    let speeds = p.problem().speeds;
    for (g, r) in raw.iter_mut().enumerate() {
        *r = p.raw_load(g);
    }
    for &(g, d) in changes {
        raw[g] += d;
    }
    raw.iter()
        .zip(speeds)
        .fold((0.0_f64, 0.0), |(m, e), (&r, &sp)| {
            (m.max(r / sp), e + r * r / sp)
        })
}

/// Visits every edit that relieves one of the busiest GPUs of `state`, with
/// its migration cost and the raw load changes it makes.
fn edits(
    state: &EvenPacking,
    history: &History,
    delta: &mut Vec<(usize, f64)>,
    mut visit: impl FnMut(i32, &[(usize, f64)], Edit),
) {
    let p = state.problem();
    let (s, g_count, n) = (p.slots_per_gpu, p.num_gpus(), p.num_experts() as u32);
    let mut busy: Vec<usize> = (0..g_count).collect();
    busy.sort_by(|&a, &b| state.load(b).total_cmp(&state.load(a)));
    busy.truncate(BUSY_GPUS);
    for &g in &busy {
        for i in g * s..(g + 1) * s {
            let a = state.expert_at(i);
            for j in 0..g_count * s {
                let h = j / s;
                let b = state.expert_at(j);
                if h == g || a == b || !state.may_receive(h, a, b) || !state.may_receive(g, b, a) {
                    continue;
                }
                let d = state.replica_load(a) - state.replica_load(b);
                if d <= 0.0 {
                    continue;
                }
                let cost = history.add_cost(state, h, a)
                    + history.remove_cost(state, g, a)
                    + history.add_cost(state, g, b)
                    + history.remove_cost(state, h, b);
                visit(cost, &[(g, -d), (h, d)], Edit::Swap(i, j));
            }
        }
        let mut recount = |slot: usize, to: u32, delta: &mut Vec<(usize, f64)>| {
            if !state.may_recount(slot, to) {
                return;
            }
            let from = state.expert_at(slot);
            let h = slot / s;
            state.recount_delta(slot, to, delta);
            let cost = history.add_cost(state, h, to) + history.remove_cost(state, h, from);
            visit(cost, delta, Edit::Recount(slot, to));
        };
        for slot in g * s..(g + 1) * s {
            for to in 0..n {
                recount(slot, to, delta);
            }
        }
        // Another replica elsewhere of an expert the busy GPU holds.
        for i in g * s..(g + 1) * s {
            let to = state.expert_at(i);
            for slot in (0..g_count * s).filter(|&x| x / s != g) {
                recount(slot, to, delta);
            }
        }
    }
}

/// Whether `(max_load, energy)` ranks strictly before `now`.
fn improves(rank: (f64, f64), now: (f64, f64)) -> bool {
    rank.0 < now.0 * (1.0 - tolerance::ROUNDING)
        || (rank.0 <= now.0 && rank.1 < now.1 * (1.0 - tolerance::ROUNDING))
}

/// Applies the best free edit (no migration added) while one improves the
/// state: slots that change anyway (their expert left the node) can take
/// whatever balances best.
fn descend_free(
    state: &mut EvenPacking,
    history: &History,
    rounds: usize,
    delta: &mut Vec<(usize, f64)>,
) {
    let g_count = state.problem().num_gpus();
    let mut raw = vec![0.0; g_count];
    for _ in 0..rounds {
        let now = rank(state, &mut raw, &[]);
        let mut best: Option<((f64, f64), Edit)> = None;
        let mut scratch = vec![0.0; g_count];
        edits(state, history, delta, |cost, changes, edit| {
            if cost != 0 {
                return;
            }
            let r = rank(state, &mut scratch, changes);
            if improves(r, best.map_or(now, |b| b.0)) {
                best = Some((r, edit));
            }
        });
        match best {
            Some((_, Edit::Swap(i, j))) => state.swap(i, j),
            Some((_, Edit::Recount(slot, to))) => state.recount(slot, to),
            None => return,
        }
    }
}

/// Offers every edit of `state` (at level `k`) that improves it to the
/// level its migration count puts it on.
fn expand(
    state: &EvenPacking,
    history: &History,
    k: usize,
    parent: usize,
    levels: usize,
    pending: &mut [Vec<Child>],
    delta: &mut Vec<(usize, f64)>,
) {
    let mut raw = vec![0.0; state.problem().num_gpus()];
    let now = rank(state, &mut raw, &[]);
    edits(state, history, delta, |cost, changes, edit| {
        let Ok(cost) = usize::try_from(cost) else {
            return;
        };
        if cost == 0 || k + cost > levels {
            return;
        }
        let (max_load, energy) = rank(state, &mut raw, changes);
        if improves((max_load, energy), now) {
            pending[k + cost].push(Child {
                max_load,
                energy,
                level: k,
                parent,
                edit,
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::optimal::problem::NodeProblem;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn the_curve_starts_at_the_old_placement_and_only_improves() {
        // Drifted: GPU0 = 6 + 5 + 0.5, GPU1 = 2 + 1 + 0.5 (expert 2 twice).
        let weights = [6.0, 5.0, 1.0, 2.0, 1.0];
        let speeds = [1.0, 1.0];
        let problem = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 3,
        };
        let old: Vec<Option<u32>> = [0, 1, 2, 3, 4, 2].into_iter().map(Some).collect();
        let (start, history) = repair::start(problem, &old);
        let deadline = Instant::now() + Duration::from_secs(10);
        let curve = frontier(start, &history, CURVE_WORK, deadline);
        assert_eq!(curve[0].migrations, 0);
        assert_eq!(curve[0].max_load, 11.5);
        for pair in curve.windows(2) {
            assert!(pair[0].migrations < pair[1].migrations);
            assert!(pair[0].max_load > pair[1].max_load);
        }
        // Recounting GPU1's copy of expert 2 into a second 0 (1 migration)
        // gives 9 | 6; swapping 6 with 2 (2 migrations) gives 7.5 | 7.5.
        let at = |m: usize| {
            curve
                .iter()
                .rev()
                .find(|q| q.migrations <= m)
                .map(|q| q.max_load)
        };
        assert_eq!(at(1), Some(9.0));
        assert_eq!(at(2), Some(7.5));
        for q in &curve {
            let p = EvenPacking::from_slots(problem, q.slots.clone());
            assert!((p.max_load() - q.max_load).abs() < 1e-9);
            assert_eq!(history.moves(&p), q.migrations);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// On any node and any previous placement (some of whose experts
        /// may have left): every point is a complete placement whose
        /// migrations and max load are what the curve says, and the curve
        /// only trades migrations for strictly lower loads.
        #[test]
        fn points_are_exact_and_pareto(
            weights in proptest::collection::vec(0.0f64..100.0, 3..9),
            gpus in 2usize..4,
            extra in 0usize..3,
            seed in any::<u64>(),
        ) {
            let n = weights.len();
            let s = (n + extra).div_ceil(gpus);
            let speeds = vec![1.0; gpus];
            let problem = NodeProblem { weights: &weights, speeds: &speeds, slots_per_gpu: s };
            // A previous table: every expert once, then arbitrary fill, with
            // a few slots whose expert left the node.
            let mut x = seed;
            let mut draw = |m: usize| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 33) as usize) % m
            };
            let mut old: Vec<Option<u32>> = (0..gpus * s)
                .map(|p| Some(if p < n { p as u32 } else { draw(n) as u32 }))
                .collect();
            for _ in 0..draw(3) {
                let p = draw(gpus * s);
                old[p] = None;
            }
            let (start, history) = repair::start(problem, &old);
            let curve = frontier(start, &history, CURVE_WORK, Instant::now() + Duration::from_secs(10));
            prop_assert!(!curve.is_empty());
            for pair in curve.windows(2) {
                prop_assert!(pair[0].migrations < pair[1].migrations);
                prop_assert!(pair[0].max_load > pair[1].max_load);
            }
            for q in &curve {
                prop_assert_eq!(q.slots.len(), gpus * s);
                let p = EvenPacking::from_slots(problem, q.slots.clone());
                prop_assert!(p.counts().iter().all(|&c| c >= 1));
                prop_assert!((p.max_load() - q.max_load).abs() <= 1e-9 * q.max_load.max(1.0));
                prop_assert_eq!(history.moves(&p), q.migrations);
            }
        }
    }
}
