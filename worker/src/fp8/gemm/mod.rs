//! The production FP8 grouped GEMM: `C = A · Wᵀ` for several experts at once.
//!
//! `A` is FP8 tokens with 1×128 scales ([`QuantizedActivations`]), `W` FP8
//! weights with 128×128 scales, pre-packed into panels ([`PackedWeights`]).
//! Each 128-element K block is summed in f32 (products of two E4M3 values are
//! exact in f32), multiplied by `f32(s_a · s_b)` and accumulated into C in
//! f32 in K-block order: DeepSeek-V3's "promotion every N_C = 128" with a
//! better-than-tensor-core block accumulator (see
//! [`tensor_core`](crate::fp8::tensor_core) for the hardware's). The output
//! is f32 or BF16 (round to nearest even).
//!
//! Speed on CPU comes from decoding FP8 to f32 while packing (a table for
//! tokens, SIMD bit manipulation for weight panels, [`stream`]), a 6×16
//! AVX2/FMA micro-kernel selected at run time ([`isa`]), and rayon across
//! output tiles of all problems. Results do not depend on the thread count.
//!
//! ```
//! use ballast_worker::fp8::gemm::{gemm, PackedWeights};
//! use ballast_worker::fp8::quant::{QuantizedActivations, QuantizedWeights, ScaleMode};
//! use ballast_worker::matrix::Matrix;
//!
//! let x = Matrix::from_fn(3, 256, |t, k| ((t + k) % 7) as f32 - 3.0);
//! let w = Matrix::from_fn(128, 256, |n, k| if n == k { 1.0 } else { 0.0 });
//! // Power-of-two scales represent these small integers exactly.
//! let a = QuantizedActivations::quantize(&x, ScaleMode::PowerOfTwo)?;
//! let b = PackedWeights::pack(&QuantizedWeights::quantize(&w, ScaleMode::PowerOfTwo)?);
//! let y = gemm(&a, &b)?;
//! assert_eq!(y.row(1)[..4], [-2.0, -1.0, 0.0, 1.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod driver;
pub mod isa;
mod kernel;
mod packed;
pub mod stream;

use half::bf16;

pub use packed::PackedWeights;

use crate::error::ShapeError;
use crate::fp8::quant::QuantizedActivations;
use crate::matrix::Matrix;
use isa::Isa;

/// Rows of C per micro-kernel call.
pub const MR: usize = 6;
/// Columns of C per micro-kernel call, and the width of a weight panel.
pub const NR: usize = 16;

/// Where one problem's `M × N` result goes (row-major).
pub enum Output<'a> {
    F32(&'a mut [f32]),
    Bf16(&'a mut [bf16]),
}

impl Output<'_> {
    fn len(&self) -> usize {
        match self {
            Output::F32(out) => out.len(),
            Output::Bf16(out) => out.len(),
        }
    }
}

/// One expert's GEMM within a grouped call: `out = a · bᵀ`.
pub struct GemmProblem<'a> {
    pub a: &'a QuantizedActivations,
    pub b: &'a PackedWeights,
    pub out: Output<'a>,
}

/// Runs all `problems` in one parallel pass (token counts may differ,
/// including zero), with the best kernel this CPU supports.
pub fn grouped_gemm(problems: Vec<GemmProblem<'_>>) -> Result<(), ShapeError> {
    grouped_gemm_on(Isa::best(), problems)
}

/// [`grouped_gemm`] on a chosen instruction set (which must be supported).
pub(crate) fn grouped_gemm_on(isa: Isa, problems: Vec<GemmProblem<'_>>) -> Result<(), ShapeError> {
    assert!(isa.is_supported(), "{isa:?} is not supported on this CPU");
    for p in &problems {
        if p.a.cols() != p.b.cols() {
            return Err(ShapeError::Mismatch {
                what: "gemm",
                dim: "input features",
                expected: p.b.cols(),
                actual: p.a.cols(),
            });
        }
        if p.out.len() != p.a.rows() * p.b.rows() {
            return Err(ShapeError::Mismatch {
                what: "gemm output",
                dim: "values",
                expected: p.a.rows() * p.b.rows(),
                actual: p.out.len(),
            });
        }
    }
    driver::run(isa, problems);
    Ok(())
}

