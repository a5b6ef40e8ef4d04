//! `ballast import` (and `replay` on the same sources) end to end, on
//! fixtures the engines' own serialisers wrote (scripts/import_fixtures.py):
//! the totals must equal the counts numpy summed from the same tensors.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(path)
}

const SGLANG_DUMP: &str = "sglang/expert_distribution_recorder_1765000000.123456.pt";

fn ballast() -> Command {
    Command::cargo_bin("ballast").expect("the ballast binary is built for integration tests")
}

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn counts(value: &Value) -> Vec<Vec<u64>> {
    serde_json::from_value(value.clone()).expect("integer counts")
}

/// Runs `ballast import`, expecting success; returns stdout.
fn import(args: &[&str]) -> String {
    let output = ballast().arg("import").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Elementwise sum of `L x E` matrices.
fn add(acc: &mut Vec<Vec<u64>>, load: &[Vec<u64>]) {
    if acc.is_empty() {
        *acc = load.to_vec();
        return;
    }
    for (a, row) in acc.iter_mut().zip(load) {
        for (x, y) in a.iter_mut().zip(row) {
            *x += y;
        }
    }
}

/// Both engines' fixtures: the source flag and path, and numpy's sums.
fn engines() -> [(&'static str, PathBuf, Value); 2] {
    [
        (
            "--sglang",
            fixture(SGLANG_DUMP),
            read_json(&fixture("sglang/expected.json")),
        ),
        (
            "--trtllm",
            fixture("trtllm"),
            read_json(&fixture("trtllm/expected.json")),
        ),
    ]
}

#[test]
fn load_totals_equal_the_fixture_counts() {
    let dir = TempDir::new().unwrap();
    let topology = fixture("topology.json");
    for (flag, source, expected) in engines() {
        let out = dir.path().join("load.json");
        let stdout = import(&[
            "--topology",
            s(&topology),
            flag,
            s(&source),
            "--out",
            s(&out),
        ]);
        let load = read_json(&out);
        assert_eq!(counts(&load["load"]), counts(&expected["load"]), "{flag}");
        let total = expected["total"].as_u64().unwrap();
        assert!(
            stdout.contains(&format!("{total} token->expert")),
            "{stdout}"
        );
        // Ready for the planner as it is.
        ballast()
            .args(["solve", "--topology", s(&topology), "--load", s(&out)])
            .args([
                "--policy",
                "greedy",
                "--out",
                s(&dir.path().join("plan.json")),
            ])
            .assert()
            .success();
    }
}

#[test]
fn trace_windows_are_consecutive_non_empty_steps() {
    let dir = TempDir::new().unwrap();
    let topology = fixture("topology.json");
    for (flag, source, expected) in engines() {
        let out = dir.path().join("trace.jsonl");
        import(&[
            "--topology",
            s(&topology),
            flag,
            s(&source),
            "--out",
            s(&out),
            "--window",
            "2",
        ]);
        let steps: Vec<u64> = serde_json::from_value(expected["step_totals"].clone()).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), steps.len().div_ceil(2), "{flag}");
        let mut summed = Vec::new();
        for ((i, line), pair) in lines.iter().enumerate().zip(steps.chunks(2)) {
            assert_eq!(line["window"], i as u64);
            let load = counts(&line["load"]);
            let total: u64 = load.iter().flatten().sum();
            assert_eq!(total, pair.iter().sum::<u64>(), "{flag} window {i}");
            add(&mut summed, &load);
        }
        assert_eq!(summed, counts(&expected["load"]), "{flag}");
        // `replay --trace` reads it.
        ballast()
            .args(["replay", "--topology", s(&topology), "--trace", s(&out)])
            .args(["--policy", "greedy", "--json"])
            .assert()
            .success();
    }
}

