//! Weighted split: each slot takes a chosen share of its expert's tokens.
//!
//! With free shares a node's only lower bound is the speed-weighted mean
//! `W / Σ s_g`; what keeps a placement from it is the slot limit (an expert
//! split over `k` GPUs uses `k` slots). Two models, cheapest first:
//!
//! * [`shares_lp`] — the slot table fixed, the best shares: an LP
//!   (`y_p` tokens of slot `p`; `Σ_{p∈e} y_p = w_e`, `Σ_{p∈g} y_p ≤ T s_g`,
//!   minimise `T`). Started from the even-split search's table, whose spare
//!   replicas already tie most GPUs together, it usually reaches the mean.
//! * [`pattern_milp`] — which experts sit on which GPU as well: binary
//!   `x[e][g]`, tokens `y[e][g] ≤ w_e x[e][g]`, `Σ_g y[e][g] = w_e`,
//!   `Σ_e y[e][g] ≤ T s_g`, `Σ_e x[e][g] ≤ S`, `Σ_g x[e][g] ≥ 1`,
//!   `T ≥ mean`, minimise `T`; warm-started from the LP's answer. Reaching
//!   the mean ends the search at once, because it is the LP bound.

use good_lp::{constraint, variable, Expression, ProblemVariables, SolverModel, Variable};

use crate::milp;
use crate::planner::optimal::problem::NodeProblem;
use crate::tolerance;

/// Largest `experts × GPUs` the pattern MILP is tried on: beyond it (the
/// global policy) a solve rarely finishes and the LP answer stands.
const PATTERN_MILP_MAX_PAIRS: usize = 1024;

/// A node's weighted placement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WeightedNode {
    /// Local expert of each slot (`G * S`).
    pub slots: Vec<u32>,
    /// Fraction of its expert's tokens each slot takes.
    pub shares: Vec<f64>,
    /// Largest speed-scaled GPU load.
    pub max_load: f64,
    /// A proven lower bound on this node's best max load.
    pub bound: f64,
    /// True when `max_load` is proven optimal.
    pub proven: bool,
    /// True when an exact model ran out of time on this node.
    pub timed_out: bool,
}

/// Speed-scaled GPU loads of a weighted slot table.
pub(crate) fn weighted_loads(problem: NodeProblem, slots: &[u32], shares: &[f64]) -> Vec<f64> {
    let s = problem.slots_per_gpu;
    (0..problem.num_gpus())
        .map(|g| {
            (g * s..(g + 1) * s)
                .map(|p| problem.weights[slots[p] as usize] * shares[p])
                .sum::<f64>()
                / problem.speeds[g]
        })
        .collect()
}

fn max_of(loads: &[f64]) -> f64 {
    loads.iter().copied().fold(0.0, f64::max)
}

/// Even shares (what engines do without `replica_share`).
pub(crate) fn even_shares(problem: NodeProblem, slots: &[u32]) -> Vec<f64> {
    let mut counts = vec![0u32; problem.num_experts()];
    for &e in slots {
        counts[e as usize] += 1;
    }
    slots
        .iter()
        .map(|&e| 1.0 / f64::from(counts[e as usize]))
        .collect()
}

/// Turns token amounts per slot into shares summing to one per expert,
/// even shares for experts without load.
fn normalise(problem: NodeProblem, slots: &[u32], tokens: &[f64]) -> Vec<f64> {
    let n = problem.num_experts();
    let mut sums = vec![0.0; n];
    for (&e, &y) in slots.iter().zip(tokens) {
        sums[e as usize] += y.max(0.0);
    }
    let even = even_shares(problem, slots);
    slots
        .iter()
        .zip(tokens)
        .zip(even)
        .map(|((&e, &y), even)| {
            let total = sums[e as usize];
            if total > 0.0 && problem.weights[e as usize] > 0.0 {
                y.max(0.0) / total
            } else {
                even
            }
        })
        .collect()
}

