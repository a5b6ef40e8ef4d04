//! What a replay produces: one record per window and run (`windows.csv`),
//! the summary (`summary.json`, `--json`) and the series the HTML report
//! draws.

use serde::{Deserialize, Serialize};

/// Cross-node transfers per token and layer: the provable range and, where
/// the plan allows, the estimate (`ballast_solver::covisit::traffic`).
pub use ballast_solver::covisit::Interval as TrafficRange;

/// One run's figures for one window.
///
/// The plan scored is the one in force *during* this window, made from
/// earlier windows only; `replanned` says whether a new plan was made after
/// seeing this window (it takes effect from the next one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    /// The run's index in [`Summary::policies`].
    pub run: usize,
    pub window: u64,
    /// Model imbalance of the plan in force on this window, with its own
    /// split (even, or `replica_share`). `None` for the first window, which
    /// only seeds the first plan.
    pub experienced_imbalance: Option<f64>,
    /// The same placement with the window's load routed optimally among
    /// replicas.
    pub experienced_imbalance_optimal_routing: Option<f64>,
    /// The window's own lower bound (node-local when the topology allows it):
    /// what a plan made knowing this window in advance could reach at best.
    pub oracle_imbalance: f64,
    /// A plan was made after this window (whether or not it changed
    /// anything).
    pub planned: bool,
    /// A new plan was put in force after this window.
    pub replanned: bool,
    /// Slots whose expert the new plan loads (SPEC migrations).
    pub reloaded_slots: u64,
    /// `reloaded_slots × expert_bytes`, when the expert size is known.
    pub reloaded_bytes: Option<u64>,
    /// Time to load the new experts when every GPU receives at the link
    /// bandwidth in parallel: the busiest GPU's bytes / bandwidth.
    pub move_seconds: Option<f64>,
    /// Wall time of the planning call after this window (0 when none).
    pub plan_ms: f64,
    /// Under a co-visit plan on a window with co-visit counts: the fraction
    /// of token assignments co-visit replicas served (on nodes the tokens
    /// visited anyway, so with no added cross-node transfer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covisit_served: Option<f64>,
    /// Cross-node transfers per token and layer the plan in force implies on
    /// this window, read off its co-visit counts (`ballast_solver::covisit::
    /// cross_node_traffic`: a range, exact with one group per node; for a
    /// co-visit plan `high` is what holds). `None` without counts, or when a
    /// plan spreads an expert's any-token replicas over several nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfers_per_token: Option<TrafficRange>,
}

/// `summary.json`: one entry per run, in the order of `--policy` and, within
/// a policy, of `--interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Windows read.
    pub windows: u64,
    /// Windows scored (all but the first).
    pub scored_windows: u64,
    /// Slots of the whole model (`layers × GPUs × slots per GPU`), the
    /// denominator of `reloaded_slots_per_window`.
    pub total_slots: u64,
    pub expert_bytes: Option<u64>,
    /// Bytes per second into one GPU, for `move_seconds`.
    pub link_bandwidth: Option<f64>,
    pub policies: Vec<RunSummary>,
}

