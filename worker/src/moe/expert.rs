//! SwiGLU experts: `y = (silu(x·W_gateᵀ) ⊙ (x·W_upᵀ)) · W_downᵀ`, in FP8.
//!
//! Gate and up projections are stacked into one `2I × H` matrix so one GEMM
//! computes both; the intermediate is formed in f32 and re-quantized with
//! 1×128 scales before the down projection, as DeepSeek-V3 does.

use rayon::prelude::*;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{MoeError, QuantError, ShapeError};
use crate::fp8::gemm::{grouped_gemm, GemmProblem, Output, PackedWeights};
use crate::fp8::quant::{QuantizedActivations, QuantizedWeights, ScaleMode};
use crate::matrix::Matrix;
use crate::random::scaled_normal_matrix;

/// An expert's unquantized (master) weights, for quantization and f64 references.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpertMaster {
    gate: Matrix<f32>,
    up: Matrix<f32>,
    down: Matrix<f32>,
}

impl ExpertMaster {
    /// `gate` and `up` are `width × hidden`, `down` is `hidden × width`.
    pub fn new(gate: Matrix<f32>, up: Matrix<f32>, down: Matrix<f32>) -> Result<Self, ShapeError> {
        let (width, hidden) = (gate.rows(), gate.cols());
        let expect = |what, m: &Matrix<f32>, rows, cols| {
            if m.rows() == rows && m.cols() == cols {
                Ok(())
            } else {
                Err(ShapeError::Mismatch {
                    what,
                    dim: "values",
                    expected: rows * cols,
                    actual: m.rows() * m.cols(),
                })
            }
        };
        expect("up projection", &up, width, hidden)?;
        expect("down projection", &down, hidden, width)?;
        Ok(ExpertMaster { gate, up, down })
    }

    /// Random weights with variance 1/fan-in, so activations keep unit scale.
    pub fn random(rng: &mut impl rand::Rng, hidden: usize, width: usize) -> Self {
        let in_std = 1.0 / (hidden as f32).sqrt();
        let out_std = 1.0 / (width as f32).sqrt();
        ExpertMaster {
            gate: scaled_normal_matrix(rng, width, hidden, in_std),
            up: scaled_normal_matrix(rng, width, hidden, in_std),
            down: scaled_normal_matrix(rng, hidden, width, out_std),
        }
    }

    /// FP8 weights with 128×128 block scales.
    pub fn quantize(&self, mode: ScaleMode) -> Result<ExpertWeights, QuantError> {
        let stacked = [self.gate.data(), self.up.data()].concat();
        let gate_up = Matrix::new(2 * self.gate.rows(), self.gate.cols(), stacked)?;
        Ok(ExpertWeights {
            gate_up: PackedWeights::pack(&QuantizedWeights::quantize(&gate_up, mode)?),
            down: PackedWeights::pack(&QuantizedWeights::quantize(&self.down, mode)?),
        })
    }

    /// The expert applied to one token, in f64.
    pub fn forward_f64(&self, x: &[f64]) -> Vec<f64> {
        let project = |m: &Matrix<f32>, v: &[f64]| -> Vec<f64> {
            (0..m.rows())
                .map(|r| {
                    m.row(r)
                        .iter()
                        .zip(v)
                        .map(|(&w, &x)| f64::from(w) * x)
                        .sum()
                })
                .collect()
        };
        let gate = project(&self.gate, x);
        let up = project(&self.up, x);
        let h: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        project(&self.down, &h)
    }
}

/// An expert's FP8 weights as a GPU slot holds them. Cloning copies the bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpertWeights {
    gate_up: PackedWeights,
    down: PackedWeights,
}

impl ExpertWeights {
    /// Model width.
    pub fn hidden(&self) -> usize {
        self.down.rows()
    }

    /// Intermediate width.
    pub fn width(&self) -> usize {
        self.down.cols()
    }

    /// Device bytes: FP8 codes plus scales of all three projections.
    pub fn bytes(&self) -> usize {
        self.gate_up.bytes() + self.down.bytes()
    }

    /// XXH3 of all codes and scales, to verify a copy.
    pub fn checksum(&self) -> u64 {
        let mut hasher = Xxh3::new();
        self.gate_up.hash_into(&mut hasher);
        self.down.hash_into(&mut hasher);
        hasher.digest()
    }
}

