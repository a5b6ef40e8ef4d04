//! Telemetry: one worker's load window (SPEC "telemetry window") in its JSON
//! form, the decoded form both encodings share, the receipt for a window,
//! and the aggregated windows the service reports.
//!
//! Either encoding (JSON here, binary in [`crate::window_binary`]) decodes
//! to a [`RawWindow`]: the wire syntax is checked, the shape against a
//! topology is not (the service does that, once, for both).

use std::fmt;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// The most load values one window may carry (`L x E`): no topology the
/// service accepts has more, so a decoder keeps at most this many however
/// long the body, and what a hostile body can make it allocate is bounded.
pub const MAX_LOAD_VALUES: usize = 1 << 20;

/// The most co-visit values one window may carry (`L x E x K`; DeepSeek-V3:
/// 58 x 256 x 8 = 118,784). A topology with more cannot send co-visit
/// counts; a decoder keeps at most this many.
pub const MAX_COVISIT_VALUES: usize = 1 << 22;

/// A window body that does not decode (the same wording for both encodings).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("malformed window: {0}")]
    Malformed(String),
    #[error("field `{field}`: {detail}")]
    Field { field: &'static str, detail: String },
    /// Well-formed, but the load is no matrix (ragged rows) or is larger
    /// than any topology: a shape error, like a wrong number of layers.
    #[error("field `{field}`: {detail}")]
    Shape { field: &'static str, detail: String },
    /// Well-formed, but a value no window can have (a time before 1970).
    #[error("field `{field}`: {detail}")]
    Refused { field: &'static str, detail: String },
}

impl DecodeError {
    fn field(field: &'static str, detail: impl Into<String>) -> Self {
        DecodeError::Field {
            field,
            detail: detail.into(),
        }
    }
}

/// `POST /v1/clusters/{cluster}/telemetry` as JSON: `logical_load`, or
/// `slot_load` with `plan_version`. `V` is the count type: workers send
/// integer token counts (`u64`), the service reads numbers (`f64`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryWindow<V = f64> {
    pub worker: String,
    pub seq: i64,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<String>,
    /// RFC 3339; the receive time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<String>,
    /// `L x E`: tokens this worker routed to each logical expert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_load: Option<Vec<Vec<V>>>,
    /// `L x S`: tokens this worker's own slots processed under `plan_version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_load: Option<Vec<Vec<V>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_version: Option<i64>,
    /// `L x E x K` co-visit counts (SPEC): tokens that chose expert `e` in
    /// layer `l` and some expert of group `k`. Optional; independent of the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covisit: Option<Vec<Vec<Vec<V>>>>,
}

/// The load a window carries, flattened row-major, before shape checks.
#[derive(Debug, Clone, PartialEq)]
pub enum RawLoad {
    /// Tokens this worker routed to each logical expert: `rows x cols = L x E`.
    Logical {
        rows: usize,
        cols: usize,
        values: Vec<f64>,
    },
    /// Tokens this worker's own slots processed under `plan_version`: `L x S`.
    Slot {
        plan_version: i64,
        rows: usize,
        cols: usize,
        values: Vec<f64>,
    },
}

impl RawLoad {
    /// Number of load values (for byte accounting).
    pub fn len(&self) -> usize {
        match self {
            RawLoad::Logical { values, .. } | RawLoad::Slot { values, .. } => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A window as decoded from either encoding, times in Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RawWindow {
    pub worker: String,
    pub seq: i64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub load: RawLoad,
    /// `covisit`, when the window carries it.
    pub covisit: Option<RawCovisit>,
}

/// Co-visit counts as decoded, before shape checks: `layers x experts x
/// groups` values, row-major (`covisit[l][e][k]` at `(l * experts + e) *
/// groups + k`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawCovisit {
    pub layers: usize,
    pub experts: usize,
    pub groups: usize,
    pub values: Vec<f64>,
}

impl RawCovisit {
    /// From nested `[L][E][K]` rows; ragged rows are a shape error.
    pub fn from_nested(rows: Vec<Vec<Vec<f64>>>) -> Result<Self, DecodeError> {
        let mut cube = FlatCube::default();
        for layer in rows {
            for expert in layer {
                cube.rows.values.extend_from_slice(&expert);
                cube.rows.count += expert.len();
                cube.rows.end_row(expert.len());
            }
            cube.end_layer();
        }
        cube.into_covisit()
    }

    /// Back to nested `[L][E][K]` rows.
    pub fn to_nested(&self) -> Vec<Vec<Vec<f64>>> {
        if self.groups == 0 || self.experts == 0 {
            return vec![vec![Vec::new(); self.experts]; self.layers];
        }
        self.values
            .chunks(self.experts * self.groups)
            .map(|layer| layer.chunks(self.groups).map(<[f64]>::to_vec).collect())
            .collect()
    }
}

impl RawWindow {
    /// Decodes the JSON encoding, straight into row-major loads (see
    /// [`FlatRows`]): no vector per row, no copy to flatten.
    pub fn from_json(body: &[u8]) -> Result<Self, DecodeError> {
        let window: JsonWindow =
            serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let start_ms = parse_optional_time("window_start", window.window_start.as_deref())?;
        let end_ms = parse_optional_time("window_end", window.window_end.as_deref())?;
        let load = pick_load(window.logical_load, window.slot_load, window.plan_version)?;
        let covisit = window.covisit.map(FlatCube::into_covisit).transpose()?;
        Ok(RawWindow {
            worker: window.worker,
            seq: window.seq,
            start_ms,
            end_ms,
            load,
            covisit,
        })
    }
}

/// [`TelemetryWindow`] as the service reads it: the same fields, loads
/// parsed by [`FlatRows`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonWindow {
    worker: String,
    #[serde(deserialize_with = "crate::integer::i64")]
    seq: i64,
    #[serde(default)]
    window_start: Option<String>,
    #[serde(default)]
    window_end: Option<String>,
    #[serde(default)]
    logical_load: Option<FlatRows>,
    #[serde(default)]
    slot_load: Option<FlatRows>,
    #[serde(default, deserialize_with = "crate::integer::option_i64")]
    plan_version: Option<i64>,
    #[serde(default)]
    covisit: Option<FlatCube>,
}

/// Rows of numbers parsed into one row-major vector. At most
/// [`MAX_LOAD_VALUES`] are kept (the rest are read and counted, so the
/// body is still checked as JSON), and the first row whose length differs
/// from row 0's is remembered: both are reported as shape errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlatRows {
    rows: usize,
    cols: usize,
    values: Vec<f64>,
    /// Values read in all (kept or not).
    count: usize,
    /// `(layer, length)` of the first row unlike row 0.
    ragged: Option<(usize, usize)>,
    /// Values kept at most (0: [`MAX_LOAD_VALUES`]).
    limit: usize,
}

impl FlatRows {
    fn from_rows(rows: Vec<Vec<f64>>) -> Self {
        let mut flat = FlatRows::default();
        for row in rows {
            flat.values.extend_from_slice(&row);
            flat.end_row(row.len());
        }
        flat
    }

    /// Records that a row of `len` values was read.
    fn end_row(&mut self, len: usize) {
        if self.rows == 0 {
            self.cols = len;
        } else if len != self.cols && self.ragged.is_none() {
            self.ragged = Some((self.rows, len));
        }
        self.rows += 1;
    }

    /// `(rows, cols, values)`, or why they are no matrix a topology can have.
    fn limit(&self) -> usize {
        if self.limit == 0 {
            MAX_LOAD_VALUES
        } else {
            self.limit
        }
    }

    fn into_matrix(self, field: &'static str) -> Result<(usize, usize, Vec<f64>), DecodeError> {
        if let Some((layer, len)) = self.ragged {
            return Err(DecodeError::Shape {
                field,
                detail: format!("layer {layer} has {len} values, layer 0 has {}", self.cols),
            });
        }
        let limit = self.limit();
        if self.count.max(self.values.len()) > limit {
            return Err(DecodeError::Shape {
                field,
                detail: format!("has more than {limit} values, more than any topology"),
            });
        }
        Ok((self.rows, self.cols, self.values))
    }
}

impl<'de> Deserialize<'de> for FlatRows {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Rows;
        impl<'de> Visitor<'de> for Rows {
            type Value = FlatRows;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of rows of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FlatRows, A::Error> {
                let mut flat = FlatRows::default();
                while seq.next_element_seed(Row(&mut flat))?.is_some() {}
                Ok(flat)
            }
        }
        deserializer.deserialize_seq(Rows)
    }
}

