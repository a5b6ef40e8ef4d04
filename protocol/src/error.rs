//! The one error body: `{"code": .., "message": ..}`. `code` is stable and
//! machine-readable (clients branch on it); `message` is for humans.

use serde::{Deserialize, Serialize};

/// Every error the service answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// The machine-readable error codes. The serde names are the wire strings;
/// a client built against an older list reads a newer service's codes as
/// [`ErrorCode::Unknown`] instead of failing on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // The framework's own refusals (unknown route, body too large, ...).
    BadRequest,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    /// Any other status the framework produced.
    Error,
    /// The database (or the service itself) cannot answer now; retry.
    Unavailable,
    /// Data the service stored earlier does not parse; retrying will not help.
    StoredDataCorrupt,
    // Authentication.
    Unauthorized,
    Forbidden,
    // Request syntax.
    InvalidClusterName,
    InvalidVersion,
    InvalidQuery,
    InvalidTopology,
    MalformedWindow,
    MalformedAck,
    // Missing resources.
    ClusterNotFound,
    /// The cluster exists but has no plan for its current topology yet.
    NoPlan,
    PlanNotFound,
    // Refusals of well-formed requests.
    InvalidWindow,
    UnknownWorker,
    UnknownPlanVersion,
    StalePlanVersion,
    SeqNotMonotone,
    LineageMismatch,
    // Planning.
    NoTelemetry,
    Superseded,
    InsufficientCapacity,
    SolveFailed,
    /// A code this build does not know (never sent by this build).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code this build sends, in declaration order.
    pub const ALL: [ErrorCode; 30] = [
        ErrorCode::BadRequest,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Unprocessable,
        ErrorCode::Error,
        ErrorCode::Unavailable,
        ErrorCode::StoredDataCorrupt,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::InvalidClusterName,
        ErrorCode::InvalidVersion,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidTopology,
        ErrorCode::MalformedWindow,
        ErrorCode::MalformedAck,
        ErrorCode::ClusterNotFound,
        ErrorCode::NoPlan,
        ErrorCode::PlanNotFound,
        ErrorCode::InvalidWindow,
        ErrorCode::UnknownWorker,
        ErrorCode::UnknownPlanVersion,
        ErrorCode::StalePlanVersion,
        ErrorCode::SeqNotMonotone,
        ErrorCode::LineageMismatch,
        ErrorCode::NoTelemetry,
        ErrorCode::Superseded,
        ErrorCode::InsufficientCapacity,
        ErrorCode::SolveFailed,
    ];

    /// The wire string (also a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Unprocessable => "unprocessable",
            ErrorCode::Error => "error",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::StoredDataCorrupt => "stored_data_corrupt",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidClusterName => "invalid_cluster_name",
            ErrorCode::InvalidVersion => "invalid_version",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidTopology => "invalid_topology",
            ErrorCode::MalformedWindow => "malformed_window",
            ErrorCode::MalformedAck => "malformed_ack",
            ErrorCode::ClusterNotFound => "cluster_not_found",
            ErrorCode::NoPlan => "no_plan",
            ErrorCode::PlanNotFound => "plan_not_found",
            ErrorCode::InvalidWindow => "invalid_window",
            ErrorCode::UnknownWorker => "unknown_worker",
            ErrorCode::UnknownPlanVersion => "unknown_plan_version",
            ErrorCode::StalePlanVersion => "stale_plan_version",
            ErrorCode::SeqNotMonotone => "seq_not_monotone",
            ErrorCode::LineageMismatch => "lineage_mismatch",
            ErrorCode::NoTelemetry => "no_telemetry",
            ErrorCode::Superseded => "superseded",
            ErrorCode::InsufficientCapacity => "insufficient_capacity",
            ErrorCode::SolveFailed => "solve_failed",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_match_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str());
            let back: ErrorCode = serde_json::from_value(json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn unknown_codes_still_parse() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"code": "brand_new", "message": "m"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
        let body: ErrorBody =
            serde_json::from_str(r#"{"code": "no_plan", "message": "m"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::NoPlan);
    }
}
