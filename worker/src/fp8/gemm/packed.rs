//! Weights in the GEMM's panel layout, packed once when an expert is loaded.

use xxhash_rust::xxh3::Xxh3;

use crate::fp8::gemm::NR;
use crate::fp8::quant::{QuantizedWeights, BLOCK};

/// FP8 weights (`rows` output features × `cols` input features) stored as
/// panels of [`NR`] output features: panel `p` holds, for each `k`, the codes
/// of features `p·NR .. p·NR+NR` side by side, so the kernel streams one
/// panel front to back. Scales stay one per 128×128 block.
///
/// Cloning copies the bytes: that is what moving an expert between GPUs does.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    rows: usize,
    cols: usize,
    panels: Vec<u8>,
    scales: Vec<f32>,
}

impl PackedWeights {
    /// Repacks quantized weights into panels.
    pub fn pack(w: &QuantizedWeights) -> Self {
        let (rows, cols) = (w.rows(), w.cols());
        let mut panels = vec![0u8; rows * cols];
        for (p, panel) in panels.chunks_mut(cols * NR).enumerate() {
            for lane in 0..NR {
                let src = w.row_codes(p * NR + lane);
                for (k, &code) in src.iter().enumerate() {
                    panel[k * NR + lane] = code;
                }
            }
        }
        PackedWeights {
            rows,
            cols,
            panels,
            scales: w.scales().to_vec(),
        }
    }

    /// Output features (`N`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (`K`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Codes of panel `p`, `k`-major: `cols × NR` bytes.
    pub(crate) fn panel(&self, p: usize) -> &[u8] {
        &self.panels[p * self.cols * NR..(p + 1) * self.cols * NR]
    }

    /// Scale of the block holding output feature `row` and input block `k_block`.
    pub(crate) fn scale(&self, row: usize, k_block: usize) -> f32 {
        self.scales[(row / BLOCK) * (self.cols / BLOCK) + k_block]
    }

    /// Bytes this matrix occupies on a device: codes plus f32 scales.
    pub fn bytes(&self) -> usize {
        self.panels.len() + self.scales.len() * std::mem::size_of::<f32>()
    }

    /// A 64-bit hash (XXH3) of codes and scales, to verify a copy.
    pub fn checksum(&self) -> u64 {
        let mut hasher = Xxh3::new();
        self.hash_into(&mut hasher);
        hasher.digest()
    }

    /// Feeds codes, scales and shape to `hasher`.
    pub(crate) fn hash_into(&self, hasher: &mut Xxh3) {
        hasher.update(&(self.rows as u64).to_le_bytes());
        hasher.update(&(self.cols as u64).to_le_bytes());
        hasher.update(&self.panels);
        for s in &self.scales {
            hasher.update(&s.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fp8::quant::ScaleMode;
    use crate::matrix::Matrix;

    fn weights() -> QuantizedWeights {
        let w = Matrix::from_fn(128, 256, |r, c| ((r * 13 + c * 5) % 41) as f32 - 20.0);
        QuantizedWeights::quantize(&w, ScaleMode::Exact).unwrap()
    }

    #[test]
    fn panels_hold_every_code_once_in_k_major_order() {
        let q = weights();
        let p = PackedWeights::pack(&q);
        assert_eq!(p.bytes(), 128 * 256 + 2 * 4);
        for row in [0, 15, 16, 77, 127] {
            for k in [0, 1, 128, 255] {
                assert_eq!(p.panel(row / NR)[k * NR + row % NR], q.row_codes(row)[k]);
            }
        }
        assert_eq!(p.scale(77, 1), q.scale(0, 1));
    }

    #[test]
    fn checksum_sees_a_single_flipped_bit() {
        let p = PackedWeights::pack(&weights());
        let mut copy = p.clone();
        assert_eq!(copy.checksum(), p.checksum());
        copy.panels[1000] ^= 0x01;
        assert_ne!(copy.checksum(), p.checksum());
        let mut rescaled = p.clone();
        rescaled.scales[1] = f32::from_bits(rescaled.scales[1].to_bits() ^ 1);
        assert_ne!(rescaled.checksum(), p.checksum());
    }
}
