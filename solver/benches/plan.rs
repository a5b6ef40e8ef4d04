//! Time for a full plan of every layer of the sample data.
//!
//! `plan/*` runs `solve` as callers do (layers in parallel on the rayon pool);
//! `plan_1thread/*` pins it to one thread; `bound/*` times the bounds alone.
//! Run: `cargo bench -p ballast-solver --bench plan`.

#[path = "../examples/support/mod.rs"]
mod support;

use std::time::Duration;

use ballast_solver::{model_bounds, solve, LoadMatrix, PlanOptions, Policy, Topology};
use criterion::{criterion_group, criterion_main, Criterion};

fn input(topology: &str, load: &str) -> (Topology, LoadMatrix) {
    let topology = support::read_topology(topology);
    let load = support::read_load(load, &topology);
    (topology, load)
}

/// (bench name, topology, load, policy)
const CASES: [(&str, &str, &str, Policy); 6] = [
    ("prefill_greedy", "prefill", "E256_zipf0.8", Policy::Greedy),
    (
        "prefill_greedy_lognorm",
        "prefill",
        "E256_lognorm0.8",
        Policy::Greedy,
    ),
    ("decode_greedy", "decode", "E256_zipf0.8", Policy::Greedy),
    ("small_greedy", "small", "E64_zipf0.8", Policy::Greedy),
    ("ep64_greedy", "ep64", "E256_zipf0.8", Policy::Greedy),
    (
        "prefill_global",
        "prefill",
        "E256_zipf0.8",
        Policy::GreedyGlobal,
    ),
];

fn plan(c: &mut Criterion) {
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (group_name, pinned) in [("plan", false), ("plan_1thread", true)] {
        let mut group = c.benchmark_group(group_name);
        group.measurement_time(Duration::from_secs(3));
        for (name, topology, load, policy) in CASES {
            let (topology, load) = input(topology, load);
            let options = PlanOptions {
                policy,
                ..PlanOptions::default()
            };
            group.bench_function(name, |b| {
                if pinned {
                    b.iter(|| one_thread.install(|| solve(&topology, &load, &options).unwrap()))
                } else {
                    b.iter(|| solve(&topology, &load, &options).unwrap())
                }
            });
        }
        group.finish();
    }
    let mut group = c.benchmark_group("bound");
    group.measurement_time(Duration::from_secs(3));
    for (name, topology, load) in [
        ("prefill", "prefill", "E256_zipf0.8"),
        ("small", "small", "E64_zipf0.8"),
    ] {
        let (topology, load) = input(topology, load);
        group.bench_function(name, |b| b.iter(|| model_bounds(&topology, &load)));
    }
    group.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);
