//! Engine exports on every shipped preset, checked the way each engine
//! checks a placement when it loads one (docs/engines.md):
//!
//! * SGLang (`ExpertLocationMetadata`): one key; `num_hidden_layers` rows;
//!   every row `routed + redundant` wide and divisible by the EP size; every
//!   expert in every row; integer ids in range.
//! * TensorRT-LLM (`MoeLoadBalancerConfig`): keys for every MoE layer by
//!   absolute index and for each MTP layer; every value `num_slots` long;
//!   `num_slots` divisible by the EP size; every expert present.
//! * vLLM's loader proposal (vllm-project/vllm#49572): a bare `[L][P]` list
//!   with `L` MoE layers, `P` physical experts, ids in range, every expert
//!   covered; `vllm-eplb-state` has `EplbState`'s three table shapes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
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

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A shipped preset and a load of its shape.
struct Preset {
    name: &'static str,
    load: &'static str,
}

const PRESETS: [Preset; 4] = [
    Preset {
        name: "prefill",
        load: "data/loads/E256_lognorm0.8.json",
    },
    Preset {
        name: "decode",
        load: "data/loads/E256_zipf0.8.json",
    },
    Preset {
        name: "ep64",
        load: "data/loads/E256_lognorm0.8_drift0.1.json",
    },
    Preset {
        name: "small",
        load: "data/loads/E64_lognorm0.8.json",
    },
];

/// The topology fields the checks need.
struct Shape {
    moe_layers: usize,
    experts: usize,
    slots: usize,
    ep_size: usize,
    hidden_layers: usize,
    first_moe_layer: usize,
    mtp_layers: usize,
}

impl Shape {
    fn of(topology: &Path) -> Shape {
        let t: Value = serde_json::from_str(&std::fs::read_to_string(topology).unwrap()).unwrap();
        let n = |field: &str| t[field].as_u64().map_or(0, |v| v as usize);
        Shape {
            moe_layers: n("num_layers"),
            experts: n("num_logical_experts"),
            slots: n("num_nodes") * n("gpus_per_node") * n("slots_per_gpu"),
            ep_size: n("num_nodes") * n("gpus_per_node"),
            hidden_layers: n("num_hidden_layers"),
            first_moe_layer: n("first_moe_layer"),
            mtp_layers: n("mtp_layers"),
        }
    }

    /// A placement row as an engine checks it: the expected width, integer
    /// ids in range, every logical expert present.
    fn check_row(&self, what: &str, row: &Value) -> Vec<u32> {
        let row = row
            .as_array()
            .unwrap_or_else(|| panic!("{what}: not a list"));
        assert_eq!(row.len(), self.slots, "{what}: width");
        let ids: Vec<u32> = row
            .iter()
            .map(|id| {
                let id = id
                    .as_u64()
                    .unwrap_or_else(|| panic!("{what}: {id} is not a non-negative integer"));
                assert!((id as usize) < self.experts, "{what}: id {id} out of range");
                id as u32
            })
            .collect();
        let mut present = vec![false; self.experts];
        for &id in &ids {
            present[id as usize] = true;
        }
        assert!(present.iter().all(|&p| p), "{what}: an expert is missing");
        ids
    }
}

/// `ballast solve --format FORMAT` (deterministic greedy planner); returns
/// the output path and stdout.
fn export(dir: &TempDir, preset: &Preset, format: &str, extra: &[&str]) -> (PathBuf, String) {
    let out = dir.path().join(format!("{}-{format}.out", preset.name));
    let output = ballast()
        .args(["solve", "--topology"])
        .arg(repo(&format!("data/topologies/{}.json", preset.name)))
        .arg("--load")
        .arg(repo(preset.load))
        .args(["--policy", "greedy", "--format", format, "--out"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} {format}: {stderr}",
        preset.name
    );
    // Engines run as other users or in containers: 0644 under umask 022.
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o644, 0o644, "{}: mode {mode:o}", out.display());
    (out, String::from_utf8(output.stdout).unwrap())
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The MoE rows of the native plan, to compare the exports with.
fn native_rows(dir: &TempDir, preset: &Preset) -> Vec<Value> {
    let (out, _) = export(dir, preset, "native", &[]);
    read_json(&out)["phy2log"].as_array().unwrap().clone()
}