/// One row, appended to the [`FlatRows`] being built.
struct Row<'a>(&'a mut FlatRows);

impl<'de> DeserializeSeed<'de> for Row<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a row of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let flat = self.0;
        let mut len = 0;
        while let Some(value) = seq.next_element::<f64>()? {
            len += 1;
            flat.count += 1;
            if flat.count <= flat.limit() {
                flat.values.push(value);
            }
        }
        flat.end_row(len);
        Ok(())
    }
}

/// `[L][E][K]` numbers parsed into one row-major vector: the `E x K` rows of
/// every layer go into one [`FlatRows`] (at most [`MAX_COVISIT_VALUES`]
/// kept), and the first layer whose row count differs from layer 0's is
/// remembered.
#[derive(Debug, Clone, Default, PartialEq)]
struct FlatCube {
    rows: FlatRows,
    layers: usize,
    /// Rows (experts) of layer 0.
    experts: usize,
    /// `(layer, experts)` of the first layer unlike layer 0.
    ragged: Option<(usize, usize)>,
    /// Rows read before the current layer.
    rows_before: usize,
}

impl FlatCube {
    fn end_layer(&mut self) {
        let experts = self.rows.rows - self.rows_before;
        if self.layers == 0 {
            self.experts = experts;
        } else if experts != self.experts && self.ragged.is_none() {
            self.ragged = Some((self.layers, experts));
        }
        self.layers += 1;
        self.rows_before = self.rows.rows;
    }