#[test]
fn replay_reads_engine_statistics_as_import_windows_them() {
    let dir = TempDir::new().unwrap();
    let topology = fixture("topology.json");
    for (flag, source, _) in engines() {
        let trace = dir.path().join("trace.jsonl");
        import(&[
            "--topology",
            s(&topology),
            flag,
            s(&source),
            "--out",
            s(&trace),
            "--window",
            "1",
        ]);
        let summary = |input: &[&str]| -> Value {
            let output = ballast()
                .args(["replay", "--topology", s(&topology)])
                .args(input)
                .args(["--policy", "eplb:interval=1", "--json"])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice(&output.stdout).unwrap()
        };
        let direct = summary(&[flag, s(&source), "--window", "1"]);
        let via_trace = summary(&["--trace", s(&trace)]);
        assert_eq!(direct["windows"], via_trace["windows"], "{flag}");
        assert!(direct["windows"].as_u64().unwrap() >= 5, "{direct}");
        let experienced = |v: &Value| v["policies"][0]["experienced_imbalance"].clone();
        assert_eq!(experienced(&direct), experienced(&via_trace), "{flag}");
    }
    // An engine source needs --window, and --window needs an engine source.
    let output = ballast()
        .args(["replay", "--topology", s(&topology), "--sglang"])
        .arg(fixture(SGLANG_DUMP))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--window"));
}

/// A scratch directory holding an `out` file that a failed import must
/// leave as it was.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        std::fs::write(dir.path().join("out.json"), "old").unwrap();
        Scratch { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn topology(&self, first_moe_layer: usize, num_layers: usize, experts: usize) -> PathBuf {
        let path = self.path("topology.json");
        let spec = serde_json::json!({
            "num_layers": num_layers, "num_logical_experts": experts, "num_groups": 4,
            "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": experts.div_ceil(4) + 1,
            "first_moe_layer": first_moe_layer,
        });
        std::fs::write(&path, spec.to_string()).unwrap();
        path
    }

    /// A copy of a fixture directory, to break.
    fn copy_dir(&self, from: &Path, name: &str) -> PathBuf {
        let to = self.path(name);
        std::fs::create_dir(&to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        to
    }

    /// `ballast import` on `source` fails with status 2 and one line
    /// `error: <culprit>: ...<what>...`, writing nothing.
    fn fails(&self, topology: &Path, source: (&str, &Path), culprit: &Path, what: &str) {
        for window in [None, Some("3")] {
            let mut cmd = ballast();
            cmd.args(["import", "--topology", s(topology), source.0, s(source.1)])
                .args(["--out", s(&self.path("out.json"))]);
            if let Some(n) = window {
                cmd.args(["--window", n]);
            }
            let output = cmd.output().unwrap();
            let stderr = String::from_utf8(output.stderr).unwrap();
            assert_eq!(output.status.code(), Some(2), "{source:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            let prefix = format!("error: {}: ", culprit.display());
            assert!(
                stderr.starts_with(&prefix),
                "expected {prefix}...: {stderr}"
            );
            assert!(stderr.contains(what), "expected `{what}` in {stderr}");
            assert!(output.stdout.is_empty());
            assert_eq!(
                std::fs::read_to_string(self.path("out.json")).unwrap(),
                "old"
            );
            let stray = std::fs::read_dir(self.dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".tmp")
                })
                .count();
            assert_eq!(stray, 0);
        }
    }
}