/// One GEMM with f32 output.
pub fn gemm(a: &QuantizedActivations, b: &PackedWeights) -> Result<Matrix<f32>, ShapeError> {
    let mut out = Matrix::zeros(a.rows(), b.rows());
    grouped_gemm(vec![GemmProblem {
        a,
        b,
        out: Output::F32(out.data_mut()),
    }])?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accuracy::reference;
    use crate::fp8::quant::{QuantizedWeights, ScaleMode};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn inputs(m: usize, n: usize, k: usize, seed: u64) -> (QuantizedActivations, QuantizedWeights) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = crate::random::normal_matrix(&mut rng, m, k);
        let w = crate::random::normal_matrix(&mut rng, n, k);
        (
            QuantizedActivations::quantize(&x, ScaleMode::Exact).unwrap(),
            QuantizedWeights::quantize(&w, ScaleMode::Exact).unwrap(),
        )
    }

    fn run_on(isa: Isa, a: &QuantizedActivations, b: &PackedWeights) -> Vec<f32> {
        let mut out = vec![f32::NAN; a.rows() * b.rows()];
        grouped_gemm_on(
            isa,
            vec![GemmProblem {
                a,
                b,
                out: Output::F32(&mut out),
            }],
        )
        .unwrap();
        out
    }

    #[test]
    fn matches_exact_accumulation_up_to_f32_rounding() {
        // Shapes cross every tiling edge: MC = 144, NC = 256, KC = 256.
        for (m, n, k) in [(1, 128, 128), (7, 384, 384), (150, 128, 640)] {
            let (a, w) = inputs(m, n, k, 1);
            let exact = reference::fp8_gemm_exact(&a, &w);
            let out = run_on(Isa::best(), &a, &PackedWeights::pack(&w));
            let err = reference::rel_frobenius(&out, exact.data());
            assert!(err < 1e-6, "{m}x{n}x{k}: {err}");
        }
    }

    #[test]
    fn every_kernel_gives_the_same_bits() {
        let (a, w) = inputs(13, 256, 384, 2);
        let b = PackedWeights::pack(&w);
        let outputs: Vec<Vec<u32>> = Isa::all_supported()
            .into_iter()
            .map(|isa| run_on(isa, &a, &b).iter().map(|v| v.to_bits()).collect())
            .collect();
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn grouped_call_equals_separate_calls_and_thread_count_does_not_matter() {
        let (a1, w1) = inputs(20, 128, 256, 3);
        let (a2, w2) = inputs(0, 256, 256, 4);
        let (a3, _) = inputs(150, 128, 256, 5);
        let (b1, b2) = (PackedWeights::pack(&w1), PackedWeights::pack(&w2));
        let separate = [
            gemm(&a1, &b1).unwrap(),
            gemm(&a2, &b2).unwrap(),
            gemm(&a3, &b1).unwrap(),
        ];
        let mut outs = [vec![0.0f32; 20 * 128], vec![], vec![0.0f32; 150 * 128]];
        let single_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let [o1, o2, o3] = &mut outs;
        single_thread
            .install(|| {
                grouped_gemm(vec![
                    GemmProblem {
                        a: &a1,
                        b: &b1,
                        out: Output::F32(o1),
                    },
                    GemmProblem {
                        a: &a2,
                        b: &b2,
                        out: Output::F32(o2),
                    },
                    GemmProblem {
                        a: &a3,
                        b: &b1,
                        out: Output::F32(o3),
                    },
                ])
            })
            .unwrap();
        for (grouped, alone) in outs.iter().zip(&separate) {
            assert_eq!(grouped.as_slice(), alone.data());
        }
    }

    #[test]
    fn bf16_output_is_the_rounded_f32_output() {
        let (a, w) = inputs(9, 128, 256, 6);
        let b = PackedWeights::pack(&w);
        let f32_out = gemm(&a, &b).unwrap();
        let mut bf16_out = vec![bf16::ZERO; 9 * 128];
        grouped_gemm(vec![GemmProblem {
            a: &a,
            b: &b,
            out: Output::Bf16(&mut bf16_out),
        }])
        .unwrap();
        for (h, &f) in bf16_out.iter().zip(f32_out.data()) {
            assert_eq!(h.to_bits(), bf16::from_f32(f).to_bits());
        }
    }

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        // 1 + 2⁻⁸ is halfway between BF16 neighbours 1 and 1 + 2⁻⁷.
        assert_eq!(bf16::from_f32(1.0 + 2f32.powi(-8)).to_f32(), 1.0);
        assert_eq!(
            bf16::from_f32(1.0 + 3.0 * 2f32.powi(-8)).to_f32(),
            1.0 + 2.0 * 2f32.powi(-7)
        );
        assert_eq!(
            bf16::from_f32((1.0 + 2f32.powi(-8)).next_up()).to_f32(),
            1.0 + 2f32.powi(-7)
        );
    }

    #[test]
    fn mismatched_shapes_are_rejected() {
        let (a, _) = inputs(4, 128, 256, 7);
        let (_, w) = inputs(1, 128, 128, 8);
        let b = PackedWeights::pack(&w);
        assert!(matches!(
            gemm(&a, &b),
            Err(ShapeError::Mismatch {
                dim: "input features",
                ..
            })
        ));
        let (_, w) = inputs(1, 128, 256, 9);
        let b = PackedWeights::pack(&w);
        let mut short = vec![0.0f32; 10];
        let result = grouped_gemm(vec![GemmProblem {
            a: &a,
            b: &b,
            out: Output::F32(&mut short),
        }]);
        assert!(matches!(
            result,
            Err(ShapeError::Mismatch { dim: "values", .. })
        ));
    }
}
