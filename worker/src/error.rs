//! Errors of the worker library. Every shape or value check happens once, at the
//! constructor of the type that relies on it; these say which check failed.

use thiserror::Error;

/// A matrix or tensor did not have the shape an operation needs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShapeError {
    #[error("{what}: {len} values cannot form a {rows} x {cols} matrix")]
    Length {
        what: &'static str,
        len: usize,
        rows: usize,
        cols: usize,
    },
    #[error("{what}: {dim} = {value} is not a positive multiple of {multiple}")]
    NotMultiple {
        what: &'static str,
        dim: &'static str,
        value: usize,
        multiple: usize,
    },
    #[error("{what}: expected {expected} {dim}, got {actual}")]
    Mismatch {
        what: &'static str,
        dim: &'static str,
        expected: usize,
        actual: usize,
    },
}

/// Quantization refused its input.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuantError {
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// FP8 has no infinities and a NaN would poison a whole 128-wide tile's
    /// scale, so non-finite inputs are rejected rather than encoded.
    #[error("{what}: value at row {row}, column {col} is not finite ({value})")]
    NonFinite {
        what: &'static str,
        row: usize,
        col: usize,
        value: f32,
    },
}

/// A configuration value is out of range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }
}

/// A placement (`phy2log` row, optional `replica_share`) cannot serve a layer.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanError {
    #[error("{what} has {actual} entries, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("slot {slot} holds expert {expert}, but there are only {num_experts} experts")]
    UnknownExpert {
        slot: usize,
        expert: u32,
        num_experts: usize,
    },
    #[error("expert {expert} has no replica in any slot")]
    MissingExpert { expert: usize },
    #[error("replica_share[{slot}] = {value} is not a finite non-negative number")]
    BadShare { slot: usize, value: f64 },
    #[error("the replica shares of expert {expert} sum to {sum}, not 1")]
    ShareSum { expert: usize, sum: f64 },
    #[error(
        "replica_scope[{slot}] = {value} is neither -1 (any token) nor the slot's node {node}"
    )]
    BadScope {
        slot: usize,
        value: i64,
        node: usize,
    },
    #[error("expert {expert} has no home replica (replica_scope -1): tokens that visit none of its co-visit replicas' nodes could not be served")]
    NoHomeReplica { expert: usize },
    #[error("the slot counts of expert {expert}'s replicas sum to {actual}, but the batch sends it {expected} tokens")]
    CountSum {
        expert: usize,
        expected: usize,
        actual: u64,
    },
}

/// Why an MoE layer could not run.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MoeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Routing(#[from] ballast_solver::routing::RoutingError),
}

/// A node could not take on a plan; its weights are unchanged.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("plan version {requested} is not newer than the applied version {current}")]
    StaleVersion { current: u64, requested: u64 },
    #[error("{what}: expected {expected}, got {actual}")]
    Mismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("layer {layer}, GPU {gpu}, slot {slot}: copy of expert {expert} has checksum {actual:#018x}, expected {expected:#018x}")]
    Checksum {
        layer: usize,
        gpu: usize,
        slot: usize,
        expert: u32,
        expected: u64,
        actual: u64,
    },
}
