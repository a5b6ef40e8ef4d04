//! One worker's load window (SPEC "telemetry window"), from either wire
//! encoding to a validated [`TelemetryWindow`].
//!
//! Both encodings first become a [`RawWindow`] (shape not yet checked), and
//! [`RawWindow::validate`] is the single place that checks it against the
//! cluster's topology.

use ballast_solver::Topology;
use serde::Deserialize;
use thiserror::Error;

use super::names::{NameError, WorkerName};

/// How far in the future a window may end: worker clocks drift, but a window
/// from tomorrow would sit in a bucket the planner never reaches.
const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Why a telemetry window was refused (every message names the field and,
/// for load values, the layer and index).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum WindowError {
    #[error("malformed window: {0}")]
    Malformed(String),
    #[error(transparent)]
    Worker(#[from] NameError),
    #[error("field `{field}`: {detail}")]
    Field { field: &'static str, detail: String },
    #[error("`{field}` layer {layer} index {index}: {detail}")]
    Entry {
        field: &'static str,
        layer: usize,
        index: usize,
        detail: String,
    },
}

impl WindowError {
    fn field(field: &'static str, detail: impl Into<String>) -> Self {
        WindowError::Field {
            field,
            detail: detail.into(),
        }
    }
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

/// A window as decoded from the wire; only [`RawWindow::validate`] consumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawWindow {
    pub worker: String,
    pub seq: i64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub load: RawLoad,
}

/// A validated window's load.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowLoad {
    /// `L x E` values, row-major.
    Logical(Vec<f64>),
    /// `L x S` values for the worker's slots under `plan_version`.
    Slot { plan_version: i64, values: Vec<f64> },
}

/// A window that fits its cluster's topology: known worker, non-negative
/// sequence number, ordered timestamps, finite non-negative counts.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryWindow {
    pub worker: WorkerName,
    pub seq: i64,
    /// When the window ended (the receive time when the worker gave none).
    pub end_ms: i64,
    pub load: WindowLoad,
}

/// The JSON form (SPEC): `logical_load`, or `slot_load` with `plan_version`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonWindow {
    worker: String,
    seq: i64,
    #[serde(default)]
    window_start: Option<String>,
    #[serde(default)]
    window_end: Option<String>,
    #[serde(default)]
    logical_load: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    slot_load: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    plan_version: Option<i64>,
}

impl RawWindow {
    /// Decodes the JSON encoding.
    pub fn from_json(body: &[u8]) -> Result<Self, WindowError> {
        let w: JsonWindow =
            serde_json::from_slice(body).map_err(|e| WindowError::Malformed(e.to_string()))?;
        let start_ms = w
            .window_start
            .as_deref()
            .map(|t| parse_time("window_start", t))
            .transpose()?;
        let end_ms = w
            .window_end
            .as_deref()
            .map(|t| parse_time("window_end", t))
            .transpose()?;
        let load = match (w.logical_load, w.slot_load, w.plan_version) {
            (Some(rows), None, None) => {
                let (rows, cols, values) = flatten("logical_load", rows)?;
                RawLoad::Logical { rows, cols, values }
            }
            (None, Some(rows), Some(plan_version)) => {
                let (rows, cols, values) = flatten("slot_load", rows)?;
                RawLoad::Slot {
                    plan_version,
                    rows,
                    cols,
                    values,
                }
            }
            (None, Some(_), None) => {
                return Err(WindowError::field(
                    "plan_version",
                    "required with `slot_load`",
                ))
            }
            (Some(_), None, Some(_)) => {
                return Err(WindowError::field(
                    "plan_version",
                    "only allowed with `slot_load`",
                ))
            }
            (Some(_), Some(_), _) => {
                return Err(WindowError::field(
                    "slot_load",
                    "give `logical_load` or `slot_load`, not both",
                ))
            }
            (None, None, _) => {
                return Err(WindowError::field(
                    "logical_load",
                    "missing (or give `slot_load` with `plan_version`)",
                ))
            }
        };
        Ok(RawWindow {
            worker: w.worker,
            seq: w.seq,
            start_ms,
            end_ms,
            load,
        })
    }

    /// Checks the window against `topology`; `now_ms` stands in for a
    /// missing `window_end` and bounds clock skew.
    pub fn validate(
        self,
        topology: &Topology,
        now_ms: i64,
    ) -> Result<TelemetryWindow, WindowError> {
        let worker = WorkerName::parse(&self.worker, topology)?;
        if self.seq < 0 {
            return Err(WindowError::field(
                "seq",
                format!("must not be negative, got {}", self.seq),
            ));
        }
        let end_ms = self.end_ms.unwrap_or(now_ms);
        if end_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(WindowError::field(
                "window_end",
                "is more than 5 minutes in the future",
            ));
        }
        if let Some(start) = self.start_ms {
            if start > end_ms {
                return Err(WindowError::field("window_start", "is after `window_end`"));
            }
        }
        let load = match self.load {
            RawLoad::Logical { rows, cols, values } => {
                check_shape(
                    "logical_load",
                    rows,
                    cols,
                    topology.num_layers(),
                    topology.num_logical_experts(),
                    "experts",
                )?;
                check_values("logical_load", cols, &values)?;
                WindowLoad::Logical(values)
            }
            RawLoad::Slot {
                plan_version,
                rows,
                cols,
                values,
            } => {
                if plan_version < 1 {
                    return Err(WindowError::field(
                        "plan_version",
                        format!("must be a published version, got {plan_version}"),
                    ));
                }
                check_shape(
                    "slot_load",
                    rows,
                    cols,
                    topology.num_layers(),
                    topology.slots_per_gpu(),
                    "slots",
                )?;
                check_values("slot_load", cols, &values)?;
                WindowLoad::Slot {
                    plan_version,
                    values,
                }
            }
        };
        Ok(TelemetryWindow {
            worker,
            seq: self.seq,
            end_ms,
            load,
        })
    }
}

