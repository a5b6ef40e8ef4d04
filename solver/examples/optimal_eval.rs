//! The optimal policy's figures on the repo's sample data (issue 3).
//!
//! For every sample topology and load:
//! - **fresh plans**: model imbalance of the greedy policy and of the optimal
//!   policy under even and weighted split, against the lower bound the plan
//!   reports (`stats.bound`: node-local where groups divide among nodes),
//!   with the proven gap, the layers proven optimal and the wall time;
//! - **re-plans** from the optimal plan for X to `X_drift0.1` / `X_drift0.3`
//!   with `previous`: slots re-loaded (migrations / all slots), the model
//!   imbalance against a fresh plan of the drifted load, and EPLB's churn
//!   from `eplb_reference.csv` for comparison;
//! - **time-limit adherence**: wall time of heavy runs against `time_limit`.
//!
//! ```text
//! cargo run --release -p ballast-solver --example optimal_eval
//! ```

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use ballast_solver::planner::{LayerStatus, PlanOptions, Policy, Split};
use ballast_solver::{solve, LoadMatrix, PlanOutcome, Topology};

fn topology(name: &str) -> Topology {
    support::read_topology(name)
}

fn load(topology: &Topology, name: &str) -> LoadMatrix {
    support::read_load(name, topology)
}

/// EPLB's figures for one (config, dist) row of `eplb_reference.csv`.
fn eplb(config: &str, dist: &str) -> Option<(f64, f64)> {
    let row = support::eplb_reference()
        .into_iter()
        .find(|row| row.config == config && row.dist == dist)?;
    Some((
        *row.values.get("eplb_imb_mean")?,
        *row.values.get("churn_relabel_node_drift0.1")?,
    ))
}

fn run(t: &Topology, l: &LoadMatrix, options: &PlanOptions) -> (PlanOutcome, f64) {
    let started = Instant::now();
    let outcome = solve(t, l, options).expect("sample data plans");
    (outcome, started.elapsed().as_secs_f64())
}

fn options(policy: Policy, split: Split) -> PlanOptions {
    PlanOptions {
        policy,
        split,
        ..PlanOptions::default()
    }
}

fn fresh_figures(t: &Topology, l: &LoadMatrix, label: &str, eplb_imbalance: Option<f64>) {
    let (greedy, greedy_s) = run(t, l, &options(Policy::Greedy, Split::Even));
    println!(
        "  {label:<22} greedy   {:.5}  bound {:.5}  gap {:>7.4}%  {:>7.1} ms{}",
        greedy.stats.model_imbalance,
        greedy.stats.bound,
        (greedy.stats.model_imbalance / greedy.stats.bound - 1.0) * 100.0,
        greedy_s * 1e3,
        eplb_imbalance.map_or(String::new(), |e| format!("  (EPLB {e:.5})")),
    );
    for split in [Split::Even, Split::Weighted] {
        let (o, secs) = run(t, l, &options(Policy::Optimal, split));
        let proven = o
            .stats
            .layers
            .iter()
            .filter(|x| x.status == LayerStatus::Optimal)
            .count();
        let worst_gap = o.stats.layers.iter().map(|x| x.gap).fold(0.0, f64::max);
        println!(
            "  {label:<22} {:<8} {:.5}  bound {:.5}  gap {:>7.4}%  {:>7.1} ms  optimal layers {proven}/{}  worst layer gap {:.3}%  vs greedy {:+.4}%",
            format!("{split:?}").to_lowercase(),
            o.stats.model_imbalance,
            o.stats.bound,
            (o.stats.model_imbalance / o.stats.bound - 1.0) * 100.0,
            secs * 1e3,
            o.stats.layers.len(),
            worst_gap * 100.0,
            (o.stats.model_imbalance / greedy.stats.model_imbalance - 1.0) * 100.0,
        );
    }
}

