//! Workers: listing, plan acknowledgements, rollout status per plan, and
//! the planner's decision log.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{cluster_entry, parse_version, rfc3339};
use crate::domain::WorkerName;
use crate::state::{now_ms, AppState};
use crate::store::workers::AckOutcome;

pub async fn list(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let workers: Vec<Value> = state
        .store
        .workers(info.name.as_str())
        .await?
        .into_iter()
        .map(|w| {
            let status = match (w.last_seen_at_ms, w.down_since_ms) {
                (None, _) => "unknown",
                (Some(_), Some(_)) => "down",
                (Some(_), None) => "up",
            };
            json!({
                "worker": w.name,
                "gpu": w.gpu,
                "status": status,
                "last_seq": (w.last_seq >= 0).then_some(w.last_seq),
                "last_seen_at": w.last_seen_at_ms.map(rfc3339),
                "down_since": w.down_since_ms.map(rfc3339),
                "applied_version": w.applied_version,
                "applied_at": w.applied_at_ms.map(rfc3339),
            })
        })
        .collect();
    Ok(Json(
        json!({ "cluster": info.name.as_str(), "workers": workers }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    version: i64,
}

pub async fn ack(
    State(state): State<AppState>,
    Path((cluster, worker)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let worker = WorkerName::parse(&worker, &info.topology)
        .map_err(|e| ApiError::unprocessable("unknown_worker", e.to_string()))?;
    let body: AckBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("malformed_ack", format!("expected {{\"version\": N}}: {e}"))
    })?;
    let now = now_ms();
    match state
        .store
        .ack(info.name.as_str(), worker.as_str(), body.version, now)
        .await?
    {
        AckOutcome::Recorded => Ok(Json(json!({
            "worker": worker.as_str(),
            "applied_version": body.version,
            "acked_at": rfc3339(now),
        }))),
        AckOutcome::UnknownVersion => Err(ApiError::unprocessable(
            "unknown_plan_version",
            format!("plan version {} does not exist", body.version),
        )),
        AckOutcome::UnknownWorker => Err(ApiError::unprocessable(
            "unknown_worker",
            format!(
                "worker {} is not part of the cluster's current topology",
                worker.as_str()
            ),
        )),
    }
}

/// Which GPUs run `version`, and which run what instead.
pub async fn rollout(
    State(state): State<AppState>,
    Path((cluster, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let version = parse_version(&version)?;
    let plan = state.registry.plan(&entry, version).await?.ok_or_else(|| {
        ApiError::not_found(
            "plan_not_found",
            format!("cluster {cluster} has no plan version {version}"),
        )
    })?;
    let workers = state.store.workers(info.name.as_str()).await?;
    let mut by_version: BTreeMap<Option<i64>, Vec<&str>> = BTreeMap::new();
    for w in &workers {
        by_version
            .entry(w.applied_version)
            .or_default()
            .push(&w.name);
    }
    let applied = by_version.get(&Some(version)).map_or(0, Vec::len);
    let others: Vec<Value> = by_version
        .iter()
        .filter(|(v, _)| **v != Some(version))
        .map(|(v, names)| json!({ "version": v, "workers": names }))
        .collect();
    let current = plan.lineage == info.lineage;
    Ok(Json(json!({
        "cluster": info.name.as_str(),
        "version": version,
        "published_at": rfc3339(plan.created_at_ms),
        "current_lineage": current,
        "gpus": workers.len(),
        "applied": applied,
        "complete": current && applied == workers.len(),
        "applied_workers": by_version.get(&Some(version)).cloned().unwrap_or_default(),
        "other_versions": others,
    })))
}

#[derive(Deserialize)]
pub struct DecisionsQuery {
    limit: Option<usize>,
}

pub async fn decisions(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    Query(query): Query<DecisionsQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let limit = query.limit.unwrap_or(20).clamp(1, 1000);
    let decisions: Vec<Value> = state
        .store
        .decisions(info.name.as_str(), limit)
        .await?
        .into_iter()
        .map(|d| {
            json!({
                "cycle": d.cycle,
                "decided_at": rfc3339(d.decided_at_ms),
                "lineage": d.lineage,
                "base_version": d.base_version,
                "published_version": d.published_version,
                "reason": d.reason,
                "detail": d.detail,
                "current_imbalance": d.observed_imbalance,
                "predicted_imbalance": d.predicted_imbalance,
                "migrations": d.migrations,
                "net_gain": d.net_gain,
                "streak": d.streak,
            })
        })
        .collect();
    Ok((
        StatusCode::OK,
        Json(json!({ "cluster": info.name.as_str(), "decisions": decisions })),
    ))
}
