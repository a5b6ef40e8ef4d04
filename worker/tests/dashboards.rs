//! No dead panel: the real service (in-process, SQLite, port 0), two
//! `ballast-worker run` agents with drifting traffic and a real Prometheus
//! (`/usr/bin/prometheus`, or `BALLAST_PROMETHEUS`) scraping them with the
//! shipped `prometheus/prometheus.yml` (targets rewritten to the loopback
//! ports, intervals shortened) and the shipped alert rules. Once a re-plan
//! has been scraped, every PromQL expression of every panel and annotation
//! of `dashboards/*.json`, and every alert rule, goes to Prometheus's HTTP
//! API:
//! - a panel or annotation expression (with Grafana's variables filled in)
//!   must parse and return data over the test's time range;
//! - an alert expression must parse, every series it selects must return
//!   data (a healthy stack raises no alert, so the expression itself is
//!   mostly empty), and Prometheus must report the rule evaluated without
//!   error;
//! - the dashboards' cluster variable must list the cluster.
//!
//! Without Prometheus the test says so and passes, unless
//! `BALLAST_REQUIRE_PROMETHEUS=1` (CI), where it fails.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

mod common;
use common::Service;

const CLUSTER: &str = "demo";
/// Grafana's `$__rate_interval` at a 1 s scrape: four scrapes.
const RATE_INTERVAL: &str = "4s";
/// Grafana's `$__interval` for a range drawn at 1 s steps.
const INTERVAL: &str = "2s";
/// How long the stack may take to show everything.
const DEADLINE: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Child processes, killed when the test ends however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn prometheus_binary() -> Option<PathBuf> {
    let path = std::env::var_os("BALLAST_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("BALLAST_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
        "BALLAST_REQUIRE_PROMETHEUS=1 but {} does not exist (apt-get install prometheus)",
        path.display()
    );
    eprintln!(
        "skipping: {} not found (apt-get install prometheus)",
        path.display()
    );
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts node `node`'s agent; returns it and its metrics address (read from
/// its log).
fn start_worker(service: &str, node: usize) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ballast-worker"))
        .args(["run", "--service", service, "--cluster", CLUSTER, "--node"])
        .arg(node.to_string())
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--window",
            "500ms",
            "--step-interval",
            "20ms",
            "--tokens-per-step",
            "64",
            "--drift-per-step",
            "0.02",
            "--long-poll",
            "5s",
        ])
        .env("BALLAST_WORKER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("metrics_address=").nth(1) {
                let address = rest.split_whitespace().next().unwrap_or("").to_owned();
                let _ = tx.send(address);
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the worker logs its metrics address");
    (child, address)
}