/// One expert's share of a grouped forward pass.
pub struct ExpertJob<'a> {
    pub tokens: &'a QuantizedActivations,
    pub weights: &'a ExpertWeights,
}

/// Runs every job's expert on its tokens with two grouped GEMMs; returns
/// each job's `tokens × hidden` output in f32.
pub fn forward_grouped(
    jobs: &[ExpertJob<'_>],
    mode: ScaleMode,
) -> Result<Vec<Matrix<f32>>, MoeError> {
    let mut gate_up: Vec<Matrix<f32>> = jobs
        .iter()
        .map(|j| Matrix::zeros(j.tokens.rows(), 2 * j.weights.width()))
        .collect();
    grouped_gemm(
        jobs.iter()
            .zip(gate_up.iter_mut())
            .map(|(j, out)| GemmProblem {
                a: j.tokens,
                b: &j.weights.gate_up,
                out: Output::F32(out.data_mut()),
            })
            .collect(),
    )?;
    let intermediate = gate_up
        .par_iter()
        .map(|g| QuantizedActivations::quantize(&swiglu(g), mode))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out: Vec<Matrix<f32>> = jobs
        .iter()
        .map(|j| Matrix::zeros(j.tokens.rows(), j.weights.hidden()))
        .collect();
    grouped_gemm(
        jobs.iter()
            .zip(&intermediate)
            .zip(out.iter_mut())
            .map(|((j, h), o)| GemmProblem {
                a: h,
                b: &j.weights.down,
                out: Output::F32(o.data_mut()),
            })
            .collect(),
    )?;
    Ok(out)
}

/// `silu(gate) ⊙ up` from the stacked `[gate | up]` rows.
fn swiglu(gate_up: &Matrix<f32>) -> Matrix<f32> {
    let width = gate_up.cols() / 2;
    Matrix::from_fn(gate_up.rows(), width, |t, i| {
        let (g, u) = (gate_up.get(t, i), gate_up.get(t, width + i));
        g / (1.0 + (-g).exp()) * u
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accuracy::reference::rel_frobenius;
    use crate::random::normal_matrix;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn fp8_expert_tracks_the_f64_expert() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let master = ExpertMaster::random(&mut rng, 256, 128);
        let weights = master.quantize(ScaleMode::Exact).unwrap();
        assert_eq!((weights.hidden(), weights.width()), (256, 128));
        assert_eq!(weights.bytes(), 3 * 256 * 128 + (4 + 2) * 4);
        let x = normal_matrix(&mut rng, 24, 256);
        let tokens = QuantizedActivations::quantize(&x, ScaleMode::Exact).unwrap();
        let out = forward_grouped(
            &[ExpertJob {
                tokens: &tokens,
                weights: &weights,
            }],
            ScaleMode::Exact,
        )
        .unwrap()
        .remove(0);
        let reference: Vec<f64> = (0..24)
            .flat_map(|t| {
                master.forward_f64(&x.row(t).iter().map(|&v| f64::from(v)).collect::<Vec<_>>())
            })
            .collect();
        let err = rel_frobenius(out.data(), &reference);
        assert!(err > 0.02 && err < 0.08, "{err}");
    }

    #[test]
    fn shapes_are_checked() {
        let m = |r, c| Matrix::<f32>::zeros(r, c);
        assert!(ExpertMaster::new(m(128, 256), m(128, 256), m(256, 128)).is_ok());
        assert!(ExpertMaster::new(m(128, 256), m(128, 128), m(256, 128)).is_err());
        assert!(ExpertMaster::new(m(128, 256), m(128, 256), m(128, 128)).is_err());
    }

    #[test]
    fn checksum_distinguishes_experts() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let a = ExpertMaster::random(&mut rng, 128, 128)
            .quantize(ScaleMode::Exact)
            .unwrap();
        let b = ExpertMaster::random(&mut rng, 128, 128)
            .quantize(ScaleMode::Exact)
            .unwrap();
        assert_eq!(a.checksum(), a.clone().checksum());
        assert_ne!(a.checksum(), b.checksum());
    }
}
