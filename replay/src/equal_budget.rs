//! "At equal movement budget": EPLB's experienced imbalance at another
//! run's re-load rate, read off EPLB's interval sweep by linear
//! interpolation between the two sweep points around that rate.
//!
//! EPLB re-planned less often re-loads fewer slots and experiences more
//! imbalance; its sweep (with the never-re-planned point at zero re-loads)
//! traces that trade-off. A policy that re-loads as little as EPLB every
//! 16 windows is fairly compared with EPLB every 16 windows, not every one.

use crate::record::RunSummary;

/// Sets `eplb_at_equal_budget` and `vs_eplb_at_equal_budget` on every run
/// that is not EPLB, from the runs marked `baseline` (one EPLB policy's
/// sweep). Rates outside the sweep get `None`.
pub fn fill(runs: &mut [RunSummary], baseline: &[bool], is_eplb: &[bool]) {
    let mut curve: Vec<(f64, f64)> = runs
        .iter()
        .zip(baseline)
        .filter(|(run, &base)| base && run.experienced_imbalance.is_finite())
        .map(|(run, _)| (run.reloaded_slots_per_window, run.experienced_imbalance))
        .collect();
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (run, &eplb) in runs.iter_mut().zip(is_eplb) {
        if eplb {
            continue;
        }
        run.eplb_at_equal_budget = interpolate(&curve, run.reloaded_slots_per_window);
        run.vs_eplb_at_equal_budget = run
            .eplb_at_equal_budget
            .map(|eplb| run.experienced_imbalance / eplb);
    }
}

/// `y` at `x` on the piecewise-linear curve through `points` (sorted by
/// `x`); `None` outside it.
fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    let first = points.first()?;
    if x == first.0 {
        return Some(first.1);
    }
    points.windows(2).find_map(|pair| {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x0 <= x && x <= x1 {
            Some(if x1 > x0 {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            } else {
                y0.min(y1)
            })
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, rate: f64, imbalance: f64) -> RunSummary {
        RunSummary {
            name: name.to_owned(),
            interval: Some(1),
            experienced_imbalance: imbalance,
            experienced_imbalance_optimal_routing: imbalance,
            oracle_imbalance: 1.0,
            reloaded_slots_per_window: rate,
            bytes_per_window: None,
            move_seconds_per_window: None,
            plans: 0,
            replans: 0,
            plan_ms: 0.0,
            plan_ms_max: 0.0,
            worst_window: None,
            worst_imbalance: None,
            eplb_at_equal_budget: None,
            vs_eplb_at_equal_budget: None,
            covisit_served: None,
            transfers_per_token: None,
            transfers_known_windows: 0,
        }
    }

    #[test]
    fn reads_eplb_between_its_sweep_points() {
        let mut runs = vec![
            run("eplb", 0.8, 1.30),
            run("eplb", 0.1, 1.40),
            run("eplb", 0.0, 1.50),
            run("service", 0.05, 1.32),
            run("optimal", 0.9, 1.29),
        ];
        fill(
            &mut runs,
            &[true, true, true, false, false],
            &[true, true, true, false, false],
        );
        assert!((runs[3].eplb_at_equal_budget.unwrap() - 1.45).abs() < 1e-12);
        assert!((runs[3].vs_eplb_at_equal_budget.unwrap() - 1.32 / 1.45).abs() < 1e-12);
        assert_eq!(
            runs[4].eplb_at_equal_budget, None,
            "beyond EPLB's highest rate"
        );
        assert_eq!(
            runs[0].eplb_at_equal_budget, None,
            "EPLB is not compared with itself"
        );
    }

    #[test]
    fn no_curve_no_figure() {
        let mut runs = vec![run("service", 0.05, 1.32)];
        fill(&mut runs, &[false], &[false]);
        assert_eq!(runs[0].eplb_at_equal_budget, None);
        assert_eq!(interpolate(&[(0.0, 1.5)], 0.0), Some(1.5));
    }
}
