//! The exact min-moves model of one node, replica counts fixed.
//!
//! Given counts `c_e` (from a repair), place them to copy the fewest experts
//! while every GPU stays at most `limit`:
//!
//! ```text
//! x[e][g] ∈ {0..m_e}   copies of e on GPU g (m_e = 1 unless copies are forced)
//! Σ_g x[e][g] = c_e,   Σ_e x[e][g] = S,   Σ_e (w_e / c_e) x[e][g] ≤ limit · s_g
//! minimise Σ_{e,g} max(0, x[e][g] − old[e][g])     (the SPEC migrations)
//! ```
//!
//! The max is linear where `m_e ≤ 1` (cost `x` on pairs the GPU did not hold,
//! nothing elsewhere) and uses a slack `u ≥ x − old` otherwise. The repair's
//! placement is the warm start, so the model can only improve on it; its
//! answer is re-checked (counts, slots, loads, migrations) before use.

use good_lp::{constraint, variable, Expression, ProblemVariables, SolverModel, Variable};

use crate::migration::copy_migrations;
use crate::milp;
use crate::planner::optimal::problem::NodeProblem;
use crate::tolerance;

/// Largest `experts × GPUs` the model is built for: beyond it (global
/// placement) building and presolving alone outlast any per-layer share.
const MAX_PAIRS: usize = 1024;

/// Copies of each local expert on each GPU (`g * n + e`).
fn copies(problem: NodeProblem, slots: impl Iterator<Item = Option<u32>>) -> Vec<u32> {
    let n = problem.num_experts();
    let s = problem.slots_per_gpu;
    let mut out = vec![0u32; problem.num_gpus() * n];
    for (p, e) in slots.enumerate() {
        if let Some(e) = e {
            out[(p / s) * n + e as usize] += 1;
        }
    }
    out
}

