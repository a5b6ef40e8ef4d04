//! The `ballast` binary end to end: real processes on the repo's sample data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn ballast() -> Command {
    Command::cargo_bin("ballast").expect("the ballast binary is built for integration tests")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn stdout_json(args: &[&str]) -> Value {
    let output = ballast().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Runs `ballast solve` and returns the written plan.
/// `ballast score --json` of `plan` on `load`, with `extra` flags.
fn score_json(topology: &Path, load: &Path, plan: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "score",
        "--topology",
        path_str(topology),
        "--load",
        path_str(load),
        "--plan",
        path_str(plan),
        "--json",
    ];
    args.extend_from_slice(extra);
    stdout_json(&args)
}

fn solve(topology: &Path, load: &Path, out: &Path, extra: &[&str]) -> Value {
    ballast()
        .args([
            "solve",
            "--topology",
            path_str(topology),
            "--load",
            path_str(load),
        ])
        .args(["--out", path_str(out)])
        .args(extra)
        .assert()
        .success()
        .stdout(predicates::str::contains("model imbalance"));
    read_json(out)
}

fn shape(value: &Value) -> Vec<usize> {
    let mut dims = Vec::new();
    let mut v = value;
    while let Some(items) = v.as_array() {
        dims.push(items.len());
        match items.first() {
            Some(first) => v = first,
            None => break,
        }
    }
    dims
}

/// Σ over layers and domains (runs of `domain_slots` slots spread over
/// `domain_gpus` GPUs) of the replicas beyond one per GPU: the duplicates no
/// placement with these per-domain replica counts can avoid.
fn unavoidable_duplicates(phy2log: &Value, domain_slots: usize, domain_gpus: usize) -> usize {
    let mut total = 0;
    for row in phy2log.as_array().unwrap() {
        let row: Vec<u64> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_u64().unwrap())
            .collect();
        for domain in row.chunks(domain_slots) {
            let mut counts = BTreeMap::new();
            for e in domain {
                *counts.entry(e).or_insert(0usize) += 1;
            }
            total += counts
                .values()
                .map(|&c| c.saturating_sub(domain_gpus))
                .sum::<usize>();
        }
    }
    total
}

/// The sample topologies with a load of their expert count, and whether the
/// topology allows node-local placement (`K % N == 0`).
const SAMPLES: [(&str, &str, bool); 4] = [
    (
        "data/topologies/small.json",
        "data/loads/E64_zipf0.8.json",
        true,
    ),
    (
        "data/topologies/prefill.json",
        "data/loads/E256_lognorm0.8.json",
        true,
    ),
    (
        "data/topologies/ep64.json",
        "data/loads/E256_zipf0.8.json",
        true,
    ),
    (
        "data/topologies/decode.json",
        "data/loads/E256_zipf0.8.json",
        false,
    ),
];

