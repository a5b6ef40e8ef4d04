//! Fine-grained FP8 quantization (DeepSeek-V3 report, §3.3): activations get
//! one scale per token per 128 channels (1×128 tiles), weights one per
//! 128×128 block, so an outlier only coarsens its own tile. Per-tensor
//! scaling is here too, to measure the failure that fine-grained scaling
//! prevents.
//!
//! A scale maps a tile's largest magnitude (`amax`, floored at 1e-4 so an
//! all-zero tile does not divide by zero) onto the FP8 maximum 448; with
//! [`ScaleMode::PowerOfTwo`] it is rounded up to a power of two (the UE8M0
//! scales of later DeepSeek kernels), which makes scaling exact.
//!
//! The containers here are the only way to obtain FP8 codes in this crate,
//! and they are built only from finite inputs, so they never hold a NaN code:
//! the GEMM's arithmetic decode relies on that.

use rayon::prelude::*;

use crate::error::{QuantError, ShapeError};
use crate::fp8::e4m3;
use crate::matrix::Matrix;

/// Width of an activation tile and side of a weight block.
pub const BLOCK: usize = 128;

/// Smallest `amax` a scale is computed from.
pub const AMAX_FLOOR: f32 = 1e-4;

/// How a scale is derived from a tile's `amax`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScaleMode {
    /// `amax / 448` in f32.
    #[default]
    Exact,
    /// The smallest power of two at least `amax / 448`.
    PowerOfTwo,
}

impl ScaleMode {
    /// The scale for a tile whose largest magnitude is `amax`.
    pub fn scale_for(self, amax: f32) -> f32 {
        let exact = amax.max(AMAX_FLOOR) / e4m3::MAX;
        match self {
            ScaleMode::Exact => exact,
            ScaleMode::PowerOfTwo => next_power_of_two(exact),
        }
    }
}

/// The smallest power of two `>= x`, for positive normal `x`.
fn next_power_of_two(x: f32) -> f32 {
    let bits = x.to_bits();
    if bits & 0x007F_FFFF == 0 {
        x
    } else {
        f32::from_bits((bits & 0x7F80_0000) + 0x0080_0000)
    }
}

fn check_cols(what: &'static str, cols: usize) -> Result<(), ShapeError> {
    if cols == 0 || !cols.is_multiple_of(BLOCK) {
        return Err(ShapeError::NotMultiple {
            what,
            dim: "columns",
            value: cols,
            multiple: BLOCK,
        });
    }
    Ok(())
}

fn check_finite(what: &'static str, x: &Matrix<f32>) -> Result<(), QuantError> {
    match x.data().iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(QuantError::NonFinite {
            what,
            row: i / x.cols(),
            col: i % x.cols(),
            value: x.data()[i],
        }),
    }
}

fn amax(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn encode_scaled(src: &[f32], scale: f32, dst: &mut [u8]) {
    let inverse = 1.0 / scale;
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = e4m3::encode(v * inverse);
    }
}

/// Token activations in FP8: `rows` tokens × `cols` channels (`cols` a multiple
/// of 128), one f32 scale per token per 128 channels.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedActivations {
    rows: usize,
    cols: usize,
    codes: Vec<u8>,
    scales: Vec<f32>,
}

impl QuantizedActivations {
    /// Quantizes with one scale per 1×128 tile.
    pub fn quantize(x: &Matrix<f32>, mode: ScaleMode) -> Result<Self, QuantError> {
        Self::quantize_with(x, |tile| mode.scale_for(amax(tile)))
    }

    /// Quantizes with one scale for the whole tensor (repeated in every tile's
    /// slot, so the GEMM consumes it unchanged).
    pub fn quantize_per_tensor(x: &Matrix<f32>, mode: ScaleMode) -> Result<Self, QuantError> {
        // A non-finite value makes this scale meaningless, but quantize_with
        // rejects it before the scale is used.
        let scale = mode.scale_for(amax(x.data()));
        Self::quantize_with(x, |_| scale)
    }

