//! Synthetic traffic: batches of token routings whose expert popularity is
//! skewed and drifts, so the load-balancing loop can run without a model.
//!
//! Each layer keeps a log-popularity per expert. A token's affinity for an
//! expert is `sigmoid(popularity + noise)` with N(0, `token_noise`²) noise
//! per token and expert, and the token is routed by the real gate's
//! group-limited top-k ([`select`]). Popularity starts Zipf-like
//! (`-s·ln(rank)`, ranks shuffled over experts) or log-normal (N(0, σ²),
//! plus an optional N(0, σ_g²) group factor shared by each expert group),
//! takes a random-walk step of `drift_per_batch` per batch — rescaled so
//! the spread, and thus the skew, stays the same while identities drift —
//! and can be shaken on demand ([`TrafficGenerator::induce_drift`]).
//! Popularity and its drift come from one ChaCha8 stream seeded by `seed`;
//! tokens come from a second one seeded by `seed` and `stream`, so the nodes
//! of a cluster (one stream each) see the same hot experts but different
//! tokens, as data-parallel ranks of one model do.

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use ballast_solver::{LoadMatrix, ParseError, Topology};

use crate::agent::window::covisit_counts;
use crate::error::ConfigError;
use crate::matrix::Matrix;
use crate::moe::config::MoeConfig;
use crate::moe::gate::{select, TopK};
use crate::random::normal_matrix;

/// How unevenly experts are used.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Skew {
    /// Every expert equally popular.
    Uniform,
    /// Log-popularity `-exponent · ln(rank)`.
    Zipf { exponent: f64 },
    /// Log-popularity drawn from N(0, sigma²) per expert, plus one
    /// N(0, group_sigma²) term per expert group shared by the group's
    /// experts: DeepSeek-style group factors, which make some groups hot as
    /// a whole (and so some nodes, under node-local plans).
    LogNormal {
        sigma: f64,
        /// Absent in configurations written before group factors existed:
        /// 0, no group term.
        #[serde(default)]
        group_sigma: f64,
    },
}

/// Traffic settings (the wire form; [`TrafficGenerator::new`] checks them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficSpec {
    pub layers: usize,
    pub tokens_per_batch: usize,
    pub skew: Skew,
    /// Spread of per-token affinity noise: larger means less predictable tokens.
    pub token_noise: f64,
    /// Random-walk step of every log-popularity per batch.
    pub drift_per_batch: f64,
    pub seed: u64,
    /// Which token stream of the seed (e.g. the node index).
    #[serde(default)]
    pub stream: u64,
}

/// One batch: each layer's routing of the same tokens.
#[derive(Clone, Debug)]
pub struct Batch {
    pub index: u64,
    pub routings: Vec<TopK>,
}

impl Batch {
    /// Token→expert assignments per layer and expert: a telemetry window's `logical_load`.
    pub fn logical_load(&self) -> Vec<Vec<u64>> {
        self.routings.iter().map(|r| r.expert_counts()).collect()
    }
}

/// The load and co-visit counts of `batches` summed, as the workers of a
/// cluster report them with `--covisit` (experts in `topology`'s groups).
pub fn load_with_covisit(topology: &Topology, batches: &[Batch]) -> Result<LoadMatrix, ParseError> {
    let (layers, experts, groups) = (
        topology.num_layers(),
        topology.num_logical_experts(),
        topology.num_groups(),
    );
    let mut load = vec![vec![0.0; experts]; layers];
    let mut covisit = vec![vec![vec![0.0; groups]; experts]; layers];
    for batch in batches {
        for (l, routing) in batch.routings.iter().enumerate().take(layers) {
            if routing.num_experts() != experts {
                return Err(ParseError::Layer {
                    field: "load",
                    layer: l,
                    detail: format!(
                        "the batch routes {} experts, topology has {experts}",
                        routing.num_experts()
                    ),
                });
            }
            for (e, c) in routing.expert_counts().into_iter().enumerate() {
                load[l][e] += c as f64;
            }
            for (e, row) in covisit_counts(routing, groups).into_iter().enumerate() {
                for (k, c) in row.into_iter().enumerate() {
                    covisit[l][e][k] += c as f64;
                }
            }
        }
    }
    LoadMatrix::new(load, topology)?.with_covisit(covisit, topology)
}

