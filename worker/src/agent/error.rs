//! Why the agent stopped.

use thiserror::Error;

use super::client::ClientError;
use crate::error::{ConfigError, MoeError, NodeError, PlanError, QuantError};

/// A failure that ends the agent (transient service errors are retried
/// where they happen and never reach this type).
#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the cluster's topology cannot run here: {0}")]
    Topology(String),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error(transparent)]
    Moe(#[from] MoeError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("metrics listener on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the compute thread ended abnormally: {0}")]
    Engine(String),
}
