//! Wall time of the optimal policy on the sample data (issue 3).
//!
//! `optimal/*` plans every layer fresh (layers in parallel on the rayon
//! pool, as `solve` runs for callers); `replan/*` re-plans the drifted load
//! against the plan for the original one (`previous`).
//! Run: `cargo bench -p ballast-solver --bench optimal`.

#[path = "../examples/support/mod.rs"]
mod support;

use std::time::Duration;

use ballast_solver::planner::{PlanOptions, Policy, Split};
use ballast_solver::{solve, LoadMatrix, Topology};
use criterion::{criterion_group, criterion_main, Criterion};

fn input(topology: &str, load: &str) -> (Topology, LoadMatrix) {
    let topology = support::read_topology(topology);
    let load = support::read_load(load, &topology);
    (topology, load)
}

fn options(split: Split) -> PlanOptions {
    PlanOptions {
        policy: Policy::Optimal,
        split,
        ..PlanOptions::default()
    }
}

/// (bench name, topology, load, split)
const FRESH: [(&str, &str, &str, Split); 5] = [
    (
        "prefill_even_lognorm",
        "prefill",
        "E256_lognorm0.8",
        Split::Even,
    ),
    ("prefill_even_zipf", "prefill", "E256_zipf0.8", Split::Even),
    (
        "prefill_weighted_zipf",
        "prefill",
        "E256_zipf0.8",
        Split::Weighted,
    ),
    ("small_even_zipf", "small", "E64_zipf0.8", Split::Even),
    ("decode_even_zipf", "decode", "E256_zipf0.8", Split::Even),
];

/// (bench name, topology, base load, split); the drifted load is `base_drift0.1`.
const REPLAN: [(&str, &str, &str, Split); 3] = [
    (
        "prefill_even_lognorm_drift0.1",
        "prefill",
        "E256_lognorm0.8",
        Split::Even,
    ),
    (
        "prefill_weighted_lognorm_drift0.1",
        "prefill",
        "E256_lognorm0.8",
        Split::Weighted,
    ),
    (
        "small_even_zipf_drift0.1",
        "small",
        "E64_zipf0.8",
        Split::Even,
    ),
];

fn optimal(c: &mut Criterion) {
    let mut group = c.benchmark_group("optimal");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, topology, load, split) in FRESH {
        let (topology, load) = input(topology, load);
        let options = options(split);
        group.bench_function(name, |b| {
            b.iter(|| solve(&topology, &load, &options).unwrap())
        });
    }
    group.finish();
    let mut group = c.benchmark_group("replan");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, topology, base, split) in REPLAN {
        let (topology, first) = input(topology, base);
        let next = support::read_load(&format!("{base}_drift0.1"), &topology);
        let mut options = options(split);
        options.previous = Some(solve(&topology, &first, &options).unwrap().plan);
        group.bench_function(name, |b| {
            b.iter(|| solve(&topology, &next, &options).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, optimal);
criterion_main!(benches);
