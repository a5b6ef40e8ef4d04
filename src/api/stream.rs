//! `GET /v1/clusters/{cluster}/plans/stream`: Server-Sent Events, one
//! `plan` event (id = version, data = the plan document) per new plan. A
//! client that reconnects with `Last-Event-ID` gets only newer plans; a new
//! client first gets the current plan.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};

use super::cluster_entry;
use super::error::ApiError;
use crate::state::AppState;

pub async fn stream(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let rx = entry.subscribe();
    let events = stream::unfold(
        (rx, last_seen, state),
        |(mut rx, last_seen, state)| async move {
            let newer = |p: &Option<std::sync::Arc<crate::plan_cache::PublishedPlan>>| {
                p.as_ref().is_some_and(|p| p.version > last_seen)
            };
            let plan = tokio::select! {
                r = rx.wait_for(newer) => r.ok().and_then(|p| p.clone())?,
                _ = state.shutting_down() => return None,
            };
            let event = Event::default()
                .event("plan")
                .id(plan.version.to_string())
                .data(String::from_utf8_lossy(&plan.body));
            Some((Ok(event), (rx, plan.version, state)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
