//! Free migration savings: renaming GPUs and nodes.
//!
//! Two plans that differ only by a permutation of identical GPUs (or of
//! identical nodes) balance the same load equally well, but the migrations
//! they cost against the plan in force can differ a lot. Choosing the
//! permutation is an assignment problem: cost of new GPU `a` on old GPU `b`
//! = experts `a` holds that `b` did not. Nodes are matched the same way,
//! with the cost of a node pair being its best GPU matching. Only GPUs (and
//! nodes) of equal speed are interchangeable.

use std::collections::HashMap;

use crate::migration::gpu_migrations;

/// Cost standing in for "not allowed" in an assignment.
const FORBIDDEN: f64 = 1e15;

/// Minimum-cost perfect matching of a square cost matrix (Hungarian method
/// with potentials, O(n³)); returns `col[row]`.
pub(crate) fn assignment(cost: &[Vec<f64>]) -> Vec<usize> {
    let n = cost.len();
    // 1-based arrays with a virtual column 0, as in the classic formulation.
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; n + 1];
    let mut row_of = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut min_to = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=n {
                if used[j] {
                    continue;
                }
                let reduced = cost[i0 - 1][j - 1] - u[i0] - v[j];
                if reduced < min_to[j] {
                    min_to[j] = reduced;
                    way[j] = j0;
                }
                if min_to[j] < delta {
                    delta = min_to[j];
                    j1 = j;
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_to[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut col = vec![0usize; n];
    for j in 1..=n {
        if row_of[j] > 0 {
            col[row_of[j] - 1] = j - 1;
        }
    }
    col
}

/// The GPU permutation of one node that minimises migrations from `old`:
/// returns `(old GPU of each new GPU, migrations)`. GPUs of different speed
/// are never swapped.
///
/// GPUs holding the same multiset in both plans are matched first: that is
/// always optimal (for any other partners `a'`, `b'`, the multiset distance
/// obeys `d(a', b') ≤ d(a', b) + d(a, b')`), and it leaves a much smaller
/// assignment problem when most GPUs did not change (one-slot decode GPUs).
pub(crate) fn match_gpus(
    new: &[u32],
    old: &[u32],
    speeds: &[f64],
    slots_per_gpu: usize,
) -> (Vec<usize>, usize) {
    let s = slots_per_gpu;
    let g = speeds.len();
    let sorted = |table: &[u32], gpu: usize| {
        let mut v = table[gpu * s..(gpu + 1) * s].to_vec();
        v.sort_unstable();
        v
    };
    let mut unmatched_old: HashMap<(Vec<u32>, u64), Vec<usize>> = HashMap::new();
    for b in (0..g).rev() {
        unmatched_old
            .entry((sorted(old, b), speeds[b].to_bits()))
            .or_default()
            .push(b);
    }
    let mut to = vec![usize::MAX; g];
    let mut taken = vec![false; g];
    for (a, slot) in to.iter_mut().enumerate() {
        if let Some(b) = unmatched_old
            .get_mut(&(sorted(new, a), speeds[a].to_bits()))
            .and_then(Vec::pop)
        {
            *slot = b;
            taken[b] = true;
        }
    }
    let rest_new: Vec<usize> = (0..g).filter(|&a| to[a] == usize::MAX).collect();
    let rest_old: Vec<usize> = (0..g).filter(|&b| !taken[b]).collect();
    let cost: Vec<Vec<f64>> = rest_new
        .iter()
        .map(|&a| {
            rest_old
                .iter()
                .map(|&b| {
                    if speeds[a] == speeds[b] {
                        gpu_migrations(&new[a * s..(a + 1) * s], &old[b * s..(b + 1) * s]) as f64
                    } else {
                        FORBIDDEN
                    }
                })
                .collect()
        })
        .collect();
    let pick = assignment(&cost);
    let mut total = 0;
    for (i, &a) in rest_new.iter().enumerate() {
        to[a] = rest_old[pick[i]];
        total += cost[i][pick[i]] as usize;
    }
    (to, total)
}

/// Renames nodes and GPUs of one layer's slot row to cost the fewest
/// migrations against `old` (same shape; `nodes × gpus × S` slots).
/// Returns, for every GPU position of the result, the GPU of `new` that
/// moves there (apply it with [`permute_gpus`]).
pub(crate) fn relabel(
    new: &[u32],
    old: &[u32],
    speeds: &[f64],
    gpus_per_node: usize,
    slots_per_gpu: usize,
) -> Vec<usize> {
    let per_node = gpus_per_node * slots_per_gpu;
    let nodes = new.len() / per_node;
    let node_speeds = |i: usize| &speeds[i * gpus_per_node..(i + 1) * gpus_per_node];
    let mut matches = vec![vec![Vec::new(); nodes]; nodes];
    let cost: Vec<Vec<f64>> = (0..nodes)
        .map(|a| {
            (0..nodes)
                .map(|b| {
                    if node_speeds(a) != node_speeds(b) {
                        return FORBIDDEN;
                    }
                    let (to, migrations) = match_gpus(
                        &new[a * per_node..(a + 1) * per_node],
                        &old[b * per_node..(b + 1) * per_node],
                        node_speeds(a),
                        slots_per_gpu,
                    );
                    matches[a][b] = to;
                    migrations as f64
                })
                .collect()
        })
        .collect();
    let node_to = assignment(&cost);
    let mut source = vec![0usize; nodes * gpus_per_node];
    for (a, &b) in node_to.iter().enumerate() {
        for (ga, &gb) in matches[a][b].iter().enumerate() {
            source[b * gpus_per_node + gb] = a * gpus_per_node + ga;
        }
    }
    source
}

/// Rearranges per-slot `values` GPU by GPU: GPU `g` of the result takes the
/// slots of GPU `source[g]`.
pub(crate) fn permute_gpus<T: Copy>(
    values: &[T],
    source: &[usize],
    slots_per_gpu: usize,
) -> Vec<T> {
    source
        .iter()
        .flat_map(|&g| {
            values[g * slots_per_gpu..(g + 1) * slots_per_gpu]
                .iter()
                .copied()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(cost: &[Vec<f64>]) -> f64 {
        fn go(cost: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
            if row == cost.len() {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for j in 0..cost.len() {
                if !used[j] {
                    used[j] = true;
                    best = best.min(cost[row][j] + go(cost, row + 1, used));
                    used[j] = false;
                }
            }
            best
        }
        go(cost, 0, &mut vec![false; cost.len()])
    }

    #[test]
    fn assignment_is_optimal() {
        let mut seed = 17u64;
        for n in 1..7 {
            let cost: Vec<Vec<f64>> = (0..n)
                .map(|_| {
                    (0..n)
                        .map(|_| {
                            seed = seed
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            ((seed >> 33) % 20) as f64
                        })
                        .collect()
                })
                .collect();
            let col = assignment(&cost);
            let mut seen = vec![false; n];
            col.iter().for_each(|&j| seen[j] = true);
            assert!(seen.iter().all(|&s| s));
            let total: f64 = (0..n).map(|i| cost[i][col[i]]).sum();
            assert_eq!(total, brute(&cost));
        }
    }

    #[test]
    fn relabelling_undoes_a_permutation() {
        // 2 nodes x 2 GPUs x 2 slots; `new` is `old` with nodes and GPUs swapped.
        let old = [0, 1, 2, 3, 4, 5, 6, 7];
        let new = [6, 7, 4, 5, 2, 3, 0, 1];
        let speeds = [1.0; 4];
        let source = relabel(&new, &old, &speeds, 2, 2);
        assert_eq!(permute_gpus(&new, &source, 2), old.to_vec());
        assert_eq!(gpu_migrations(&[1, 1, 2], &[1, 3, 2]), 1);
    }

    #[test]
    fn never_swaps_gpus_of_different_speed() {
        let old = [0, 1, 2, 3];
        let new = [2, 3, 0, 1];
        let (to, migrations) = match_gpus(&new, &old, &[1.0, 2.0], 2);
        assert_eq!(to, vec![0, 1]);
        assert_eq!(migrations, 4);
    }
}
