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
pub fn ewma(windows: &[LoadMatrix], alpha: f64, topology: &Topology) -> Option<LoadMatrix> {
    let estimate = ewma_flat(windows.iter().map(LoadMatrix::values), alpha)?;
    let rows = estimate
        .chunks_exact(topology.num_logical_experts())
        .map(<[f64]>::to_vec)
        .collect();
    // A mean of finite, non-negative windows of this shape is one as well.
    LoadMatrix::new(rows, topology).ok()
}

/// EWMA of the unit-normalised windows, oldest first; `None` when no window
/// carries any load. `alpha` in (0, 1] is the weight of the newest window.
fn ewma_flat<'a>(windows: impl IntoIterator<Item = &'a [f64]>, alpha: f64) -> Option<Vec<f64>> {
    let mut estimate: Option<Vec<f64>> = None;
    for window in windows {
        let total: f64 = window.iter().sum();
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

    proptest! {
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
