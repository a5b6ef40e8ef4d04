//! f64 references for GEMM accuracy figures.

use rayon::prelude::*;

use crate::fp8::e4m3;
use crate::fp8::quant::{QuantizedActivations, QuantizedWeights, BLOCK};
use crate::matrix::Matrix;

/// `A · Wᵀ` in f64 on unquantized inputs.
///
/// # Panics
/// If the inner dimensions differ (a caller bug).
pub fn gemm_f64(a: &Matrix<f32>, w: &Matrix<f32>) -> Matrix<f64> {
    assert_eq!(a.cols(), w.cols(), "gemm_f64: inner dimensions differ");
    let a64 = a.map(f64::from);
    let w64 = w.map(f64::from);
    let mut out = Matrix::zeros(a.rows(), w.rows());
    out.data_mut()
        .par_chunks_mut(w.rows().max(1))
        .enumerate()
        .for_each(|(m, row)| {
            for (n, c) in row.iter_mut().enumerate() {
                *c = a64.row(m).iter().zip(w64.row(n)).map(|(x, y)| x * y).sum();
            }
        });
    out
}

/// `A · Wᵀ` for FP8 inputs with exact accumulation: each 128-element block
/// sum of FP8 products is exact in f64 (products are multiples of 2⁻¹⁸ below
/// 2^17.6, so 128 of them need at most 43 significant bits), then it is
/// multiplied by `s_a · s_b` (exact in f64) and the blocks are summed in f64.
///
/// # Panics
/// If the inner dimensions differ (a caller bug).
pub fn fp8_gemm_exact(a: &QuantizedActivations, w: &QuantizedWeights) -> Matrix<f64> {
    assert_eq!(
        a.cols(),
        w.cols(),
        "fp8_gemm_exact: inner dimensions differ"
    );
    let table = e4m3::decode_table();
    let mut out = Matrix::zeros(a.rows(), w.rows());
    out.data_mut()
        .par_chunks_mut(w.rows().max(1))
        .enumerate()
        .for_each(|(m, row)| {
            let a_row = a.row_codes(m);
            for (n, c) in row.iter_mut().enumerate() {
                let w_row = w.row_codes(n);
                *c = (0..a.blocks())
                    .map(|kb| {
                        let range = kb * BLOCK..(kb + 1) * BLOCK;
                        let block_sum: f64 = a_row[range.clone()]
                            .iter()
                            .zip(&w_row[range])
                            .map(|(&x, &y)| {
                                f64::from(table[x as usize]) * f64::from(table[y as usize])
                            })
                            .sum();
                        let scale = f64::from(a.scale(m, kb)) * f64::from(w.scale(n / BLOCK, kb));
                        block_sum * scale
                    })
                    .sum();
            }
        });
    out
}

/// Relative Frobenius error `‖x − ref‖ / ‖ref‖`.
///
/// # Panics
/// If the lengths differ (a caller bug).
pub fn rel_frobenius<T: Copy + Into<f64>>(x: &[T], reference: &[f64]) -> f64 {
    assert_eq!(x.len(), reference.len(), "rel_frobenius: length mismatch");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&v, &r) in x.iter().zip(reference) {
        let d = v.into() - r;
        diff += d * d;
        norm += r * r;
    }
    (diff / norm).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fp8::quant::ScaleMode;

    #[test]
    fn f64_gemm_of_small_integers_is_exact() {
        let a = Matrix::from_fn(2, 3, |r, c| (r + c) as f32);
        let w = Matrix::from_fn(2, 3, |r, c| (r * c) as f32 - 1.0);
        let c = gemm_f64(&a, &w);
        // row 1 = [1, 2, 3]; w rows = [-1, -1, -1], [-1, 0, 1]
        assert_eq!(c.row(1), &[-6.0, 2.0]);
    }

    #[test]
    fn exact_fp8_gemm_of_representable_values_equals_f64_gemm() {
        // Values that E4M3 holds exactly with scales that are powers of two.
        let x = Matrix::from_fn(3, 256, |r, c| ((r * 5 + c) % 9) as f32 - 4.0);
        let w = Matrix::from_fn(128, 256, |r, c| ((r + 3 * c) % 5) as f32 * 0.5);
        let a = QuantizedActivations::quantize(&x, ScaleMode::PowerOfTwo).unwrap();
        let q = QuantizedWeights::quantize(&w, ScaleMode::PowerOfTwo).unwrap();
        assert_eq!(fp8_gemm_exact(&a, &q), gemm_f64(&x, &w));
    }

    #[test]
    fn relative_error() {
        assert_eq!(rel_frobenius(&[3.0f64, 4.0], &[3.0, 4.0]), 0.0);
        assert!((rel_frobenius(&[0.0f32, 4.0], &[3.0, 4.0]) - 0.6).abs() < 1e-12);
    }
}