/// The shipped prometheus.yml with its targets pointed at this test's
/// processes and 1 s intervals; the shipped rule files by absolute path.
fn prometheus_config(service: &str, workers: &[String]) -> String {
    let path = repo().join("prometheus/prometheus.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut config: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    config["global"]["scrape_interval"] = "1s".into();
    config["global"]["evaluation_interval"] = "1s".into();
    let rules = config["rule_files"]
        .as_sequence()
        .expect("prometheus.yml lists rule files")
        .iter()
        .map(|f| {
            let file = f.as_str().expect("a rule file is a path");
            repo()
                .join("prometheus")
                .join(file)
                .display()
                .to_string()
                .into()
        })
        .collect();
    config["rule_files"] = serde_norway::Value::Sequence(rules);
    let mut jobs = BTreeSet::new();
    for job in config["scrape_configs"]
        .as_sequence_mut()
        .expect("prometheus.yml has scrape_configs")
    {
        let name = job["job_name"].as_str().unwrap().to_owned();
        let targets: Vec<serde_norway::Value> = match name.as_str() {
            "ballast" => vec![service.into()],
            "ballast-worker" => workers.iter().map(|w| w.as_str().into()).collect(),
            other => panic!("prometheus.yml scrapes job {other}, which this test does not run"),
        };
        job["static_configs"] =
            serde_norway::to_value(vec![json!({ "targets": targets })]).unwrap();
        jobs.insert(name);
    }
    assert_eq!(
        jobs,
        BTreeSet::from(["ballast".to_owned(), "ballast-worker".to_owned()]),
        "prometheus.yml scrapes the service and the agents"
    );
    serde_norway::to_string(&config).unwrap()
}

fn start_prometheus(binary: &Path, dir: &Path, config: &str, port: u16) -> Child {
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    Command::new(binary)
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts")
}

/// One PromQL expression and where it comes from.
#[derive(Debug, Clone)]
struct Query {
    origin: String,
    expr: String,
}

/// Every expression of every dashboard: panel targets (rows' nested panels
/// too) and annotations, with Grafana's variables filled in as Grafana
/// would for this cluster.
fn dashboard_queries() -> Vec<Query> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "four dashboards: {files:?}");
    let mut queries = Vec::new();
    for file in files {
        let board: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let variables: Vec<&str> = board["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(
            variables.contains(&"datasource") && variables.contains(&"cluster"),
            "{name}: datasource and cluster variables"
        );
        let mut panels: Vec<&Value> = board["panels"].as_array().unwrap().iter().collect();
        while let Some(panel) = panels.pop() {
            if let Some(nested) = panel["panels"].as_array() {
                panels.extend(nested);
            }
            if panel["type"] == "row" {
                continue;
            }
            let title = panel["title"].as_str().unwrap();
            assert!(
                panel["fieldConfig"]["defaults"]["unit"].is_string(),
                "{name}: panel {title:?} has no unit"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: panel {title:?} has no query");
            for target in targets {
                let expr = target["expr"].as_str().unwrap();
                assert!(
                    !expr.contains("rate(") || !expr.contains("[5m]"),
                    "{name}: panel {title:?} rates over a fixed range, not $__rate_interval"
                );
                queries.push(Query {
                    origin: format!("{name}: panel {title:?}"),
                    expr: fill(expr),
                });
            }
        }
        for annotation in board["annotations"]["list"].as_array().unwrap() {
            if let Some(expr) = annotation["expr"].as_str() {
                queries.push(Query {
                    origin: format!("{name}: annotation {}", annotation["name"]),
                    expr: fill(expr),
                });
            }
        }
    }
    queries
}

fn fill(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__interval", INTERVAL)
        .replace("$__range", "1m")
        .replace("$cluster", CLUSTER)
}

/// The alert rules' names and expressions.
fn alert_rules() -> Vec<(String, String)> {
    let mut rules = Vec::new();
    for entry in std::fs::read_dir(repo().join("prometheus/rules")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let file: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        for group in file["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                let name = rule["alert"]
                    .as_str()
                    .or(rule["record"].as_str())
                    .unwrap()
                    .to_owned();
                rules.push((name, rule["expr"].as_str().unwrap().to_owned()));
            }
        }
    }
    assert!(rules.len() >= 7, "{rules:?}");
    rules
}

