//! DeepSeek-V3's gate (the MoE router; not the SwiGLU gate projection of
//! [`expert`](crate::moe::expert)): sigmoid affinities, a per-expert bias that
//! steers selection only, and group-limited top-k.
//!
//! For each token: `s = sigmoid(x · W_rᵀ)`; the biased scores `s + b` decide
//! everything about selection — each group's score is the sum of its two best
//! biased scores, the best `topk_groups` groups survive, and the best `top_k`
//! experts inside them are chosen — while the gates use the unbiased `s`,
//! normalized over the chosen experts and multiplied by `routed_scaling`.
//! Ties go to the lower index, so selection is deterministic.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::error::ShapeError;
use crate::matrix::Matrix;
use crate::moe::config::MoeConfig;

/// What the gate decided for a batch: each token's top-k experts and the
/// weight (gate) of each in the token's output.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    num_experts: usize,
    top_k: usize,
    experts: Vec<u32>,
    gates: Vec<f32>,
}

impl TopK {
    /// Tokens routed.
    pub fn tokens(&self) -> usize {
        self.experts.len() / self.top_k
    }

    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// Logical experts of the layer this selection is for.
    pub fn num_experts(&self) -> usize {
        self.num_experts
    }

    /// Token `t`'s experts, best first.
    pub fn experts_of(&self, t: usize) -> &[u32] {
        &self.experts[t * self.top_k..(t + 1) * self.top_k]
    }

    /// Token `t`'s gates, in the order of [`experts_of`](Self::experts_of).
    pub fn gates_of(&self, t: usize) -> &[f32] {
        &self.gates[t * self.top_k..(t + 1) * self.top_k]
    }

    /// Token→expert assignments per expert: the load a worker reports.
    pub fn expert_counts(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.num_experts];
        for &e in &self.experts {
            counts[e as usize] += 1;
        }
        counts
    }
}

/// Gate weights (`num_experts × hidden`) and selection bias.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    weight: Matrix<f32>,
    bias: Vec<f32>,
}

impl Gate {
    /// Checks that `weight` is `num_experts × hidden` and `bias` has one
    /// finite value per expert.
    pub fn new(
        config: &MoeConfig,
        weight: Matrix<f32>,
        bias: Vec<f32>,
    ) -> Result<Self, ShapeError> {
        if weight.rows() != config.num_experts() || weight.cols() != config.hidden() {
            return Err(ShapeError::Mismatch {
                what: "router weight",
                dim: "values",
                expected: config.num_experts() * config.hidden(),
                actual: weight.rows() * weight.cols(),
            });
        }
        if bias.len() != config.num_experts() || bias.iter().any(|b| !b.is_finite()) {
            return Err(ShapeError::Mismatch {
                what: "router bias",
                dim: "finite values",
                expected: config.num_experts(),
                actual: bias.iter().filter(|b| b.is_finite()).count(),
            });
        }
        Ok(Gate { weight, bias })
    }

    /// Sigmoid affinities, `tokens × num_experts`, computed in f32.
    ///
    /// # Panics
    /// If `hidden` is not `tokens × hidden` (checked by the layer).
    pub fn scores(&self, hidden: &Matrix<f32>) -> Matrix<f32> {
        assert_eq!(hidden.cols(), self.weight.cols(), "router input width");
        let experts = self.weight.rows();
        let mut scores = Matrix::zeros(hidden.rows(), experts);
        scores
            .data_mut()
            .par_chunks_mut(experts)
            .enumerate()
            .for_each(|(t, row)| {
                for (e, s) in row.iter_mut().enumerate() {
                    *s = sigmoid(dot(hidden.row(t), self.weight.row(e)));
                }
            });
        scores
    }

    /// Routes `hidden` (`tokens × hidden`): each token's top-k experts and gates.
    pub fn route(&self, config: &MoeConfig, hidden: &Matrix<f32>) -> TopK {
        select(config, &self.scores(hidden), &self.bias)
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// f32 dot product with eight partial sums, so it vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut partial = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            partial[i] += x[i] * y[i];
        }
    }
    partial.iter().sum::<f32>() + tail
}

