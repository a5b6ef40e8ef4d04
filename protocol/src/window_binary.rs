//! The compact binary telemetry encoding (`application/x-ballast-window`).
//!
//! A DeepSeek-V3 window is 58 x 256 counts: about 100 KB of JSON but 59 KB
//! as `u32`, and decoding it is a copy instead of a number parser. Layout,
//! all integers little-endian:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0      | 4    | magic `BLW1` |
//! | 4      | 1    | load kind: 1 = `logical_load`, 2 = `slot_load` |
//! | 5      | 1    | value type: 1 = u32, 2 = f32, 3 = f64 |
//! | 6      | 2    | `n`, length of the worker name in bytes (u16) |
//! | 8      | 8    | `seq` (i64) |
//! | 16     | 8    | `plan_version` (i64; 0 for `logical_load`) |
//! | 24     | 8    | `window_start`, Unix milliseconds (i64; `i64::MIN` = absent) |
//! | 32     | 8    | `window_end`, Unix milliseconds (i64; `i64::MIN` = absent) |
//! | 40     | 4    | rows = layers (u32) |
//! | 44     | 4    | cols = experts (logical) or slots per GPU (slot) (u32) |
//! | 48     | n    | worker name, UTF-8 |
//! | 48 + n | rows x cols x size | values, row-major |
//!
//! The body must be exactly that long.
//!
//! A window with co-visit counts (`covisit`, logical load only) is sent as
//! version 2, magic `BLW2`: the same fields, then at offset 48 `groups` = K
//! (u32), the worker name at 52, the load values, and then `rows x cols x
//! groups` co-visit values (`covisit[l][e][k]` row-major, same value type).
//! A window without them is still encoded as `BLW1`, so services that
//! predate co-visit keep reading windows of workers that do not count it.
//!
//! Like the JSON form it decodes to a
//! [`RawWindow`]; the service checks both against the topology the same way.
//! Workers in this repository and the service share this one encoder and
//! decoder; workers in other languages follow the table above.

use crate::telemetry::{DecodeError, RawCovisit, RawLoad, RawWindow, MAX_COVISIT_VALUES};

/// The media type that selects this encoding.
pub const CONTENT_TYPE: &str = "application/x-ballast-window";

const MAGIC: &[u8; 4] = b"BLW1";
const MAGIC_V2: &[u8; 4] = b"BLW2";
/// Bytes before the worker name (`BLW1`).
pub const HEADER: usize = 48;
/// Bytes before the worker name (`BLW2`, with co-visit counts).
pub const HEADER_V2: usize = 52;
const ABSENT: i64 = i64::MIN;

/// Element type of the value array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U32 = 1,
    F32 = 2,
    F64 = 3,
}

impl ValueType {
    fn size(self) -> usize {
        match self {
            ValueType::U32 | ValueType::F32 => 4,
            ValueType::F64 => 8,
        }
    }
}

fn malformed(detail: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(detail.into())
}

fn read_i64(body: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&body[at..at + 8]);
    i64::from_le_bytes(b)
}

