//! Workers: listing, plan acknowledgements, rollout status per plan, and
//! the planner's decision log.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ballast_protocol::{
    AckReceipt, AckRequest, Decision, DecisionList, ErrorCode, Rollout, VersionWorkers, WorkerList,
    WorkerState, WorkerStatus,
};
use serde::Deserialize;

use super::error::ApiError;
use super::{cluster_entry, parse_limit, parse_version, plan_version};
use crate::domain::WorkerName;
use crate::state::AppState;
use crate::store::workers::AckOutcome;
use crate::time::{now_ms, rfc3339};

pub async fn list(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
) -> Result<Json<WorkerList>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let workers = state
        .store
        .workers(&info.name)
        .await?
        .into_iter()
        .map(|w| {
            let status = match (w.last_seen_at_ms, w.down_since_ms) {
                (None, _) => WorkerState::Unknown,
                (Some(_), Some(_)) => WorkerState::Down,
                (Some(_), None) => WorkerState::Up,
            };
            WorkerStatus {
                worker: w.name,
                gpu: w.gpu,
                status,
                last_seq: (w.last_seq >= 0).then_some(w.last_seq),
                last_seen_at: w.last_seen_at_ms.map(rfc3339),
                down_since: w.down_since_ms.map(rfc3339),
                applied_version: w.applied_version,
                applied_at: w.applied_at_ms.map(rfc3339),
            }
        })
        .collect();
    Ok(Json(WorkerList {
        cluster: info.name.as_str().to_owned(),
        workers,
    }))
}

pub async fn ack(
    State(state): State<AppState>,
    Path((cluster, worker)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<AckReceipt>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let worker = WorkerName::parse(&worker, &info.topology)
        .map_err(|e| ApiError::unprocessable(ErrorCode::UnknownWorker, e.to_string()))?;
    let body: AckRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::MalformedAck,
            format!("expected {{\"version\": N}}: {e}"),
        )
    })?;
    let now = now_ms();
    match state
        .store
        .ack(&info.name, &worker, body.version, now)
        .await?
    {
        AckOutcome::Recorded => Ok(Json(AckReceipt {
            worker: worker.as_str().to_owned(),
            applied_version: body.version,
            acked_at: rfc3339(now),
        })),
        AckOutcome::UnknownVersion => Err(ApiError::unprocessable(
            ErrorCode::UnknownPlanVersion,
            format!("plan version {} does not exist", body.version),
        )),
        AckOutcome::UnknownWorker => Err(ApiError::unprocessable(
            ErrorCode::UnknownWorker,
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
) -> Result<Json<Rollout>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let version = parse_version(&version)?;
    let plan = plan_version(&state, &entry, version).await?;
    let workers = state.store.workers(&info.name).await?;
    let mut by_version: BTreeMap<Option<i64>, Vec<&str>> = BTreeMap::new();
    for w in &workers {
        by_version
            .entry(w.applied_version)
            .or_default()
            .push(&w.name);
    }
    let applied = by_version.get(&Some(version)).map_or(0, Vec::len);
    let owned = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let other_versions = by_version
        .iter()
        .filter(|(v, _)| **v != Some(version))
        .map(|(v, names)| VersionWorkers {
            version: *v,
            workers: owned(names),
        })
        .collect();
    let current = plan.lineage == info.lineage;
    Ok(Json(Rollout {
        cluster: info.name.as_str().to_owned(),
        version,
        published_at: rfc3339(plan.created_at_ms),
        current_lineage: current,
        gpus: workers.len(),
        applied,
        complete: current && applied == workers.len(),
        applied_workers: by_version
            .get(&Some(version))
            .map_or_else(Vec::new, |names| owned(names)),
        other_versions,
    }))
}

#[derive(Deserialize)]
pub struct DecisionsQuery {
    limit: Option<String>,
}

pub async fn decisions(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    Query(query): Query<DecisionsQuery>,
) -> Result<(StatusCode, Json<DecisionList>), ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let limit = parse_limit(query.limit.as_deref())?;
    let decisions = state
        .store
        .decisions(&info.name, limit)
        .await?
        .into_iter()
        .map(|d| Decision {
            cycle: d.cycle,
            decided_at: rfc3339(d.decided_at_ms),
            lineage: d.lineage,
            base_version: d.base_version,
            published_version: d.published_version,
            reason: d.reason,
            detail: d.detail,
            current_imbalance: d.observed_imbalance,
            predicted_imbalance: d.predicted_imbalance,
            migrations: d.migrations,
            net_gain: d.net_gain,
            streak: d.streak,
        })
        .collect();
    Ok((
        StatusCode::OK,
        Json(DecisionList {
            cluster: info.name.as_str().to_owned(),
            decisions,
        }),
    ))
}