/// The generator; call [`next_batch`](Self::next_batch) once per step.
#[derive(Clone, Debug)]
pub struct TrafficGenerator {
    config: MoeConfig,
    spec: TrafficSpec,
    /// Popularity, its drift and induced shuffles.
    rng: ChaCha8Rng,
    /// Per-token noise and hidden states.
    token_rng: ChaCha8Rng,
    popularity: Vec<Vec<f64>>,
    /// Mean and standard deviation each layer's popularity is held at.
    moments: Vec<(f64, f64)>,
    next_index: u64,
}

fn non_negative(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{value} is not a finite non-negative number"),
        ))
    }
}

fn moments(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

impl TrafficGenerator {
    pub fn new(config: &MoeConfig, spec: TrafficSpec) -> Result<Self, ConfigError> {
        if spec.layers == 0 {
            return Err(ConfigError::new("layers", "must be positive"));
        }
        non_negative("token_noise", spec.token_noise)?;
        non_negative("drift_per_batch", spec.drift_per_batch)?;
        match spec.skew {
            Skew::Uniform => {}
            Skew::Zipf { exponent } => non_negative("skew.exponent", exponent)?,
            Skew::LogNormal { sigma, group_sigma } => {
                non_negative("skew.sigma", sigma)?;
                non_negative("skew.group_sigma", group_sigma)?;
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let experts = config.num_experts();
        let popularity: Vec<Vec<f64>> = (0..spec.layers)
            .map(|_| match spec.skew {
                Skew::Uniform => vec![0.0; experts],
                Skew::Zipf { exponent } => {
                    let mut p: Vec<f64> = (1..=experts)
                        .map(|rank| -exponent * (rank as f64).ln())
                        .collect();
                    p.shuffle(&mut rng);
                    p
                }
                Skew::LogNormal { sigma, group_sigma } => {
                    let mut p: Vec<f64> = (0..experts)
                        .map(|_| sigma * rng.sample::<f64, _>(StandardNormal))
                        .collect();
                    // Drawn after the experts' terms, and only when asked
                    // for, so that `group_sigma: 0` leaves the stream, and
                    // thus the traffic of older configurations, unchanged.
                    if group_sigma > 0.0 {
                        for group in p.chunks_mut(config.group_size()) {
                            let factor = group_sigma * rng.sample::<f64, _>(StandardNormal);
                            group.iter_mut().for_each(|v| *v += factor);
                        }
                    }
                    p
                }
            })
            .collect();
        let moments = popularity.iter().map(|p| moments(p)).collect();
        let mut token_rng = ChaCha8Rng::seed_from_u64(spec.seed);
        token_rng.set_stream(spec.stream.wrapping_add(1));
        Ok(TrafficGenerator {
            config: config.clone(),
            spec,
            rng,
            token_rng,
            popularity,
            moments,
            next_index: 0,
        })
    }

    /// Current log-popularity of each expert in `layer`.
    pub fn popularity(&self, layer: usize) -> &[f64] {
        &self.popularity[layer]
    }

    /// Routes a fresh batch on every layer, then lets popularity drift one step.
    pub fn next_batch(&mut self) -> Batch {
        let (tokens, experts) = (self.spec.tokens_per_batch, self.config.num_experts());
        let zero_bias = vec![0.0f32; experts];
        let routings = (0..self.spec.layers)
            .map(|layer| {
                let noise = normal_matrix(&mut self.token_rng, tokens, experts);
                let popularity = &self.popularity[layer];
                let scores = Matrix::from_fn(tokens, experts, |t, e| {
                    let logit = popularity[e] + self.spec.token_noise * f64::from(noise.get(t, e));
                    (1.0 / (1.0 + (-logit).exp())) as f32
                });
                select(&self.config, &scores, &zero_bias)
            })
            .collect();
        self.drift();
        let index = self.next_index;
        self.next_index += 1;
        Batch { index, routings }
    }

    /// N(0, 1) hidden states for a batch, when the experts should really run.
    pub fn hidden_states(&mut self) -> Matrix<f32> {
        normal_matrix(
            &mut self.token_rng,
            self.spec.tokens_per_batch,
            self.config.hidden(),
        )
    }

    /// Shuffles the popularity of a random `fraction` of each layer's experts
    /// among themselves: a sudden change of which experts are hot, with the
    /// same overall skew.
    pub fn induce_drift(&mut self, fraction: f64) {
        let experts = self.config.num_experts();
        let count = ((fraction.clamp(0.0, 1.0) * experts as f64).round() as usize).min(experts);
        for layer in &mut self.popularity {
            let mut chosen: Vec<usize> = (0..experts).collect();
            chosen.shuffle(&mut self.rng);
            chosen.truncate(count);
            let mut values: Vec<f64> = chosen.iter().map(|&e| layer[e]).collect();
            values.shuffle(&mut self.rng);
            for (&e, v) in chosen.iter().zip(values) {
                layer[e] = v;
            }
        }
    }

    fn drift(&mut self) {
        if self.spec.drift_per_batch == 0.0 {
            return;
        }
        for (layer, &(mean0, std0)) in self.popularity.iter_mut().zip(&self.moments) {
            for p in layer.iter_mut() {
                *p += self.spec.drift_per_batch * self.rng.sample::<f64, _>(StandardNormal);
            }
            let (mean, std) = moments(layer);
            let stretch = if std > 0.0 { std0 / std } else { 0.0 };
            for p in layer.iter_mut() {
                *p = mean0 + (*p - mean) * stretch;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moe::config::small_spec;

    fn spec(skew: Skew, drift: f64) -> TrafficSpec {
        TrafficSpec {
            layers: 2,
            tokens_per_batch: 256,
            skew,
            token_noise: 0.5,
            drift_per_batch: drift,
            seed: 9,
            stream: 0,
        }
    }

    fn generator(skew: Skew, drift: f64) -> TrafficGenerator {
        TrafficGenerator::new(&MoeConfig::new(small_spec()).unwrap(), spec(skew, drift)).unwrap()
    }

    /// Max over mean of per-expert counts.
    fn peak_over_mean(counts: &[u64]) -> f64 {
        let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
        *counts.iter().max().unwrap() as f64 / mean
    }

    #[test]
    fn same_seed_same_traffic() {
        let (mut a, mut b) = (
            generator(Skew::Zipf { exponent: 1.0 }, 0.1),
            generator(Skew::Zipf { exponent: 1.0 }, 0.1),
        );
        for _ in 0..3 {
            assert_eq!(a.next_batch().routings, b.next_batch().routings);
        }
    }

    #[test]
    fn streams_share_popularity_but_not_tokens() {
        let config = MoeConfig::new(small_spec()).unwrap();
        let mut other = spec(Skew::Zipf { exponent: 1.0 }, 0.0);
        other.stream = 1;
        let mut a = generator(Skew::Zipf { exponent: 1.0 }, 0.0);
        let mut b = TrafficGenerator::new(&config, other).unwrap();
        assert_eq!(a.popularity(0), b.popularity(0));
        assert_ne!(a.next_batch().routings, b.next_batch().routings);
        a.induce_drift(0.5);
        b.induce_drift(0.5);
        assert_eq!(a.popularity(1), b.popularity(1));
    }

    #[test]
    fn skew_concentrates_load() {
        let uniform = generator(Skew::Uniform, 0.0).next_batch().logical_load();
        let zipf = generator(Skew::Zipf { exponent: 1.2 }, 0.0)
            .next_batch()
            .logical_load();
        let lognormal = generator(
            Skew::LogNormal {
                sigma: 1.5,
                group_sigma: 0.0,
            },
            0.0,
        )
        .next_batch()
        .logical_load();
        assert_eq!(uniform[0].iter().sum::<u64>(), 256 * 4);
        assert!(peak_over_mean(&uniform[0]) < 1.5, "{:?}", uniform[0]);
        assert!(peak_over_mean(&zipf[0]) > 2.0, "{:?}", zipf[0]);
        assert!(peak_over_mean(&lognormal[0]) > 2.0, "{:?}", lognormal[0]);
    }

    #[test]
    fn drift_moves_popularity_but_keeps_its_spread() {
        let mut g = generator(
            Skew::LogNormal {
                sigma: 1.0,
                group_sigma: 0.0,
            },
            0.3,
        );
        let before = g.popularity(0).to_vec();
        for _ in 0..20 {
            g.next_batch();
        }
        let after = g.popularity(0);
        let (m0, s0) = moments(&before);
        let (m1, s1) = moments(after);
        assert!((m0 - m1).abs() < 1e-9 && (s0 - s1).abs() < 1e-9);
        let moved: f64 = before
            .iter()
            .zip(after)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>()
            / 16.0;
        assert!(moved > 0.3, "{moved}");
    }

    #[test]
    fn induced_drift_permutes_popularity() {
        let mut g = generator(Skew::Zipf { exponent: 1.0 }, 0.0);
        let before = g.popularity(1).to_vec();
        g.induce_drift(1.0);
        let after = g.popularity(1).to_vec();
        assert_ne!(before, after);
        let (mut a, mut b) = (before, after);
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        assert_eq!(a, b);
    }

    /// The group term is shared by a group's experts: with `sigma` 0 every
    /// expert of a group has the same popularity, and groups differ.
    #[test]
    fn group_factors_are_shared_within_a_group() {
        let g = generator(
            Skew::LogNormal {
                sigma: 0.0,
                group_sigma: 1.0,
            },
            0.0,
        );
        let config = MoeConfig::new(small_spec()).unwrap();
        let groups: Vec<&[f64]> = g.popularity(0).chunks(config.group_size()).collect();
        assert_eq!(groups.len(), config.num_groups());
        for group in &groups {
            assert!(group.iter().all(|v| *v == group[0]), "{group:?}");
        }
        assert!(groups.windows(2).any(|w| w[0][0] != w[1][0]));
    }

    /// Configurations from before group factors parse (as `group_sigma` 0)
    /// and draw exactly the popularity they drew before.
    #[test]
    fn old_lognormal_configs_are_unchanged() {
        let old: Skew = serde_json::from_str(r#"{"kind": "log_normal", "sigma": 0.8}"#).unwrap();
        assert_eq!(
            old,
            Skew::LogNormal {
                sigma: 0.8,
                group_sigma: 0.0
            }
        );
        let config = MoeConfig::new(small_spec()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let before: Vec<f64> = (0..config.num_experts())
            .map(|_| 0.8 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        assert_eq!(generator(old, 0.0).popularity(0), &before[..]);
        let grouped = generator(
            Skew::LogNormal {
                sigma: 0.8,
                group_sigma: 0.5,
            },
            0.0,
        );
        assert_ne!(grouped.popularity(0), &before[..]);
    }

    #[test]
    fn hidden_states_have_the_batch_shape() {
        let h = generator(Skew::Uniform, 0.0).hidden_states();
        assert_eq!((h.rows(), h.cols()), (256, 256));
        assert!(h.data().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bad_settings_are_rejected() {
        let config = MoeConfig::new(small_spec()).unwrap();
        let mut s = spec(Skew::Uniform, 0.0);
        s.token_noise = -1.0;
        assert_eq!(
            TrafficGenerator::new(&config, s).unwrap_err().field,
            "token_noise"
        );
        let s = spec(Skew::Zipf { exponent: f64::NAN }, 0.0);
        assert_eq!(
            TrafficGenerator::new(&config, s).unwrap_err().field,
            "skew.exponent"
        );
        let s = spec(
            Skew::LogNormal {
                sigma: 1.0,
                group_sigma: -1.0,
            },
            0.0,
        );
        assert_eq!(
            TrafficGenerator::new(&config, s).unwrap_err().field,
            "skew.group_sigma"
        );
        let mut s = spec(Skew::Uniform, 0.0);
        s.layers = 0;
        assert!(TrafficGenerator::new(&config, s).is_err());
    }
}