    fn into_covisit(self) -> Result<RawCovisit, DecodeError> {
        let shape = |detail: String| DecodeError::Shape {
            field: "covisit",
            detail,
        };
        if let Some((layer, experts)) = self.ragged {
            return Err(shape(format!(
                "layer {layer} has {experts} experts, layer 0 has {}",
                self.experts
            )));
        }
        if let Some((row, len)) = self.rows.ragged {
            let experts = self.experts.max(1);
            return Err(shape(format!(
                "layer {} expert {} has {len} groups, layer 0 expert 0 has {}",
                row / experts,
                row % experts,
                self.rows.cols
            )));
        }
        if self.rows.count.max(self.rows.values.len()) > MAX_COVISIT_VALUES {
            return Err(shape(format!(
                "has more than {MAX_COVISIT_VALUES} values, more than co-visit counts may have"
            )));
        }
        Ok(RawCovisit {
            layers: self.layers,
            experts: self.experts,
            groups: self.rows.cols,
            values: self.rows.values,
        })
    }
}

impl<'de> Deserialize<'de> for FlatCube {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Layers;
        impl<'de> Visitor<'de> for Layers {
            type Value = FlatCube;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of layers of rows of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FlatCube, A::Error> {
                let mut cube = FlatCube {
                    rows: FlatRows {
                        limit: MAX_COVISIT_VALUES,
                        ..FlatRows::default()
                    },
                    ..FlatCube::default()
                };
                while seq.next_element_seed(Layer(&mut cube))?.is_some() {}
                Ok(cube)
            }
        }
        deserializer.deserialize_seq(Layers)
    }
}

/// One layer of a [`FlatCube`]: rows appended to its [`FlatRows`].
struct Layer<'a>(&'a mut FlatCube);

impl<'de> DeserializeSeed<'de> for Layer<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Layer<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a layer: an array of rows of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let cube = self.0;
        while seq.next_element_seed(Row(&mut cube.rows))?.is_some() {}
        cube.end_layer();
        Ok(())
    }
}

fn parse_optional_time(
    field: &'static str,
    text: Option<&str>,
) -> Result<Option<i64>, DecodeError> {
    text.map(|t| parse_time(field, t)).transpose()
}