#[test]
fn solve_and_score_agree_on_every_sample() {
    let dir = TempDir::new().unwrap();
    for (topology, load, node_local) in SAMPLES {
        let (topology, load) = (repo(topology), repo(load));
        let out = dir.path().join("plan.json");
        let plan = solve(&topology, &load, &out, &[]);
        let spec = read_json(&topology);
        let layers = spec["num_layers"].as_u64().unwrap() as usize;
        let experts = spec["num_logical_experts"].as_u64().unwrap() as usize;
        let slots = ["num_nodes", "gpus_per_node", "slots_per_gpu"]
            .iter()
            .map(|k| spec[k].as_u64().unwrap() as usize)
            .product::<usize>();
        assert_eq!(shape(&plan["phy2log"]), vec![layers, slots]);
        assert_eq!(shape(&plan["logcnt"]), vec![layers, experts]);
        assert_eq!(shape(&plan["log2phy"])[..2], [layers, experts]);
        assert!(plan.get("replica_share").is_none());

        let stats = &plan["stats"];
        for key in ["policy", "solve_ms", "model_imbalance", "bound"] {
            assert!(stats.get(key).is_some(), "stats lack {key}");
        }
        assert_eq!(stats["layers"].as_array().unwrap().len(), layers);
        for layer in stats["layers"].as_array().unwrap() {
            assert!(
                layer["imbalance"].as_f64().unwrap() >= layer["bound"].as_f64().unwrap() - 1e-9
            );
            assert!(layer["status"].is_string());
        }
        // Replicas of one expert share a GPU only when every GPU of the
        // domain (node, or cluster for global placement) already holds one.
        let duplicates = stats["same_gpu_duplicates"].as_u64().unwrap() as usize;
        let domain = if stats["placement"] == "hierarchical" {
            spec["gpus_per_node"].as_u64().unwrap() as usize
        } else {
            slots / spec["slots_per_gpu"].as_u64().unwrap() as usize
        };
        let slots_per_gpu = spec["slots_per_gpu"].as_u64().unwrap() as usize;
        let unavoidable = unavoidable_duplicates(&plan["phy2log"], domain * slots_per_gpu, domain);
        assert_eq!(duplicates, unavoidable, "{}", topology.display());

        let score = score_json(&topology, &load, &out, &[]);
        let model = score["model_imbalance"].as_f64().unwrap();
        assert!((model - stats["model_imbalance"].as_f64().unwrap()).abs() < 1e-9);
        assert!(model >= stats["bound"].as_f64().unwrap() - 1e-9);
        assert!(
            score["mean_layer_imbalance"].as_f64().unwrap()
                <= score["max_layer_imbalance"].as_f64().unwrap()
        );
        assert_eq!(
            score["same_gpu_duplicates"].as_u64(),
            Some(duplicates as u64)
        );
        assert_eq!(score["node_local"], node_local, "{}", topology.display());
        assert!(score.get("migrations").is_none());
    }
}

#[test]
fn previous_plan_makes_migrations_appear() {
    let dir = TempDir::new().unwrap();
    let topology = repo("data/topologies/small.json");
    let first = dir.path().join("first.json");
    let second = dir.path().join("second.json");
    solve(&topology, &repo("data/loads/E64_zipf0.8.json"), &first, &[]);
    let drifted = repo("data/loads/E64_zipf0.8_drift0.1.json");
    let plan = solve(
        &topology,
        &drifted,
        &second,
        &["--previous", path_str(&first)],
    );
    let migrations = plan["stats"]["migrations"]
        .as_u64()
        .expect("stats.migrations with --previous");

    let score = score_json(
        &topology,
        &drifted,
        &second,
        &["--previous", path_str(&first)],
    );
    assert_eq!(score["migrations"].as_u64(), Some(migrations));
    let same = score_json(
        &topology,
        &drifted,
        &first,
        &["--previous", path_str(&first)],
    );
    assert_eq!(same["migrations"], 0);
}

#[test]
fn down_gpus_take_no_load_and_the_plan_stays_node_local() {
    // ep64: a node hosts one group of 32 experts on 8 x 5 slots, so with
    // GPU 5 down its 35 live slots still hold the group.
    let dir = TempDir::new().unwrap();
    let topology = repo("data/topologies/ep64.json");
    let load = repo("data/loads/E256_lognorm0.8.json");
    let (first, second) = (
        dir.path().join("first.json"),
        dir.path().join("second.json"),
    );
    let before = solve(&topology, &load, &first, &[]);
    let plan = solve(
        &topology,
        &load,
        &second,
        &["--previous", path_str(&first), "--down-gpus", "5"],
    );
    assert_eq!(plan["stats"]["placement"], "hierarchical");
    let shares = plan["replica_share"].as_array().expect("shares");
    for (l, layer) in shares.iter().enumerate() {
        let gpu5 = &layer.as_array().unwrap()[25..30];
        assert!(gpu5.iter().all(|s| s.as_f64() == Some(0.0)), "layer {l}");
        assert_eq!(
            plan["phy2log"][l].as_array().unwrap()[25..30],
            before["phy2log"][l].as_array().unwrap()[25..30],
            "layer {l}: nothing is loaded onto the down GPU"
        );
    }
    let score = score_json(&topology, &load, &second, &[]);
    assert_eq!(score["node_local"], true);

    ballast()
        .args(["solve", "--topology", path_str(&topology), "--load"])
        .args([path_str(&load), "--down-gpus", "64", "--out"])
        .arg(path_str(&dir.path().join("never.json")))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("down GPU 64"));
    assert!(!dir.path().join("never.json").exists());
}