/// Descending by value, ascending by index on ties.
fn best_first(a: &(f32, usize), b: &(f32, usize)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Per-thread buffers of (score, index) pairs for [`select`].
struct Ranking {
    candidates: Vec<(f32, usize)>,
    groups: Vec<(f32, usize)>,
}

/// Group-limited top-k selection on given affinities (`tokens × num_experts`,
/// each in (0, 1)) with a selection-only `bias`.
///
/// # Panics
/// If `scores` or `bias` do not have `num_experts` columns (a caller bug).
pub fn select(config: &MoeConfig, scores: &Matrix<f32>, bias: &[f32]) -> TopK {
    let (num_experts, top_k) = (config.num_experts(), config.top_k());
    assert_eq!(scores.cols(), num_experts, "score columns");
    assert_eq!(bias.len(), num_experts, "bias length");
    let group_size = config.group_size();
    let mut experts = vec![0u32; scores.rows() * top_k];
    let mut gates = vec![0.0f32; scores.rows() * top_k];
    experts
        .par_chunks_mut(top_k)
        .zip(gates.par_chunks_mut(top_k))
        .enumerate()
        .for_each_init(
            || Ranking {
                candidates: Vec::with_capacity(num_experts),
                groups: Vec::with_capacity(config.num_groups()),
            },
            |Ranking { candidates, groups }, (t, (chosen, gate))| {
                let s = scores.row(t);
                groups.clear();
                for g in 0..config.num_groups() {
                    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                    for e in g * group_size..(g + 1) * group_size {
                        let v = s[e] + bias[e];
                        if v > first {
                            second = first;
                            first = v;
                        } else if v > second {
                            second = v;
                        }
                    }
                    let score = if group_size == 1 {
                        first
                    } else {
                        first + second
                    };
                    groups.push((score, g));
                }
                groups.sort_by(best_first);
                candidates.clear();
                for &(_, g) in &groups[..config.topk_groups()] {
                    candidates.extend(
                        (g * group_size..(g + 1) * group_size).map(|e| (s[e] + bias[e], e)),
                    );
                }
                candidates.sort_by(best_first);
                let picked = &candidates[..top_k];
                // DeepSeek-V3 adds 1e-20 so all-zero affinities cannot divide by zero.
                let total: f32 = picked.iter().map(|&(_, e)| s[e]).sum::<f32>() + 1e-20;
                for (i, &(_, e)) in picked.iter().enumerate() {
                    chosen[i] = e as u32;
                    gate[i] = s[e] / total * config.routed_scaling();
                }
            },
        );
    TopK {
        num_experts,
        top_k,
        experts,
        gates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moe::config::small_spec;

    fn config() -> MoeConfig {
        MoeConfig::new(small_spec()).unwrap()
    }

    #[test]
    fn group_limit_beats_a_single_high_score() {
        // 16 experts, 4 groups of 4, 2 groups per token, 4 experts per token.
        let mut s = vec![0.1f32; 16];
        s[0] = 0.7; // group 0: 1.4
        s[1] = 0.7;
        s[4] = 0.6; // group 1: 1.2
        s[5] = 0.6;
        s[12] = 0.95; // group 3: the best expert, but a weak group (1.05)
        let scores = Matrix::new(1, 16, s).unwrap();
        let r = select(&config(), &scores, &[0.0; 16]);
        assert_eq!(r.experts_of(0), &[0, 1, 4, 5]);
    }

    #[test]
    fn bias_steers_selection_but_not_gates() {
        let s: Vec<f32> = (0..16).map(|e| 0.2 + 0.01 * e as f32).collect();
        let scores = Matrix::new(1, 16, s.clone()).unwrap();
        let mut bias = vec![0.0f32; 16];
        bias[1] = 1.0;
        bias[2] = 1.0;
        let r = select(&config(), &scores, &bias);
        // Group 0 wins on its bias; inside the groups kept (0 and 3) the
        // biased experts 2 and 1 come first, then 15 and 14.
        assert_eq!(r.experts_of(0), &[2, 1, 15, 14]);
        let total = s[1] + s[2] + s[15] + s[14];
        for (&e, &g) in r.experts_of(0).iter().zip(r.gates_of(0)) {
            assert!((g - s[e as usize] / total * 2.5).abs() < 1e-6);
        }
        let gate_sum: f32 = r.gates_of(0).iter().sum();
        assert!((gate_sum - 2.5).abs() < 1e-5);
    }

    #[test]
    fn router_scores_are_sigmoids_of_logits() {
        let c = config();
        let weight = Matrix::from_fn(16, 256, |e, h| if h == e { 1.0 } else { 0.0 });
        let gate = Gate::new(&c, weight, vec![0.0; 16]).unwrap();
        let hidden = Matrix::from_fn(2, 256, |t, h| {
            if h < 16 {
                (t as f32 + 1.0) * (h as f32 - 8.0)
            } else {
                0.0
            }
        });
        let scores = gate.scores(&hidden);
        assert!((scores.get(0, 8) - 0.5).abs() < 1e-7);
        assert!((scores.get(1, 3) - sigmoid(-10.0)).abs() < 1e-7);
        let routing = gate.route(&c, &hidden);
        assert_eq!(routing.tokens(), 2);
        assert_eq!(routing.expert_counts().iter().sum::<u64>(), 8);
        assert!(Gate::new(&c, Matrix::zeros(15, 256), vec![0.0; 16]).is_err());
        assert!(Gate::new(&c, Matrix::zeros(16, 256), vec![f32::NAN; 16]).is_err());
    }

    #[test]
    fn dot_matches_sequential_sum_on_integers() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..19).map(|i| (i % 3) as f32).collect();
        let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b), expected);
    }
}
