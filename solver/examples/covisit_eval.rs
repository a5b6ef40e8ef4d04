//! Co-visit planning on simulated DeepSeek routing: the node-local bound,
//! the node-local optimal plan, the co-visit bound and plan, and planning
//! times. `cargo run --release -p ballast-solver --example covisit_eval --
//! [tokens] [seeds]`. (The figures come from the worker's router:
//! `cargo run --release -p ballast-worker --example covisit_figures`.)

mod support;

use std::time::Instant;

use ballast_solver::{model_bounds, solve, PlanOptions, Policy};

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.first().map(String::as_str) == Some("write-trace") {
        return write_trace(&raw[1..]);
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tokens = args.first().copied().unwrap_or(2048);
    let seeds = args.get(1).copied().unwrap_or(3);
    let topology = support::read_topology("prefill");
    let mut below = Vec::new();
    let mut ratios = Vec::new();
    for seed in 0..seeds as u64 {
        let load = support::routed_load(&topology, tokens, 0.8, 0.5, (4, 8), seed);
        let bounds = model_bounds(&topology, &load);
        let node_local = bounds.node_local.unwrap_or(f64::NAN);
        // The median of five runs: the machines are noisy.
        let run = |policy| {
            let mut times = Vec::new();
            let mut outcome = None;
            for _ in 0..5 {
                let started = Instant::now();
                outcome = Some(
                    solve(
                        &topology,
                        &load,
                        &PlanOptions {
                            policy,
                            ..PlanOptions::default()
                        },
                    )
                    .expect("plans"),
                );
                times.push(started.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            (outcome.expect("ran"), times[2])
        };
        let (optimal, optimal_s) = run(Policy::Optimal);
        let (covisit, covisit_s) = run(Policy::OptimalCovisit);
        let gain = 1.0 - covisit.stats.model_imbalance / node_local;
        below.push(gain);
        ratios.push(covisit_s / optimal_s);
        println!(
            "seed {seed}: node-local bound {node_local:.4}, optimal {:.4} ({optimal_s:.2} s); covisit bound {:.4}, optimal-covisit {:.4} ({covisit_s:.2} s), {:.1}% below the node-local bound",
            optimal.stats.model_imbalance,
            bounds.covisit.unwrap_or(f64::NAN),
            covisit.stats.model_imbalance,
            gain * 100.0
        );
    }
    println!(
        "mean: {:.1}% below the node-local bound; planning time {:.2}x the node-local optimal policy's",
        below.iter().sum::<f64>() / below.len() as f64 * 100.0,
        ratios.iter().sum::<f64>() / ratios.len() as f64
    );
}

/// `write-trace TOPOLOGY OUT WINDOWS TOKENS SEED [DRIFT]`: a trace.jsonl whose
/// windows carry load and co-visit counts, routed by the same gate, with
/// each log-popularity taking a N(0, DRIFT²) step per window (default 0.05).
fn write_trace(args: &[String]) {
    let [topology, out, windows, tokens, seed, rest @ ..] = args else {
        eprintln!("usage: write-trace TOPOLOGY OUT WINDOWS TOKENS SEED [DRIFT]");
        std::process::exit(2);
    };
    let number = |s: &str| s.parse::<f64>().expect("a number");
    let topology = ballast_solver::Topology::from_json(
        &std::fs::read_to_string(topology).expect("topology file"),
    )
    .expect("a topology");
    let drift = rest.first().map_or(0.05, |d| number(d));
    let mut rng = support::Rng::new(number(seed) as u64);
    let mut popularity = support::popularity(&topology, 0.8, 0.5, &mut rng);
    let mut lines = String::new();
    for window in 0..number(windows) as usize {
        let load = support::route(
            &topology,
            &popularity,
            number(tokens) as usize,
            (4, 8),
            &mut rng,
        );
        let mut doc = load.to_json_value();
        doc["window"] = window.into();
        lines.push_str(&doc.to_string());
        lines.push('\n');
        for layer in &mut popularity {
            for p in layer.iter_mut() {
                *p += drift * rng.normal();
            }
        }
    }
    std::fs::write(out, lines).expect("trace written");
}