/// The best shares for a fixed slot table (the LP above), checked: `None`
/// when HiGHS fails or its answer is worse than even shares.
pub(crate) fn shares_lp(
    problem: NodeProblem,
    slots: &[u32],
    seconds: f64,
) -> Option<(Vec<f64>, f64)> {
    if !milp::worth_building(seconds) {
        return None;
    }
    let s = problem.slots_per_gpu;
    let mut vars = ProblemVariables::new();
    let t = vars.add(variable().min(problem.mean_load()));
    let y: Vec<Variable> = slots
        .iter()
        .map(|&e| vars.add(variable().min(0.0).max(problem.weights[e as usize])))
        .collect();
    let mut model = vars.minimise(t).using(good_lp::highs);
    let mut per_expert: Vec<Expression> = vec![Expression::with_capacity(4); problem.num_experts()];
    for (&e, &v) in slots.iter().zip(&y) {
        per_expert[e as usize] += v;
    }
    for (e, sum) in per_expert.into_iter().enumerate() {
        model = model.with(constraint!(sum == problem.weights[e]));
    }
    for g in 0..problem.num_gpus() {
        let on_gpu: Expression = y[g * s..(g + 1) * s].iter().copied().sum();
        model = model.with(constraint!(on_gpu - problem.speeds[g] * t <= 0.0));
    }
    let solved = milp::solve(model, None, seconds, 0.0)?;
    let shares = normalise(problem, slots, &solved.values[1..]);
    let max = max_of(&weighted_loads(problem, slots, &shares));
    let even = max_of(&weighted_loads(
        problem,
        slots,
        &even_shares(problem, slots),
    ));
    (max <= even).then_some((shares, max))
}

/// Fills the free slots of a GPU-by-GPU expert list up to `S` each: first
/// with the experts `prefer` lists for that GPU (its earlier occupants),
/// then with the heaviest experts the GPU lacks. New copies take no tokens
/// until [`shares_lp`] decides otherwise.
pub(crate) fn fill_free_slots(
    problem: NodeProblem,
    per_gpu: &mut [Vec<u32>],
    prefer: &[u32],
) -> Vec<u32> {
    let s = problem.slots_per_gpu;
    let mut by_weight: Vec<u32> = (0..problem.num_experts() as u32).collect();
    by_weight.sort_by(|&a, &b| problem.weights[b as usize].total_cmp(&problem.weights[a as usize]));
    let mut slots = Vec::with_capacity(problem.num_slots());
    for (g, experts) in per_gpu.iter_mut().enumerate() {
        let candidates = prefer[g * s..(g + 1) * s].iter().chain(&by_weight);
        for &e in candidates {
            if experts.len() >= s {
                break;
            }
            if !experts.contains(&e) {
                experts.push(e);
            }
        }
        // Fewer experts than slots: copies are forced.
        let mut next = 0;
        while experts.len() < s {
            experts.push(by_weight[next % by_weight.len()]);
            next += 1;
        }
        slots.extend_from_slice(&experts[..s]);
    }
    slots
}

/// Components of the graph whose vertices are GPUs and whose edges join
/// GPUs sharing an expert: shares can move load only inside a component.
fn components(per_gpu: &[Vec<u32>], num_experts: usize) -> Vec<usize> {
    fn root(parent: &mut [usize], mut g: usize) -> usize {
        while parent[g] != g {
            parent[g] = parent[parent[g]];
            g = parent[g];
        }
        g
    }
    let mut parent: Vec<usize> = (0..per_gpu.len()).collect();
    let mut first_gpu = vec![usize::MAX; num_experts];
    for (g, experts) in per_gpu.iter().enumerate() {
        for &e in experts {
            match first_gpu[e as usize] {
                usize::MAX => first_gpu[e as usize] = g,
                h => {
                    let (a, b) = (root(&mut parent, g), root(&mut parent, h));
                    parent[a] = b;
                }
            }
        }
    }
    (0..per_gpu.len()).map(|g| root(&mut parent, g)).collect()
}

