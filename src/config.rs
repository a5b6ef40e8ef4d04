//! `ballast serve` settings: command-line flags, each with a `BALLAST_*`
//! environment variable, parsed once into a [`ServeConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use ballast_policy::{Settings, Thresholds};
use ballast_solver::{Policy, Split};
use clap::{Args, ValueEnum};

use crate::args::{policy_parser, split_parser};
use crate::store::{SqliteSynchronous, DEFAULT_DATABASE_URL};
use crate::time::WindowGrid;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 500ms, 30s or 5m: {e}"))
}

/// The flags of `ballast serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Without tokens only loopback addresses are allowed.
    #[arg(long, env = "BALLAST_LISTEN", default_value = "127.0.0.1:8420")]
    pub listen: SocketAddr,
    /// `sqlite:PATH` (created if missing) or `postgres://USER:PASS@HOST/DB`.
    #[arg(long, env = "BALLAST_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Database connection pool size.
    #[arg(long, env = "BALLAST_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Bearer token for workers: telemetry, reading plans, acks.
    #[arg(long, env = "BALLAST_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// Bearer token for operators: topology and rebalance (also allowed everywhere a worker token is).
    #[arg(long, env = "BALLAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Log format; the level comes from BALLAST_LOG (default `info`).
    #[arg(long, env = "BALLAST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Planner policy (see `ballast solve --policy`).
    #[arg(long, env = "BALLAST_POLICY", default_value = Settings::default().policy.name(), value_parser = policy_parser())]
    pub policy: Policy,
    /// Optimal policy: a candidate's model imbalance may exceed a fresh plan's
    /// by this fraction if that saves migrations.
    #[arg(long, env = "BALLAST_BALANCE_TOLERANCE", default_value_t = Settings::default().balance_tolerance)]
    pub balance_tolerance: f64,
    /// Optimal policy: wall-time limit of one candidate's solve (default: the
    /// solver's own budget); also lets exact models use what is left.
    #[arg(long, env = "BALLAST_SOLVE_TIME_LIMIT", value_parser = duration)]
    pub solve_time_limit: Option<Duration>,
    /// `even`, or `weighted` to let plans carry replica_share.
    #[arg(long, env = "BALLAST_SPLIT", default_value = Settings::default().split.name(), value_parser = split_parser())]
    pub split: Split,
    /// How often each cluster gets a planner cycle.
    #[arg(long, env = "BALLAST_PLAN_INTERVAL", default_value = "30s", value_parser = duration)]
    pub plan_interval: Duration,
    /// Planner loop tick: marks workers down, prunes, runs due cycles.
    #[arg(long, env = "BALLAST_TICK", default_value = "1s", value_parser = duration)]
    pub tick: Duration,
    /// Length of one cluster load window (telemetry is summed per window).
    #[arg(long, env = "BALLAST_WINDOW", default_value = "10s", value_parser = duration)]
    pub window: Duration,
    /// How long after its end a window still waits for late telemetry before planning uses it.
    #[arg(long, env = "BALLAST_WINDOW_GRACE", default_value = "2s", value_parser = duration)]
    pub window_grace: Duration,
    /// How long aggregated load windows are kept; this is the history
    /// `ballast replay` can read (24h of 10s windows: 8,640 windows, about
    /// 0.5 GB for a 58 x 256 model).
    #[arg(long, env = "BALLAST_RETENTION", default_value = "24h", value_parser = duration)]
    pub retention: Duration,
    /// How long (worker, seq) receipts are kept to recognise re-sent windows.
    #[arg(long, env = "BALLAST_DEDUP_HORIZON", default_value = "1h", value_parser = duration)]
    pub dedup_horizon: Duration,
    /// EWMA weight of the newest window in the load estimate, in (0, 1].
    /// The default 1 plans from the newest window alone: on every trace
    /// replayed (docs/replay.md) smoothing older windows in only lagged.
    #[arg(long, env = "BALLAST_EWMA_ALPHA", default_value_t = Settings::default().ewma_alpha)]
    pub ewma_alpha: f64,
    /// Net model-imbalance gain a candidate needs to arm publication.
    #[arg(long, env = "BALLAST_GAIN_THRESHOLD", default_value_t = Settings::default().thresholds.threshold)]
    pub gain_threshold: f64,
    /// An armed trigger disarms only below threshold - hysteresis.
    #[arg(long, env = "BALLAST_HYSTERESIS", default_value_t = Settings::default().thresholds.hysteresis)]
    pub hysteresis: f64,
    /// Consecutive armed cycles before a candidate is published.
    #[arg(long, env = "BALLAST_CONFIRM_CYCLES", default_value_t = Settings::default().thresholds.confirm_cycles)]
    pub confirm_cycles: u32,
    /// Imbalance-equivalent cost of re-loading every slot once (charged pro rata).
    #[arg(long, env = "BALLAST_MOVE_COST", default_value_t = Settings::default().thresholds.move_cost)]
    pub move_cost: f64,
    /// A worker silent this long is marked down.
    #[arg(long, env = "BALLAST_WORKER_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub worker_timeout: Duration,
    /// Plan around down workers' GPUs (their slots get no load).
    #[arg(long, env = "BALLAST_EXCLUDE_DOWN_WORKERS", default_value_t = false)]
    pub exclude_down_workers: bool,
    /// Readiness turns red when the planner loop makes no progress for this long.
    #[arg(long, env = "BALLAST_PLANNER_STALL_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub planner_stall_timeout: Duration,
    /// How often this replica picks up other replicas' plans and topology changes.
    #[arg(long, env = "BALLAST_SYNC_INTERVAL", default_value = "500ms", value_parser = duration)]
    pub sync_interval: Duration,
    /// Longest `?wait=` a long-poll may ask for.
    #[arg(long, env = "BALLAST_MAX_WAIT", default_value = "60s", value_parser = duration)]
    pub max_wait: Duration,
    /// Largest request body in bytes. A telemetry window is held to the
    /// smaller of this and what its cluster's topology needs; a topology
    /// body to 192 KiB.
    #[arg(long, env = "BALLAST_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    pub max_body_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "BALLAST_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: Duration,
    /// Longest time a client may take to send a request's headers; also how
    /// long an idle keep-alive connection is kept open.
    #[arg(long, env = "BALLAST_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// Longest pause while reading a request body before the request fails.
    #[arg(long, env = "BALLAST_BODY_READ_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub body_read_timeout: Duration,
    /// Open HTTP connections at most; more wait in the accept backlog.
    /// Lowered at start if the open-file limit cannot hold them.
    #[arg(long, env = "BALLAST_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// `/readyz` answers not ready when the database has not answered within this.
    #[arg(long, env = "BALLAST_READY_TIMEOUT", default_value = "1s", value_parser = duration)]
    pub ready_timeout: Duration,
    /// SQLite durability: `normal` keeps every acknowledged window through a
    /// process crash (kill -9) but may lose the last ones on power loss or an
    /// OS crash; `full` syncs every commit to disk and survives both, slower.
    #[arg(long, env = "BALLAST_SQLITE_SYNCHRONOUS", value_enum, default_value_t = SqliteSynchronous::Normal)]
    pub sqlite_synchronous: SqliteSynchronous,
}

