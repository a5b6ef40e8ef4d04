//! The exact even-split model of one node, replica counts included.
//!
//! ```text
//! z[e][k] ∈ {0,1}      expert e has k replicas       Σ_k z[e][k] = 1
//! y[e][g][j] ∈ {0,1}   GPU g holds a j-th copy of e  y[e][g][j] ≥ y[e][g][j+1]
//! Σ_{g,j} y[e][g][j] = Σ_k k z[e][k],   Σ_{e,j} y[e][g][j] = S
//! r_e = Σ_k (w_e / k) z[e][k]                        (one replica's tokens)
//! q[e][g][j] ≥ 0,  q ≤ w_e y[e][g][j],  q ≥ r_e − w_e (1 − y[e][g][j])
//! Σ_{e,j} q[e][g][j] ≤ T s_g,   T ≥ lower bound,     minimise T
//! ```
//!
//! `q` is the tokens a copy carries: `r_e` where the copy exists, 0
//! elsewhere (the big-M is `w_e ≥ r_e`). Copies of one expert on one GPU are
//! allowed (they act like an uneven split), so the model covers every plan
//! the rules allow and its dual bound is a true lower bound. Unlike the
//! counting bounds of [`crate::bound`] it knows every GPU holds exactly `S`
//! replicas, so it can prove gaps they cannot (few slots per GPU, a few very
//! hot experts). It needs seconds per node and is only built for small nodes.

use good_lp::{constraint, variable, Expression, ProblemVariables, SolverModel, Variable};

use crate::milp::{self, Solved};
use crate::planner::optimal::packing::EvenPacking;
use crate::planner::optimal::problem::NodeProblem;
use crate::tolerance;

/// Largest number of copy variables (`experts × GPUs × copies`) built.
const MAX_COPIES: usize = 1536;

/// Solves the model from `start` with `lower` as a known bound on `T`.
/// Returns the checked slot table (when better than `start`) and the solve.
pub(crate) fn solve(
    problem: NodeProblem,
    start: &EvenPacking,
    lower: f64,
    seconds: f64,
) -> Option<(Option<Vec<u32>>, Solved)> {
    let (n, g_count, s) = (
        problem.num_experts(),
        problem.num_gpus(),
        problem.slots_per_gpu,
    );
    // The most replicas an expert can have (every other expert keeps one)
    // and the most copies one GPU can hold.
    let max_count = (problem.num_slots() + 1).checked_sub(n)?;
    let copies = s.min(max_count);
    if n == 0 || n * g_count * copies > MAX_COPIES || !milp::worth_building(seconds) {
        return None;
    }
    let w = problem.weights;
    let mut vars = ProblemVariables::new();
    let t = vars.add(variable().min(lower));
    let z: Vec<Vec<Variable>> = (0..n)
        .map(|_| {
            (0..max_count)
                .map(|_| vars.add(variable().binary()))
                .collect()
        })
        .collect();
    // Copy (e, g, j) at index (e * G + g) * copies + j.
    let cell = |e: usize, g: usize, j: usize| (e * g_count + g) * copies + j;
    let y: Vec<Variable> = (0..n * g_count * copies)
        .map(|_| vars.add(variable().binary()))
        .collect();
    let q: Vec<Variable> = (0..n * g_count * copies)
        .map(|i| vars.add(variable().min(0.0).max(w[i / (g_count * copies)])))
        .collect();
    let mut model = vars.minimise(t).using(good_lp::highs);
    for (e, &we) in w.iter().enumerate() {
        let one: Expression = z[e].iter().copied().sum();
        model = model.with(constraint!(one == 1.0));
        let mut replicas = Expression::with_capacity(max_count);
        let mut replica_load = Expression::with_capacity(max_count);
        for (k, &zk) in z[e].iter().enumerate() {
            replicas.add_mul((k + 1) as f64, zk);
            replica_load.add_mul(we / (k + 1) as f64, zk);
        }
        let placed: Expression = (0..g_count * copies)
            .map(|i| y[e * g_count * copies + i])
            .sum();
        model = model.with(constraint!(placed == replicas));
        for g in 0..g_count {
            for j in 0..copies {
                let i = cell(e, g, j);
                model = model.with(constraint!(q[i] - we * y[i] <= 0.0));
                model = model.with(constraint!(q[i] - replica_load.clone() - we * y[i] >= -we));
                if j + 1 < copies {
                    model = model.with(constraint!(y[i] - y[i + 1] >= 0.0));
                }
            }
        }
    }
    for g in 0..g_count {
        let cells = || (0..n).flat_map(move |e| (0..copies).map(move |j| cell(e, g, j)));
        let used: Expression = cells().map(|i| y[i]).sum();
        let load: Expression = cells().map(|i| q[i]).sum();
        model = model.with(constraint!(used == s as f64));
        model = model.with(constraint!(load - problem.speeds[g] * t <= 0.0));
    }
    // Warm start in column order: t, z, y, q.
    let mut warm = vec![start.max_load()];
    for e in 0..n {
        let c = start.counts()[e] as usize;
        warm.extend((0..max_count).map(|k| f64::from(u8::from(k + 1 == c))));
    }
    let held = |e: usize, g: usize, j: usize| (start.copies(g, e as u32) as usize) > j;
    for e in 0..n {
        for g in 0..g_count {
            warm.extend((0..copies).map(|j| f64::from(u8::from(held(e, g, j)))));
        }
    }
    for e in 0..n {
        let r = start.replica_load(e as u32);
        for g in 0..g_count {
            warm.extend((0..copies).map(|j| if held(e, g, j) { r } else { 0.0 }));
        }
    }
    let solved = milp::solve(model, Some(&warm), seconds, tolerance::MIP_GAP)?;
    let y0 = 1 + n * max_count;
    let table = read_table(
        problem,
        &solved.values[y0.min(solved.values.len())..],
        copies,
    )
    .filter(|table| {
        let packing = EvenPacking::from_slots(problem, table.clone());
        packing.max_load() <= solved.objective * (1.0 + tolerance::SOLVER_CLAIM)
            && packing.max_load() < start.max_load()
    });
    Some((table, solved))
}

