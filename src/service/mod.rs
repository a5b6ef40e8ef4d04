//! `ballast serve`: configuration, start-up and shutdown of the service.

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

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed we simply never see Ctrl-C.
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    info!("shutdown signal received");
}
