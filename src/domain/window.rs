//! One worker's load window (SPEC "telemetry window"), from its decoded
//! wire form ([`RawWindow`], either encoding, see `ballast_protocol`) to a
//! validated [`TelemetryWindow`].
//!
//! [`TelemetryWindow::from_raw`] is the single place that checks a window
//! against the cluster's topology.

use ballast_protocol::{DecodeError, RawCovisit, RawLoad, RawWindow};
use ballast_solver::Topology;
use thiserror::Error;

use super::names::{NameError, WorkerName};

/// How far in the future a window may end: worker clocks drift, but a window
/// from tomorrow would sit in a bucket the planner never reaches.
const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Why a telemetry window was refused (every message names the field and,
/// for load values, the layer and index).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum WindowError {
    /// The body does not decode (reported before any topology check).
    #[error(transparent)]
    Decode(#[from] DecodeError),
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
    /// Co-visit counts, `L x E x K` row-major (`covisit[l][e][k]` at
    /// `(l * E + e) * K + k`), each at most its expert's load in this
    /// window; only with logical load.
    pub covisit: Option<Vec<f64>>,
}

impl TelemetryWindow {
    /// Checks a decoded window against `topology`; `now_ms` stands in for a
    /// missing `window_end` and bounds clock skew.
    pub fn from_raw(
        raw: RawWindow,
        topology: &Topology,
        now_ms: i64,
    ) -> Result<TelemetryWindow, WindowError> {
        let worker = WorkerName::parse(&raw.worker, topology)?;
        if raw.seq < 0 {
            return Err(WindowError::field(
                "seq",
                format!("must not be negative, got {}", raw.seq),
            ));
        }
        let end_ms = raw.end_ms.unwrap_or(now_ms);
        if end_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(WindowError::field(
                "window_end",
                "is more than 5 minutes in the future",
            ));
        }
        if let Some(start) = raw.start_ms {
            if start > end_ms {
                return Err(WindowError::field("window_start", "is after `window_end`"));
            }
        }
        let load = match raw.load {
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
        let covisit = match (raw.covisit, &load) {
            (None, _) => None,
            (Some(covisit), WindowLoad::Logical(load)) => {
                Some(check_covisit(covisit, load, topology)?)
            }
            (Some(_), WindowLoad::Slot { .. }) => {
                return Err(WindowError::field(
                    "covisit",
                    "only allowed with `logical_load`: co-visit counts are the tokens this \
                     worker routed, and `slot_load` counts the tokens its slots processed",
                ))
            }
        };
        Ok(TelemetryWindow {
            worker,
            seq: raw.seq,
            end_ms,
            load,
            covisit,
        })
    }
}

/// Checks co-visit counts against the topology (`L x E x K`) and the
/// window's logical load (`L x E`): every count finite, non-negative and at
/// most its expert's load (a token that chose `e` counts once per group).
fn check_covisit(
    covisit: RawCovisit,
    load: &[f64],
    topology: &Topology,
) -> Result<Vec<f64>, WindowError> {
    let (layers, experts, groups) = (
        topology.num_layers(),
        topology.num_logical_experts(),
        topology.num_groups(),
    );
    let shape = [
        (covisit.layers, layers, "layers"),
        (covisit.experts, experts, "experts per layer"),
        (covisit.groups, groups, "groups per expert"),
    ];
    for (got, want, what) in shape {
        if got != want {
            return Err(WindowError::field(
                "covisit",
                format!("has {got} {what}, topology has {want}"),
            ));
        }
    }
    for (i, &count) in covisit.values.iter().enumerate() {
        let (row, group) = (i / groups, i % groups);
        let (layer, expert) = (row / experts, row % experts);
        let entry = |detail: String| WindowError::Entry {
            field: "covisit",
            layer,
            index: expert,
            detail,
        };
        if !(count.is_finite() && (0.0..=MAX_COUNT).contains(&count)) {
            return Err(entry(format!(
                "group {group}: {count} is not a count between 0 and {MAX_COUNT:e}"
            )));
        }
        let expert_load = load[row];
        if count > expert_load {
            return Err(entry(format!(
                "group {group}: {count} tokens, more than the expert's load in this window \
                 ({expert_load}, `logical_load` layer {layer} index {expert})"
            )));
        }
    }
    Ok(covisit.values)
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

/// The largest count one cell of a window may hold: token-to-expert
/// assignments of one worker in one window. A GPU routes well under 1e7
/// tokens a second, so 1e15 is decades of traffic; what it rules out are
/// finite values so large (1e308) that the sums the planner takes over
/// layers, GPUs and windows overflow to infinity. Any sum of such counts
/// over the limits' sizes and a retention's windows stays far below f64's
/// range.
pub const MAX_COUNT: f64 = 1e15;

fn check_values(field: &'static str, cols: usize, values: &[f64]) -> Result<(), WindowError> {
    match values
        .iter()
        .position(|v| !(v.is_finite() && (0.0..=MAX_COUNT).contains(v)))
    {
        None => Ok(()),
        Some(i) => Err(WindowError::Entry {
            field,
            layer: i / cols,
            index: i % cols,
            detail: format!("{} is not a count between 0 and {MAX_COUNT:e}", values[i]),
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
        TelemetryWindow::from_raw(RawWindow::from_json(json.as_bytes())?, &topology(), NOW)
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
    fn covisit_is_checked_against_topology_and_load() {
        let base = r#""worker": "node0-gpu1", "seq": 3, "logical_load": [[1,2,3,4],[0,0,0,5]]"#;
        let ok = r#"[[[1,0],[2,1],[0,3],[4,4]],[[0,0],[0,0],[0,0],[5,5]]]"#;
        let w = parse(&format!(r#"{{{base}, "covisit": {ok}}}"#)).unwrap();
        let covisit = w.covisit.unwrap();
        assert_eq!(covisit.len(), 2 * 4 * 2);
        assert_eq!(covisit[2..4], [2.0, 1.0]);
        let cases = [
            (r#"[[[1,0],[2,1],[0,3],[4,4]]]"#, "has 1 layers, topology has 2"),
            (r#"[[[1],[2],[0],[4]],[[0],[0],[0],[5]]]"#, "has 1 groups per expert"),
            (
                r#"[[[1,0],[2,3],[0,3],[4,4]],[[0,0],[0,0],[0,0],[5,5]]]"#,
                "`covisit` layer 0 index 1: group 1: 3 tokens, more than the expert's load in this window (2",
            ),
            (
                r#"[[[1,0],[2,1],[0,3],[4,4]],[[0,0],[0,-1],[0,0],[5,5]]]"#,
                "`covisit` layer 1 index 1: group 1: -1 is not a count",
            ),
        ];
        for (covisit, needle) in cases {
            let err = parse(&format!(r#"{{{base}, "covisit": {covisit}}}"#))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{covisit}: {err}");
        }
        let err = parse(
            r#"{"worker": "node0-gpu0", "seq": 0, "plan_version": 2,
            "slot_load": [[1,2,3],[4,5,6]], "covisit": [[[0,0],[0,0],[0,0],[0,0]],[[0,0],[0,0],[0,0],[0,0]]]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("only allowed with `logical_load`"), "{err}");
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