fn read_u32(body: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&body[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Decodes one binary window.
pub fn decode(body: &[u8]) -> Result<RawWindow, DecodeError> {
    if body.len() < HEADER {
        return Err(malformed(format!(
            "binary window is {} bytes, shorter than its 48-byte header",
            body.len()
        )));
    }
    let header = match &body[0..4] {
        m if m == MAGIC => HEADER,
        m if m == MAGIC_V2 => HEADER_V2,
        _ => {
            return Err(malformed(
                "binary window does not start with `BLW1` (or `BLW2`)",
            ))
        }
    };
    if body.len() < header {
        return Err(malformed(format!(
            "binary window is {} bytes, shorter than its {header}-byte header",
            body.len()
        )));
    }
    let groups = if header == HEADER_V2 {
        read_u32(body, 48) as usize
    } else {
        0
    };
    let value_type = match body[5] {
        1 => ValueType::U32,
        2 => ValueType::F32,
        3 => ValueType::F64,
        other => {
            return Err(malformed(format!(
                "unknown value type {other} (1 = u32, 2 = f32, 3 = f64)"
            )))
        }
    };
    let name_len = u16::from_le_bytes([body[6], body[7]]) as usize;
    let seq = read_i64(body, 8);
    let plan_version = read_i64(body, 16);
    let optional = |v: i64| (v != ABSENT).then_some(v);
    let start_ms = optional(read_i64(body, 24));
    let end_ms = optional(read_i64(body, 32));
    let rows = read_u32(body, 40) as usize;
    let cols = read_u32(body, 44) as usize;
    let count = rows
        .checked_mul(cols)
        .ok_or_else(|| malformed("rows x cols overflows"))?;
    let covisit_count = count
        .checked_mul(groups)
        .ok_or_else(|| malformed("rows x cols x groups overflows"))?;
    if covisit_count > MAX_COVISIT_VALUES {
        return Err(DecodeError::Shape {
            field: "covisit",
            detail: format!(
                "has more than {MAX_COVISIT_VALUES} values, more than co-visit counts may have"
            ),
        });
    }
    let expected = (count + covisit_count)
        .checked_mul(value_type.size())
        .and_then(|v| v.checked_add(header + name_len))
        .ok_or_else(|| malformed("rows x cols overflows"))?;
    if body.len() != expected {
        return Err(malformed(format!(
            "binary window is {} bytes, its header announces {expected}",
            body.len()
        )));
    }
    let worker = std::str::from_utf8(&body[header..header + name_len])
        .map_err(|_| malformed("worker name is not UTF-8"))?
        .to_owned();
    let (data, covisit_data) = body[header + name_len..].split_at(count * value_type.size());
    let values = read_values(data, value_type);
    let covisit = (header == HEADER_V2).then(|| RawCovisit {
        layers: rows,
        experts: cols,
        groups,
        values: read_values(covisit_data, value_type),
    });
    if covisit.is_some() && body[4] != 1 {
        return Err(DecodeError::Field {
            field: "covisit",
            detail: "only allowed with `logical_load` (load kind 1)".into(),
        });
    }
    let load = match body[4] {
        1 => RawLoad::Logical { rows, cols, values },
        2 => RawLoad::Slot {
            plan_version,
            rows,
            cols,
            values,
        },
        other => {
            return Err(malformed(format!(
                "unknown load kind {other} (1 = logical_load, 2 = slot_load)"
            )))
        }
    };
    Ok(RawWindow {
        worker,
        seq,
        start_ms,
        end_ms,
        load,
        covisit,
    })
}

fn read_values(data: &[u8], value_type: ValueType) -> Vec<f64> {
    match value_type {
        ValueType::U32 => data
            .chunks_exact(4)
            .map(|c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        ValueType::F32 => data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        ValueType::F64 => data
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b)
            })
            .collect(),
    }
}

