//! Planning time of `optimal-covisit` against the node-local `optimal`
//! policy it extends (issue 16: at most 2x for 58 layers), on the prefill
//! topology with load and co-visit counts routed like DeepSeek-V3's gate
//! (log-normal popularity σ 0.8 with group factors σ_g 0.5, top-4 of 8
//! groups, top-8 experts, 2,048 tokens per layer).
//!
//! `fresh/*` plans from nothing; `replan/*` re-plans a drifted load (the
//! same popularity, fresh tokens) against the plan of the first one.
//! Run: `cargo bench -p ballast-solver --bench covisit`.

#[path = "../examples/support/mod.rs"]
mod support;

use std::time::Duration;

use ballast_solver::planner::{PlanOptions, Policy};
use ballast_solver::{solve, LoadMatrix, Topology};
use criterion::{criterion_group, criterion_main, Criterion};

const POLICIES: [(&str, Policy); 2] = [
    ("optimal", Policy::Optimal),
    ("optimal_covisit", Policy::OptimalCovisit),
];

/// Two loads of one popularity: the one planned for, and the next one.
fn loads(topology: &Topology) -> (LoadMatrix, LoadMatrix) {
    let mut rng = support::Rng::new(0);
    let popularity = support::popularity(topology, 0.8, 0.5, &mut rng);
    let first = support::route(topology, &popularity, 2048, (4, 8), &mut rng);
    let next = support::route(topology, &popularity, 2048, (4, 8), &mut rng);
    (first, next)
}

fn options(policy: Policy) -> PlanOptions {
    PlanOptions {
        policy,
        ..PlanOptions::default()
    }
}

fn covisit(c: &mut Criterion) {
    let topology = support::read_topology("prefill");
    let (first, next) = loads(&topology);
    let mut group = c.benchmark_group("covisit");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, policy) in POLICIES {
        group.bench_function(format!("fresh/{name}"), |b| {
            b.iter(|| solve(&topology, &first, &options(policy)).expect("plans"))
        });
    }
    for (name, policy) in POLICIES {
        let previous = solve(&topology, &first, &options(policy))
            .expect("plans")
            .plan;
        let replan = PlanOptions {
            previous: Some(previous),
            ..options(policy)
        };
        group.bench_function(format!("replan/{name}"), |b| {
            b.iter(|| solve(&topology, &next, &replan).expect("plans"))
        });
    }
    group.finish();
}

criterion_group!(benches, covisit);
criterion_main!(benches);
