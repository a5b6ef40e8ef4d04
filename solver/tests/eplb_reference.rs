//! Our EPLB against DeepSeek EPLB's own figures on the sample data
//! (`data/eplb_reference.csv`, produced by running `eplb.py` on the same
//! inputs). Every EPLB imbalance column must match to [`TOLERANCE`]:
//!
//! - `eplb_imb_mean` / `eplb_imb_max`: mean / max over layers of the layer
//!   imbalance (max GPU load / mean GPU load) of EPLB's plan for the load;
//! - `fresh_imb_drift0.1`: mean layer imbalance of EPLB re-run on the drifted
//!   load (`_drift0.1`), scored on it;
//! - `stale_imb_drift0.1`: mean layer imbalance of the plan for the original
//!   load, scored on the drifted load.
//!
//! The last one depends on which expert sits on which GPU, not just on GPU
//! loads, and so do the churn columns between the plan for the original load
//! and the fresh plan for the drifted one, which must match too:
//!
//! - `churn_raw_drift0.1`: migrations (experts each GPU must load, SPEC) per
//!   slot;
//! - `churn_relabel_node_drift0.1`: the same, after renumbering nodes, and
//!   GPUs within each node, to keep as much in place as possible (per layer).
//!
//! (`lb_*` are lower bounds and `time_ms_*` is Python's run time.) Run with
//! `-- --nocapture` for the table, model imbalance included.

#[path = "../examples/support/mod.rs"]
mod support;

use ballast_solver::eplb::{self, EplbPolicy};
use ballast_solver::{score, LoadMatrix, Plan, Topology};

/// The CSV's figures have 5 decimals.
const TOLERANCE: f64 = 1e-5;

/// `config` → (topology file, expert-count prefix of the load files, policy).
fn config(name: &str) -> (&'static str, &'static str, EplbPolicy) {
    match name {
        "prefill_4x8_r32" => ("prefill", "E256", EplbPolicy::Auto),
        "prefill_4x8_r32_global" => ("prefill", "E256", EplbPolicy::Global),
        "decode_40x8_r64" => ("decode", "E256", EplbPolicy::Auto),
        "small_2x4_r16" => ("small", "E64", EplbPolicy::Auto),
        "ep64_8x8_r64" => ("ep64", "E256", EplbPolicy::Auto),
        other => panic!("unknown config {other} in eplb_reference.csv"),
    }
}

fn plan(topology: &Topology, load: &LoadMatrix, policy: EplbPolicy) -> Plan {
    eplb::rebalance(topology, load, policy).unwrap().plan
}

/// Migrations from `old` to `new` per slot.
fn churn(t: &Topology, old: &Plan, new: &Plan) -> f64 {
    score::migrations(t, old, new) as f64 / (t.num_slots() * t.num_layers()) as f64
}

/// Experts a GPU holding `old` must load to hold `new` (sorted multisets).
fn gpu_migrations(old: &[u32], new: &[u32]) -> i64 {
    let (mut i, mut j, mut missing) = (0, 0, 0);
    while i < new.len() {
        if j == old.len() || new[i] < old[j] {
            missing += 1;
            i += 1;
        } else if new[i] > old[j] {
            j += 1;
        } else {
            i += 1;
            j += 1;
        }
    }
    missing
}

/// Each GPU's experts, sorted.
fn sorted_gpus(t: &Topology, row: &[u32]) -> Vec<Vec<u32>> {
    row.chunks_exact(t.slots_per_gpu())
        .map(|gpu| {
            let mut gpu = gpu.to_vec();
            gpu.sort_unstable();
            gpu
        })
        .collect()
}

/// [`churn`] after the best renumbering, per layer, of the new plan's nodes
/// and of the GPUs within each node.
fn churn_relabelled(t: &Topology, old: &Plan, new: &Plan) -> f64 {
    let (n, g) = (t.num_nodes(), t.gpus_per_node());
    let mut total = 0;
    for (old, new) in old.phy2log().iter().zip(new.phy2log()) {
        let (old, new) = (sorted_gpus(t, old), sorted_gpus(t, new));
        // cost[i][j]: old node i's GPUs take new node j's, best GPU matching.
        let cost: Vec<Vec<i64>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        let gpus: Vec<Vec<i64>> = (0..g)
                            .map(|x| {
                                (0..g)
                                    .map(|y| gpu_migrations(&old[i * g + x], &new[j * g + y]))
                                    .collect()
                            })
                            .collect();
                        min_cost_matching(&gpus)
                    })
                    .collect()
            })
            .collect();
        total += min_cost_matching(&cost);
    }
    total as f64 / (t.num_slots() * t.num_layers()) as f64
}