/// The one load a window must carry: `logical_load`, or `slot_load` with
/// `plan_version`.
fn pick_load(
    logical: Option<FlatRows>,
    slot: Option<FlatRows>,
    plan_version: Option<i64>,
) -> Result<RawLoad, DecodeError> {
    Ok(match (logical, slot, plan_version) {
        (Some(rows), None, None) => {
            let (rows, cols, values) = rows.into_matrix("logical_load")?;
            RawLoad::Logical { rows, cols, values }
        }
        (None, Some(rows), Some(plan_version)) => {
            let (rows, cols, values) = rows.into_matrix("slot_load")?;
            RawLoad::Slot {
                plan_version,
                rows,
                cols,
                values,
            }
        }
        (None, Some(_), None) => {
            return Err(DecodeError::field(
                "plan_version",
                "required with `slot_load`",
            ))
        }
        (Some(_), None, Some(_)) => {
            return Err(DecodeError::field(
                "plan_version",
                "only allowed with `slot_load`",
            ))
        }
        (Some(_), Some(_), _) => {
            return Err(DecodeError::field(
                "slot_load",
                "give `logical_load` or `slot_load`, not both",
            ))
        }
        (None, None, _) => {
            return Err(DecodeError::field(
                "logical_load",
                "missing (or give `slot_load` with `plan_version`)",
            ))
        }
    })
}

impl TelemetryWindow<u64> {
    /// The JSON body a worker sends. Cannot fail: integer counts and
    /// strings always serialize.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a window of integer counts always serializes")
    }
}

impl TelemetryWindow<f64> {
    /// Parses the times and picks the one load the window must carry.
    pub fn into_raw(self) -> Result<RawWindow, DecodeError> {
        let start_ms = parse_optional_time("window_start", self.window_start.as_deref())?;
        let end_ms = parse_optional_time("window_end", self.window_end.as_deref())?;
        let load = pick_load(
            self.logical_load.map(FlatRows::from_rows),
            self.slot_load.map(FlatRows::from_rows),
            self.plan_version,
        )?;
        let covisit = self.covisit.map(RawCovisit::from_nested).transpose()?;
        Ok(RawWindow {
            worker: self.worker,
            seq: self.seq,
            start_ms,
            end_ms,
            load,
            covisit,
        })
    }
}

fn parse_time(field: &'static str, text: &str) -> Result<i64, DecodeError> {
    let ms = crate::rfc3339::parse(text).ok_or_else(|| {
        DecodeError::field(
            field,
            format!("`{text}` is not an RFC 3339 time like 2026-01-01T00:00:00Z"),
        )
    })?;
    if ms < 0 {
        // A real time, so not malformed; but no load window starts before
        // the Unix epoch.
        return Err(DecodeError::Refused {
            field,
            detail: format!("`{text}` is before 1970"),
        });
    }
    Ok(ms)
}

/// The answer to an accepted window: `202` when stored now, `200` when the
/// same `(worker, seq)` was stored before (counted once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryReceipt {
    pub status: ReceiptStatus,
    pub worker: String,
    pub seq: i64,
    /// The load window the telemetry was counted in.
    pub window: WindowSpan,
}

/// Stored now, or stored before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    Accepted,
    Duplicate,
}

/// A time range, RFC 3339 at both ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpan {
    pub start: String,
    pub end: String,
}

/// `GET /v1/clusters/{cluster}/telemetry/windows`: the aggregated load
/// windows of the current lineage, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadWindows {
    pub cluster: String,
    pub lineage: i64,
    pub window_seconds: f64,
    pub windows: Vec<LoadWindow>,
}

