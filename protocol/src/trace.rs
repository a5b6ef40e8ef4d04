//! One line of a load trace (`trace.jsonl`, SPEC "Files"): a cluster load
//! window with its place in time. `ballast replay` reads these, and
//! `GET /v1/clusters/{cluster}/telemetry/trace` streams a cluster's stored
//! windows in this form, one JSON object per line.

use serde::{Deserialize, Serialize};

/// One window of a trace. Extra fields are allowed (and ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceWindow {
    /// The window's index; ascending in a trace.
    pub window: u64,
    /// RFC 3339 start of the window, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// RFC 3339 end of the window, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// `L x E` token→expert assignments, summed over the cluster's workers.
    pub load: Vec<Vec<f64>>,
    /// `L x E x K` co-visit counts (SPEC), summed like `load`; only when
    /// every worker window of the window carried them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covisit: Option<Vec<Vec<Vec<f64>>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_spec_form_with_and_without_times() {
        let bare: TraceWindow = serde_json::from_str(r#"{"window": 3, "load": [[1, 2]]}"#).unwrap();
        assert_eq!(bare.window, 3);
        assert_eq!(bare.load, vec![vec![1.0, 2.0]]);
        assert!(bare.start.is_none());
        let timed: TraceWindow = serde_json::from_str(
            r#"{"window": 0, "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:01:00Z",
                "load": [[0]], "covisit": [[[0]]], "other": 1}"#,
        )
        .unwrap();
        assert_eq!(timed.end.as_deref(), Some("2026-01-01T00:01:00Z"));
        assert_eq!(timed.covisit, Some(vec![vec![vec![0.0]]]));
        let line = serde_json::to_string(&bare).unwrap();
        assert_eq!(line, r#"{"window":3,"load":[[1.0,2.0]]}"#);
    }
}
