//! Generated load traces for tuning and benchmarks, shaped like the sample
//! trace (`data/traces/prefill_drift`): per layer, log-normal expert
//! popularity times a log-normal factor per group; popularity drifts as a
//! mean-reverting random walk; now and then a burst multiplies a few
//! experts of one group for a few windows; counts carry Poisson-like noise.
//!
//! The same seed gives the same trace.

use ballast_solver::{LoadMatrix, Topology};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// The shape of a generated trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceShape {
    /// Spread of expert popularity (σ of log popularity).
    pub expert_sigma: f64,
    /// Spread of group popularity (σ of the log group factor).
    pub group_sigma: f64,
    /// Per-window σ of the random walk of log popularity.
    pub drift: f64,
    /// Chance per window that a burst starts.
    pub burst_rate: f64,
    /// Popularity multiplier of the bursting experts.
    pub burst_factor: f64,
    /// Token→expert assignments per layer and window.
    pub assignments_per_layer: f64,
    pub seed: u64,
}

impl Default for TraceShape {
    /// Close to the sample trace: σ 0.7, group factors of ~±30 %, 5 %
    /// relative drift per window, a burst every ~8 windows.
    fn default() -> Self {
        TraceShape {
            expert_sigma: 0.7,
            group_sigma: 0.3,
            drift: 0.05,
            burst_rate: 0.12,
            burst_factor: 3.0,
            assignments_per_layer: 1.05e6,
            seed: 1,
        }
    }
}

/// Log popularity is pulled back to its start by this share per window, so
/// long traces stay as skewed as short ones.
const REVERSION: f64 = 0.02;
const BURST_EXPERTS: usize = 4;
const BURST_WINDOWS: u32 = 3;

/// An endless generated trace for one topology.
pub struct Generator {
    topology: Topology,
    shape: TraceShape,
    rng: ChaCha8Rng,
    /// `[layer][expert]` log popularity, and where it reverts to.
    log_popularity: Vec<Vec<f64>>,
    anchor: Vec<Vec<f64>>,
    /// Active bursts: (layer, experts, windows left).
    bursts: Vec<(usize, Vec<usize>, u32)>,
}

impl Generator {
    pub fn new(topology: &Topology, shape: TraceShape) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(shape.seed);
        let e = topology.num_logical_experts();
        let per_group = topology.experts_per_group();
        let anchor: Vec<Vec<f64>> = (0..topology.num_layers())
            .map(|_| {
                let groups: Vec<f64> = (0..topology.num_groups())
                    .map(|_| shape.group_sigma * normal(&mut rng))
                    .collect();
                (0..e)
                    .map(|x| groups[x / per_group] + shape.expert_sigma * normal(&mut rng))
                    .collect()
            })
            .collect();
        Generator {
            topology: topology.clone(),
            shape,
            rng,
            log_popularity: anchor.clone(),
            anchor,
            bursts: Vec::new(),
        }
    }

    /// The next window's load.
    pub fn next_window(&mut self) -> LoadMatrix {
        let shape = self.shape;
        let e = self.topology.num_logical_experts();
        let layers = self.topology.num_layers();
        for (row, anchor) in self.log_popularity.iter_mut().zip(&self.anchor) {
            for (p, a) in row.iter_mut().zip(anchor) {
                *p += REVERSION * (a - *p) + shape.drift * normal(&mut self.rng);
            }
        }
        if self.rng.random::<f64>() < shape.burst_rate {
            let per_group = self.topology.experts_per_group();
            let group = self.rng.random_range(0..self.topology.num_groups());
            for layer in 0..layers {
                let experts = (0..BURST_EXPERTS.min(per_group))
                    .map(|_| group * per_group + self.rng.random_range(0..per_group))
                    .collect();
                self.bursts.push((layer, experts, BURST_WINDOWS));
            }
        }
        let mut rows: Vec<Vec<f64>> = self
            .log_popularity
            .iter()
            .map(|row| row.iter().map(|p| p.exp()).collect())
            .collect();
        for (layer, experts, _) in &self.bursts {
            for &x in experts {
                rows[*layer][x] *= shape.burst_factor;
            }
        }
        self.bursts.retain_mut(|(_, _, left)| {
            *left -= 1;
            *left > 0
        });
        for row in &mut rows {
            let total: f64 = row.iter().sum();
            for v in row.iter_mut() {
                let mean = shape.assignments_per_layer * *v / total;
                *v = (mean + mean.sqrt() * normal(&mut self.rng))
                    .round()
                    .max(0.0);
            }
        }
        debug_assert!(rows.iter().all(|r| r.len() == e));
        LoadMatrix::new(rows, &self.topology).expect("generated loads are finite and non-negative")
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 3, "num_logical_experts": 16, "num_groups": 4,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 5}"#,
        )
        .unwrap()
    }

    #[test]
    fn same_seed_same_trace_and_loads_drift() {
        let t = topology();
        let mut a = Generator::new(&t, TraceShape::default());
        let mut b = Generator::new(&t, TraceShape::default());
        let first = a.next_window();
        assert_eq!(first, b.next_window());
        let mut later = first.clone();
        for _ in 0..20 {
            later = a.next_window();
        }
        assert_ne!(first, later);
        let total: f64 = later.layer(0).iter().sum();
        assert!((total / 1.05e6 - 1.0).abs() < 0.01, "{total}");
    }

    #[test]
    fn without_drift_noise_or_bursts_the_shape_holds() {
        let t = topology();
        let shape = TraceShape {
            drift: 0.0,
            burst_rate: 0.0,
            assignments_per_layer: 1e12,
            ..TraceShape::default()
        };
        let mut g = Generator::new(&t, shape);
        let (x, y) = (g.next_window(), g.next_window());
        for (a, b) in x.values().iter().zip(y.values()) {
            assert!((a / b - 1.0).abs() < 1e-4);
        }
    }
}
