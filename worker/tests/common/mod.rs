//! The real Ballast service, in-process on SQLite, for the worker's
//! integration tests.

use std::path::Path;

use ballast::{Application, ServeArgs};
use clap::Parser;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running service; [`Service::stop`] shuts it down and waits.
pub struct Service {
    pub address: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Starts the service on `listen` with its database in `dir` and
    /// `extra` flags; scheduled planning is off (plans come from
    /// `POST .../rebalance`).
    pub async fn start(dir: &Path, listen: &str, extra: &[&str]) -> Service {
        #[derive(Parser)]
        #[command(args_override_self = true)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let database = format!("sqlite:{}", dir.join("ballast.db").display());
        let mut args = vec![
            "serve",
            "--listen",
            listen,
            "--database-url",
            &database,
            "--tick",
            "50ms",
            "--plan-interval",
            "1h",
            "--sync-interval",
            "100ms",
            "--db-max-connections",
            "4",
        ];
        args.extend_from_slice(extra);
        let config = Cli::try_parse_from(args)
            .unwrap()
            .serve
            .into_config()
            .unwrap();
        let app = Application::build(config).await.expect("service starts");
        let address = format!("http://{}", app.address());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Service {
            address,
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}
