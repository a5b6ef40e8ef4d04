//! `GET /v1/clusters/{cluster}/telemetry/trace[?since=T&until=T]`: the
//! cluster's stored load windows as a trace (JSON Lines, one
//! [`TraceWindow`] per line, oldest first), so a replay job can read a
//! cluster's history with a token instead of database credentials.
//!
//! Only closed windows of the current lineage that start in the span are
//! sent. The body is streamed: windows are read a page at a time
//! ([`StoredTrace`]) and written one line at a time, so a long history
//! never sits in memory. The first page is read before the status is sent,
//! so a database that is down is a 503; a failure later cuts the body
//! short (the client sees an incomplete chunked body, never a silently
//! shorter trace).

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ballast_protocol::{ErrorCode, TraceWindow};
use futures_util::stream;
use serde::Deserialize;
use tracing::error;

use super::cluster_entry;
use super::error::ApiError;
use crate::history::stored::StoredTrace;
use crate::state::AppState;
use crate::time::{now_ms, Span, SpanError};

/// The media type of the body.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// The response header naming the lineage the windows belong to (the
/// topology they are shaped by).
pub const LINEAGE_HEADER: &str = "ballast-lineage";

#[derive(Debug, Default, Deserialize)]
pub struct TraceQuery {
    /// RFC 3339: only windows starting at or after it.
    since: Option<String>,
    /// RFC 3339: only windows starting before it.
    until: Option<String>,
}

pub async fn trace(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    Query(query): Query<TraceQuery>,
) -> Result<Response, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let span = Span::parse(query.since.as_deref(), query.until.as_deref()).map_err(refused)?;
    let info = entry.info();
    let mut trace = StoredTrace::new(
        state.store.clone(),
        info.name.clone(),
        info.lineage,
        &info.topology,
        state.config.windows(),
        &span,
        now_ms(),
    );
    let first = trace.next_page().await?;
    let lines = Lines {
        trace: Some(trace),
        page: first.into(),
    };
    let body = Body::from_stream(stream::unfold(lines, Lines::next));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
            (
                header::HeaderName::from_static(LINEAGE_HEADER),
                HeaderValue::from(info.lineage),
            ),
        ],
        body,
    )
        .into_response())
}

/// An unparsable time is a bad request; an empty span is well-formed but
/// selects nothing anyone could want.
fn refused(err: SpanError) -> ApiError {
    let status = match err {
        SpanError::Since(_) | SpanError::Until(_) => StatusCode::BAD_REQUEST,
        SpanError::Empty { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, ErrorCode::InvalidQuery, err.to_string())
}

/// The body's state: the page being written and the rest of the trace.
struct Lines {
    /// `None` once the store failed: the body ends (cut short) after the error.
    trace: Option<StoredTrace>,
    page: VecDeque<TraceWindow>,
}

impl Lines {
    /// The next line, or the error that cuts the body short.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Lines)> {
        if self.page.is_empty() {
            let trace = self.trace.as_mut()?;
            match trace.next_page().await {
                Ok(page) => self.page = page.into(),
                Err(err) => {
                    error!(error = %err, "store error while streaming a trace; the body is cut short");
                    self.trace = None;
                    return Some((Err(std::io::Error::other(err)), self));
                }
            }
        }
        let window = self.page.pop_front()?;
        let line = serde_json::to_vec(&window).map(|mut line| {
            line.push(b'\n');
            Bytes::from(line)
        });
        Some((line.map_err(std::io::Error::other), self))
    }
}
