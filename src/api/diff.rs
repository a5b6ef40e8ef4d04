//! `GET /v1/clusters/{cluster}/plans/{version}/diff?from=V`: what each GPU
//! must load and evict to go from plan `V` to plan `version`.

use axum::extract::{Path, Query, State};
use axum::Json;
use ballast_protocol::{ErrorCode, GpuDiff, LayerDiff, PlanDiff};
use ballast_solver::migration::{self, GpuChanges};
use serde::Deserialize;

use super::error::ApiError;
use super::{cluster_entry, parse_version, plan_version};
use crate::domain::WorkerName;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct DiffQuery {
    from: Option<String>,
}

pub async fn diff(
    State(state): State<AppState>,
    Path((cluster, version)): Path<(String, String)>,
    Query(query): Query<DiffQuery>,
) -> Result<Json<PlanDiff>, ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let to_version = parse_version(&version)?;
    let from_version = match query.from.as_deref() {
        Some(text) => parse_version(text)?,
        None => to_version - 1,
    };
    let to = plan_version(&state, &entry, to_version).await?;
    let from = plan_version(&state, &entry, from_version).await?;
    if from.lineage != to.lineage {
        return Err(ApiError::conflict(
            ErrorCode::LineageMismatch,
            format!(
                "versions {from_version} and {to_version} were made for different topologies (lineages {} and {})",
                from.lineage, to.lineage
            ),
        ));
    }
    let topology = &to.topology;
    let s = topology.slots_per_gpu();
    let bytes_per_expert = topology.expert_bytes();
    let mut gpus = Vec::new();
    let mut total = 0usize;
    for gpu in 0..topology.num_gpus() {
        let mut layers = Vec::new();
        let mut loads = 0;
        let mut evictions = 0;
        for layer in 0..topology.num_layers() {
            let range = gpu * s..(gpu + 1) * s;
            let GpuChanges { load, evict } = migration::gpu_changes(
                &from.plan.layer(layer)[range.clone()],
                &to.plan.layer(layer)[range],
            );
            if !load.is_empty() || !evict.is_empty() {
                loads += load.len();
                evictions += evict.len();
                layers.push(LayerDiff { layer, load, evict });
            }
        }
        if !layers.is_empty() {
            total += loads;
            gpus.push(GpuDiff {
                gpu,
                worker: WorkerName::of_gpu(gpu, topology).as_str().to_owned(),
                loads,
                evictions,
                bytes: bytes_per_expert.map(|b| b * loads as u64),
                layers,
            });
        }
    }
    debug_assert_eq!(total, migration::migrations(topology, &from.plan, &to.plan));
    Ok(Json(PlanDiff {
        cluster,
        from: from_version,
        to: to_version,
        migrations: total,
        bytes: bytes_per_expert.map(|b| b * total as u64),
        gpus,
    }))
}
