//! `spawn_app()`: the real application on an ephemeral port, a fresh
//! database per test, and a client to talk to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ballast::{Application, ServeArgs};
use clap::Parser;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Runs a test body once per backend: `both!(name, |db| async move { .. })`.
/// The PostgreSQL variant is skipped (with a note) unless
/// `BALLAST_TEST_POSTGRES_URL` is set.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::helpers::Db::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::postgres_url().is_none() {
                    eprintln!("skipped: BALLAST_TEST_POSTGRES_URL is not set");
                    return;
                }
                ($body)($crate::helpers::Db::Postgres).await;
            }
        }
    };
}

pub fn postgres_url() -> Option<String> {
    std::env::var("BALLAST_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh database: an SQLite file in `dir`, or a new PostgreSQL database.
pub async fn fresh_database(db: Db, dir: &std::path::Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite:{}", dir.join("ballast.db").display()),
        Db::Postgres => {
            let admin = postgres_url().expect("BALLAST_TEST_POSTGRES_URL");
            sqlx::any::install_default_drivers();
            let name = format!(
                "ballast_test_{}_{}_{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_micros()
            );
            let mut conn = sqlx::AnyConnection::connect(&admin)
                .await
                .expect("connect to PostgreSQL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            format!("{base}/{name}")
        }
    }
}

pub struct TestApp {
    pub address: String,
    /// The database it serves from (for readers beside it).
    pub database_url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Fast test settings: short windows and ticks; scheduled planning off
/// unless a test turns it on with its own `--plan-interval`. The load
/// estimate is the newest closed window alone (`--ewma-alpha 1`), so a test
/// that changes the load (say with [`hot_window`]) gets a new plan at once:
/// a candidate equal to the plan in force is never published.
pub const FAST: &[&str] = &[
    "--window",
    "200ms",
    "--ewma-alpha",
    "1",
    "--window-grace",
    "50ms",
    "--tick",
    "50ms",
    "--plan-interval",
    "1h",
    "--sync-interval",
    "100ms",
    "--db-max-connections",
    "4",
];

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, &[]).await
}

/// Starts the app with [`FAST`] plus `extra` flags (later flags win).
pub async fn spawn_app_with(db: Db, extra: &[&str]) -> TestApp {
    // Quiet unless BALLAST_LOG asks for more.
    if std::env::var_os("BALLAST_LOG").is_some() {
        ballast::service::logging::init(ballast::service::LogFormat::Text);
    }
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(db, dir.path()).await;
    spawn_app_on(&database_url, dir, extra).await
}

/// Starts the app on an existing database (a second replica shares one).
pub async fn spawn_app_on(database_url: &str, dir: tempfile::TempDir, extra: &[&str]) -> TestApp {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    #[derive(Parser)]
    #[command(args_override_self = true)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let config = Cli::try_parse_from(args)
        .unwrap()
        .serve
        .into_config()
        .unwrap();
    let app = Application::build(config).await.expect("app starts");
    let address = format!("http://{}", app.address());
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        database_url: database_url.to_owned(),
        client: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).send().await.unwrap()
    }

    /// Creates cluster `name` with the `small` topology (2 x 4 GPUs, 10 slots, 26 x 64).
    pub async fn create_small(&self, name: &str) {
        let r = self
            .put_json(&format!("/v1/clusters/{name}"), &small_topology())
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    /// Sends one logical window for every worker of the small topology.
    pub async fn send_round(&self, cluster: &str, seq: i64, skew: f64) {
        for gpu in 0..8 {
            let r = self
                .post_json(
                    &format!("/v1/clusters/{cluster}/telemetry"),
                    &window(gpu, seq, skew),
                )
                .await;
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    }

    /// Sends one [`hot_window`] for every worker of the small topology.
    pub async fn send_hot_round(&self, cluster: &str, seq: i64, hot: usize) {
        for gpu in 0..8 {
            let r = self
                .post_json(
                    &format!("/v1/clusters/{cluster}/telemetry"),
                    &hot_window(gpu, seq, hot),
                )
                .await;
            assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        }
    }

    /// Waits until the newest window has closed (`--window` + grace in
    /// FAST), so a planner cycle sees every window sent so far.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Publishes a plan now and returns its version.
    pub async fn rebalance(&self, cluster: &str) -> i64 {
        let r = self
            .post(&format!("/v1/clusters/{cluster}/rebalance"))
            .await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["version"].as_i64().unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

pub fn small_topology() -> Value {
    serde_json::from_str(include_str!("../../data/topologies/small.json")).unwrap()
}

/// A 26 x 64 window for worker `gpu` of the small topology; `skew` tilts the
/// load towards low-numbered experts.
pub fn window(gpu: usize, seq: i64, skew: f64) -> Value {
    let load: Vec<Vec<f64>> = (0..26)
        .map(|l| {
            (0..64)
                .map(|e| (100.0 + skew * ((64 - e) as f64) * ((l % 3) as f64 + 1.0)).round())
                .collect()
        })
        .collect();
    json!({
        "worker": format!("node{}-gpu{}", gpu / 4, gpu % 4),
        "seq": seq,
        "logical_load": load,
    })
}

/// A 26 x 64 window for worker `gpu` of the small topology in which expert
/// `hot` draws 40 times the load of every other: a plan fitted to any other
/// load (a [`window`], another hot expert) is badly placed for it, so a
/// re-plan on it publishes a new version.
pub fn hot_window(gpu: usize, seq: i64, hot: usize) -> Value {
    let load: Vec<Vec<f64>> = (0..26)
        .map(|_| {
            (0..64)
                .map(|e| if e == hot { 4000.0 } else { 100.0 })
                .collect()
        })
        .collect();
    json!({
        "worker": format!("node{}-gpu{}", gpu / 4, gpu % 4),
        "seq": seq,
        "logical_load": load,
    })
}
