//! Time for a full EPLB plan of every layer of the sample data.
//!
//! `eplb/*` runs `eplb::rebalance` as callers do (layers in parallel on the
//! rayon pool); `eplb_1thread/*` pins it to one thread. The target is under
//! 5 ms for the 58 × 256 prefill load (≥ 200 windows/s); Python EPLB takes
//! about 280 ms. Run: `cargo bench -p ballast-solver --bench eplb`.

#[path = "../examples/support/mod.rs"]
mod support;

use std::time::Duration;

use ballast_solver::eplb::{self, EplbPolicy};
use criterion::{criterion_group, criterion_main, Criterion};

/// (bench name, topology, load, policy)
const CASES: [(&str, &str, &str, EplbPolicy); 6] = [
    ("prefill", "prefill", "E256_zipf0.8", EplbPolicy::Auto),
    (
        "prefill_lognorm",
        "prefill",
        "E256_lognorm0.8",
        EplbPolicy::Auto,
    ),
    (
        "prefill_global",
        "prefill",
        "E256_zipf0.8",
        EplbPolicy::Global,
    ),
    ("decode", "decode", "E256_zipf0.8", EplbPolicy::Auto),
    ("small", "small", "E64_zipf0.8", EplbPolicy::Auto),
    ("ep64", "ep64", "E256_zipf0.8", EplbPolicy::Auto),
];

fn bench(c: &mut Criterion) {
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for (group_name, pinned) in [("eplb", false), ("eplb_1thread", true)] {
        let mut group = c.benchmark_group(group_name);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(2));
        for (name, topology, load, policy) in CASES {
            let topology = support::read_topology(topology);
            let load = support::read_load(load, &topology);
            let run = || eplb::rebalance(&topology, &load, policy).unwrap();
            group.bench_function(name, |b| {
                if pinned {
                    b.iter(|| one_thread.install(run))
                } else {
                    b.iter(run)
                }
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