/// Encodes a window. Values are written as `value_type`; the caller picks
/// one that represents them exactly. Co-visit counts must be shaped `rows x
/// cols x groups` of the load (the decoder reads them so).
pub fn encode(window: &RawWindow, value_type: ValueType) -> Vec<u8> {
    let (kind, plan_version, rows, cols, values) = match &window.load {
        RawLoad::Logical { rows, cols, values } => (1u8, 0, *rows, *cols, values),
        RawLoad::Slot {
            plan_version,
            rows,
            cols,
            values,
        } => (2u8, *plan_version, *rows, *cols, values),
    };
    let name = window.worker.as_bytes();
    let covisit = window.covisit.as_ref();
    let covisit_len = covisit.map_or(0, |c| c.values.len());
    let mut out = Vec::with_capacity(
        HEADER_V2 + name.len() + (values.len() + covisit_len) * value_type.size(),
    );
    out.extend_from_slice(if covisit.is_some() { MAGIC_V2 } else { MAGIC });
    out.push(kind);
    out.push(value_type as u8);
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&window.seq.to_le_bytes());
    out.extend_from_slice(&plan_version.to_le_bytes());
    out.extend_from_slice(&window.start_ms.unwrap_or(ABSENT).to_le_bytes());
    out.extend_from_slice(&window.end_ms.unwrap_or(ABSENT).to_le_bytes());
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(cols as u32).to_le_bytes());
    if let Some(c) = covisit {
        out.extend_from_slice(&(c.groups as u32).to_le_bytes());
    }
    out.extend_from_slice(name);
    let covisit_values = covisit.map_or(&[][..], |c| &c.values[..]);
    for &v in values.iter().chain(covisit_values) {
        match value_type {
            ValueType::U32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
            ValueType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            ValueType::F64 => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn window(values: Vec<f64>, rows: usize, cols: usize, slot: bool) -> RawWindow {
        RawWindow {
            worker: "node3-gpu7".into(),
            seq: 42,
            start_ms: Some(1_000),
            end_ms: None,
            load: if slot {
                RawLoad::Slot {
                    plan_version: 9,
                    rows,
                    cols,
                    values,
                }
            } else {
                RawLoad::Logical { rows, cols, values }
            },
            covisit: None,
        }
    }

    proptest! {
        #[test]
        fn round_trips(rows in 1usize..6, cols in 1usize..9, seed in any::<u32>(), slot in any::<bool>()) {
            let values: Vec<f64> = (0..rows * cols).map(|i| f64::from((seed ^ i as u32) % 100_000)).collect();
            let w = window(values, rows, cols, slot);
            for vt in [ValueType::U32, ValueType::F32, ValueType::F64] {
                prop_assert_eq!(decode(&encode(&w, vt)).unwrap(), w.clone());
            }
        }

        #[test]
        fn round_trips_with_covisit(rows in 1usize..5, cols in 1usize..7, groups in 1usize..4, seed in any::<u32>()) {
            let values: Vec<f64> = (0..rows * cols).map(|i| f64::from((seed ^ i as u32) % 1000 + 1000)).collect();
            let mut w = window(values, rows, cols, false);
            w.covisit = Some(RawCovisit {
                layers: rows,
                experts: cols,
                groups,
                values: (0..rows * cols * groups).map(|i| f64::from((seed ^ i as u32) % 1000)).collect(),
            });
            for vt in [ValueType::U32, ValueType::F32, ValueType::F64] {
                let body = encode(&w, vt);
                prop_assert_eq!(&body[0..4], b"BLW2");
                prop_assert_eq!(decode(&body).unwrap(), w.clone());
            }
        }

        #[test]
        fn never_panics_on_garbage_v2(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut body = b"BLW2".to_vec();
            body.extend(tail);
            let _ = decode(&body);
        }

        #[test]
        fn never_panics_on_garbage(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&body);
        }
    }

    /// A window without co-visit counts is still `BLW1`, byte for byte as
    /// before, so older services read it; a `BLW2` body with slot load is
    /// refused.
    #[test]
    fn windows_without_covisit_stay_version_1() {
        let w = window(vec![1.0, 2.0], 1, 2, false);
        let body = encode(&w, ValueType::U32);
        assert_eq!(&body[0..4], b"BLW1");
        assert_eq!(body.len(), HEADER + w.worker.len() + 2 * 4);
        let mut slot = window(vec![1.0, 2.0], 1, 2, true);
        slot.covisit = Some(RawCovisit {
            layers: 1,
            experts: 2,
            groups: 1,
            values: vec![1.0, 2.0],
        });
        let err = decode(&encode(&slot, ValueType::U32)).unwrap_err();
        assert!(err.to_string().contains("logical_load"), "{err}");
    }

    #[test]
    fn refuses_truncated_and_foreign_bodies() {
        let body = encode(&window(vec![1.0; 6], 2, 3, false), ValueType::U32);
        assert!(decode(&body[..body.len() - 1])
            .unwrap_err()
            .to_string()
            .contains("announces"));
        let mut bad = body.clone();
        bad[0] = b'X';
        assert!(decode(&bad).unwrap_err().to_string().contains("BLW1"));
        let mut bad = body;
        bad[5] = 7;
        assert!(decode(&bad).unwrap_err().to_string().contains("value type"));
    }
}
