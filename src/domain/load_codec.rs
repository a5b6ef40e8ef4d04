//! Storage form of load vectors (the `load` BYTEA columns).
//!
//! Worker windows and their sums are token counts, so they are stored as
//! `u32` when every value is an integer that fits (half the bytes of `f64`,
//! and half the write-ahead log for every rewritten load window); anything
//! else as `f64`. One tag byte says which.

use thiserror::Error;

const TAG_U32: u8 = 1;
const TAG_F64: u8 = 2;

/// A stored load blob that does not decode to the expected length.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("stored load blob is corrupt: {0}")]
pub struct CodecError(String);

/// Encodes counts compactly when they are all `u32` integers.
pub fn encode(values: &[f64]) -> Vec<u8> {
    let integral = values
        .iter()
        .all(|&v| v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v));
    if integral {
        let mut out = Vec::with_capacity(1 + values.len() * 4);
        out.push(TAG_U32);
        for &v in values {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        out
    } else {
        encode_f64(values)
    }
}

/// Always `f64`.
fn encode_f64(values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + values.len() * 8);
    out.push(TAG_F64);
    for &v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Adds a stored blob of `len` values into `into` (which has `len` entries).
pub fn add_into(blob: &[u8], into: &mut [f64]) -> Result<(), CodecError> {
    let len = into.len();
    match blob.split_first() {
        Some((&TAG_U32, data)) if data.len() == len * 4 => {
            for (acc, c) in into.iter_mut().zip(data.chunks_exact(4)) {
                *acc += f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
            Ok(())
        }
        Some((&TAG_F64, data)) if data.len() == len * 8 => {
            for (acc, c) in into.iter_mut().zip(data.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                *acc += f64::from_le_bytes(b);
            }
            Ok(())
        }
        Some((tag, data)) => Err(CodecError(format!(
            "tag {tag} with {} bytes for {len} values",
            data.len()
        ))),
        None => Err(CodecError("empty".into())),
    }
}

/// Decodes a stored blob of `len` values.
pub fn decode(blob: &[u8], len: usize) -> Result<Vec<f64>, CodecError> {
    let mut out = vec![0.0; len];
    add_into(blob, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(values in proptest::collection::vec(prop_oneof![
            (0u32..1_000_000).prop_map(f64::from),
            0.0f64..1e12,
        ], 0..64)) {
            prop_assert_eq!(decode(&encode(&values), values.len()).unwrap(), values.clone());
            prop_assert_eq!(decode(&encode_f64(&values), values.len()).unwrap(), values);
        }
    }

    #[test]
    fn picks_compact_form_and_checks_length() {
        assert_eq!(encode(&[1.0, 2.0]).len(), 9);
        assert_eq!(encode(&[1.5, 2.0]).len(), 17);
        assert!(decode(&encode(&[1.0, 2.0]), 3).is_err());
        assert!(decode(&[], 0).is_err());
    }
}
