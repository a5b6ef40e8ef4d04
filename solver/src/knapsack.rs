//! The multiple-choice knapsack behind re-plans: one item `(load,
//! migrations)` per layer, the fewest total migrations with the summed load
//! within a budget.
//!
//! Exact dynamic programming over the migration total: `best[m]` = the least
//! summed load of the layers so far with exactly `m` migrations, over each
//! layer's Pareto-efficient items. The caller bounds the optimum (`most`),
//! which bounds the table (`layers × most × items` steps: milliseconds for
//! a 58-layer model).

/// Per layer the index of its chosen item, or `None` when no choice with at
/// most `most` migrations meets `budget`.
pub(crate) fn fewest_migrations(
    layers: &[Vec<(f64, usize)>],
    budget: f64,
    most: usize,
) -> Option<Vec<usize>> {
    // Only items no other one beats on both counts can be chosen (ties:
    // the first).
    let efficient: Vec<Vec<usize>> = layers
        .iter()
        .map(|items| {
            (0..items.len())
                .filter(|&k| {
                    let (load, moves) = items[k];
                    !items.iter().enumerate().any(|(j, &(l, m))| {
                        (m < moves && l <= load)
                            || (m <= moves && l < load)
                            || (m == moves && l == load && j < k)
                    })
                })
                .collect()
        })
        .collect();
    let width = most + 1;
    let mut best = vec![f64::INFINITY; width];
    best[0] = 0.0;
    // pick[l * width + m]: the item of layer l on the best path to m.
    let mut pick = vec![u32::MAX; layers.len() * width];
    let mut next = vec![f64::INFINITY; width];
    for (l, items) in layers.iter().enumerate() {
        next.fill(f64::INFINITY);
        for (m, &so_far) in best.iter().enumerate() {
            if !so_far.is_finite() {
                continue;
            }
            for &k in &efficient[l] {
                let (load, moves) = items[k];
                let to = m + moves;
                if to < width && so_far + load < next[to] {
                    next[to] = so_far + load;
                    pick[l * width + to] = k as u32;
                }
            }
        }
        std::mem::swap(&mut best, &mut next);
    }
    let mut m = (0..width).find(|&m| best[m] <= budget)?;
    let mut choice = vec![0; layers.len()];
    for l in (0..layers.len()).rev() {
        let k = pick[l * width + m] as usize;
        choice[l] = k;
        m -= layers[l][k].1;
    }
    Some(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_the_exhaustive_optimum() {
        // Pseudo-random layers; every choice vector is tried.
        let mut seed = 7u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..40 {
            let layers: Vec<Vec<(f64, usize)>> = (0..4)
                .map(|_| {
                    (0..1 + next(4))
                        .map(|_| (100.0 + next(12) as f64, next(25) as usize))
                        .collect()
                })
                .collect();
            let budget = 400.0 + next(30) as f64;
            let totals = |code: &[usize]| {
                code.iter()
                    .zip(&layers)
                    .fold((0.0, 0), |(l, m), (&k, items)| {
                        (l + items[k].0, m + items[k].1)
                    })
            };
            let mut exhaustive = None;
            let mut code = vec![0usize; layers.len()];
            loop {
                let (load, moves) = totals(&code);
                if load <= budget {
                    exhaustive = Some(exhaustive.map_or(moves, |b: usize| b.min(moves)));
                }
                let Some(i) = (0..code.len()).find(|&i| code[i] + 1 < layers[i].len()) else {
                    break;
                };
                code[i] += 1;
                code[..i].iter_mut().for_each(|c| *c = 0);
            }
            let most = layers
                .iter()
                .map(|l| l.iter().map(|i| i.1).max().unwrap())
                .sum();
            let found = fewest_migrations(&layers, budget, most).map(|c| totals(&c));
            assert_eq!(found.map(|(_, m)| m), exhaustive);
            if let Some((load, _)) = found {
                assert!(load <= budget);
            }
        }
    }
}