/// Number of load values a window carries (for byte accounting).
impl RawLoad {
    pub fn len(&self) -> usize {
        match self {
            RawLoad::Logical { values, .. } | RawLoad::Slot { values, .. } => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_time(field: &'static str, text: &str) -> Result<i64, WindowError> {
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| WindowError::field(field, format!("`{text}` is not an RFC 3339 time: {e}")))?;
    let ms = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| WindowError::field(field, "is before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| WindowError::field(field, "is too far in the future"))
}

/// Row-major flattening; ragged rows are reported with their layer.
fn flatten(
    field: &'static str,
    rows: Vec<Vec<f64>>,
) -> Result<(usize, usize, Vec<f64>), WindowError> {
    let cols = rows.first().map_or(0, Vec::len);
    let mut values = Vec::with_capacity(rows.len() * cols);
    for (layer, row) in rows.iter().enumerate() {
        if row.len() != cols {
            return Err(WindowError::field(
                field,
                format!("layer {layer} has {} values, layer 0 has {cols}", row.len()),
            ));
        }
        values.extend_from_slice(row);
    }
    Ok((rows.len(), cols, values))
}

fn check_shape(
    field: &'static str,
    rows: usize,
    cols: usize,
    layers: usize,
    width: usize,
    what: &str,
) -> Result<(), WindowError> {
    if rows != layers {
        return Err(WindowError::field(
            field,
            format!("has {rows} layers, topology has {layers}"),
        ));
    }
    if cols != width {
        return Err(WindowError::field(
            field,
            format!("has {cols} values per layer, topology has {width} {what}"),
        ));
    }
    Ok(())
}

fn check_values(field: &'static str, cols: usize, values: &[f64]) -> Result<(), WindowError> {
    match values.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        None => Ok(()),
        Some(i) => Err(WindowError::Entry {
            field,
            layer: i / cols,
            index: i % cols,
            detail: format!("{} is not a finite non-negative count", values[i]),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap()
    }

    const NOW: i64 = 1_700_000_000_000;

    fn parse(json: &str) -> Result<TelemetryWindow, WindowError> {
        RawWindow::from_json(json.as_bytes())?.validate(&topology(), NOW)
    }

    #[test]
    fn accepts_logical_and_slot_windows() {
        let w = parse(
            r#"{"worker": "node0-gpu1", "seq": 3, "window_start": "2023-11-14T22:13:10Z",
            "window_end": "2023-11-14T22:13:20Z", "logical_load": [[1,2,3,4],[0,0,0,5]]}"#,
        )
        .unwrap();
        assert_eq!(w.worker.gpu(), 1);
        assert_eq!(w.end_ms, 1_700_000_000_000);
        assert_eq!(
            w.load,
            WindowLoad::Logical(vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 5.0])
        );
        let w = parse(
            r#"{"worker": "node0-gpu0", "seq": 0, "plan_version": 2,
            "slot_load": [[1,2,3],[4,5,6]]}"#,
        )
        .unwrap();
        assert_eq!(w.end_ms, NOW);
        assert!(matches!(
            w.load,
            WindowLoad::Slot {
                plan_version: 2,
                ..
            }
        ));
    }

    #[test]
    fn refuses_bad_windows_with_a_precise_message() {
        let cases = [
            (
                r#"{"worker": "node0-gpu2", "seq": 1, "logical_load": [[1,2,3,4],[1,2,3,4]]}"#,
                "does not exist",
            ),
            (
                r#"{"worker": "gpu0", "seq": 1, "logical_load": [[1,2,3,4],[1,2,3,4]]}"#,
                "node<N>-gpu<G>",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": -1, "logical_load": [[1,2,3,4],[1,2,3,4]]}"#,
                "seq",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": 1, "logical_load": [[1,2,3,4]]}"#,
                "1 layers",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": 1, "logical_load": [[1,2,3],[1,2,3]]}"#,
                "3 values per layer",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": 1, "logical_load": [[1,2,3,4],[1,2,3]]}"#,
                "layer 1 has 3",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": 1, "logical_load": [[1,2,3,4],[1,-2,3,4]]}"#,
                "layer 1 index 1",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": 1, "slot_load": [[1,2,3],[1,2,3]]}"#,
                "plan_version",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": 1, "logical_load": [[1,2,3,4],[1,2,3,4]], "x": 1}"#,
                "unknown field",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": 1, "window_end": "2999-01-01T00:00:00Z", "logical_load": [[1,2,3,4],[1,2,3,4]]}"#,
                "future",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": 1, "window_start": "2023-11-14T22:13:30Z", "window_end": "2023-11-14T22:13:20Z", "logical_load": [[1,2,3,4],[1,2,3,4]]}"#,
                "after",
            ),
            (
                r#"{"worker": "node0-gpu0", "seq": 1, "window_end": "yesterday", "logical_load": [[1,2,3,4],[1,2,3,4]]}"#,
                "RFC 3339",
            ),
        ];
        for (json, needle) in cases {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