#[test]
fn broken_sglang_dumps_are_refused() {
    let f = Scratch::new();
    let good = f.topology(2, 4, 16);
    let dump = fixture(SGLANG_DUMP);
    let bytes = std::fs::read(&dump).unwrap();

    let truncated = f.path("truncated.pt");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    f.fails(
        &good,
        ("--sglang", &truncated),
        &truncated,
        "not a readable PyTorch",
    );

    let corrupt = f.path("corrupt.pt");
    let mut flipped = bytes.clone();
    // Inside data.pkl, right after the archive's first local header.
    for b in &mut flipped[80..140] {
        *b ^= 0x5a;
    }
    std::fs::write(&corrupt, &flipped).unwrap();
    f.fails(
        &good,
        ("--sglang", &corrupt),
        &corrupt,
        "not a readable PyTorch",
    );

    let text = f.path("text.pt");
    std::fs::write(&text, "{\"load\": []}").unwrap();
    f.fails(&good, ("--sglang", &text), &text, "not a readable PyTorch");

    let per_token = fixture("sglang/per_token.pt");
    f.fails(
        &good,
        ("--sglang", &per_token),
        &per_token,
        "no `logical_count` tensor: not an SGLang `stat` dump",
    );

    let missing = f.path("missing.pt");
    f.fails(&good, ("--sglang", &missing), &missing, "cannot read");

    let negative = fixture("sglang/negative.pt");
    f.fails(
        &good,
        ("--sglang", &negative),
        &negative,
        "`logical_count` step 1 layer 3 expert 5: -3 is negative",
    );

    // 6 hidden layers in the dump; 1 dense + 4 MoE is not its layout.
    let short = f.topology(1, 4, 16);
    f.fails(
        &short,
        ("--sglang", &dump),
        &dump,
        "has 6 layers, the topology's layout has 5",
    );
    // 3 dense + 3 MoE adds up, but layer 2 carries tokens.
    let shifted = f.topology(3, 3, 16);
    f.fails(&shifted, ("--sglang", &dump), &dump, "layer 2 expert");
    let wide = f.topology(2, 4, 32);
    f.fails(
        &wide,
        ("--sglang", &dump),
        &dump,
        "counts 16 experts per layer, the topology has 32",
    );
}

#[test]
fn broken_trtllm_statistics_are_refused() {
    let f = Scratch::new();
    let good = f.topology(2, 4, 16);
    let stats = fixture("trtllm");

    let bad_key = fixture("trtllm_bad_key");
    f.fails(
        &good,
        ("--trtllm", &bad_key),
        &bad_key.join("rank0.safetensors"),
        "key `101_6`: layer 6 is not one of the topology's MoE layers 2..=5",
    );
    // The same key is the MTP layer of a model that has one: its counts
    // are left out (an MTP layer is placed like the last hidden layer).
    let with_mtp = f.path("topology_mtp.json");
    let mut spec = read_json(&good);
    spec["mtp_layers"] = 1.into();
    std::fs::write(&with_mtp, spec.to_string()).unwrap();
    let out = f.path("mtp_load.json");
    import(&[
        "--topology",
        s(&with_mtp),
        "--trtllm",
        s(&bad_key),
        "--out",
        s(&out),
    ]);
    assert_eq!(counts(&read_json(&out)["load"]).len(), 4);
    let negative = fixture("trtllm_negative");
    f.fails(
        &good,
        ("--trtllm", &negative),
        &negative.join("rank0.safetensors"),
        "key `101_3` expert 7: -1 is negative",
    );

    let truncated = f.copy_dir(&stats, "truncated");
    let rank1 = truncated.join("rank1.safetensors");
    let bytes = std::fs::read(&rank1).unwrap();
    std::fs::write(&rank1, &bytes[..bytes.len() - 100]).unwrap();
    f.fails(
        &good,
        ("--trtllm", &truncated),
        &rank1,
        "not a readable safetensors",
    );

    let gap = f.copy_dir(&stats, "gap");
    std::fs::remove_file(gap.join("rank0.safetensors")).unwrap();
    f.fails(
        &good,
        ("--trtllm", &gap),
        &gap,
        "rank0.safetensors is missing",
    );

    let no_meta = f.copy_dir(&stats, "no_meta");
    std::fs::remove_file(no_meta.join("meta_info.json")).unwrap();
    f.fails(
        &good,
        ("--trtllm", &no_meta),
        &no_meta.join("meta_info.json"),
        "cannot read",
    );

    // The layer layout: layer 2 is dense to this topology; 5 MoE layers
    // from layer 2 expects a layer 6 the model does not have.
    let shifted = f.topology(3, 3, 16);
    f.fails(
        &shifted,
        ("--trtllm", &stats),
        &stats.join("rank0.safetensors"),
        "layer 2 is not one of the topology's MoE layers 3..=5",
    );
    let long = f.topology(2, 5, 16);
    f.fails(&long, ("--trtllm", &stats), &stats, "lacks MoE layer 6");
    let wide = f.topology(2, 4, 32);
    f.fails(
        &wide,
        ("--trtllm", &stats),
        &stats.join("meta_info.json"),
        "num_experts is 16, the topology has 32",
    );
}