#[test]
fn deepseek_presets_carry_the_model_layout() {
    for name in ["prefill", "decode", "ep64"] {
        let shape = Shape::of(&repo(&format!("data/topologies/{name}.json")));
        assert_eq!(
            (shape.hidden_layers, shape.first_moe_layer, shape.mtp_layers),
            (61, 3, 1),
            "{name}"
        );
    }
}

#[test]
fn sglang_loads_every_preset() {
    let dir = TempDir::new().unwrap();
    for preset in &PRESETS {
        let shape = Shape::of(&repo(&format!("data/topologies/{}.json", preset.name)));
        let (out, _) = export(&dir, preset, "sglang", &[]);
        let doc = read_json(&out);
        let keys: Vec<_> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["physical_to_logical_map"], "{}", preset.name);
        let rows = doc["physical_to_logical_map"].as_array().unwrap();
        assert_eq!(rows.len(), shape.hidden_layers, "{}", preset.name);
        // Routed + redundant experts, divisible by the EP size.
        let redundant = shape.slots - shape.experts;
        assert_eq!(shape.slots, shape.experts + redundant);
        assert_eq!(shape.slots % shape.ep_size, 0, "{}", preset.name);
        let native = native_rows(&dir, preset);
        for (layer, row) in rows.iter().enumerate() {
            let ids = shape.check_row(&format!("{} sglang row {layer}", preset.name), row);
            if layer < shape.first_moe_layer {
                // SGLang's own trivial row for a dense layer.
                let trivial: Vec<u32> = (0..shape.slots)
                    .map(|p| (p % shape.experts) as u32)
                    .collect();
                assert_eq!(ids, trivial, "{} dense row {layer}", preset.name);
            } else {
                assert_eq!(row, &native[layer - shape.first_moe_layer]);
            }
        }
    }
}

#[test]
fn tensorrt_llm_loads_every_preset() {
    #[derive(serde::Deserialize)]
    struct Config {
        num_slots: usize,
        layer_updates_per_iter: usize,
        initial_global_assignments: BTreeMap<usize, Vec<u32>>,
    }
    let dir = TempDir::new().unwrap();
    for preset in &PRESETS {
        let shape = Shape::of(&repo(&format!("data/topologies/{}.json", preset.name)));
        let (out, stdout) = export(&dir, preset, "trtllm", &[]);
        assert!(stdout.contains("(trtllm)"), "{stdout}");
        let config: Config =
            serde_norway::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(config.num_slots, shape.slots);
        assert_eq!(config.num_slots % shape.ep_size, 0);
        assert_eq!(config.layer_updates_per_iter, 0);
        let keys: Vec<usize> = config.initial_global_assignments.keys().copied().collect();
        let expected: Vec<usize> =
            (shape.first_moe_layer..shape.hidden_layers + shape.mtp_layers).collect();
        assert_eq!(keys, expected, "{}", preset.name);
        let native = native_rows(&dir, preset);
        for (layer, assignment) in &config.initial_global_assignments {
            let what = format!("{} trtllm layer {layer}", preset.name);
            shape.check_row(&what, &serde_json::json!(assignment));
            // MTP layers reuse the last hidden layer's placement.
            let moe_layer = (layer - shape.first_moe_layer).min(shape.moe_layers - 1);
            assert_eq!(serde_json::json!(assignment), native[moe_layer], "{what}");
        }
    }
    // The shipped DeepSeek-V3 prefill preset: keys 3..=61.
    let prefill = Shape::of(&repo("data/topologies/prefill.json"));
    assert_eq!(
        (
            prefill.first_moe_layer,
            prefill.hidden_layers + prefill.mtp_layers - 1
        ),
        (3, 61)
    );
}

