//! The load estimate the planner plans for: an exponentially weighted moving
//! average over the cluster's recent load windows.
//!
//! Each window is first scaled to unit total, so a window in which some
//! workers did not report (or a quiet minute) changes the *shape* estimate by
//! its weight, not by its volume; imbalance is scale-free, and the relative
//! weight of layers within a window is kept.

use ballast_solver::{LoadMatrix, Topology};

/// How many windows an EWMA with smoothing `alpha` needs before older ones
/// weigh less than `1e-3` in total (`(1 - alpha)^n < 1e-3`).
pub fn windows_needed(alpha: f64) -> usize {
    if alpha >= 1.0 {
        return 1;
    }
    let n = (1e-3f64).ln() / (1.0 - alpha).ln();
    (n.ceil() as usize).clamp(1, 1000)
}

/// The estimate of `windows` (oldest first) as a load matrix for `topology`;
/// `None` when no window carries any load.
///
/// Co-visit counts are estimated like the load: each window's counts
/// scaled by that window's *load* total, then the same EWMA, so that a
/// count stays at most its expert's load in the estimate as in every
/// window. The estimate carries them only when every window does (a
/// window without them says nothing about its tokens' co-visits, and
/// leaving it out would weigh the others wrongly).
pub fn ewma(windows: &[LoadMatrix], alpha: f64, topology: &Topology) -> Option<LoadMatrix> {
    let estimate = ewma_flat(windows.iter().map(LoadMatrix::values), alpha)?;
    let experts = topology.num_logical_experts();
    let rows = estimate
        .chunks_exact(experts)
        .map(<[f64]>::to_vec)
        .collect();
    // A mean of finite, non-negative windows of this shape is one as well.
    let load = LoadMatrix::new(rows, topology).ok()?;
    if !windows.iter().all(LoadMatrix::has_covisit) {
        return Some(load);
    }
    let covisit = ewma_scaled(
        windows.iter().filter_map(|w| {
            let total: f64 = w.values().iter().sum();
            w.covisit_values().map(|c| (c, total))
        }),
        alpha,
    );
    let Some(covisit) = covisit else {
        return Some(load);
    };
    let groups = topology.num_groups().max(1);
    let rows = covisit
        .chunks_exact(experts * groups)
        .map(|layer| layer.chunks_exact(groups).map(<[f64]>::to_vec).collect())
        .collect();
    // Each count is a weighted sum of counts at most the load scaled the
    // same way; the solver's check allows for the rounding.
    match load.clone().with_covisit(rows, topology) {
        Ok(with) => Some(with),
        Err(_) => Some(load),
    }
}

/// EWMA of the unit-normalised windows, oldest first; `None` when no window
/// carries any load. `alpha` in (0, 1] is the weight of the newest window.
fn ewma_flat<'a>(windows: impl IntoIterator<Item = &'a [f64]>, alpha: f64) -> Option<Vec<f64>> {
    ewma_scaled(
        windows.into_iter().map(|w| (w, w.iter().sum::<f64>())),
        alpha,
    )
}

/// EWMA of `values / total` over `(values, total)` pairs, oldest first,
/// skipping pairs whose total is not positive; `None` when none is left.
fn ewma_scaled<'a>(
    windows: impl IntoIterator<Item = (&'a [f64], f64)>,
    alpha: f64,
) -> Option<Vec<f64>> {
    let mut estimate: Option<Vec<f64>> = None;
    for (window, total) in windows {
        if total <= 0.0 {
            continue;
        }
        estimate = Some(match estimate {
            None => window.iter().map(|v| v / total).collect(),
            Some(mut est) => {
                for (e, v) in est.iter_mut().zip(window) {
                    *e = alpha * (v / total) + (1.0 - alpha) * *e;
                }
                est
            }
        });
    }
    estimate
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn weighs_recent_windows_more() {
        let old = [10.0, 0.0];
        let new = [0.0, 1.0];
        let est = ewma_flat([&old[..], &new[..]], 0.25).unwrap();
        assert!((est[0] - 0.75).abs() < 1e-12 && (est[1] - 0.25).abs() < 1e-12);
        assert_eq!(ewma_flat([&[0.0, 0.0][..]], 0.5), None);
        assert_eq!(windows_needed(0.3), 20);
        assert_eq!(windows_needed(1.0), 1);
    }

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 2, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 1}"#,
        )
        .unwrap()
    }

    fn window(t: &Topology, load: [f64; 2], covisit: Option<[[f64; 2]; 2]>) -> LoadMatrix {
        let m = LoadMatrix::new(vec![load.to_vec()], t).unwrap();
        match covisit {
            Some(c) => m
                .with_covisit(vec![c.iter().map(|r| r.to_vec()).collect()], t)
                .unwrap(),
            None => m,
        }
    }

    #[test]
    fn covisit_is_scaled_by_each_windows_load_total() {
        let t = topology();
        let old = window(&t, [6.0, 2.0], Some([[6.0, 2.0], [1.0, 2.0]]));
        let new = window(&t, [1.0, 1.0], Some([[1.0, 0.0], [0.0, 1.0]]));
        let est = ewma(&[old.clone(), new.clone()], 0.5, &t).unwrap();
        // load: 0.5 * [0.75, 0.25] + 0.5 * [0.5, 0.5]
        assert_eq!(est.values(), &[0.625, 0.375]);
        let c = est.covisit_values().unwrap();
        // Each window's counts over its load total (8, then 2), then the EWMA.
        let want = [
            0.5 * 6.0 / 8.0 + 0.5 * 1.0 / 2.0,
            0.5 * 2.0 / 8.0,
            0.5 * 1.0 / 8.0,
            0.5 * 2.0 / 8.0 + 0.5 * 1.0 / 2.0,
        ];
        for (got, want) in c.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{c:?}");
        }
        // One window without counts: the estimate has none.
        let bare = window(&t, [1.0, 1.0], None);
        assert!(!ewma(&[old, bare, new], 0.5, &t).unwrap().has_covisit());
    }

    proptest! {
        #[test]
        fn covisit_estimate_stays_below_load(
            windows in proptest::collection::vec(
                (0.0f64..1e6, 0.0f64..1e6, 0.0f64..=1.0, 0.0f64..=1.0), 1..8),
            alpha in 0.01f64..1.0,
        ) {
            let t = topology();
            let ms: Vec<LoadMatrix> = windows
                .iter()
                .map(|&(a, b, x, y)| window(&t, [a, b], Some([[a, a * x], [b * y, b]])))
                .collect();
            if let Some(est) = ewma(&ms, alpha, &t) {
                prop_assert!(est.has_covisit());
            }
        }

        #[test]
        fn estimate_is_a_distribution(windows in proptest::collection::vec(
            proptest::collection::vec(0.0f64..1e6, 6), 1..10), alpha in 0.01f64..1.0) {
            if let Some(est) = ewma_flat(windows.iter().map(Vec::as_slice), alpha) {
                prop_assert!((est.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                prop_assert!(est.iter().all(|v| *v >= 0.0));
            }
        }
    }
}