#[test]
fn example_quick_start_runs_and_csv_matches_json() {
    let dir = TempDir::new().unwrap();
    let topology = repo("examples/topology.json");
    let from_json = solve(
        &topology,
        &repo("examples/load.json"),
        &dir.path().join("a.json"),
        &[],
    );
    let from_csv = solve(
        &topology,
        &repo("examples/load.csv"),
        &dir.path().join("b.json"),
        &[],
    );
    assert_eq!(from_json["phy2log"], from_csv["phy2log"]);
    assert_eq!(
        from_json["stats"]["model_imbalance"],
        from_csv["stats"]["model_imbalance"]
    );

    ballast()
        .args(["score", "--topology", path_str(&topology), "--load"])
        .arg(repo("examples/load.csv"))
        .arg("--plan")
        .arg(dir.path().join("a.json"))
        .assert()
        .success()
        .stdout(predicates::str::contains("node-local: yes"));
}

#[test]
fn covisit_plans_are_scoped_bounded_and_scored_under_the_rule() {
    let dir = TempDir::new().unwrap();
    let topology = repo("examples/topology.json");
    let load = repo("examples/covisit-load.json");
    let bounds = stdout_json(&[
        "bound",
        "--topology",
        path_str(&topology),
        "--load",
        path_str(&load),
        "--json",
    ]);
    let node_local = bounds["node_local"].as_f64().unwrap();
    let covisit = bounds["covisit"].as_f64().unwrap();
    assert!(covisit <= node_local && covisit >= bounds["even_split"].as_f64().unwrap());
    assert!(bounds["layers"][0]["covisit"].is_f64());

    let out = dir.path().join("covisit.json");
    let plan = solve(&topology, &load, &out, &["--policy", "optimal-covisit"]);
    assert_eq!(plan["stats"]["policy"], "optimal-covisit");
    assert_eq!(plan["stats"]["placement"], "covisit");
    assert_eq!(shape(&plan["replica_scope"]), vec![4, 20]);
    assert_eq!(shape(&plan["replica_share"]), vec![4, 20]);
    let stats_imbalance = plan["stats"]["model_imbalance"].as_f64().unwrap();
    assert!(stats_imbalance >= covisit - 1e-9);
    assert!((plan["stats"]["bound"].as_f64().unwrap() - covisit).abs() < 1e-9);

    let scored = score_json(&topology, &load, &out, &[]);
    assert!((scored["model_imbalance"].as_f64().unwrap() - stats_imbalance).abs() < 1e-6);
    assert_eq!(
        scored["node_local"], true,
        "co-visit replicas add no traffic"
    );
    assert_eq!(scored["covisit"]["rule_applied"], true);
    let served = scored["covisit"]["served_fraction"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&served));
    // Transfers per token at the home nodes, read off the counts: on 2
    // nodes a token is sent to at most the one other node.
    let cross = &scored["cross_node"];
    assert_eq!(cross["at_home_nodes"], true, "{cross}");
    let (low, high) = (
        cross["transfers_per_token"]["low"].as_f64().unwrap(),
        cross["transfers_per_token"]["high"].as_f64().unwrap(),
    );
    assert!(0.0 <= low && low <= high && high <= 1.0, "{cross}");
    let estimate = cross["transfers_per_token"]["estimate"].as_f64().unwrap();
    assert!(low <= estimate && estimate <= high, "{cross}");

    // Replayed on a trace of that load: both runs report the transfers.
    let trace = dir.path().join("trace.jsonl");
    let window: Value = serde_json::from_str(&std::fs::read_to_string(&load).unwrap()).unwrap();
    let lines: Vec<String> = (0..3)
        .map(|i| {
            serde_json::json!({"window": i, "load": window["load"], "covisit": window["covisit"]})
                .to_string()
        })
        .collect();
    std::fs::write(&trace, lines.join("\n") + "\n").unwrap();
    let report = dir.path().join("report");
    ballast()
        .args(["replay", "--topology"])
        .arg(&topology)
        .arg("--trace")
        .arg(&trace)
        .args([
            "--policy",
            "optimal:previous",
            "--policy",
            "optimal-covisit:previous",
        ])
        .arg("--report")
        .arg(&report)
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "optimal-covisit:previous (interval 1): cross-node transfers per token and layer about",
        ));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    for run in summary["policies"].as_array().unwrap() {
        assert_eq!(run["transfers_known_windows"], 2, "{run}");
        let t = &run["transfers_per_token"];
        assert!(
            t["low"].as_f64().unwrap() <= t["high"].as_f64().unwrap() + 1e-12,
            "{run}"
        );
    }
    let csv = std::fs::read_to_string(report.join("windows.csv")).unwrap();
    assert!(csv
        .lines()
        .next()
        .unwrap()
        .contains("transfers_per_token_high"));

    // A load without co-visit counts cannot drive the policy.
    ballast()
        .args(["solve", "--topology"])
        .arg(&topology)
        .args(["--load"])
        .arg(repo("examples/load.json"))
        .args(["--policy", "optimal-covisit", "--out"])
        .arg(dir.path().join("refused.json"))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("co-visit counts"));
    assert!(!dir.path().join("refused.json").exists());

    // Engines cannot scope a replica: the export says so.
    ballast()
        .args(["solve", "--topology"])
        .arg(&topology)
        .args(["--load"])
        .arg(&load)
        .args(["--policy", "optimal-covisit", "--format", "sglang", "--out"])
        .arg(dir.path().join("sglang.json"))
        .assert()
        .success()
        .stderr(predicates::str::contains("replica_scope dropped"));
}

