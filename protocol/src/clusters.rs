//! Cluster bodies: the result of PUTting a topology, one cluster's detail,
//! and the listing.

use ballast_solver::TopologySpec;
use serde::{Deserialize, Serialize};

/// `PUT /v1/clusters/{cluster}`: what the topology PUT did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologyUpdate {
    pub cluster: String,
    pub created: bool,
    pub changed: bool,
    pub lineage: i64,
    /// An existing cluster's topology changed: a new plan lineage starts.
    pub new_lineage: bool,
    /// The last plan of the lineage that ended, if it had one.
    pub retired_version: Option<i64>,
    pub message: String,
    pub topology: TopologySpec,
}

/// `GET /v1/clusters/{cluster}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub cluster: String,
    pub topology: TopologySpec,
    pub lineage: i64,
    pub created_at: String,
    pub updated_at: String,
    pub latest_version: Option<i64>,
    pub workers: WorkerCounts,
}

/// Workers of a cluster by state (see [`crate::WorkerState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounts {
    pub up: usize,
    pub down: usize,
    pub unknown: usize,
}

/// `GET /v1/clusters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterList {
    pub clusters: Vec<ClusterSummary>,
}

/// One cluster in [`ClusterList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub cluster: String,
    pub lineage: i64,
    pub latest_version: Option<i64>,
}