/// One run: a policy at one re-plan interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The `--policy` argument (`optimal:previous`).
    pub name: String,
    /// Re-plan every this many windows; `None`: never after the first plan.
    pub interval: Option<u32>,
    /// Mean over scored windows of the experienced model imbalance.
    pub experienced_imbalance: f64,
    pub experienced_imbalance_optimal_routing: f64,
    /// Mean over scored windows of each window's own bound.
    pub oracle_imbalance: f64,
    /// Mean over scored windows of the slots re-loaded, as a fraction of
    /// `total_slots` (the first plan's loading is not counted: every policy
    /// pays it once).
    pub reloaded_slots_per_window: f64,
    pub bytes_per_window: Option<f64>,
    pub move_seconds_per_window: Option<f64>,
    /// Planning calls after the first window.
    pub plans: u64,
    /// Plans put in force after the first one.
    pub replans: u64,
    /// Mean wall time of one planning call.
    pub plan_ms: f64,
    pub plan_ms_max: f64,
    /// The window with the highest experienced imbalance, and that figure.
    pub worst_window: Option<u64>,
    pub worst_imbalance: Option<f64>,
    /// EPLB's experienced imbalance at this run's re-load rate, interpolated
    /// linearly over the EPLB runs of the sweep ("at equal movement budget");
    /// `None` for EPLB itself or when the rate is outside EPLB's sweep.
    pub eplb_at_equal_budget: Option<f64>,
    /// `experienced_imbalance / eplb_at_equal_budget`.
    pub vs_eplb_at_equal_budget: Option<f64>,
    /// Mean over the windows scored under a co-visit plan of
    /// [`WindowRecord::covisit_served`]; `None` when no plan had co-visit
    /// replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covisit_served: Option<f64>,
    /// Mean over the windows where it is known of
    /// [`WindowRecord::transfers_per_token`], and on how many windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfers_per_token: Option<TrafficRange>,
    #[serde(default)]
    pub transfers_known_windows: u64,
}

/// A run's experienced imbalance over time, averaged into at most
/// [`Series::CAPACITY`] points so that long histories stay small.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Windows per point (a power of two).
    pub width: u64,
    pub points: Vec<SeriesPoint>,
}

/// The mean of `count` consecutive scored windows starting at `window`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub window: u64,
    pub count: u64,
    pub value: f64,
}

impl Series {
    pub const CAPACITY: usize = 2048;

    pub fn push(&mut self, window: u64, value: f64) {
        self.width = self.width.max(1);
        match self.points.last_mut() {
            Some(last) if last.count < self.width => {
                let n = last.count as f64;
                last.value = (last.value * n + value) / (n + 1.0);
                last.count += 1;
            }
            _ => self.points.push(SeriesPoint {
                window,
                count: 1,
                value,
            }),
        }
        if self.points.len() > Self::CAPACITY {
            self.halve();
        }
    }

    /// Merges neighbouring points pairwise and doubles the width.
    fn halve(&mut self) {
        self.points = self
            .points
            .chunks(2)
            .map(|pair| {
                let count: u64 = pair.iter().map(|p| p.count).sum();
                let value =
                    pair.iter().map(|p| p.value * p.count as f64).sum::<f64>() / count as f64;
                SeriesPoint {
                    window: pair[0].window,
                    count,
                    value,
                }
            })
            .collect();
        self.width *= 2;
    }
}

/// Everything the HTML report draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportData {
    pub summary: Summary,
    /// Per run, in summary order: experienced imbalance over time.
    pub experienced: Vec<Series>,
    /// Per run: slots re-loaded by each re-plan (window, slots), averaged
    /// like the imbalance when there are many.
    pub reloads: Vec<Series>,
    /// Each window's oracle over time.
    pub oracle: Series,
    /// The first run's worst window, per layer and GPU.
    pub hottest: Option<Hotspot>,
}

/// One window's GPU loads under one run's plan: `gpu_load[layer][gpu]` over
/// the layer's ideal (1.0 is perfect balance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hotspot {
    pub run: usize,
    pub window: u64,
    pub model_imbalance: f64,
    pub gpu_load: Vec<Vec<f64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keeps_means_when_it_halves() {
        let mut series = Series::default();
        let n = Series::CAPACITY as u64 * 4 + 3;
        for w in 0..n {
            series.push(w, w as f64);
        }
        assert!(series.points.len() <= Series::CAPACITY);
        // 4 × CAPACITY + 3 windows need more than CAPACITY points at width 4.
        assert_eq!(series.width, 8);
        let total: u64 = series.points.iter().map(|p| p.count).sum();
        assert_eq!(total, n);
        let mean = series
            .points
            .iter()
            .map(|p| p.value * p.count as f64)
            .sum::<f64>()
            / n as f64;
        assert!((mean - (n - 1) as f64 / 2.0).abs() < 1e-6);
        assert_eq!(series.points[1].window, 8);
        assert_eq!(series.points[1].value, 11.5);
    }
}