    fn quantize_with(
        x: &Matrix<f32>,
        tile_scale: impl Fn(&[f32]) -> f32 + Sync,
    ) -> Result<Self, QuantError> {
        check_cols("activations", x.cols())?;
        check_finite("activations", x)?;
        let (rows, cols) = (x.rows(), x.cols());
        let mut codes = vec![0u8; rows * cols];
        let mut scales = vec![0.0f32; rows * (cols / BLOCK)];
        codes
            .par_chunks_mut(BLOCK)
            .zip(scales.par_iter_mut())
            .zip(x.data().par_chunks(BLOCK))
            .for_each(|((code_tile, scale), tile)| {
                *scale = tile_scale(tile);
                encode_scaled(tile, *scale, code_tile);
            });
        Ok(QuantizedActivations {
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// The tokens at `rows`, in that order (dispatch sends quantized tokens,
    /// and per-token scaling makes that the same as quantizing the subset).
    ///
    /// # Panics
    /// If a row index is out of range (a caller bug).
    pub fn gather_rows(&self, rows: &[usize]) -> Self {
        let blocks = self.blocks();
        let mut codes = Vec::with_capacity(rows.len() * self.cols);
        let mut scales = Vec::with_capacity(rows.len() * blocks);
        for &r in rows {
            codes.extend_from_slice(self.row_codes(r));
            scales.extend_from_slice(self.row_scales(r));
        }
        QuantizedActivations {
            rows: rows.len(),
            cols: self.cols,
            codes,
            scales,
        }
    }

    /// The f32 values the codes and scales stand for.
    pub fn dequantize(&self) -> Matrix<f32> {
        Matrix::from_fn(self.rows, self.cols, |r, c| {
            e4m3::decode(self.codes[r * self.cols + c]) * self.scale(r, c / BLOCK)
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of 128-channel blocks per token.
    pub fn blocks(&self) -> usize {
        self.cols / BLOCK
    }

    pub fn row_codes(&self, r: usize) -> &[u8] {
        &self.codes[r * self.cols..(r + 1) * self.cols]
    }

    pub fn row_scales(&self, r: usize) -> &[f32] {
        let blocks = self.blocks();
        &self.scales[r * blocks..(r + 1) * blocks]
    }

    /// The scale of token `r`, channel block `block`.
    pub fn scale(&self, r: usize, block: usize) -> f32 {
        self.scales[r * self.blocks() + block]
    }
}

/// A weight matrix in FP8: `rows` output features × `cols` input features
/// (both multiples of 128; `y = x · Wᵀ`), one f32 scale per 128×128 block.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeights {
    rows: usize,
    cols: usize,
    codes: Vec<u8>,
    scales: Vec<f32>,
}

impl QuantizedWeights {
    /// Quantizes with one scale per 128×128 block.
    pub fn quantize(w: &Matrix<f32>, mode: ScaleMode) -> Result<Self, QuantError> {
        Self::check(w)?;
        let (row_blocks, col_blocks) = (w.rows() / BLOCK, w.cols() / BLOCK);
        let mut block_amax = vec![0.0f32; row_blocks * col_blocks];
        for r in 0..w.rows() {
            for (cb, tile) in w.row(r).chunks(BLOCK).enumerate() {
                let slot = &mut block_amax[(r / BLOCK) * col_blocks + cb];
                *slot = slot.max(amax(tile));
            }
        }
        let scales = block_amax.iter().map(|&a| mode.scale_for(a)).collect();
        Ok(Self::encode(w, scales))
    }

    /// Quantizes with one scale for the whole matrix.
    pub fn quantize_per_tensor(w: &Matrix<f32>, mode: ScaleMode) -> Result<Self, QuantError> {
        Self::check(w)?;
        let blocks = (w.rows() / BLOCK) * (w.cols() / BLOCK);
        let scales = vec![mode.scale_for(amax(w.data())); blocks];
        Ok(Self::encode(w, scales))
    }

    fn check(w: &Matrix<f32>) -> Result<(), QuantError> {
        check_cols("weights", w.cols())?;
        if w.rows() == 0 || !w.rows().is_multiple_of(BLOCK) {
            return Err(ShapeError::NotMultiple {
                what: "weights",
                dim: "rows",
                value: w.rows(),
                multiple: BLOCK,
            }
            .into());
        }
        check_finite("weights", w)
    }

    fn encode(w: &Matrix<f32>, scales: Vec<f32>) -> Self {
        let (rows, cols) = (w.rows(), w.cols());
        let col_blocks = cols / BLOCK;
        let mut codes = vec![0u8; rows * cols];
        codes
            .par_chunks_mut(cols)
            .zip(w.data().par_chunks(cols))
            .enumerate()
            .for_each(|(r, (code_row, row))| {
                for (cb, (code_tile, tile)) in code_row
                    .chunks_mut(BLOCK)
                    .zip(row.chunks(BLOCK))
                    .enumerate()
                {
                    encode_scaled(tile, scales[(r / BLOCK) * col_blocks + cb], code_tile);
                }
            });
        QuantizedWeights {
            rows,
            cols,
            codes,
            scales,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn row_codes(&self, r: usize) -> &[u8] {
        &self.codes[r * self.cols..(r + 1) * self.cols]
    }

    /// All block scales, `[rows/128][cols/128]`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The scale of block (`row_block`, `col_block`).
    pub fn scale(&self, row_block: usize, col_block: usize) -> f32 {
        self.scales[row_block * (self.cols / BLOCK) + col_block]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ramp(rows: usize, cols: usize) -> Matrix<f32> {
        Matrix::from_fn(rows, cols, |r, c| {
            ((r * 31 + c * 7) % 97) as f32 / 9.0 - 5.0
        })
    }

    #[test]
    fn scale_modes() {
        assert_eq!(ScaleMode::Exact.scale_for(448.0), 1.0);
        assert_eq!(ScaleMode::Exact.scale_for(0.0), AMAX_FLOOR / 448.0);
        assert_eq!(ScaleMode::PowerOfTwo.scale_for(448.0), 1.0);
        assert_eq!(ScaleMode::PowerOfTwo.scale_for(449.0), 2.0);
        assert_eq!(ScaleMode::PowerOfTwo.scale_for(100.0), 0.25);
        assert_eq!(
            ScaleMode::PowerOfTwo.scale_for(-1.0),
            next_power_of_two(AMAX_FLOOR / 448.0)
        );
    }

    #[test]
    fn tile_amax_maps_to_448() {
        let x = ramp(3, 256);
        let q = QuantizedActivations::quantize(&x, ScaleMode::Exact).unwrap();
        for r in 0..3 {
            for b in 0..2 {
                let tile = &x.row(r)[b * BLOCK..(b + 1) * BLOCK];
                assert_eq!(q.scale(r, b), amax(tile) / 448.0);
                let codes = &q.row_codes(r)[b * BLOCK..(b + 1) * BLOCK];
                assert!(
                    codes.iter().any(|&c| c & 0x7F == 0x7E),
                    "amax encodes as ±448"
                );
            }
        }
    }

    #[test]
    fn shapes_and_non_finite_values_are_rejected() {
        let bad_cols = Matrix::from_fn(2, 100, |_, _| 1.0f32);
        assert!(matches!(
            QuantizedActivations::quantize(&bad_cols, ScaleMode::Exact),
            Err(QuantError::Shape(ShapeError::NotMultiple {
                value: 100,
                ..
            }))
        ));
        let mut x = ramp(2, 128);
        x.row_mut(1)[5] = f32::NAN;
        assert!(matches!(
            QuantizedActivations::quantize(&x, ScaleMode::Exact),
            Err(QuantError::NonFinite { row: 1, col: 5, .. })
        ));
        let w = ramp(100, 128);
        assert!(matches!(
            QuantizedWeights::quantize(&w, ScaleMode::Exact),
            Err(QuantError::Shape(ShapeError::NotMultiple {
                dim: "rows",
                ..
            }))
        ));
    }

    #[test]
    fn weight_blocks_are_scaled_independently() {
        let mut w = ramp(256, 256);
        w.row_mut(200)[10] = 1000.0;
        let q = QuantizedWeights::quantize(&w, ScaleMode::Exact).unwrap();
        assert_eq!(q.scale(1, 0), 1000.0 / 448.0);
        assert!(q.scale(0, 0) < 0.1 && q.scale(0, 1) < 0.1 && q.scale(1, 1) < 0.1);
        let t = QuantizedWeights::quantize_per_tensor(&w, ScaleMode::Exact).unwrap();
        assert!(t.scales().iter().all(|&s| s == 1000.0 / 448.0));
    }

    #[test]
    fn gather_rows_equals_quantizing_the_subset() {
        let x = ramp(5, 256);
        let q = QuantizedActivations::quantize(&x, ScaleMode::PowerOfTwo).unwrap();
        let subset = Matrix::new(2, 256, [x.row(4), x.row(1)].concat()).unwrap();
        let direct = QuantizedActivations::quantize(&subset, ScaleMode::PowerOfTwo).unwrap();
        assert_eq!(q.gather_rows(&[4, 1]), direct);
    }

    proptest! {
        /// E4M3 keeps 3 mantissa bits, so in-range values come back within
        /// 2⁻⁴ relative error, and nothing smaller than half the smallest
        /// subnormal step is lost beyond that step.
        #[test]
        fn dequantized_values_are_within_half_an_fp8_step(
            values in prop::collection::vec(-1e3f32..1e3, 256),
            power_of_two in any::<bool>(),
        ) {
            let mode = if power_of_two { ScaleMode::PowerOfTwo } else { ScaleMode::Exact };
            let x = Matrix::new(2, 128, values).unwrap();
            let q = QuantizedActivations::quantize(&x, mode).unwrap();
            let back = q.dequantize();
            for r in 0..2 {
                let scale = q.scale(r, 0);
                for (a, b) in x.row(r).iter().zip(back.row(r)) {
                    let bound = (a.abs() / 16.0).max(scale * 2f32.powi(-10)) * (1.0 + 1e-6);
                    prop_assert!((a - b).abs() <= bound, "{} -> {} (scale {})", a, b, scale);
                }
            }
        }
    }
}
