//! FP8 E4M3 ("e4m3fn"): 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits,
//! no infinities, NaN = `0x7F`/`0xFF`, largest finite value 448, every finite
//! value a multiple of 2⁻⁹.
//!
//! Encoding is the `float8` crate's CUDA-derived conversion (round to nearest,
//! ties to even; finite overflow and ±∞ saturate to ±448; NaN stays NaN). Our
//! tests check it against [`decode_reference`], a textbook decode written here,
//! over every code, every rounding tie and random inputs. Decoding goes through
//! a 256-entry table built from that reference;
//! [`gemm::stream`](crate::fp8::gemm::stream) decodes long runs of codes with
//! SIMD.

use std::sync::LazyLock;

/// Largest finite E4M3 magnitude.
pub const MAX: f32 = 448.0;

/// Whether `code` is one of the two NaN encodings.
pub const fn is_nan_code(code: u8) -> bool {
    code & 0x7F == 0x7F
}

/// Encodes `x` as E4M3: round to nearest, ties to even, saturating to ±448.
#[inline]
pub fn encode(x: f32) -> u8 {
    float8::F8E4M3::from_f32(x).to_bits()
}

/// Decodes an E4M3 code (table lookup).
#[inline]
pub fn decode(code: u8) -> f32 {
    DECODE_TABLE[code as usize]
}

/// The decode table, for loops that want to hoist the lazy initialisation.
pub fn decode_table() -> &'static [f32; 256] {
    &DECODE_TABLE
}

static DECODE_TABLE: LazyLock<[f32; 256]> =
    LazyLock::new(|| std::array::from_fn(|code| decode_reference(code as u8)));

/// Decodes a code from the format's definition: `(-1)^s · 2^(e-7) · 1.m` for
/// `e > 0`, `(-1)^s · 2^-6 · 0.m` for `e = 0`, NaN when `e` and `m` are all ones.
pub fn decode_reference(code: u8) -> f32 {
    if is_nan_code(code) {
        return f32::NAN;
    }
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((code >> 3) & 0x0F);
    let mantissa = f32::from(code & 0x07) / 8.0;
    let magnitude = if exponent == 0 {
        mantissa * 2f32.powi(-6)
    } else {
        (1.0 + mantissa) * 2f32.powi(exponent - 7)
    };
    sign * magnitude
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The positive finite codes in increasing order of value (0x00..=0x7E).
    fn positive_codes() -> impl Iterator<Item = u8> {
        0u8..=0x7E
    }

    /// The code nearest to `x` among all finite codes, ties to the even code,
    /// found by exhaustive search: the specification encoding must meet.
    fn nearest_even_by_search(x: f32) -> u8 {
        let sign = if x.is_sign_negative() { 0x80 } else { 0 };
        let target = f64::from(x.abs());
        let mut best = 0u8;
        let mut best_distance = f64::INFINITY;
        for code in positive_codes() {
            let distance = (f64::from(decode_reference(code)) - target).abs();
            if distance < best_distance || (distance == best_distance && code % 2 == 0) {
                best = code;
                best_distance = distance;
            }
        }
        best | sign
    }

    #[test]
    fn reference_decode_matches_known_values() {
        assert_eq!(decode_reference(0x00), 0.0);
        assert!(decode_reference(0x80).is_sign_negative());
        assert_eq!(decode_reference(0x01), 2f32.powi(-9));
        assert_eq!(decode_reference(0x07), 7.0 * 2f32.powi(-9));
        assert_eq!(decode_reference(0x08), 2f32.powi(-6));
        assert_eq!(decode_reference(0x38), 1.0);
        assert_eq!(decode_reference(0xB8), -1.0);
        assert_eq!(decode_reference(0x7E), 448.0);
        assert_eq!(decode_reference(0xFE), -448.0);
        assert!(decode_reference(0x7F).is_nan());
        assert!(decode_reference(0xFF).is_nan());
    }

    #[test]
    fn finite_values_are_increasing_multiples_of_2_pow_minus_9() {
        let values: Vec<f32> = positive_codes().map(decode_reference).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]));
        assert!(values.iter().all(|v| (v * 512.0).fract() == 0.0));
    }

    #[test]
    fn float8_decode_and_table_agree_with_reference_on_all_codes() {
        for code in 0..=255u8 {
            let reference = decode_reference(code);
            let theirs = float8::F8E4M3::from_bits(code).to_f32();
            let ours = decode(code);
            if reference.is_nan() {
                assert!(theirs.is_nan() && ours.is_nan(), "code {code:#04x}");
            } else {
                assert_eq!(
                    theirs.to_bits(),
                    reference.to_bits(),
                    "float8, code {code:#04x}"
                );
                assert_eq!(
                    ours.to_bits(),
                    reference.to_bits(),
                    "table, code {code:#04x}"
                );
            }
        }
    }

    #[test]
    fn every_finite_code_round_trips() {
        for code in (0..=255u8).filter(|&c| !is_nan_code(c)) {
            assert_eq!(encode(decode_reference(code)), code, "code {code:#04x}");
        }
    }

    #[test]
    fn ties_round_to_even_and_neighbours_round_to_nearest() {
        for sign in [1.0f32, -1.0] {
            for lower in 0u8..0x7E {
                let upper = lower + 1;
                let (lo, hi) = (decode_reference(lower), decode_reference(upper));
                // Midpoints of neighbouring E4M3 values are exact in f32.
                let mid = (lo + hi) / 2.0;
                let sign_bit = if sign < 0.0 { 0x80 } else { 0 };
                let even = if lower % 2 == 0 { lower } else { upper };
                assert_eq!(
                    encode(sign * mid),
                    even | sign_bit,
                    "tie between {lo} and {hi}"
                );
                assert_eq!(
                    encode(sign * mid.next_down()),
                    lower | sign_bit,
                    "below {mid}"
                );
                assert_eq!(
                    encode(sign * mid.next_up()),
                    upper | sign_bit,
                    "above {mid}"
                );
            }
        }
    }

    #[test]
    fn overflow_saturates_and_nan_stays_nan() {
        for x in [
            448.0f32,
            448.0f32.next_up(),
            464.0,
            480.0,
            1e6,
            f32::MAX,
            f32::INFINITY,
        ] {
            assert_eq!(encode(x), 0x7E, "{x}");
            assert_eq!(encode(-x), 0xFE, "{}", -x);
        }
        assert!(is_nan_code(encode(f32::NAN)));
        assert!(is_nan_code(encode(-f32::NAN)));
    }

    #[test]
    fn underflow_rounds_to_signed_zero_or_smallest_subnormal() {
        let half_min = 2f32.powi(-10);
        assert_eq!(encode(half_min), 0x00, "tie to even zero");
        assert_eq!(encode(half_min.next_up()), 0x01);
        assert_eq!(encode(-half_min), 0x80);
        assert_eq!(encode(f32::MIN_POSITIVE), 0x00);
        assert_eq!(encode(-1e-30), 0x80);
    }

    proptest! {
        #[test]
        fn encode_is_nearest_even(x in -600.0f32..600.0) {
            prop_assert_eq!(encode(x), nearest_even_by_search(x));
        }

        #[test]
        fn encode_is_nearest_even_near_subnormals(x in -0.05f32..0.05) {
            prop_assert_eq!(encode(x), nearest_even_by_search(x));
        }
    }
}
