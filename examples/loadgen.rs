//! Load generator for `ballast serve`: starts the real service in-process on
//! 127.0.0.1:0 (fresh SQLite file, or a fresh PostgreSQL database when
//! `--postgres URL` names a role that may create databases), drives it over
//! loopback HTTP for a bounded time, and prints latency figures.
//!
//! ```text
//! cargo run --release --example loadgen -- ingest --rates 320,640,1280 --seconds 10
//! cargo run --release --example loadgen -- latest --rate 1000 --seconds 10
//! cargo run --release --example loadgen -- longpoll --waiters 320
//! ```
//! Ingest uses the DeepSeek-V3 decode shape (data/topologies/decode.json:
//! 320 workers x 58 layers x 256 experts); each worker sends its windows in
//! order, one at a time, at `rate / workers` windows per second.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use ballast::{Application, ServeArgs};
use ballast_protocol::window_binary::{self, ValueType};
use ballast_protocol::{RawLoad, RawWindow};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use sqlx::Connection;

#[derive(Parser)]
struct Cli {
    /// PostgreSQL admin URL; a fresh database is created under it. Default: SQLite.
    #[arg(long, global = true)]
    postgres: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Copy, ValueEnum)]
enum Encoding {
    Json,
    Binary,
}

#[derive(Subcommand)]
enum Scenario {
    /// Telemetry ingest at several offered rates (windows/s).
    Ingest {
        #[arg(long, value_delimiter = ',', default_value = "320")]
        rates: Vec<f64>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 320)]
        workers: usize,
        #[arg(long, value_enum, default_value_t = Encoding::Json)]
        encoding: Encoding,
    },
    /// Latest-plan GETs at a fixed rate, half of them conditional (304).
    Latest {
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Long-poll wake-up: waiters block on ?wait=, then a plan is published.
    Longpoll {
        #[arg(long, default_value_t = 320)]
        waiters: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

const DECODE: &str = include_str!("../data/topologies/decode.json");
const LOAD: &str = include_str!("../data/loads/E256_zipf0.8.json");

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

async fn database(postgres: &Option<String>, dir: &std::path::Path) -> anyhow::Result<String> {
    match postgres {
        None => Ok(format!("sqlite:{}", dir.join("loadgen.db").display())),
        Some(admin) => {
            sqlx::any::install_default_drivers();
            let name = format!(
                "ballast_loadgen_{}",
                SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros()
            );
            let mut conn = sqlx::AnyConnection::connect(admin).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            Ok(format!("{base}/{name}"))
        }
    }
}

/// Starts the service on its own runtime thread (so the load's tasks do
/// not share a scheduler with it); returns its base URL.
fn start_server(url: String) -> anyhow::Result<String> {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let args = Args::try_parse_from([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--window",
        "1s",
        "--window-grace",
        "200ms",
        "--plan-interval",
        "1h",
        "--max-wait",
        "60s",
    ])?;
    let config = args.serve.into_config()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            match Application::build(config).await {
                Ok(app) => {
                    let _ = tx.send(Ok(format!("http://{}", app.address())));
                    let _ = app.run_until(std::future::pending()).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    rx.recv()?
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .no_proxy()
        .build()?)
}

async fn setup_cluster(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let r = client
        .put(format!("{base}/v1/clusters/decode"))
        .header("content-type", "application/json")
        .body(DECODE)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("creating the cluster: {}", r.text().await?);
    }
    Ok(())
}

/// One worker's share of the sample load: integer counts, L x E.
fn worker_load(workers: usize) -> anyhow::Result<Vec<f64>> {
    let doc: Value = serde_json::from_str(LOAD)?;
    let rows = doc["load"].as_array().context("load")?;
    Ok(rows
        .iter()
        .flat_map(|r| r.as_array().into_iter().flatten())
        .map(|v| (v.as_f64().unwrap_or(0.0) / workers as f64).round())
        .collect())
}

async fn ingest(
    base: &str,
    rates: &[f64],
    seconds: u64,
    workers: usize,
    encoding: Encoding,
) -> anyhow::Result<()> {
    let client = client()?;
    setup_cluster(&client, base).await?;
    let load = worker_load(workers)?;
    let rows: Vec<String> = load
        .chunks(256)
        .map(|r| {
            format!(
                "[{}]",
                r.iter()
                    .map(|v| format!("{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    let json_tail = Arc::new(format!(",\"logical_load\":[{}]}}", rows.join(",")));
    let load = Arc::new(load);
    let per_window_tokens: f64 = load.iter().sum();
    let mut next_seq = vec![1i64; workers];
    let mut sent_total = 0u64;
    for &rate in rates {
        let interval = Duration::from_secs_f64(workers as f64 / rate);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (w, seq0) in next_seq.iter().copied().enumerate() {
            let (client, base, tail, load) = (
                client.clone(),
                base.to_owned(),
                json_tail.clone(),
                load.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let name = format!("node{}-gpu{}", w / 8, w % 8);
                let mut ms = Vec::new();
                let mut errors = 0u64;
                let mut seq = seq0;
                // Spread the workers' phases over one interval.
                let mut next = Instant::now() + interval.mul_f64(w as f64 / workers as f64);
                while next < deadline {
                    tokio::time::sleep_until(next.into()).await;
                    let request = match encoding {
                        Encoding::Json => client
                            .post(format!("{base}/v1/clusters/decode/telemetry"))
                            .header("content-type", "application/json")
                            .body(format!("{{\"worker\":\"{name}\",\"seq\":{seq}{tail}")),
                        Encoding::Binary => {
                            let raw = RawWindow {
                                worker: name.clone(),
                                seq,
                                start_ms: None,
                                end_ms: None,
                                load: RawLoad::Logical {
                                    rows: 58,
                                    cols: 256,
                                    values: load.to_vec(),
                                },
                                covisit: None,
                            };
                            client
                                .post(format!("{base}/v1/clusters/decode/telemetry"))
                                .header("content-type", window_binary::CONTENT_TYPE)
                                .body(window_binary::encode(&raw, ValueType::U32))
                        }
                    };
                    let t = Instant::now();
                    match request.send().await {
                        Ok(r) if r.status().is_success() => {
                            ms.push(t.elapsed().as_secs_f64() * 1e3)
                        }
                        _ => errors += 1,
                    }
                    seq += 1;
                    next += interval;
                }
                (ms, errors, seq)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for (w, t) in tasks.into_iter().enumerate() {
            let (ms, e, seq) = t.await?;
            all.extend(ms);
            errors += e;
            next_seq[w] = seq;
        }
        let elapsed = started.elapsed().as_secs_f64();
        sent_total += all.len() as u64;
        println!(
            "offered {rate:.0} windows/s for {seconds}s: achieved {:.0} windows/s, {errors} errors",
            all.len() as f64 / elapsed
        );
        summary("  ingest latency", all);
    }
    // Nothing lost or double-counted: every acknowledged window is in the
    // aggregates once (they are summed in the transaction that accepts them).
    let w: Value = client
        .get(format!(
            "{base}/v1/clusters/decode/telemetry/windows?limit=1000"
        ))
        .send()
        .await?
        .json()
        .await?;
    let windows = w["windows"].as_array().context("windows")?;
    let counted: u64 = windows
        .iter()
        .filter_map(|w| w["worker_windows"].as_u64())
        .sum();
    let tokens: f64 = windows.iter().filter_map(|w| w["tokens"].as_f64()).sum();
    println!(
        "accounting: {sent_total} windows acknowledged, {counted} counted, tokens {} (expected {})",
        tokens,
        per_window_tokens * sent_total as f64
    );
    if counted != sent_total {
        bail!("windows lost or double-counted");
    }
    Ok(())
}

/// Sends one round of telemetry and publishes a plan; returns its version.
async fn publish(client: &reqwest::Client, base: &str, seq: i64) -> anyhow::Result<i64> {
    let load = worker_load(320)?;
    let rows: Vec<String> = load
        .chunks(256)
        .map(|r| {
            format!(
                "[{}]",
                r.iter()
                    .map(|v| format!("{}", v + seq as f64))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    let body = format!(
        "{{\"worker\":\"node0-gpu0\",\"seq\":{seq},\"logical_load\":[{}]}}",
        rows.join(",")
    );
    client
        .post(format!("{base}/v1/clusters/decode/telemetry"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r: Value = client
        .post(format!("{base}/v1/clusters/decode/rebalance"))
        .send()
        .await?
        .json()
        .await?;
    r["version"]
        .as_i64()
        .with_context(|| format!("rebalance failed: {r}"))
}

async fn latest(base: &str, rate: f64, seconds: u64) -> anyhow::Result<()> {
    let client = client()?;
    setup_cluster(&client, base).await?;
    let version = publish(&client, base, 1).await?;
    let etag = format!("\"{version}\"");
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = (rate * seconds as f64) as usize;
    let mut tasks = Vec::with_capacity(total);
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let (client, url, etag) = (
            client.clone(),
            format!("{base}/v1/clusters/decode/plans/latest"),
            etag.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let mut req = client.get(url);
            if i % 2 == 1 {
                req = req.header("if-none-match", etag);
            }
            let r = req.send().await.ok()?;
            let status = r.status().as_u16();
            r.bytes().await.ok()?;
            Some((status, t.elapsed().as_secs_f64() * 1e3))
        }));
    }
    let (mut full, mut not_modified, mut errors) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        match t.await? {
            Some((200, ms)) => full.push(ms),
            Some((304, ms)) => not_modified.push(ms),
            _ => errors += 1,
        }
    }
    println!(
        "latest plan GET at {rate:.0} req/s offered for {seconds}s: achieved {:.0} req/s, {errors} errors",
        total as f64 / started.elapsed().as_secs_f64()
    );
    let mut both = full.clone();
    both.extend_from_slice(&not_modified);
    summary("  200 (full plan)", full);
    summary("  304 (If-None-Match)", not_modified);
    summary("  all", both);
    Ok(())
}

fn rfc3339_ms(text: &str) -> anyhow::Result<f64> {
    let t = humantime::parse_rfc3339_weak(text)?;
    Ok(t.duration_since(UNIX_EPOCH)?.as_secs_f64() * 1e3)
}

/// When plan `version` was published (its `created_at`, stamped just
/// before the publishing transaction).
async fn created_at_ms(client: &reqwest::Client, base: &str, version: i64) -> anyhow::Result<f64> {
    let plan: Value = client
        .get(format!("{base}/v1/clusters/decode/plans/{version}"))
        .send()
        .await?
        .json()
        .await?;
    rfc3339_ms(plan["created_at"].as_str().context("created_at")?)
}

async fn longpoll(base: &str, waiters: usize, rounds: usize) -> anyhow::Result<()> {
    let client = client()?;
    setup_cluster(&client, base).await?;
    let mut version = publish(&client, base, 1).await?;
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for _ in 0..waiters {
            let (client, url) = (
                client.clone(),
                format!("{base}/v1/clusters/decode/plans/latest?wait=30s"),
            );
            let etag = format!("\"{version}\"");
            tasks.push(tokio::spawn(async move {
                let r = client
                    .get(url)
                    .header("if-none-match", etag)
                    .send()
                    .await
                    .ok()?;
                let woke = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .ok()?
                    .as_secs_f64()
                    * 1e3;
                // Only drained, not parsed: 320 clients parsing the plan on
                // this same runtime would delay each other's wake-up stamps.
                let version = r.headers().get("etag")?.to_str().ok()?.to_owned();
                r.bytes().await.ok()?;
                Some((woke, version))
            }));
        }
        // Let every waiter connect and block before publishing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        version = publish(&client, base, round as i64 + 2).await?;
        let created = created_at_ms(&client, base, version).await?;
        let expected = format!("\"{version}\"");
        let mut ms = Vec::new();
        let mut errors = 0;
        for t in tasks {
            match t.await? {
                Some((woke, etag)) if etag == expected => ms.push(woke - created),
                _ => errors += 1,
            }
        }
        println!("round {round}: {waiters} waiters, {errors} errors");
        summary("  wake-up after publish", ms);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let dir = tempfile::tempdir()?;
    let url = database(&cli.postgres, dir.path()).await?;
    println!(
        "database: {}",
        if cli.postgres.is_some() {
            "postgresql"
        } else {
            "sqlite"
        }
    );
    let base = start_server(url)?;
    // Bounded by construction: every scenario has a fixed count and duration.
    match cli.scenario {
        Scenario::Ingest {
            rates,
            seconds,
            workers,
            encoding,
        } => ingest(&base, &rates, seconds.min(120), workers.min(320), encoding).await,
        Scenario::Latest { rate, seconds } => {
            latest(&base, rate.min(5000.0), seconds.min(60)).await
        }
        Scenario::Longpoll { waiters, rounds } => {
            longpoll(&base, waiters.min(2000), rounds.min(10)).await
        }
    }
}