#[test]
fn bound_reports_both_bounds_when_node_local_is_possible() {
    let prefill = stdout_json(&[
        "bound",
        "--topology",
        path_str(&repo("data/topologies/prefill.json")),
        "--load",
        path_str(&repo("data/loads/E256_zipf0.8.json")),
        "--json",
    ]);
    let even = prefill["even_split"].as_f64().unwrap();
    let node_local = prefill["node_local"].as_f64().unwrap();
    assert!(even >= 1.0 && node_local >= even, "{even} {node_local}");
    assert_eq!(prefill["layers"].as_array().unwrap().len(), 58);

    let decode = stdout_json(&[
        "bound",
        "--topology",
        path_str(&repo("data/topologies/decode.json")),
        "--load",
        path_str(&repo("data/loads/E256_zipf0.8.json")),
        "--json",
    ]);
    assert!(decode["node_local"].is_null());

    ballast()
        .args(["bound", "--topology"])
        .arg(repo("data/topologies/small.json"))
        .arg("--load")
        .arg(repo("data/loads/E64_lognorm0.8.json"))
        .assert()
        .success()
        .stdout(predicates::str::contains("even-split bound"))
        .stdout(predicates::str::contains("node-local bound 1."));
}

// ---- bad input: exit 2, one line naming the file, nothing written ----

/// A scratch directory with a valid topology, load and plan to break one at a time.
struct Fixture {
    dir: TempDir,
}

const TOPOLOGY: &str = r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
    "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 3}"#;
const LOAD: &str = r#"{"load": [[10, 20, 30, 40], [5, 5, 5, 50]]}"#;
const PLAN: &str = r#"{"phy2log": [[0, 1, 0, 2, 3, 3], [0, 1, 1, 2, 3, 3]]}"#;

impl Fixture {
    fn new() -> Self {
        let fixture = Fixture {
            dir: TempDir::new().unwrap(),
        };
        fixture.write("topology.json", TOPOLOGY);
        fixture.write("load.json", LOAD);
        fixture.write("plan.json", PLAN);
        // An existing output must survive a failed run untouched.
        fixture.write("out.json", "old");
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn args(&self, args: &[&str]) -> Vec<String> {
        args.iter()
            .map(|a| match a.strip_prefix('@') {
                Some(name) => path_str(&self.path(name)).to_owned(),
                None => (*a).to_owned(),
            })
            .collect()
    }

    /// Runs `ballast` (`@name` stands for a fixture file) and checks the
    /// bad-input contract; `culprit` is the file the message must name.
    fn fails(&self, args: &[&str], culprit: &str, what: &str) {
        let output = ballast().args(self.args(args)).output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        let prefix = format!("error: {}: ", self.path(culprit).display());
        assert!(stderr.starts_with(&prefix), "{args:?}: {stderr}");
        assert!(
            stderr.contains(what),
            "{args:?}: expected `{what}` in {stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
        assert_eq!(
            std::fs::read_to_string(self.path("out.json")).unwrap(),
            "old"
        );
        let names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().starts_with(".tmp")),
            "{names:?}"
        );
    }
}

