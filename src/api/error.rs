//! API errors: a status, a stable machine-readable [`ErrorCode`] and a
//! human `message`, always sent as the protocol's [`ErrorBody`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_protocol::{ErrorBody, ErrorCode};
use tracing::error;

use crate::ingest_queue::IngestError;
use crate::planner_loop::cycle::CycleError;
use crate::store::StoreError;
use ballast_policy::CandidateError;

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        store_error(&err)
    }
}

/// Database details stay in the log; the client learns it is on our side,
/// and whether a retry can help.
fn store_error(err: &StoreError) -> ApiError {
    error!(error = %err, "store error");
    match err {
        // Stored data that does not parse is no outage: a retry gets the
        // same answer until the data is replaced or ages out.
        StoreError::Corrupt { .. } | StoreError::Codec(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::StoredDataCorrupt,
            format!("{err}; a topology PUT replaces it, or it ages out after --retention"),
        ),
        _ => ApiError::unavailable("the database is unavailable or returned an error; retry later"),
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Store(err) => store_error(&err),
            IngestError::Closed => {
                ApiError::unavailable("the service is shutting down; retry later")
            }
        }
    }
}

impl From<CycleError> for ApiError {
    fn from(err: CycleError) -> Self {
        match err {
            CycleError::NoTelemetry => ApiError::conflict(ErrorCode::NoTelemetry, err.to_string()),
            CycleError::Superseded { .. } => {
                ApiError::conflict(ErrorCode::Superseded, err.to_string())
            }
            CycleError::Candidate(CandidateError::Capacity { .. }) => {
                ApiError::conflict(ErrorCode::InsufficientCapacity, err.to_string())
            }
            CycleError::Candidate(_) | CycleError::Join(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::SolveFailed,
                err.to_string(),
            ),
            CycleError::Store(e) => e.into(),
        }
    }
}