/// One aggregated window in [`LoadWindows`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadWindow {
    pub start: String,
    pub end: String,
    /// Worker windows summed into it.
    pub worker_windows: usize,
    /// Their total token count.
    pub tokens: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_counts_stay_integers_on_the_wire() {
        let w = TelemetryWindow::<u64> {
            worker: "node0-gpu1".into(),
            seq: 3,
            window_start: None,
            window_end: Some("2023-11-14T22:13:20.000Z".into()),
            logical_load: Some(vec![vec![1, 2], vec![0, 5]]),
            slot_load: None,
            plan_version: None,
            covisit: None,
        };
        let text = String::from_utf8(w.to_json()).unwrap();
        assert!(text.contains("[[1,2],[0,5]]"), "{text}");
        assert!(!text.contains("window_start") && !text.contains("slot_load"));
        let raw = RawWindow::from_json(text.as_bytes()).unwrap();
        assert_eq!(raw.end_ms, Some(1_700_000_000_000));
        assert_eq!(
            raw.load,
            RawLoad::Logical {
                rows: 2,
                cols: 2,
                values: vec![1.0, 2.0, 0.0, 5.0]
            }
        );
    }

    #[test]
    fn ragged_and_oversized_loads_are_shape_errors() {
        let err =
            RawWindow::from_json(br#"{"worker": "w", "seq": 1, "logical_load": [[1, 2], [3]]}"#)
                .unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Shape {
                    field: "logical_load",
                    ..
                }
            ),
            "{err}"
        );
        let body = format!(
            r#"{{"worker": "w", "seq": 1, "logical_load": [[{}0]]}}"#,
            "0,".repeat(MAX_LOAD_VALUES)
        );
        let err = RawWindow::from_json(body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn covisit_decodes_flat_and_checks_its_shape() {
        let raw = RawWindow::from_json(
            br#"{"worker": "w", "seq": 1, "logical_load": [[3, 2]],
                 "covisit": [[[3, 1], [0, 2]]]}"#,
        )
        .unwrap();
        let covisit = raw.covisit.unwrap();
        assert_eq!((covisit.layers, covisit.experts, covisit.groups), (1, 2, 2));
        assert_eq!(covisit.values, vec![3.0, 1.0, 0.0, 2.0]);
        assert_eq!(
            covisit.to_nested(),
            vec![vec![vec![3.0, 1.0], vec![0.0, 2.0]]]
        );
        assert_eq!(
            RawCovisit::from_nested(covisit.to_nested()).unwrap(),
            covisit
        );
        let cases = [
            (r#"[[[1, 1], [1]]]"#, "layer 0 expert 1 has 1 groups"),
            (r#"[[[1, 1], [1, 1]], [[1, 1]]]"#, "layer 1 has 1 experts"),
        ];
        for (covisit, needle) in cases {
            let body = format!(
                r#"{{"worker": "w", "seq": 1, "logical_load": [[3, 2]], "covisit": {covisit}}}"#
            );
            let err = RawWindow::from_json(body.as_bytes()).unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::Shape {
                        field: "covisit",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = RawWindow::from_json(
            br#"{"worker": "w", "seq": 1, "logical_load": [[3]], "covisit": [[["x"]]]}"#,
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
        // The worker's form serializes nested and decodes the same.
        let w = TelemetryWindow::<u64> {
            worker: "node0-gpu0".into(),
            seq: 1,
            window_start: None,
            window_end: None,
            logical_load: Some(vec![vec![3, 2]]),
            slot_load: None,
            plan_version: None,
            covisit: Some(vec![vec![vec![3, 1], vec![0, 2]]]),
        };
        let raw = RawWindow::from_json(&w.to_json()).unwrap();
        assert_eq!(raw.covisit.unwrap().values, vec![3.0, 1.0, 0.0, 2.0]);
    }

    #[test]
    fn refuses_unknown_fields_and_ambiguous_loads() {
        let err = RawWindow::from_json(br#"{"worker": "w", "seq": 1, "x": 1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err =
            RawWindow::from_json(br#"{"worker": "w", "seq": 1, "slot_load": [[1]]}"#).unwrap_err();
        assert!(err.to_string().contains("plan_version"), "{err}");
    }

    #[test]
    fn times_with_offsets_and_integral_floats_parse() {
        let raw = RawWindow::from_json(
            br#"{"worker": "w", "seq": 4.0, "window_start": "2023-11-14T23:13:19+01:00",
                 "window_end": "2023-11-14T22:13:20Z", "logical_load": [[1]]}"#,
        )
        .unwrap();
        assert_eq!(raw.seq, 4);
        assert_eq!(raw.start_ms, Some(1_699_999_999_000));
        // A real time before the epoch is refused as such, not as malformed.
        let err = RawWindow::from_json(
            br#"{"worker": "w", "seq": 1, "window_start": "0758-10-29T03:46:49-07:59", "logical_load": [[1]]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Refused {
                    field: "window_start",
                    ..
                }
            ),
            "{err}"
        );
        let err = RawWindow::from_json(
            br#"{"worker": "w", "seq": 1, "window_start": "yesterday", "logical_load": [[1]]}"#,
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::Field { .. }), "{err}");
    }
}
