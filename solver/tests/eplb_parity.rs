//! The greedy planner against DeepSeek EPLB's figures on the sample data
//! (`data/eplb_reference.csv`, produced by running EPLB on the same inputs).
//!
//! EPLB's `eplb_imb_mean` is the mean layer imbalance, so that is what we
//! compare; `lb_hier_imb_mean` is the mean per-layer node-local bound, which
//! our own bound must reproduce. Run with `-- --nocapture` for the table.

#[path = "../examples/support/mod.rs"]
mod support;

use std::collections::HashMap;

use ballast_solver::planner::PlanError;
use ballast_solver::{model_bounds, solve, LoadMatrix, PlanOptions, PlanOutcome, Policy, Topology};

/// EPLB's figures are printed with 5 decimals.
const CSV_ROUNDING: f64 = 5e-6;

/// The target: within 0.1 % of the node-local bound on prefill/small.
const MAX_GAP: f64 = 1e-3;

/// `config,dist` → column → value.
fn reference() -> HashMap<(String, String), HashMap<String, f64>> {
    support::eplb_reference()
        .into_iter()
        .map(|row| ((row.config, row.dist), row.values))
        .collect()
}

struct Case {
    config: &'static str,
    topology: &'static str,
    experts: &'static str,
    policy: Policy,
    /// Must land within [`MAX_GAP`] of the bound.
    near_bound: bool,
}

const CASES: [Case; 5] = [
    Case {
        config: "prefill_4x8_r32",
        topology: "prefill",
        experts: "E256",
        policy: Policy::Greedy,
        near_bound: true,
    },
    Case {
        config: "decode_40x8_r64",
        topology: "decode",
        experts: "E256",
        policy: Policy::Greedy,
        near_bound: false,
    },
    Case {
        config: "small_2x4_r16",
        topology: "small",
        experts: "E64",
        policy: Policy::Greedy,
        near_bound: true,
    },
    Case {
        config: "prefill_4x8_r32_global",
        topology: "prefill",
        experts: "E256",
        policy: Policy::GreedyGlobal,
        near_bound: false,
    },
    Case {
        config: "ep64_8x8_r64",
        topology: "ep64",
        experts: "E256",
        policy: Policy::Greedy,
        near_bound: false,
    },
];

fn plan(case: &Case, load_file: &str) -> (Topology, LoadMatrix, Result<PlanOutcome, PlanError>) {
    let topology = support::read_topology(case.topology);
    let load = support::read_load(load_file, &topology);
    let options = PlanOptions {
        policy: case.policy,
        ..PlanOptions::default()
    };
    let outcome = solve(&topology, &load, &options);
    (topology, load, outcome)
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len() as f64;
    values.sum::<f64>() / n
}

#[test]
fn greedy_beats_eplb_on_every_sample() {
    let reference = reference();
    eprintln!(
        "{:<24} {:<22} {:>9} {:>9} {:>9} {:>9} {:>8} {:>5}",
        "config", "load", "ours", "model", "bound", "eplb", "gap%", "dups"
    );
    for case in &CASES {
        for dist in ["lognorm0.8", "zipf0.8"] {
            let figures = &reference[&(case.config.to_string(), dist.to_string())];
            let hierarchical = case.config != "prefill_4x8_r32_global" && case.topology != "decode";
            for (suffix, eplb_column) in
                [("", "eplb_imb_mean"), ("_drift0.1", "fresh_imb_drift0.1")]
            {
                let load_file = format!("{}_{dist}{suffix}", case.experts);
                let (topology, load, outcome) = plan(case, &load_file);
                let outcome = outcome.unwrap();
                let stats = &outcome.stats;
                let eplb = figures[eplb_column];
                let mean_bound = mean(stats.layers.iter().map(|l| l.bound));
                let gap = stats.model_imbalance / stats.bound - 1.0;
                eprintln!(
                    "{:<24} {:<22} {:>9.5} {:>9.5} {:>9.5} {:>9.5} {:>8.4} {:>5}",
                    case.config,
                    load_file,
                    stats.mean_layer_imbalance,
                    stats.model_imbalance,
                    mean_bound,
                    eplb,
                    gap * 100.0,
                    stats.same_gpu_duplicates
                );
                let what = format!("{} on {load_file}", case.config);
                assert!(
                    stats.mean_layer_imbalance <= eplb + CSV_ROUNDING,
                    "{what}: worse than EPLB"
                );
                // Equal GPU speeds: never two replicas of an expert on one GPU.
                assert_eq!(stats.same_gpu_duplicates, 0, "{what}: duplicates");
                assert!(stats.bound <= stats.model_imbalance + 1e-12, "{what}");
                if case.near_bound {
                    assert!(
                        gap <= MAX_GAP,
                        "{what}: {:.4} % above the bound",
                        gap * 100.0
                    );
                }
                if suffix.is_empty() {
                    // Our bounds reproduce the reference's bounds.
                    let bounds = model_bounds(&topology, &load);
                    let hier = figures.get("lb_hier_imb_mean");
                    let ours = if hierarchical {
                        mean(bounds.layers.iter().map(|l| l.node_local.unwrap()))
                    } else {
                        mean(bounds.layers.iter().map(|l| l.even_split))
                    };
                    let theirs = hier
                        .filter(|_| hierarchical)
                        .unwrap_or(&figures["lb_imb_mean"]);
                    assert!(
                        (ours - theirs).abs() <= CSV_ROUNDING,
                        "{what}: bound {ours} vs {theirs}"
                    );
                    assert!((mean_bound - ours).abs() < 1e-12, "{what}: stats bound");
                }
            }
        }
    }
}

#[test]
fn decode_reaches_the_even_split_bound() {
    let (_, _, outcome) = plan(&CASES[1], "E256_zipf0.8");
    let stats = outcome.unwrap().stats;
    for layer in &stats.layers {
        assert!((layer.imbalance - layer.bound).abs() < 1e-12, "{layer:?}");
    }
}
