//! `/healthz` and `/readyz` bodies.

use serde::{Deserialize, Serialize};

/// `GET /healthz`: the process answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
}

/// The only liveness answer there is (a dead process answers nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
}

/// `GET /readyz` (200 when `ready`, 503 otherwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: ReadinessChecks,
}

/// What readiness is made of; `ready` is all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadinessChecks {
    pub database: Check,
    pub migrations: Check,
    pub planner: PlannerCheck,
}

/// One pass/fail check; `error` says why it failed (`null` when it passed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub ok: bool,
    pub error: Option<String>,
}

/// The planner loop made progress within its stall timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannerCheck {
    pub ok: bool,
    /// `null` before the loop's first progress.
    pub last_progress_seconds_ago: Option<f64>,
    pub stall_timeout_seconds: f64,
}
