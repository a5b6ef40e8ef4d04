//! Soak driver (not in CI): `scripts/soak.sh` starts the service, kills and
//! restarts it and PostgreSQL on a schedule, and runs this beside them.
//!
//! Every GPU worker of the cluster sends one `logical_load` window a second
//! through the agent's own [`ServiceClient`], retrying with the agent's
//! [`Backoff`] exactly as `ballast-worker run` does (same `(worker, seq)`
//! across retries). At the end it reports:
//!
//! - windows acknowledged (202, or 200 duplicate: an earlier attempt was
//!   stored and its answer lost) against windows the service counted
//!   (`worker_windows` summed over `GET .../telemetry/windows`);
//! - ingest latency percentiles of successful attempts, all and outside
//!   the fault seconds (each time in `--faults`, a file of Unix
//!   milliseconds the script appends to, plus `--settle`).
//!
//! ```text
//! cargo run --release -p ballast-worker --example soak -- \
//!     --service http://127.0.0.1:8421 --cluster soak --seconds 600 --faults /tmp/faults
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ballast_protocol::{LoadWindows, TelemetryWindow};
use ballast_worker::agent::backoff::Backoff;
use ballast_worker::agent::client::ServiceClient;
use clap::Parser;
use rand::SeedableRng;
use tokio::sync::Mutex;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8421")]
    service: String,
    #[arg(long, default_value = "soak")]
    cluster: String,
    #[arg(long)]
    token: Option<String>,
    /// How long workers send.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Unix milliseconds of each fault, one a line (appended while running).
    #[arg(long)]
    faults: Option<PathBuf>,
    /// Seconds after a fault whose requests count as "during the fault".
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// How long a window is retried after sending stops before it is given up.
    #[arg(long, default_value_t = 60)]
    drain_seconds: u64,
}

/// One successful delivery attempt: when it started and how long it took.
#[derive(Clone, Copy)]
struct Sample {
    start_ms: u64,
    took: Duration,
}

#[derive(Default)]
struct Tally {
    acknowledged: u64,
    duplicates: u64,
    given_up: u64,
    rejected: u64,
    retries: u64,
    samples: Vec<Sample>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One worker: a window a second, each delivered (with retries) before the next.
async fn worker(
    client: ServiceClient,
    name: String,
    layers: usize,
    experts: usize,
    stop_at: Instant,
    give_up_at: Instant,
    tally: Arc<Mutex<Tally>>,
) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(name.len() as u64);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut seq = 0i64;
    let mut local = Tally::default();
    while Instant::now() < stop_at {
        ticker.tick().await;
        seq += 1;
        let load: Vec<Vec<u64>> = (0..layers)
            .map(|l| (0..experts).map(|e| ((l + e) % 7 + 1) as u64).collect())
            .collect();
        let window = TelemetryWindow::<u64> {
            worker: name.clone(),
            seq,
            window_start: None,
            window_end: None,
            logical_load: Some(load),
            slot_load: None,
            plan_version: None,
            covisit: None,
        };
        let Ok(body) = serde_json::to_vec(&window) else {
            continue;
        };
        let mut attempt = 0u32;
        loop {
            let start_ms = unix_ms();
            let started = Instant::now();
            match client.post_window(&body).await {
                Ok(delivery) => {
                    local.acknowledged += 1;
                    if delivery == ballast_worker::agent::client::Delivery::Duplicate {
                        local.duplicates += 1;
                    }
                    local.samples.push(Sample {
                        start_ms,
                        took: started.elapsed(),
                    });
                    break;
                }
                Err(err) if err.is_retryable() => {
                    if Instant::now() >= give_up_at {
                        local.given_up += 1;
                        break;
                    }
                    attempt += 1;
                    local.retries += 1;
                    tokio::time::sleep(backoff.delay(attempt, &mut rng)).await;
                }
                Err(err) => {
                    eprintln!("{name} seq {seq}: refused: {err}");
                    local.rejected += 1;
                    break;
                }
            }
        }
    }
    let mut tally = tally.lock().await;
    tally.acknowledged += local.acknowledged;
    tally.duplicates += local.duplicates;
    tally.given_up += local.given_up;
    tally.rejected += local.rejected;
    tally.retries += local.retries;
    tally.samples.extend(local.samples);
}

/// Windows the service counted: `worker_windows` over every stored window.
async fn counted(args: &Args) -> anyhow::Result<u64> {
    let url = format!(
        "{}/v1/clusters/{}/telemetry/windows?limit=1000",
        args.service, args.cluster
    );
    let client = reqwest::Client::new();
    for _ in 0..60 {
        let mut request = client.get(&url).timeout(Duration::from_secs(10));
        if let Some(token) = &args.token {
            request = request.bearer_auth(token);
        }
        if let Ok(r) = request.send().await {
            if r.status().is_success() {
                let windows: LoadWindows = r.json().await.context("windows body")?;
                return Ok(windows
                    .windows
                    .iter()
                    .map(|w| w.worker_windows as u64)
                    .sum());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!("the service did not answer {url}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = ServiceClient::new(&args.service, &args.cluster, args.token.as_deref())
        .context("client")?;
    let info = client.cluster().await.context("reading the cluster")?;
    let topology = &info.topology;
    let (layers, experts) = (topology.num_layers(), topology.num_logical_experts());
    let names: Vec<String> = (0..topology.num_nodes())
        .flat_map(|n| (0..topology.gpus_per_node()).map(move |g| format!("node{n}-gpu{g}")))
        .collect();
    eprintln!(
        "soak: {} workers at 1 Hz for {} s ({layers} x {experts} windows)",
        names.len(),
        args.seconds
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop_at = Instant::now() + Duration::from_secs(args.seconds);
    let give_up_at = stop_at + Duration::from_secs(args.drain_seconds);
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            tokio::spawn(worker(
                client.clone(),
                name.clone(),
                layers,
                experts,
                stop_at,
                give_up_at,
                tally.clone(),
            ))
        })
        .collect();
    for task in tasks {
        task.await.context("worker task")?;
    }
    let tally = tally.lock().await;
    let faults: Vec<u64> = match &args.faults {
        Some(path) => std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect(),
        None => Vec::new(),
    };
    let settle_ms = (args.settle * 1000.0) as u64;
    let during_fault = |s: &Sample| {
        let end = s.start_ms + s.took.as_millis() as u64;
        faults
            .iter()
            .any(|&f| s.start_ms < f + settle_ms && end >= f)
    };
    let mut all: Vec<Duration> = tally.samples.iter().map(|s| s.took).collect();
    let mut calm: Vec<Duration> = tally
        .samples
        .iter()
        .filter(|s| !during_fault(s))
        .map(|s| s.took)
        .collect();
    all.sort();
    calm.sort();
    let counted = counted(&args).await?;
    println!(
        "acknowledged {} counted {} lost {} (duplicates {}, given up {}, rejected {}, retries {}, faults {})",
        tally.acknowledged,
        counted,
        tally.acknowledged.saturating_sub(counted),
        tally.duplicates,
        tally.given_up,
        tally.rejected,
        tally.retries,
        faults.len()
    );
    println!(
        "ingest latency, all {} requests: p50 {:?} p99 {:?} max {:?}",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or_default()
    );
    println!(
        "ingest latency outside fault seconds ({} requests, {} s after each fault excluded): p50 {:?} p99 {:?}",
        calm.len(),
        args.settle,
        percentile(&calm, 0.50),
        percentile(&calm, 0.99)
    );
    if tally.acknowledged > counted {
        anyhow::bail!(
            "{} acknowledged windows are not counted",
            tally.acknowledged - counted
        );
    }
    Ok(())
}
