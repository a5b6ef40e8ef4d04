//! `/healthz` (the process answers), `/readyz` (it can do its job: the
//! database answers, every migration is applied, the planner loop is making
//! progress) and `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use ballast_protocol::{Check, Health, HealthStatus, PlannerCheck, Readiness, ReadinessChecks};

use crate::state::AppState;

pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// The database checks: does it answer, and is every migration applied.
async fn database_checks(state: &AppState) -> (Result<(), String>, Result<bool, String>) {
    let database = state.store.ping().await.map_err(|e| e.to_string());
    let migrations = match &database {
        Ok(()) => state
            .store
            .migrations_applied()
            .await
            .map_err(|e| e.to_string()),
        Err(_) => Err("database unreachable".to_owned()),
    };
    (database, migrations)
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    // A probe must get its answer within its own timeout: a database that
    // hangs (partitioned, restarting) would otherwise hold it for the pool's
    // acquire timeout or longer.
    let deadline = state.config.ready_timeout;
    let (database, migrations) = tokio::time::timeout(deadline, database_checks(&state))
        .await
        .unwrap_or_else(|_| {
            let late = format!("the database did not answer within {deadline:?} (--ready-timeout)");
            (Err(late), Err("database unreachable".to_owned()))
        });
    let stall = state.config.planner_stall_timeout;
    let age = state.heartbeat.age();
    let planner_ok = age.is_some_and(|a| a <= stall);
    let database_ok = database.is_ok();
    let migrations_ok = matches!(migrations, Ok(true));
    let ready = database_ok && migrations_ok && planner_ok;
    let body = Readiness {
        ready,
        checks: ReadinessChecks {
            database: Check {
                ok: database_ok,
                error: database.err(),
            },
            migrations: Check {
                ok: migrations_ok,
                error: migrations.err(),
            },
            planner: PlannerCheck {
                ok: planner_ok,
                last_progress_seconds_ago: age.map(|a| a.as_secs_f64()),
                stall_timeout_seconds: stall.as_secs_f64(),
            },
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
