//! Emulation of Hopper tensor-core FP8 accumulation, to measure what the
//! production kernel's promotion saves (it never runs in production).
//!
//! The model (DeepSeek-V3 §3.3.2): the tensor core adds products in groups
//! of 32; for each group it aligns the products and the running sum to the
//! largest exponent among them, keeps only a limited number of bits below
//! that leading bit — truncating toward zero — and adds. DeepSeek measured
//! about 14 bits retained, i.e. 13 below the leading one;
//! [`AccumulatorModel::fraction_bits`] is a parameter.
//! With promotion, the running sum covers one 128-element block and is then
//! scaled and added to an f32 accumulator on the CUDA cores; without it, the
//! whole K range runs through the limited accumulator (scales folded into the
//! products, which is exact for power-of-two scales).

use rayon::prelude::*;

use crate::fp8::e4m3;
use crate::fp8::quant::{QuantizedActivations, QuantizedWeights, BLOCK};
use crate::matrix::Matrix;

/// Parameters of the limited-precision accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccumulatorModel {
    /// Products aligned and added together (32 on Hopper).
    pub group: usize,
    /// Bits kept below the leading bit of the largest aligned term.
    pub fraction_bits: u32,
    /// Hand the sum to f32 after every 128-element K block.
    pub promote: bool,
}

impl AccumulatorModel {
    /// The Hopper model with `fraction_bits` retained bits.
    pub fn hopper(fraction_bits: u32, promote: bool) -> Self {
        AccumulatorModel {
            group: 32,
            fraction_bits,
            promote,
        }
    }

    /// Adds `terms` in groups of [`group`](Self::group) the way the tensor core does.
    pub fn accumulate(&self, terms: &[f64]) -> f64 {
        let mut sum = 0.0f64;
        for group in terms.chunks(self.group.max(1)) {
            let Some(lead) = group
                .iter()
                .chain([&sum])
                .filter_map(|&v| exponent(v))
                .max()
            else {
                continue;
            };
            let ulp = 2f64.powi(lead - self.fraction_bits as i32);
            // Every term below is a multiple of `ulp` smaller than 2^(lead+1),
            // so the f64 additions are exact.
            sum = truncate(sum, ulp) + group.iter().map(|&p| truncate(p, ulp)).sum::<f64>();
        }
        sum
    }
}

/// `floor(log2 |x|)` for non-zero `x` (all values here are normal f64).
fn exponent(x: f64) -> Option<i32> {
    if x == 0.0 {
        return None;
    }
    let biased = ((x.to_bits() >> 52) & 0x7FF) as i32;
    debug_assert!(biased != 0, "subnormal f64 in tensor-core emulation");
    Some(biased - 1023)
}

/// `x` truncated toward zero to a multiple of the power of two `ulp`.
fn truncate(x: f64, ulp: f64) -> f64 {
    (x / ulp).trunc() * ulp
}

/// `A · Wᵀ` on the FP8 inputs with tensor-core accumulation.
///
/// # Panics
/// If the inner dimensions differ (a caller bug).
pub fn emulate_gemm(
    a: &QuantizedActivations,
    w: &QuantizedWeights,
    model: AccumulatorModel,
) -> Matrix<f64> {
    assert_eq!(a.cols(), w.cols(), "emulate_gemm: inner dimensions differ");
    let table = e4m3::decode_table();
    let decode = |codes: &[u8]| -> Vec<f64> {
        codes
            .iter()
            .map(|&c| f64::from(table[c as usize]))
            .collect()
    };
    let w_rows: Vec<Vec<f64>> = (0..w.rows()).map(|n| decode(w.row_codes(n))).collect();
    let k = a.cols();
    let mut out = Matrix::zeros(a.rows(), w.rows());
    out.data_mut()
        .par_chunks_mut(w.rows().max(1))
        .enumerate()
        .for_each_init(
            || vec![0.0f64; k],
            |products, (m, row)| {
                let a_row = decode(a.row_codes(m));
                for (n, c) in row.iter_mut().enumerate() {
                    for (p, (x, y)) in products.iter_mut().zip(a_row.iter().zip(&w_rows[n])) {
                        *p = x * y;
                    }
                    let scale = |kb: usize| a.scale(m, kb) * w.scale(n / BLOCK, kb);
                    *c = if model.promote {
                        let mut total = 0.0f32;
                        for (kb, block) in products.chunks(BLOCK).enumerate() {
                            total = (model.accumulate(block) as f32).mul_add(scale(kb), total);
                        }
                        f64::from(total)
                    } else {
                        for (kb, block) in products.chunks_mut(BLOCK).enumerate() {
                            let s = f64::from(a.scale(m, kb)) * f64::from(w.scale(n / BLOCK, kb));
                            block.iter_mut().for_each(|p| *p *= s);
                        }
                        model.accumulate(products)
                    };
                }
            },
        );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_exact_sums_are_unchanged() {
        let model = AccumulatorModel::hopper(13, true);
        let terms: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(model.accumulate(&terms), 5050.0);
    }

    #[test]
    fn terms_far_below_the_leading_bit_are_truncated_away() {
        let model = AccumulatorModel::hopper(13, true);
        // The group's leading bit is 2^13, so ulp = 1: 0.75 vanishes, -2.5 becomes -2.
        assert_eq!(model.accumulate(&[8192.0, 0.75, -2.5]), 8190.0);
        // Alignment includes the running sum, so a later group loses it too;
        // two more bits keep it.
        let mut terms = vec![8192.0];
        terms.extend([0.0; 31]);
        terms.push(0.75);
        assert_eq!(model.accumulate(&terms), 8192.0);
        assert_eq!(
            AccumulatorModel::hopper(15, true).accumulate(&terms),
            8192.75
        );
    }

    #[test]
    fn the_running_sum_is_truncated_too() {
        // Alone, 2⁻²⁰ is kept; aligned with the next term 1.0 and 13 fraction
        // bits, the running sum 2⁻²⁰ is truncated to zero.
        let model = AccumulatorModel {
            group: 1,
            fraction_bits: 13,
            promote: false,
        };
        assert_eq!(model.accumulate(&[2f64.powi(-20)]), 2f64.powi(-20));
        assert_eq!(model.accumulate(&[2f64.powi(-20), 1.0]), 1.0);
    }
}
