//! Reading plans: latest (ETag, `If-None-Match`, `?wait=` long-poll), by
//! version, history, and engine exports (`?format=sglang|trtllm|vllm|vllm-eplb-state`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_protocol::{ErrorCode, PlanList, PlanStats, PlanSummary};
use ballast_solver::export::{self, Engine};
use serde::Deserialize;

use super::error::ApiError;
use super::{cluster_entry, parse_limit, parse_version, plan_version};
use crate::plan_cache::PublishedPlan;
use crate::state::AppState;
use crate::time::rfc3339;

#[derive(Debug, Default, Deserialize)]
pub struct PlanQuery {
    /// Long-poll: how long to wait for a plan newer than `If-None-Match`.
    pub wait: Option<String>,
    /// Engine export format.
    pub format: Option<String>,
}

/// The grammar of `?wait=` as the OpenAPI document states it.
pub const WAIT_PATTERN: &str = "^([0-9]{1,9}(ms|s|m)?)?$";

/// Parses `?wait=` ([`WAIT_PATTERN`]): whole seconds (`30`), or a count of `ms`, `s` or `m`
/// (`500ms`, `30s`, `2m`), at most nine digits, capped at `max`; empty
/// means no wait. The OpenAPI document states the same grammar as a
/// pattern, so a client can check it before sending.
pub fn parse_wait(text: &str, max: Duration) -> Result<Duration, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("wait=`{text}` is not a duration like 30s, 500ms or 2m"),
        )
    };
    if text.is_empty() {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 9 {
        return Err(invalid());
    }
    let count: u64 = digits.parse().map_err(|_| invalid())?;
    let wait = match unit {
        "" | "s" => Duration::from_secs(count),
        "ms" => Duration::from_millis(count),
        "m" => Duration::from_secs(count * 60),
        _ => return Err(invalid()),
    };
    Ok(wait.min(max))
}

/// The highest plan version named in `If-None-Match` (`"7"`, `W/"7"`,
/// `"7-sglang"`, or a list of them).
pub fn known_version(headers: &HeaderMap) -> Option<i64> {
    let value = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    value
        .split(',')
        .filter_map(|tag| {
            let tag = tag.trim().trim_start_matches("W/").trim_matches('"');
            tag.split('-').next()?.parse::<i64>().ok()
        })
        .max()
}

fn format_of(query: &PlanQuery) -> Result<Option<Engine>, ApiError> {
    query
        .format
        .as_deref()
        .map(|f| {
            Engine::parse(f).ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    format!(
                        "format=`{f}`: use {}",
                        Engine::ALL.map(Engine::name).join(", ")
                    ),
                )
            })
        })
        .transpose()
}

fn header_value(text: &str) -> HeaderValue {
    // ETags and media types here are ASCII built from integers and names.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A plan as a response: the cached document, or an engine export (422
/// when the cluster's topology lacks what the engine's layout needs).
fn respond(plan: &PublishedPlan, format: Option<Engine>) -> Result<Response, ApiError> {
    let (etag, content_type, body) =
        match format {
            None => (
                plan.etag.clone(),
                "application/json",
                Body::from(plan.body.clone()),
            ),
            Some(engine) => (
                format!("\"{}-{}\"", plan.version, engine.name()),
                if engine.is_yaml() {
                    "application/yaml"
                } else {
                    "application/json"
                },
                Body::from(engine.render(&plan.topology, &plan.plan).map_err(|e| {
                    ApiError::unprocessable(ErrorCode::InvalidTopology, e.to_string())
                })?),
            ),
        };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::ETAG, header_value(&etag));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if format.is_some() && export::drops_shares(&plan.plan) {
        headers.insert(
            "x-ballast-drops-replica-share",
            HeaderValue::from_static("true"),
        );
    }
    // No engine format can say which tokens a co-visit replica may take:
    // the export lists the slots, an engine that loads it routes to them
    // like to any replica.
    if format.is_some() && plan.plan.replica_scope().is_some() {
        headers.insert(
            "x-ballast-drops-replica-scope",
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

fn not_modified(version: i64) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    response.headers_mut().insert(
        header::ETAG,
        header_value(&crate::plan_cache::etag(version)),
    );
    response
}

pub async fn latest(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    Query(query): Query<PlanQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let format = format_of(&query)?;
    let known = known_version(&headers);
    let wait = query
        .wait
        .as_deref()
        .map(|w| parse_wait(w, state.config.max_wait))
        .transpose()?
        .unwrap_or_default();
    let is_newer = |p: &Option<Arc<PublishedPlan>>| {
        p.as_ref()
            .is_some_and(|p| known.is_none_or(|k| p.version > k))
    };
    let current = entry.latest();
    if is_newer(&current) {
        if let Some(plan) = current {
            return respond(&plan, format);
        }
    }
    if !wait.is_zero() {
        let mut rx = entry.subscribe();
        let waited = tokio::select! {
            r = tokio::time::timeout(wait, rx.wait_for(is_newer)) => r.ok().and_then(|r| r.ok().map(|p| p.clone())),
            _ = state.shutting_down() => None,
        };
        if let Some(Some(plan)) = waited {
            return respond(&plan, format);
        }
    }
    match known {
        Some(k) => Ok(not_modified(entry.latest().map_or(k, |p| p.version.max(k)))),
        None => Err(ApiError::not_found(
            ErrorCode::NoPlan,
            format!("cluster {cluster} has no plan for its current topology yet"),
        )),
    }
}

pub async fn by_version(
    State(state): State<AppState>,
    Path((cluster, version)): Path<(String, String)>,
    Query(query): Query<PlanQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let version = parse_version(&version)?;
    let format = format_of(&query)?;
    let plan = plan_version(&state, &entry, version).await?;
    if known_version(&headers) == Some(version) {
        return Ok(not_modified(version));
    }
    respond(&plan, format)
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<PlanList>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let limit = parse_limit(query.limit.as_deref())?;
    let plans = state
        .store
        .plan_summaries(&info.name, limit)
        .await?
        .into_iter()
        .map(|p| PlanSummary {
            version: p.version,
            lineage: p.lineage,
            created_at: rfc3339(p.created_at_ms),
            reason: p.reason,
            stats: serde_json::from_str::<PlanStats>(&p.stats).ok(),
        })
        .collect();
    Ok(Json(PlanList {
        cluster: info.name.as_str().to_owned(),
        lineage: info.lineage,
        plans,
    }))
}