/// Joins the components of an even-split table's sharing graph by swaps:
/// a replica of a multi-replica expert trades places with a replica of
/// about the same load on a GPU of another component, which links the two
/// components while moving almost no load (the share LP absorbs the rest).
/// Each round applies the swap that joins components with the smallest load
/// change.
pub(crate) fn connect_by_swaps(problem: NodeProblem, slots: &[u32]) -> Vec<u32> {
    let s = problem.slots_per_gpu;
    let n = problem.num_experts();
    let mut slots = slots.to_vec();
    let mut counts = vec![0u32; n];
    for &e in &slots {
        counts[e as usize] += 1;
    }
    let replica = |e: u32| problem.weights[e as usize] / f64::from(counts[e as usize]);
    let per_gpu =
        |slots: &[u32]| -> Vec<Vec<u32>> { slots.chunks_exact(s).map(<[u32]>::to_vec).collect() };
    for _ in 0..problem.num_gpus() {
        let tables = per_gpu(&slots);
        let labels = components(&tables, n);
        let parts = count_components(&labels);
        if parts <= 1 {
            break;
        }
        let mut best: Option<(f64, usize, usize)> = None;
        for i in 0..slots.len() {
            let (g, a) = (i / s, slots[i]);
            if counts[a as usize] < 2 {
                continue;
            }
            for j in 0..slots.len() {
                let (h, b) = (j / s, slots[j]);
                if labels[h] == labels[g] || tables[h].contains(&a) || tables[g].contains(&b) {
                    continue;
                }
                let cost = (replica(a) - replica(b)).abs();
                if best.is_some_and(|(c, _, _)| c <= cost) {
                    continue;
                }
                slots.swap(i, j);
                let joined = count_components(&components(&per_gpu(&slots), n)) < parts;
                slots.swap(i, j);
                if joined {
                    best = Some((cost, i, j));
                }
            }
        }
        match best {
            Some((_, i, j)) => slots.swap(i, j),
            None => break,
        }
    }
    slots
}

fn count_components(labels: &[usize]) -> usize {
    labels.iter().enumerate().filter(|&(g, &r)| g == r).count()
}

/// The pattern MILP above, warm-started from `start` (slots and shares).
/// Returns the checked slot table it found, or `None`.
pub(crate) fn pattern_milp(
    problem: NodeProblem,
    start: (&[u32], &[f64]),
    seconds: f64,
) -> Option<(Vec<u32>, milp::Solved)> {
    let (n, g_count, s) = (
        problem.num_experts(),
        problem.num_gpus(),
        problem.slots_per_gpu,
    );
    if n * g_count > PATTERN_MILP_MAX_PAIRS || !milp::worth_building(seconds) {
        return None;
    }
    let w = problem.weights;
    let mut vars = ProblemVariables::new();
    let t = vars.add(variable().min(problem.mean_load()));
    let mut x = Vec::with_capacity(n * g_count);
    let mut y = Vec::with_capacity(n * g_count);
    for &we in w {
        for _ in 0..g_count {
            x.push(vars.add(variable().binary()));
            y.push(vars.add(variable().min(0.0).max(we)));
        }
    }
    let mut model = vars.minimise(t).using(good_lp::highs);
    for (e, &we) in w.iter().enumerate() {
        let row = e * g_count..(e + 1) * g_count;
        let tokens: Expression = y[row.clone()].iter().copied().sum();
        let placed: Expression = x[row.clone()].iter().copied().sum();
        model = model.with(constraint!(tokens == we));
        model = model.with(constraint!(placed >= 1.0));
        for i in row {
            model = model.with(constraint!(y[i] - we * x[i] <= 0.0));
        }
    }
    for g in 0..g_count {
        let load: Expression = (0..n).map(|e| y[e * g_count + g]).sum();
        let used: Expression = (0..n).map(|e| x[e * g_count + g]).sum();
        model = model.with(constraint!(load - problem.speeds[g] * t <= 0.0));
        model = model.with(constraint!(used <= s as f64));
    }
    let (start_slots, start_shares) = start;
    let mut warm = vec![0.0; 1 + 2 * n * g_count];
    warm[0] = max_of(&weighted_loads(problem, start_slots, start_shares));
    for (p, (&e, &share)) in start_slots.iter().zip(start_shares).enumerate() {
        let i = e as usize * g_count + p / s;
        warm[1 + 2 * i] = 1.0;
        warm[2 + 2 * i] += share * w[e as usize];
    }
    let solved = milp::solve(model, Some(&warm), seconds, tolerance::MIP_GAP)?;
    let mut per_gpu: Vec<Vec<u32>> = vec![Vec::with_capacity(s); g_count];
    for e in 0..n {
        let mut placed = false;
        for (g, experts) in per_gpu.iter_mut().enumerate() {
            if solved.values[1 + 2 * (e * g_count + g)] > 0.5 {
                experts.push(e as u32);
                placed = true;
            }
        }
        if !placed {
            return None;
        }
    }
    if per_gpu.iter().any(|experts| experts.len() > s) {
        return None;
    }
    let slots = fill_free_slots(problem, &mut per_gpu, start_slots);
    Some((slots, solved))
}

