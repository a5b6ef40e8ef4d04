//! `POST /v1/clusters/{cluster}/rebalance[?dry_run=true]`: plan now.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ballast_protocol::{PlanFigures, RebalanceResult};
use serde::Deserialize;

use super::cluster_entry;
use super::error::ApiError;
use crate::planner_loop::cycle::{self, Figures, Outcome, Trigger};
use crate::state::AppState;

// `cycle::Figures` is the planner's own copy of the protocol's figures;
// this is the one place it crosses onto the wire.
impl From<&Figures> for PlanFigures {
    fn from(f: &Figures) -> Self {
        PlanFigures {
            base_version: f.base_version,
            current_imbalance: f.current_imbalance,
            predicted_imbalance: f.predicted_imbalance,
            migrations: f.migrations,
            migrated_bytes: f.migrated_bytes,
            net_gain: f.net_gain,
            solve_seconds: f.solve_seconds,
            load_windows: f.load_windows,
            excluded_gpus: f.excluded_gpus.clone(),
        }
    }
}

#[derive(Deserialize)]
pub struct RebalanceQuery {
    #[serde(default)]
    dry_run: bool,
}

pub async fn post(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    Query(query): Query<RebalanceQuery>,
) -> Result<(StatusCode, Json<RebalanceResult>), ApiError> {
    let entry = cluster_entry(&state, &cluster).await?;
    let report = cycle::run(
        &state,
        &entry,
        Trigger::Rebalance {
            dry_run: query.dry_run,
        },
    )
    .await?;
    let (status, published, version, candidate) = match report.outcome {
        Outcome::Published(plan) => (StatusCode::CREATED, true, Some(plan.version), None),
        Outcome::DryRun(doc) => (StatusCode::OK, false, None, Some(*doc)),
        Outcome::Skipped => (StatusCode::OK, false, None, None),
    };
    Ok((
        status,
        Json(RebalanceResult {
            cluster,
            dry_run: query.dry_run,
            published,
            version,
            reason: report.reason.to_owned(),
            detail: report.detail,
            figures: PlanFigures::from(&report.figures),
            candidate,
        }),
    ))
}