const SOLVE: [&str; 7] = [
    "solve",
    "--topology",
    "@topology.json",
    "--load",
    "@load.json",
    "--out",
    "@out.json",
];

fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(extra).copied().collect()
}

#[test]
fn the_fixture_itself_is_valid() {
    let f = Fixture::new();
    let output = ballast()
        .args(f.args(&with(&SOLVE, &["--previous", "@plan.json"])))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(std::fs::read_to_string(f.path("out.json")).unwrap(), "old");
}

#[test]
fn unreadable_file() {
    let f = Fixture::new();
    let args = [
        "solve",
        "--topology",
        "@missing.json",
        "--load",
        "@load.json",
        "--out",
        "@out.json",
    ];
    f.fails(&args, "missing.json", "cannot read");
    let args = [
        "score",
        "--topology",
        "@topology.json",
        "--load",
        "@load.json",
        "--plan",
        "@nope.json",
    ];
    f.fails(&args, "nope.json", "cannot read");
}

#[test]
fn malformed_json() {
    let f = Fixture::new();
    f.write("load.json", r#"{"load": [[10, 20, 30, 40], [5, 5"#);
    f.fails(&SOLVE, "load.json", "malformed load JSON");
    let f = Fixture::new();
    f.write("topology.json", "num_layers: 2");
    f.fails(&SOLVE, "topology.json", "malformed topology JSON");
}

#[test]
fn wrong_shapes() {
    let f = Fixture::new();
    f.write("load.json", r#"{"load": [[10, 20, 30, 40]]}"#);
    f.fails(&SOLVE, "load.json", "1 layers");
    f.write("load.json", r#"{"load": [[10, 20, 30, 40], [5, 5, 5]]}"#);
    f.fails(&SOLVE, "load.json", "layer 1: has 3 experts");
    f.write("load.json", r#"{"weights": []}"#);
    f.fails(&SOLVE, "load.json", "`load`");
    f.write("load.csv", "10,20,30,40\n5,5,5,50,1\n");
    f.fails(
        &with(&SOLVE[..4], &["@load.csv", "--out", "@out.json"]),
        "load.csv",
        "layer 1",
    );
}

#[test]
fn negative_or_non_finite_load() {
    let f = Fixture::new();
    f.write(
        "load.json",
        r#"{"load": [[10, 20, 30, 40], [5, -5, 5, 50]]}"#,
    );
    f.fails(&SOLVE, "load.json", "layer 1 index 1: -5 is negative");
    f.write("load.csv", "10,20,inf,40\n5,5,5,50\n");
    let args = [
        "bound",
        "--topology",
        "@topology.json",
        "--load",
        "@load.csv",
    ];
    f.fails(&args, "load.csv", "layer 0 index 2");
    f.write("load.csv", "10,20,30,NaN\n5,5,5,50\n");
    f.fails(&args, "load.csv", "layer 0 index 3");
    f.write("load.csv", "10,20,30,x\n5,5,5,50\n");
    f.fails(&args, "load.csv", "`x` is not a number");
}

#[test]
fn unknown_expert() {
    let f = Fixture::new();
    f.write(
        "plan.json",
        r#"{"phy2log": [[0, 1, 0, 2, 3, 3], [0, 1, 9, 2, 3, 3]]}"#,
    );
    let score = [
        "score",
        "--topology",
        "@topology.json",
        "--load",
        "@load.json",
        "--plan",
        "@plan.json",
    ];
    f.fails(&score, "plan.json", "layer 1 index 2: unknown expert 9");
    f.fails(
        &with(&SOLVE, &["--previous", "@plan.json"]),
        "plan.json",
        "unknown expert 9",
    );
}

#[test]
fn impossible_topology() {
    let f = Fixture::new();
    f.write(
        "topology.json",
        r#"{"num_layers": 2, "num_logical_experts": 8, "num_groups": 2,
            "num_nodes": 2, "gpus_per_node": 1, "slots_per_gpu": 3}"#,
    );
    f.fails(&SOLVE, "topology.json", "cannot hold 8 experts");
    f.write(
        "topology.json",
        &TOPOLOGY.replace("\"num_groups\": 2", "\"num_groups\": 3"),
    );
    f.fails(&SOLVE, "topology.json", "num_groups");
    // Node-local placement forced where groups cannot divide among nodes.
    f.write(
        "topology.json",
        &TOPOLOGY.replace("\"num_groups\": 2", "\"num_groups\": 1"),
    );
    f.fails(
        &with(&SOLVE, &["--policy", "greedy-hierarchical"]),
        "topology.json",
        "divisible",
    );
}

#[test]
fn previous_plan_of_the_wrong_shape() {
    let f = Fixture::new();
    f.write("plan.json", r#"{"phy2log": [[0, 1, 0, 2, 3, 3]]}"#);
    f.fails(
        &with(&SOLVE, &["--previous", "@plan.json"]),
        "plan.json",
        "1 layers",
    );
    f.write(
        "plan.json",
        r#"{"phy2log": [[0, 1, 0, 2, 3, 3], [0, 1, 2, 3]]}"#,
    );
    // The plan being scored is valid; the one it replaces is not.
    f.write("good.json", PLAN);
    let score = [
        "score",
        "--topology",
        "@topology.json",
        "--load",
        "@load.json",
        "--plan",
        "@good.json",
        "--previous",
        "@plan.json",
    ];
    f.fails(&score, "plan.json", "layer 1: has 4 slots");
}

#[test]
fn usage_errors_exit_2_and_write_nothing() {
    let f = Fixture::new();
    for args in [
        vec![
            "solve",
            "--topology",
            "@topology.json",
            "--load",
            "@load.json",
        ],
        with(&SOLVE, &["--format", "onnx"]),
        with(&SOLVE, &["--policy", "eplb"]),
        with(&SOLVE, &["--split", "uneven"]),
        vec!["rebalance"],
    ] {
        let output = ballast().args(f.args(&args)).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert_eq!(std::fs::read_to_string(f.path("out.json")).unwrap(), "old");
    }
}

#[test]
fn unwritable_output_is_one_line_and_exit_1() {
    let f = Fixture::new();
    let args = [
        "solve",
        "--topology",
        "@topology.json",
        "--load",
        "@load.json",
        "--out",
        "@no/such/dir/plan.json",
    ];
    let output = ballast().args(f.args(&args)).output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot write"), "{stderr}");
}

#[test]
fn optimal_routing_never_scores_worse_than_even_split() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("plan.json");
    let topology = "data/topologies/prefill.json";
    let load = "data/loads/E256_zipf0.8.json";
    Command::cargo_bin("ballast")
        .expect("binary")
        .args(["solve", "--topology", topology, "--load", load, "--out"])
        .arg(&plan)
        .assert()
        .success();
    let figure = |routing: &str| -> f64 {
        let out = Command::cargo_bin("ballast")
            .expect("binary")
            .args([
                "score",
                "--topology",
                topology,
                "--load",
                load,
                "--json",
                "--routing",
                routing,
                "--plan",
            ])
            .arg(&plan)
            .output()
            .expect("run score");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["model_imbalance"].as_f64().expect("model_imbalance")
    };
    let even = figure("even");
    let optimal = figure("optimal");
    assert!(optimal <= even + 1e-12, "optimal {optimal} > even {even}");
    assert!(optimal >= 1.0 - 1e-12);
}

/// A start that cannot open its database says why, at once: the missing
/// directory of an SQLite file, and PostgreSQL's own error (here a refused
/// connection: nothing listens on port 1) without the password, instead of
/// "unable to open database file" or "pool timed out" after 10 s.
#[test]
fn serve_names_what_keeps_its_database_closed() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("ballast.db");
    let started = std::time::Instant::now();
    let out = ballast()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(format!("sqlite:{}", missing.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "directory {} does not exist",
            dir.path().join("no-such-dir").display()
        )),
        "{err}"
    );
    assert!(!dir.path().join("no-such-dir").exists());

    let out = ballast()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://ballast:s3cret@127.0.0.1:1/ballast",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach PostgreSQL at postgres://127.0.0.1:1/ballast")
            && err.contains("refused"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
}

/// Logs written to a file or a pipe carry no colour codes.
#[test]
fn serve_logs_to_a_pipe_without_colour() {
    let out = ballast()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "sqlite:/nonexistent-ballast-dir/x.db",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WARN"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}