/// The series selectors of an expression: each metric name with its label
/// matchers (`ballast_*` and `up`), as written.
fn selectors(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_name(bytes[i]) || (i > 0 && (is_name(bytes[i - 1]) || bytes[i - 1] == b'"')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_name(bytes[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if name.starts_with("ballast_") || name == "up" {
            let mut selector = name.to_owned();
            if bytes.get(i) == Some(&b'{') {
                let end = expr[i..].find('}').map_or(expr.len(), |e| i + e + 1);
                selector.push_str(&expr[i..end]);
                i = end;
            }
            out.push(selector);
        }
    }
    out
}

struct Prometheus {
    client: reqwest::Client,
    base: String,
    since: f64,
}

impl Prometheus {
    /// `Err` is Prometheus refusing the expression (a parse or type error).
    async fn range(&self, expr: &str) -> Result<usize, String> {
        let now = unix_now();
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query_range", self.base),
            &[
                ("query", expr),
                ("start", &format!("{:.3}", self.since)),
                ("end", &format!("{now:.3}")),
                ("step", "1"),
            ],
        )
        .map_err(|e| e.to_string())?;
        let body: Value = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"].as_array().map_or(0, Vec::len))
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What is still missing, one line each; empty when every query has data
/// and every rule evaluated cleanly.
async fn missing(
    prometheus: &Prometheus,
    queries: &[Query],
    rules: &[(String, String)],
) -> Vec<String> {
    let mut missing = Vec::new();
    for q in queries {
        match prometheus.range(&q.expr).await {
            Ok(0) => missing.push(format!("{}: no data for {}", q.origin, q.expr)),
            Ok(_) => {}
            Err(err) => panic!("{}: Prometheus refused {}: {err}", q.origin, q.expr),
        }
    }
    for (name, expr) in rules {
        if let Err(err) = prometheus.range(expr).await {
            panic!("alert {name}: Prometheus refused {expr}: {err}");
        }
        for selector in selectors(expr) {
            match prometheus.range(&selector).await {
                Ok(n) if n > 0 => {}
                other => missing.push(format!("alert {name}: {selector} gives {other:?}")),
            }
        }
    }
    let state = prometheus.get("/api/v1/rules").await;
    let mut evaluated = 0;
    for group in state["data"]["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            match rule["health"].as_str() {
                Some("ok") => evaluated += 1,
                Some("unknown") => missing.push(format!("rule {} not evaluated yet", rule["name"])),
                _ => panic!("rule {} failed: {}", rule["name"], rule["lastError"]),
            }
        }
    }
    if evaluated < rules.len() {
        missing.push(format!("{evaluated} of {} rules evaluated", rules.len()));
    }
    let clusters = prometheus
        .get("/api/v1/label/cluster/values?match[]=ballast_plan_version")
        .await;
    if !clusters["data"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == CLUSTER))
    {
        missing.push(format!(
            "the cluster variable does not list {CLUSTER}: {clusters}"
        ));
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_alert_has_data() {
    let Some(binary) = prometheus_binary() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // Every expression first: a malformed dashboard fails before anything starts.
    let queries = dashboard_queries();
    let rules = alert_rules();

    // Short windows and cycles, and no move cost: the drifting traffic
    // makes a re-plan (with migrations and moved bytes) within seconds.
    let service = Service::start(
        dir.path(),
        "127.0.0.1:0",
        &[
            "--plan-interval",
            "1s",
            "--window",
            "500ms",
            "--window-grace",
            "200ms",
            "--gain-threshold",
            "0.001",
            "--move-cost",
            "0",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let mut topology: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/stack-topology.json")).unwrap(),
    )
    .unwrap();
    // The same 48 slots on two nodes of eight GPUs: two agents instead of four.
    topology["num_nodes"] = json!(2);
    topology["gpus_per_node"] = json!(8);
    let put = client
        .put(format!("{}/v1/clusters/{CLUSTER}", service.address))
        .json(&topology)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());

    let mut children = Children(Vec::new());
    let mut workers = Vec::new();
    for node in 0..2 {
        let (child, address) = start_worker(&service.address, node);
        children.0.push(child);
        workers.push(address);
    }
    // A window the service refuses (one layer for eight): the rejection
    // panel and alert then have a series, as they would after any refusal.
    let refused = client
        .post(format!(
            "{}/v1/clusters/{CLUSTER}/telemetry",
            service.address
        ))
        .json(&json!({"worker": "node0-gpu0", "seq": 0, "logical_load": [[1.0]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);

    let port = free_port();
    let service_target = service.address.trim_start_matches("http://").to_owned();
    let config = prometheus_config(&service_target, &workers);
    children
        .0
        .push(start_prometheus(&binary, dir.path(), &config, port));
    let prometheus = Prometheus {
        client: client.clone(),
        base: format!("http://127.0.0.1:{port}"),
        since: unix_now(),
    };

    let deadline = Instant::now() + DEADLINE;
    let mut last = vec!["Prometheus never became ready".to_owned()];
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Prometheus still starting: nothing to ask yet.
        let ready = client
            .get(format!("{}/-/ready", prometheus.base))
            .send()
            .await;
        if !ready.is_ok_and(|r| r.status().is_success()) {
            continue;
        }
        last = missing(&prometheus, &queries, &rules).await;
        if last.is_empty() {
            break;
        }
    }
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert!(
        last.is_empty(),
        "after {:?}, still missing:\n{}\nprometheus log tail:\n{}",
        started.elapsed(),
        last.join("\n"),
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    eprintln!(
        "{} dashboard queries and {} alert rules have data after {:?}",
        queries.len(),
        rules.len(),
        started.elapsed()
    );
    drop(children);
    service.stop().await;
}

#[test]
fn selectors_are_found_with_their_matchers() {
    assert_eq!(
        selectors(
            r#"sum by (cluster) (rate(ballast_ingest_rejections_total{cluster!=""}[5m])) / up{job="ballast"} > ballast_x"#
        ),
        [
            r#"ballast_ingest_rejections_total{cluster!=""}"#,
            r#"up{job="ballast"}"#,
            "ballast_x"
        ]
    );
    assert!(selectors(r#"time() - foo{state="up"}"#).is_empty());
}
