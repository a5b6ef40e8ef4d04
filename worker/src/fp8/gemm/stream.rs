//! Bulk decoding of E4M3 codes to f32, the first step of packing GEMM operands.
//!
//! The AVX2 path builds the f32 bit pattern directly: the 7 magnitude bits of
//! a code shifted left by 20 land on the low exponent bits and the top
//! mantissa bits of an f32, whose value is then the E4M3 value times 2⁻¹²⁰ —
//! for subnormals too, because an E4M3 subnormal becomes an f32 subnormal
//! with the same mantissa. One multiply by 2¹²⁰ restores it. NaN codes would
//! decode to ±480 this way, so callers pass only codes produced by quantizing
//! finite values (every FP8 container in this crate guarantees that).

use crate::fp8::e4m3::{decode_table, is_nan_code};
use crate::fp8::gemm::isa::Isa;

/// Decodes `src` into `dst` (equal lengths) with the given instruction set.
///
/// # Panics
/// If the lengths differ (a caller bug, never input-dependent).
pub fn decode_into(isa: Isa, src: &[u8], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "decode_into: length mismatch");
    debug_assert!(
        src.iter().all(|&c| !is_nan_code(c)),
        "NaN code in a GEMM operand"
    );
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2Fma` is only chosen after run-time detection of AVX2.
        Isa::Avx2Fma => unsafe { avx2::decode(src, dst) },
        _ => decode_portable(src, dst),
    }
}

fn decode_portable(src: &[u8], dst: &mut [f32]) {
    let table = decode_table();
    for (d, &c) in dst.iter_mut().zip(src) {
        *d = table[c as usize];
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// 2¹²⁰ as f32 bits: moves an f32 built from E4M3 bits to the E4M3 value.
    const REBIAS_BITS: u32 = (127 + 120) << 23;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn decode(src: &[u8], dst: &mut [f32]) {
        let whole = src.len() / 8 * 8;
        let magnitude_mask = _mm256_set1_epi32(0x7F);
        let sign_mask = _mm256_set1_epi32(0x80);
        let rebias = _mm256_set1_ps(f32::from_bits(REBIAS_BITS));
        let mut i = 0;
        while i < whole {
            // SAFETY (for the loads and stores): i + 8 <= len of both slices.
            let bytes = _mm_loadl_epi64(src.as_ptr().add(i).cast::<__m128i>());
            let codes = _mm256_cvtepu8_epi32(bytes);
            let magnitude = _mm256_slli_epi32(_mm256_and_si256(codes, magnitude_mask), 20);
            let sign = _mm256_slli_epi32(_mm256_and_si256(codes, sign_mask), 24);
            let bits = _mm256_or_si256(magnitude, sign);
            let values = _mm256_mul_ps(_mm256_castsi256_ps(bits), rebias);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), values);
            i += 8;
        }
        super::decode_portable(&src[whole..], &mut dst[whole..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fp8::e4m3::decode_reference;

    #[test]
    fn every_path_decodes_every_finite_code_exactly() {
        // Odd length so the scalar tail runs too.
        let codes: Vec<u8> = (0..=255u8)
            .filter(|&c| !is_nan_code(c))
            .chain([0x01, 0x81, 0x7E])
            .collect();
        for isa in Isa::all_supported() {
            let mut out = vec![0.0f32; codes.len()];
            decode_into(isa, &codes, &mut out);
            for (&c, &v) in codes.iter().zip(&out) {
                assert_eq!(
                    v.to_bits(),
                    decode_reference(c).to_bits(),
                    "{isa:?} code {c:#04x}"
                );
            }
        }
    }
}