/// Plans one node under weighted split, starting from an even-split slot
/// table: LP shares, then the pattern MILP if the node is above `target`
/// and `seconds` allow.
pub(crate) fn plan_node(
    problem: NodeProblem,
    start: Vec<u32>,
    target: f64,
    seconds: f64,
) -> WeightedNode {
    let mean = problem.mean_load();
    let even = even_shares(problem, &start);
    let mut best = WeightedNode {
        max_load: max_of(&weighted_loads(problem, &start, &even)),
        slots: start,
        shares: even,
        bound: mean,
        proven: false,
        timed_out: false,
    };
    let started = std::time::Instant::now();
    if let Some((shares, max)) = shares_lp(problem, &best.slots, seconds) {
        if max < best.max_load {
            best.shares = shares;
            best.max_load = max;
        }
    }
    let goal = target.max(mean) * (1.0 + tolerance::REACHED);
    // The even table's sharing graph may fall apart into components the LP
    // cannot balance against each other: join them and try again.
    if best.max_load > goal {
        let table = connect_by_swaps(problem, &best.slots);
        let left = seconds - started.elapsed().as_secs_f64();
        if let Some((shares, max)) = shares_lp(problem, &table, left) {
            if max < best.max_load {
                best = WeightedNode {
                    slots: table,
                    shares,
                    max_load: max,
                    ..best
                };
            }
        }
    }
    let left = seconds - started.elapsed().as_secs_f64();
    if best.max_load > goal {
        if let Some((slots, solved)) = pattern_milp(problem, (&best.slots, &best.shares), left) {
            best.bound = best.bound.max(solved.dual_bound);
            best.timed_out = !solved.proven;
            let left = seconds - started.elapsed().as_secs_f64();
            if let Some((shares, max)) = shares_lp(problem, &slots, left.max(0.05)) {
                if max < best.max_load {
                    best = WeightedNode {
                        slots,
                        shares,
                        max_load: max,
                        ..best
                    };
                }
            }
            best.proven =
                solved.proven && best.max_load <= solved.objective * (1.0 + tolerance::MIP_GAP);
        }
    }
    if best.max_load <= mean * (1.0 + tolerance::REACHED) {
        best.proven = true;
        best.timed_out = false;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lp_balances_a_fixed_table() {
        // Expert 0 on both GPUs can absorb the difference: 6 + 2 | 4 -> 6 | 6.
        let weights = [8.0, 2.0, 2.0];
        let speeds = [1.0, 1.0];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 2,
        };
        let slots = [0, 1, 0, 2];
        let (shares, max) = shares_lp(p, &slots, 5.0).unwrap();
        assert!((max - 6.0).abs() < 1e-6, "{max}");
        assert!((shares[0] + shares[2] - 1.0).abs() < 1e-9);
        assert!((max_of(&weighted_loads(p, &slots, &shares)) - max).abs() < 1e-12);
    }

    #[test]
    fn milp_finds_a_pattern_the_lp_cannot() {
        // Three GPUs of 2 slots; the start puts the heavy expert on one GPU only.
        let weights = [9.0, 1.0, 1.0, 1.0];
        let speeds = [1.0, 1.0, 1.0];
        let p = NodeProblem {
            weights: &weights,
            speeds: &speeds,
            slots_per_gpu: 2,
        };
        let start = vec![0, 1, 2, 3, 1, 2];
        let node = plan_node(p, start, 0.0, 5.0);
        assert!((node.max_load - 4.0).abs() < 1e-6, "{}", node.max_load);
        assert!(node.proven);
        let loads = weighted_loads(p, &node.slots, &node.shares);
        assert!((max_of(&loads) - node.max_load).abs() < 1e-12);
        let mut sums = [0.0; 4];
        for (&e, &share) in node.slots.iter().zip(&node.shares) {
            sums[e as usize] += share;
        }
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-9));
    }
}