/// Bearer tokens; both absent means no authentication (loopback only).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    pub worker: Option<String>,
    pub admin: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("worker", &self.worker.as_ref().map(|_| "<set>"))
            .field("admin", &self.admin.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Tokens {
    pub fn enabled(&self) -> bool {
        self.worker.is_some() || self.admin.is_some()
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    pub db_max_connections: u32,
    pub tokens: Tokens,
    pub log_format: LogFormat,
    /// What the planning policy decides with.
    pub planning: Settings,
    pub plan_interval: Duration,
    pub tick: Duration,
    pub window: Duration,
    pub window_grace: Duration,
    pub retention: Duration,
    pub dedup_horizon: Duration,
    pub worker_timeout: Duration,
    pub exclude_down_workers: bool,
    pub planner_stall_timeout: Duration,
    pub sync_interval: Duration,
    pub max_wait: Duration,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
    pub ready_timeout: Duration,
    pub sqlite_synchronous: SqliteSynchronous,
}

impl ServeConfig {
    /// The grid of cluster load windows (`--window`, `--window-grace`).
    pub fn windows(&self) -> WindowGrid {
        WindowGrid::new(self.window, self.window_grace)
    }
}

fn positive(name: &str, d: Duration) -> anyhow::Result<Duration> {
    if d.is_zero() {
        bail!("--{name} must be longer than zero");
    }
    Ok(d)
}

impl ServeArgs {
    /// Checks the flags; refuses to serve beyond loopback without tokens.
    pub fn into_config(self) -> anyhow::Result<ServeConfig> {
        let tokens = Tokens {
            worker: self.worker_token.filter(|t| !t.is_empty()),
            admin: self.admin_token.filter(|t| !t.is_empty()),
        };
        if !tokens.enabled() && !self.listen.ip().is_loopback() {
            bail!(
                "refusing to listen on {} without authentication: set --worker-token/--admin-token \
                 (BALLAST_WORKER_TOKEN/BALLAST_ADMIN_TOKEN) or listen on a loopback address",
                self.listen
            );
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            bail!("--ewma-alpha must be in (0, 1], got {}", self.ewma_alpha);
        }
        for (name, v) in [
            ("balance-tolerance", self.balance_tolerance),
            ("gain-threshold", self.gain_threshold),
            ("hysteresis", self.hysteresis),
            ("move-cost", self.move_cost),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("--{name} must be a non-negative number, got {v}");
            }
        }
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        if self.db_max_connections == 0 {
            bail!("--db-max-connections must be at least 1");
        }
        Ok(ServeConfig {
            listen: self.listen,
            database_url: self.database_url,
            db_max_connections: self.db_max_connections,
            tokens,
            log_format: self.log_format,
            planning: Settings {
                policy: self.policy,
                split: self.split,
                balance_tolerance: self.balance_tolerance,
                solve_time_limit: self
                    .solve_time_limit
                    .map(|d| positive("solve-time-limit", d))
                    .transpose()?,
                ewma_alpha: self.ewma_alpha,
                thresholds: Thresholds {
                    threshold: self.gain_threshold,
                    hysteresis: self.hysteresis,
                    confirm_cycles: self.confirm_cycles.max(1),
                    move_cost: self.move_cost,
                },
            },
            plan_interval: positive("plan-interval", self.plan_interval)?,
            tick: positive("tick", self.tick)?,
            window: positive("window", self.window)?,
            window_grace: self.window_grace,
            retention: positive("retention", self.retention)?,
            dedup_horizon: positive("dedup-horizon", self.dedup_horizon)?,
            worker_timeout: positive("worker-timeout", self.worker_timeout)?,
            exclude_down_workers: self.exclude_down_workers,
            planner_stall_timeout: positive("planner-stall-timeout", self.planner_stall_timeout)?,
            sync_interval: positive("sync-interval", self.sync_interval)?,
            max_wait: self.max_wait,
            max_body_bytes: self.max_body_bytes,
            shutdown_timeout: self.shutdown_timeout,
            header_read_timeout: positive("header-read-timeout", self.header_read_timeout)?,
            body_read_timeout: positive("body-read-timeout", self.body_read_timeout)?,
            max_connections: self.max_connections,
            ready_timeout: positive("ready-timeout", self.ready_timeout)?,
            sqlite_synchronous: self.sqlite_synchronous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<ServeConfig> {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all)?.serve.into_config()
    }

    #[test]
    fn defaults_are_loopback_sqlite() {
        let c = parse(&[]).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert!(c.database_url.starts_with("sqlite:"));
        assert!(!c.tokens.enabled());
    }

    #[test]
    fn refuses_open_listen_without_tokens() {
        let err = parse(&["--listen", "0.0.0.0:8420"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("without authentication"), "{err}");
        assert!(parse(&["--listen", "0.0.0.0:8420", "--admin-token", "s3cret"]).is_ok());
        assert!(parse(&["--policy", "nope"]).is_err());
        assert!(parse(&["--ewma-alpha", "0"]).is_err());
        assert!(parse(&["--tick", "0s"]).is_err());
    }
}