fn replan_figures(t: &Topology, loads: &str, label: &str, eplb_churn: Option<f64>) {
    let base = load(t, loads);
    for split in [Split::Even, Split::Weighted] {
        let (before, _) = run(t, &base, &options(Policy::Optimal, split));
        for drift in ["0.1", "0.3"] {
            let next = load(t, &format!("{loads}_drift{drift}"));
            let (fresh, _) = run(t, &next, &options(Policy::Optimal, split));
            let mut again = options(Policy::Optimal, split);
            again.previous = Some(before.plan.clone());
            let (replanned, secs) = run(t, &next, &again);
            let moved = replanned.stats.migrations.unwrap_or(0);
            let slots = t.num_slots() * t.num_layers();
            let bound = replanned
                .stats
                .replan
                .as_ref()
                .and_then(|r| r.migrations_bound)
                .unwrap_or(0);
            println!(
                "  {label:<22} {:<8} drift {drift}: re-loaded {:>6.2}% of slots (bound {:>5.2}%)  imbalance {:.5} vs fresh {:.5} ({:+.3}%)  {:>7.1} ms{}",
                format!("{split:?}").to_lowercase(),
                moved as f64 / slots as f64 * 100.0,
                bound as f64 / slots as f64 * 100.0,
                replanned.stats.model_imbalance,
                fresh.stats.model_imbalance,
                (replanned.stats.model_imbalance / fresh.stats.model_imbalance - 1.0) * 100.0,
                secs * 1e3,
                match (drift, eplb_churn) {
                    ("0.1", Some(c)) => format!("  (EPLB relabelled {:.1}%)", c * 100.0),
                    _ => String::new(),
                },
            );
        }
    }
}

fn main() {
    let samples = [
        ("prefill", "E256", "prefill_4x8_r32"),
        ("small", "E64", "small_2x4_r16"),
        ("ep64", "E256", "ep64_8x8_r64"),
        ("decode", "E256", "decode_40x8_r64"),
    ];
    println!("fresh plans (model imbalance; bound = the plan's own lower bound)");
    for (name, prefix, config) in samples {
        let t = topology(name);
        for dist in ["lognorm0.8", "zipf0.8"] {
            let l = load(&t, &format!("{prefix}_{dist}"));
            fresh_figures(
                &t,
                &l,
                &format!("{name} {dist}"),
                eplb(config, dist).map(|e| e.0),
            );
        }
    }
    println!("\nre-plans with previous (balance tolerance 0.5 %)");
    for (name, prefix, config) in samples {
        let t = topology(name);
        for dist in ["lognorm0.8", "zipf0.8"] {
            replan_figures(
                &t,
                &format!("{prefix}_{dist}"),
                &format!("{name} {dist}"),
                eplb(config, dist).map(|e| e.1),
            );
        }
    }
    println!("\ntime-limit adherence (wall time / limit)");
    let scenarios = [
        (
            "prefill global weighted re-plan",
            "prefill",
            "E256_zipf0.8",
            Policy::OptimalGlobal,
            Split::Weighted,
            true,
        ),
        (
            "prefill even re-plan (min-moves)",
            "prefill",
            "E256_lognorm0.8",
            Policy::Optimal,
            Split::Even,
            true,
        ),
        (
            "ep64 even plan (exact model)",
            "ep64",
            "E256_zipf0.8",
            Policy::Optimal,
            Split::Even,
            false,
        ),
    ];
    for (label, name, base, policy, split, replan) in scenarios {
        let t = topology(name);
        let first = load(&t, base);
        let next = load(&t, &format!("{base}_drift0.3"));
        let previous = replan.then(|| run(&t, &first, &options(policy, split)).0.plan);
        for limit in [0.5, 1.0, 2.0, 4.0] {
            let o = PlanOptions {
                previous: previous.clone(),
                time_limit: Some(Duration::from_secs_f64(limit)),
                ..options(policy, split)
            };
            let (outcome, secs) = run(&t, &next, &o);
            println!(
                "  {label:<34} limit {limit:>4.1} s: {secs:.3} s ({:>3.0}% of the limit)  imbalance {:.5}  bound {:.5}{}",
                secs / limit * 100.0,
                outcome.stats.model_imbalance,
                outcome.stats.bound,
                outcome.stats.migrations.map_or(String::new(), |m| format!("  migrations {m}")),
            );
        }
    }
}