/// The slot table of a solution from its copy variables (counts re-derived
/// from them, so `z` cannot disagree).
fn read_table(problem: NodeProblem, y: &[f64], copies: usize) -> Option<Vec<u32>> {
    let (n, g_count, s) = (
        problem.num_experts(),
        problem.num_gpus(),
        problem.slots_per_gpu,
    );
    let mut table = Vec::with_capacity(problem.num_slots());
    let mut seen = vec![false; n];
    for g in 0..g_count {
        let before = table.len();
        for (e, seen) in seen.iter_mut().enumerate() {
            let base = (e * g_count + g) * copies;
            let held = (0..copies)
                .filter(|&j| y.get(base + j).is_some_and(|&v| v > 0.5))
                .count();
            table.extend(std::iter::repeat_n(e as u32, held));
            *seen |= held > 0;
        }
        if table.len() - before != s {
            return None;
        }
    }
    seen.iter().all(|&b| b).then_some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_better_counts_and_proves_them() {
        // Loads 6, 3, 1 on 2 GPUs x 2 slots: counts (2, 1, 1) give
        // 3 + 3 | 3 + 1, max 6, the optimum (the mean 5 is out of reach with
        // two slots per GPU). The start, counts (1, 1, 2), gives 6.5 | 3.5.
        let weights = [6.0, 3.0, 1.0];
        let speeds = [1.0, 1.0];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 2,
        };
        let start = EvenPacking::from_slots(p, vec![0, 2, 1, 2]);
        assert!((start.max_load() - 6.5).abs() < 1e-9);
        let (table, solved) = solve(p, &start, p.mean_load(), 10.0).unwrap();
        assert!(solved.proven);
        assert!(
            (solved.objective - 6.0).abs() < 1e-6,
            "{}",
            solved.objective
        );
        let better = EvenPacking::from_slots(p, table.unwrap());
        assert!((better.max_load() - 6.0).abs() < 1e-9);
    }
}