#[test]
fn vllm_formats_have_the_shapes_their_loaders_read() {
    let dir = TempDir::new().unwrap();
    for preset in &PRESETS {
        let shape = Shape::of(&repo(&format!("data/topologies/{}.json", preset.name)));
        let (out, _) = export(&dir, preset, "vllm", &[]);
        let rows = read_json(&out);
        let rows = rows.as_array().expect("a bare [L][P] list");
        assert_eq!(rows.len(), shape.moe_layers, "{}", preset.name);
        for (layer, row) in rows.iter().enumerate() {
            shape.check_row(&format!("{} vllm layer {layer}", preset.name), row);
        }
        assert_eq!(rows, &native_rows(&dir, preset));

        let (out, _) = export(&dir, preset, "vllm-eplb-state", &[]);
        let state = read_json(&out);
        assert_eq!(state["physical_to_logical_map"], Value::Array(rows.clone()));
        let l2p = state["logical_to_physical_map"].as_array().unwrap();
        assert_eq!(l2p.len(), shape.moe_layers);
        assert!(l2p
            .iter()
            .all(|layer| layer.as_array().unwrap().len() == shape.experts));
        let counts = state["logical_replica_count"].as_array().unwrap();
        for layer in counts {
            let total: u64 = layer
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap())
                .sum();
            assert_eq!(total as usize, shape.slots);
        }
    }
}

#[test]
fn engines_indexed_by_model_layer_refuse_a_topology_without_the_layout() {
    let dir = TempDir::new().unwrap();
    let mut spec = read_json(&repo("data/topologies/prefill.json"));
    let spec = spec.as_object_mut().unwrap();
    for field in ["num_hidden_layers", "first_moe_layer", "mtp_layers"] {
        spec.remove(field);
    }
    let topology = dir.path().join("topology.json");
    std::fs::write(&topology, Value::Object(spec.clone()).to_string()).unwrap();
    for format in ["sglang", "trtllm"] {
        let out = dir.path().join(format!("plan.{format}"));
        let output = ballast()
            .args(["solve", "--topology", path_str(&topology), "--load"])
            .arg(repo("data/loads/E256_lognorm0.8.json"))
            .args(["--policy", "greedy", "--format", format, "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("error: {}: {format}", topology.display())),
            "{stderr}"
        );
        assert!(stderr.contains("add `first_moe_layer`"), "{stderr}");
        assert!(!out.exists());
    }
    // vLLM counts MoE layers only and needs no layout.
    let out = dir.path().join("plan.vllm");
    ballast()
        .args(["solve", "--topology", path_str(&topology), "--load"])
        .arg(repo("data/loads/E256_lognorm0.8.json"))
        .args(["--policy", "greedy", "--format", "vllm", "--out"])
        .arg(&out)
        .assert()
        .success();
}

/// The `model imbalance X  bound ...` figure of a `solve` summary.
fn model_imbalance(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("model imbalance "))
        .unwrap_or_else(|| panic!("no model imbalance line in {stdout}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn dropped_shares_print_the_figures_of_the_plan_written() {
    let dir = TempDir::new().unwrap();
    let topology = repo("data/topologies/small.json");
    let load = repo("data/loads/E64_lognorm0.8.json");
    let out = dir.path().join("plan.vllm");
    let output = ballast()
        .args(["solve", "--topology", path_str(&topology), "--load"])
        .arg(&load)
        .args([
            "--split",
            "weighted",
            "--time-limit",
            "10",
            "--format",
            "vllm",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("replica_share dropped"), "{stderr}");
    assert!(
        stderr.contains("the figures are the even split's"),
        "{stderr}"
    );
    assert!(stdout.contains("even split"), "{stdout}");
    let with_shares: f64 = stderr
        .trim_end()
        .rsplit(' ')
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no weighted figure in {stderr}"));

    // The figure printed is the written placement's score under an even
    // split, as `ballast score` computes it independently.
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        serde_json::json!({ "phy2log": read_json(&out) }).to_string(),
    )
    .unwrap();
    let scored = ballast()
        .args(["score", "--topology", path_str(&topology), "--load"])
        .arg(&load)
        .arg("--plan")
        .arg(&plan)
        .arg("--json")
        .output()
        .unwrap();
    assert!(scored.status.success());
    let scored: Value = serde_json::from_slice(&scored.stdout).unwrap();
    let printed = model_imbalance(&stdout);
    let expected = scored["model_imbalance"].as_f64().unwrap();
    assert!(
        (printed - expected).abs() < 5e-5,
        "printed {printed}, the written plan scores {expected}"
    );
    // Dropping the shares never helps: the weighted figure is at least as good.
    assert!(printed >= with_shares, "{printed} vs {with_shares}");
}