/// Solves the model above from `start` (a complete slot table); returns a
/// checked table with fewer migrations, or `None`.
pub(crate) fn min_moves(
    problem: NodeProblem,
    start: &[u32],
    old: &[Option<u32>],
    limit: f64,
    seconds: f64,
) -> Option<Vec<u32>> {
    let (n, g_count, s) = (
        problem.num_experts(),
        problem.num_gpus(),
        problem.slots_per_gpu,
    );
    let mut counts = vec![0u32; n];
    for &e in start {
        counts[e as usize] += 1;
    }
    let old_copies = copies(problem, old.iter().copied());
    let start_copies = copies(problem, start.iter().map(|&e| Some(e)));
    let start_moves = copy_migrations(&start_copies, &old_copies);
    if start_moves == 0 || n * g_count > MAX_PAIRS || !milp::worth_building(seconds) {
        return None;
    }
    let mut vars = ProblemVariables::new();
    let mut x: Vec<Variable> = Vec::with_capacity(n * g_count);
    let mut slack: Vec<Option<Variable>> = Vec::with_capacity(n * g_count);
    let mut objective = Expression::with_capacity(n * g_count);
    for g in 0..g_count {
        for e in 0..n {
            let cap = problem.per_gpu_limit(counts[e]);
            let xv = vars.add(variable().integer().min(0).max(cap));
            x.push(xv);
            let held = old_copies[g * n + e];
            if cap <= 1 {
                if held == 0 {
                    objective += xv;
                }
                slack.push(None);
            } else {
                let u = vars.add(variable().min(0));
                objective += u;
                slack.push(Some(u));
            }
        }
    }
    let mut model = vars.minimise(objective).using(good_lp::highs);
    for e in 0..n {
        let placed: Expression = (0..g_count).map(|g| x[g * n + e]).sum();
        model = model.with(constraint!(placed == counts[e] as f64));
    }
    for g in 0..g_count {
        let row = g * n..(g + 1) * n;
        let used: Expression = x[row.clone()].iter().copied().sum();
        model = model.with(constraint!(used == s as f64));
        let mut load = Expression::with_capacity(n);
        for e in 0..n {
            load.add_mul(problem.weights[e] / f64::from(counts[e]), x[g * n + e]);
        }
        model = model.with(constraint!(load <= limit * problem.speeds[g]));
        for e in 0..n {
            if let Some(u) = slack[g * n + e] {
                let held = f64::from(old_copies[g * n + e]);
                model = model.with(constraint!(u - x[g * n + e] >= -held));
            }
        }
    }
    // Warm start in column order: x then its slack, GPU by GPU.
    let mut warm = Vec::with_capacity(2 * n * g_count);
    for g in 0..g_count {
        for e in 0..n {
            let now = start_copies[g * n + e];
            warm.push(f64::from(now));
            if slack[g * n + e].is_some() {
                warm.push(f64::from(now.saturating_sub(old_copies[g * n + e])));
            }
        }
    }
    let solved = milp::solve(model, Some(&warm), seconds, 0.0)?;
    // Read the copies back (column order as above) and check everything.
    let mut table = Vec::with_capacity(problem.num_slots());
    let mut column = 0;
    let mut found = vec![0u32; g_count * n];
    for g in 0..g_count {
        let mut gpu = Vec::with_capacity(s);
        for e in 0..n {
            let value = solved.values.get(column)?.round();
            column += 1 + usize::from(slack[g * n + e].is_some());
            if value < 0.0 {
                return None;
            }
            found[g * n + e] = value as u32;
            gpu.extend(std::iter::repeat_n(e as u32, value as usize));
        }
        if gpu.len() != s {
            return None;
        }
        let load: f64 = gpu
            .iter()
            .map(|&e| problem.weights[e as usize] / f64::from(counts[e as usize]))
            .sum();
        if load > limit * problem.speeds[g] * (1.0 + tolerance::REACHED) {
            return None;
        }
        table.extend(gpu);
    }
    let placed_ok =
        (0..n).all(|e| (0..g_count).map(|g| found[g * n + e]).sum::<u32>() == counts[e]);
    (placed_ok && copy_migrations(&found, &old_copies) < start_moves).then_some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_three_cycle_cheaper_than_swaps() {
        // Old: GPU0 {0,1}, GPU1 {2,3}, GPU2 {4,5}. Start: a placement with 6
        // moves; the limit allows the old one, which costs none.
        let weights = [3.0, 1.0, 3.0, 1.0, 3.0, 1.0];
        let speeds = [1.0; 3];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 2,
        };
        let old: Vec<Option<u32>> = (0..6).map(Some).collect();
        let start = [2, 5, 4, 1, 0, 3];
        let table = min_moves(p, &start, &old, 4.0, 5.0).unwrap();
        let mut gpus: Vec<Vec<u32>> = table
            .chunks(2)
            .map(|c| {
                let mut v = c.to_vec();
                v.sort();
                v
            })
            .collect();
        gpus.sort();
        assert_eq!(gpus, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
    }

    #[test]
    fn respects_the_load_limit() {
        // Old GPU0 {0,1} = 8 exceeds the limit 6: at least one expert must move.
        let weights = [5.0, 3.0, 2.0, 2.0];
        let speeds = [1.0, 1.0];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 2,
        };
        let old: Vec<Option<u32>> = (0..4).map(Some).collect();
        let start = [0, 2, 1, 3];
        assert!(
            min_moves(p, &start, &old, 7.0, 5.0).is_none(),
            "start is already optimal (2 moves)"
        );
        let far = [2, 3, 0, 1];
        let table = min_moves(p, &far, &old, 7.0, 5.0).unwrap();
        let g0: f64 = table[..2].iter().map(|&e| weights[e as usize]).sum();
        let g1: f64 = table[2..].iter().map(|&e| weights[e as usize]).sum();
        assert!(g0 <= 7.0 && g1 <= 7.0);
    }
}
