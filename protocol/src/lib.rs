//! # ballast-protocol
//!
//! Every body the Ballast service and its workers exchange over HTTP, as
//! serde types both sides compile against, plus the one encoder/decoder of
//! the binary telemetry encoding. A field renamed here is renamed for both
//! sides at once; `src/api/openapi.json` in the service is checked against
//! these types by its tests.
//!
//! - [`error`]: the one error body and its machine-readable [`ErrorCode`];
//! - [`health`]: liveness and readiness;
//! - [`clusters`]: topology PUT result, cluster detail and listing;
//! - [`telemetry`]: load windows in (JSON and [`window_binary`]), receipts
//!   and the aggregated windows out;
//! - [`trace`]: one line of a load trace (replay input, stored history out);
//! - [`plans`]: the plan document, plan history, rebalance results, diffs;
//! - [`workers`]: worker listing, acks, rollout status, the decision log;
//! - `shutdown` (feature `shutdown`): the signals on which both programs
//!   stop gracefully.
//!
//! Times are RFC 3339 strings on the wire and stay strings here: the service
//! formats them, and no client needs them as instants.

pub mod clusters;
pub mod error;
pub mod health;
pub mod integer;
pub mod plans;
pub mod rfc3339;
#[cfg(feature = "shutdown")]
pub mod shutdown;
pub mod telemetry;
pub mod trace;
pub mod window_binary;
pub mod workers;

pub use ballast_solver::TopologySpec;
pub use clusters::{Cluster, ClusterList, ClusterSummary, TopologyUpdate, WorkerCounts};
pub use error::{ErrorBody, ErrorCode};
pub use health::{Check, Health, HealthStatus, PlannerCheck, Readiness, ReadinessChecks};
pub use plans::{
    GpuDiff, LayerDiff, PlanDiff, PlanDocument, PlanFigures, PlanList, PlanStats, PlanSummary,
    RebalanceResult,
};
pub use telemetry::{
    DecodeError, LoadWindow, LoadWindows, RawCovisit, RawLoad, RawWindow, ReceiptStatus,
    TelemetryReceipt, TelemetryWindow, WindowSpan,
};
pub use trace::TraceWindow;
pub use workers::{
    AckReceipt, AckRequest, Decision, DecisionList, Rollout, VersionWorkers, WorkerList,
    WorkerState, WorkerStatus,
};
