//! `ballast serve`: configuration, start-up and shutdown of the service.

pub mod http;
pub mod logging;
mod replica_sync;
pub mod startup;

pub use crate::config::{LogFormat, ServeArgs, ServeConfig};
pub use startup::Application;

use anyhow::Context;
use tracing::info;

/// Runs the service until SIGINT/SIGTERM, then shuts down gracefully.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    logging::init(config.log_format);
    let app = Application::build(config)
        .await
        .context("starting the service")?;
    info!(address = %app.address(), "listening");
    app.run_until(shutdown_signal()).await
}

/// Resolves on the shutdown signal, and says so.
async fn shutdown_signal() {
    ballast_protocol::shutdown::signal().await;
    info!("shutdown signal received");
}