/// The cost of a minimum-cost perfect matching of a square matrix (the
/// Hungarian method with potentials, O(n^3)).
fn min_cost_matching(cost: &[Vec<i64>]) -> i64 {
    let n = cost.len();
    let inf = i64::MAX / 4;
    // 1-based; column 0 is a sentinel. row_of[j]: the row matched to column j.
    let (mut u, mut v) = (vec![0i64; n + 1], vec![0i64; n + 1]);
    let (mut row_of, mut way) = (vec![0usize; n + 1], vec![0usize; n + 1]);
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut min_slack = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let (mut delta, mut j1) = (inf, 0);
            for j in 1..=n {
                if !used[j] {
                    let slack = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if slack < min_slack[j] {
                        min_slack[j] = slack;
                        way[j] = j0;
                    }
                    if min_slack[j] < delta {
                        delta = min_slack[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_slack[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    (1..=n).map(|j| cost[row_of[j] - 1][j - 1]).sum()
}

/// One CSV row's inputs and EPLB's plans: for the load and for its drift.
struct Case {
    row: support::ReferenceRow,
    topology: Topology,
    load: LoadMatrix,
    drifted: LoadMatrix,
    base: Plan,
    fresh: Plan,
}

fn cases() -> Vec<Case> {
    let rows = support::eplb_reference();
    assert_eq!(rows.len(), 10, "one row per config and distribution");
    rows.into_iter()
        .map(|row| {
            let (topology_name, experts, policy) = config(&row.config);
            let topology = support::read_topology(topology_name);
            let load = support::read_load(&format!("{experts}_{}", row.dist), &topology);
            let drifted =
                support::read_load(&format!("{experts}_{}_drift0.1", row.dist), &topology);
            let base = plan(&topology, &load, policy);
            let fresh = plan(&topology, &drifted, policy);
            Case {
                row,
                topology,
                load,
                drifted,
                base,
                fresh,
            }
        })
        .collect()
}

/// Checks our figures against the row's; returns the largest error.
fn compare(row: &support::ReferenceRow, ours: &[(&str, f64)]) -> f64 {
    let mut worst: f64 = 0.0;
    for &(column, value) in ours {
        let theirs = row.values[column];
        let error = (value - theirs).abs();
        worst = worst.max(error);
        assert!(
            error <= TOLERANCE,
            "{} {} {column}: ours {value:.7}, EPLB {theirs:.5}",
            row.config,
            row.dist
        );
    }
    worst
}

#[test]
fn eplb_imbalance_matches_the_reference() {
    eprintln!(
        "{:<24} {:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "config",
        "dist",
        "imb_mean",
        "ref",
        "imb_max",
        "ref",
        "fresh",
        "ref",
        "stale",
        "ref",
        "model"
    );
    let mut worst: f64 = 0.0;
    for case in cases() {
        let t = &case.topology;
        let on_base = score::score(t, &case.load, &case.base);
        let fresh = score::score(t, &case.drifted, &case.fresh);
        let stale = score::score(t, &case.drifted, &case.base);
        let ours = [
            ("eplb_imb_mean", on_base.mean_layer_imbalance),
            ("eplb_imb_max", on_base.max_layer_imbalance),
            ("fresh_imb_drift0.1", fresh.mean_layer_imbalance),
            ("stale_imb_drift0.1", stale.mean_layer_imbalance),
        ];
        let row = &case.row;
        eprint!("{:<24} {:<11}", row.config, row.dist);
        for (column, value) in ours {
            eprint!(" {value:>9.5} {:>9.5}", row.values[column]);
        }
        eprintln!(" {:>8.5}", on_base.model_imbalance);
        worst = worst.max(compare(row, &ours));
    }
    eprintln!("largest absolute error: {worst:.2e}");
}

/// The churn figures compare the plans slot by slot, so they check that
/// every expert lands where EPLB puts it, ties included.
#[test]
fn eplb_churn_matches_the_reference() {
    let mut worst: f64 = 0.0;
    for case in cases() {
        let t = &case.topology;
        let ours = [
            ("churn_raw_drift0.1", churn(t, &case.base, &case.fresh)),
            (
                "churn_relabel_node_drift0.1",
                churn_relabelled(t, &case.base, &case.fresh),
            ),
        ];
        let row = &case.row;
        eprint!("{:<24} {:<11}", row.config, row.dist);
        for (column, value) in ours {
            eprint!(" {column} {value:.5} (ref {:.5})", row.values[column]);
        }
        eprintln!();
        worst = worst.max(compare(row, &ours));
    }
    eprintln!("largest absolute error: {worst:.2e}");
}

/// The hierarchical policy keeps every group's replicas on one node, and the
/// global one is chosen exactly where `eplb.py` chooses it.
#[test]
fn eplb_policy_choice_follows_the_original() {
    for (name, hierarchical) in [
        ("prefill", true),
        ("small", true),
        ("ep64", true),
        // 8 groups on 40 nodes: global.
        ("decode", false),
    ] {
        let topology = support::read_topology(name);
        let experts = if name == "small" { "E64" } else { "E256" };
        let load = support::read_load(&format!("{experts}_zipf0.8"), &topology);
        let outcome = eplb::rebalance(&topology, &load, EplbPolicy::Auto).unwrap();
        assert_eq!(outcome.hierarchical, hierarchical, "{name}");
        if hierarchical {
            assert!(
                score::score(&topology, &load, &outcome.plan).is_node_local(),
                "{name}"
            );
        }
    }
}
