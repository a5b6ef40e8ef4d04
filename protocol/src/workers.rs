//! Workers: the listing, plan acknowledgements, a plan's rollout status and
//! the planner's decision log.

use serde::{Deserialize, Serialize};

/// `GET /v1/clusters/{cluster}/workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerList {
    pub cluster: String,
    pub workers: Vec<WorkerStatus>,
}

/// One GPU worker of the cluster's current topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub worker: String,
    pub gpu: usize,
    pub status: WorkerState,
    /// The last telemetry `seq` accepted from it (a restarted worker
    /// continues after it).
    pub last_seq: Option<i64>,
    pub last_seen_at: Option<String>,
    pub down_since: Option<String>,
    /// The plan version it last acknowledged.
    pub applied_version: Option<i64>,
    pub applied_at: Option<String>,
}

/// Whether a worker is sending telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Up,
    Down,
    /// Never heard from.
    Unknown,
}

/// `POST /v1/clusters/{cluster}/workers/{worker}/ack`: the worker now runs
/// plan `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    #[serde(deserialize_with = "crate::integer::i64")]
    pub version: i64,
}

/// The answer to a recorded ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckReceipt {
    pub worker: String,
    pub applied_version: i64,
    pub acked_at: String,
}

/// `GET /v1/clusters/{cluster}/plans/{version}/rollout`: which GPUs run
/// `version`, and which run what instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub cluster: String,
    pub version: i64,
    pub published_at: String,
    /// The plan belongs to the cluster's current topology.
    pub current_lineage: bool,
    pub gpus: usize,
    pub applied: usize,
    pub complete: bool,
    pub applied_workers: Vec<String>,
    pub other_versions: Vec<VersionWorkers>,
}

/// Workers that run one other version (`null`: none acknowledged yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionWorkers {
    pub version: Option<i64>,
    pub workers: Vec<String>,
}

/// `GET /v1/clusters/{cluster}/decisions`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionList {
    pub cluster: String,
    pub decisions: Vec<Decision>,
}

/// One planner cycle's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub cycle: i64,
    pub decided_at: String,
    pub lineage: i64,
    pub base_version: Option<i64>,
    pub published_version: Option<i64>,
    /// `initial`, `forced`, `excluded_workers`, `gain_pays`, `confirming`,
    /// `below_threshold`, or why no candidate was made (`no_telemetry`, ...).
    pub reason: String,
    pub detail: String,
    pub current_imbalance: Option<f64>,
    pub predicted_imbalance: Option<f64>,
    pub migrations: Option<i64>,
    pub net_gain: Option<f64>,
    /// Armed cycles so far towards publishing.
    pub streak: i64,
}
