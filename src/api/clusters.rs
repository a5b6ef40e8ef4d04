//! `PUT/GET/DELETE /v1/clusters/{cluster}` and `GET /v1/clusters`.

use std::sync::Arc;

use super::error::ApiError;
use super::{cluster_entry, parse_cluster};
use crate::domain::parse_topology;
use crate::domain::topology::limits;
use crate::plan_cache::ClusterInfo;
use crate::state::AppState;
use crate::time::{now_ms, rfc3339};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use ballast_protocol::{
    Cluster, ClusterList, ClusterSummary, ErrorCode, TopologyUpdate, WorkerCounts,
};

/// A topology is JSON; another media type is refused (415) rather than
/// parsed anyway, as the OpenAPI document says.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("Content-Type `{content_type}`: send the topology as application/json"),
        ))
    }
}

pub async fn put(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<TopologyUpdate>), ApiError> {
    let name = parse_cluster(&cluster)?;
    require_json(&headers)?;
    // 400 for a body that is not a topology document, 422 for a
    // well-formed one the service refuses (as for load windows).
    let topology = parse_topology(&body).map_err(|e| {
        if e.is_malformed() {
            ApiError::bad_request(ErrorCode::InvalidTopology, e.to_string())
        } else {
            ApiError::unprocessable(ErrorCode::InvalidTopology, e.to_string())
        }
    })?;
    let outcome = state.store.put_cluster(&name, &topology, now_ms()).await?;
    let row = state.store.cluster(&name).await?.ok_or_else(|| {
        ApiError::unavailable("the cluster vanished right after it was written; retry")
    })?;
    state.plan_cache.install(ClusterInfo {
        name: name.clone(),
        topology: Arc::new(row.topology),
        lineage: row.lineage,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
    });
    let new_lineage = outcome.changed && !outcome.created;
    let message = match (outcome.created, outcome.changed, outcome.retired_version) {
        (true, _, _) => "cluster created".to_owned(),
        (false, false, _) => "topology unchanged".to_owned(),
        (false, true, Some(v)) => format!(
            "topology changed: plan lineage {} starts; plans up to version {v} belong to lineage {} and no longer apply",
            outcome.lineage,
            outcome.lineage - 1
        ),
        (false, true, None) => format!("topology changed: plan lineage {} starts", outcome.lineage),
    };
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(TopologyUpdate {
            cluster: name.as_str().to_owned(),
            created: outcome.created,
            changed: outcome.changed,
            lineage: outcome.lineage,
            new_lineage,
            retired_version: outcome.retired_version,
            message,
            topology: topology.to_spec(),
        }),
    ))
}

/// The largest topology body: `gpu_speed` for [`limits::GPUS`] GPUs at
/// about 25 bytes a number, and room for the rest.
pub const MAX_TOPOLOGY_BYTES: usize = 64 * 1024 + limits::GPUS * 32;

/// Deletes a cluster and everything stored for it (one transaction): its
/// workers, receipts, load windows, plans, acks and planner decisions.
/// `204` when it existed, `404` otherwise.
pub async fn delete(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_cluster(&cluster)?;
    if !state.store.delete_cluster(&name).await? {
        return Err(ApiError::not_found(
            ErrorCode::ClusterNotFound,
            format!("cluster {name} does not exist"),
        ));
    }
    // Out of the cache first: a planner cycle still running for the cluster
    // then sees it gone and leaves its gauges alone.
    let entry = state.plan_cache.entry(&name);
    state.plan_cache.remove(&name);
    if let Some(entry) = entry {
        let topology = &entry.info().topology;
        state
            .metrics
            .forget_cluster(name.as_str(), topology.num_layers(), topology.num_gpus());
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
) -> Result<Json<Cluster>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let info = entry.info();
    let workers = state.store.workers(&info.name).await?;
    let count = |f: &dyn Fn(&crate::store::workers::WorkerRow) -> bool| {
        workers.iter().filter(|w| f(w)).count()
    };
    Ok(Json(Cluster {
        cluster: info.name.as_str().to_owned(),
        topology: info.topology.to_spec(),
        lineage: info.lineage,
        created_at: rfc3339(info.created_at_ms),
        updated_at: rfc3339(info.updated_at_ms),
        latest_version: entry.latest().map(|p| p.version),
        workers: WorkerCounts {
            up: count(&|w| w.last_seen_at_ms.is_some() && w.down_since_ms.is_none()),
            down: count(&|w| w.down_since_ms.is_some()),
            unknown: count(&|w| w.last_seen_at_ms.is_none()),
        },
    }))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<ClusterList>, ApiError> {
    state.plan_cache.sync().await?;
    let clusters = state
        .plan_cache
        .entries()
        .iter()
        .map(|entry| {
            let info = entry.info();
            ClusterSummary {
                cluster: info.name.as_str().to_owned(),
                lineage: info.lineage,
                latest_version: entry.latest().map(|p| p.version),
            }
        })
        .collect();
    Ok(Json(ClusterList { clusters }))
}
