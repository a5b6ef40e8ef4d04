//! `POST /v1/clusters/{cluster}/rebalance[?dry_run=true|1]`: plan now. A
//! candidate equal to the plan in force publishes nothing: the answer names
//! the version in force with `unchanged: true`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use ballast_protocol::{ErrorCode, RebalanceResult};
use serde::Deserialize;

use super::cluster_entry;
use super::error::ApiError;
use crate::planner_loop::cycle::{self, Outcome, Trigger};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct RebalanceQuery {
    dry_run: Option<String>,
}

/// `?dry_run=`: `true`/`false` as the SPEC writes it, or `1`/`0` as most
/// command lines and HTTP APIs spell a flag. Anything else is refused rather
/// than read as `false`, which would publish what was meant as a trial.
fn dry_run(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("dry_run `{other}`: use true, false, 1 or 0"),
        )),
    }
}

pub async fn post(
    State(state): State<AppState>,
    Path(cluster): Path<String>,
    Query(query): Query<RebalanceQuery>,
) -> Result<(StatusCode, Json<RebalanceResult>), ApiError> {
    let dry_run = dry_run(query.dry_run.as_deref())?;
    let entry = cluster_entry(&state, &cluster).await?;
    let report = cycle::run(&state, &entry, Trigger::Rebalance { dry_run }).await?;
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
            dry_run,
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

#[cfg(test)]
mod tests {
    use super::dry_run;

    #[test]
    fn dry_run_takes_words_and_digits_only() {
        assert!(!dry_run(None).unwrap());
        assert!(dry_run(Some("true")).unwrap());
        assert!(dry_run(Some("1")).unwrap());
        assert!(!dry_run(Some("0")).unwrap());
        assert!(!dry_run(Some("false")).unwrap());
        for bad in ["yes", "TRUE", "", "2"] {
            assert!(dry_run(Some(bad)).is_err(), "{bad}");
        }
    }
}
