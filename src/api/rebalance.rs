//! `POST /v1/clusters/{cluster}/rebalance[?dry_run=true]`: plan now. A
//! candidate equal to the plan in force publishes nothing: the answer names
//! the version in force with `unchanged: true`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ballast_protocol::RebalanceResult;
use serde::Deserialize;

use super::cluster_entry;
use super::error::ApiError;
use crate::planner_loop::cycle::{self, Outcome, Trigger};
use crate::state::AppState;

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
    let (status, published, version, candidate, unchanged) = match report.outcome {
        Outcome::Published(plan) => (StatusCode::CREATED, true, Some(plan.version), None, false),
        Outcome::Unchanged(plan) => (StatusCode::OK, false, Some(plan.version), None, true),
        Outcome::DryRun {
            candidate,
            unchanged,
        } => (StatusCode::OK, false, None, Some(*candidate), unchanged),
        Outcome::Skipped => (StatusCode::OK, false, None, None, false),
    };
    Ok((
        status,
        Json(RebalanceResult {
            cluster,
            dry_run: query.dry_run,
            published,
            version,
            unchanged,
            reason: report.reason.to_owned(),
            detail: report.detail,
            figures: report.figures,
            candidate,
        }),
    ))
}
