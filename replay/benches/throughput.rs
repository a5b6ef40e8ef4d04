//! Replay throughput: windows per second of one policy over a generated
//! prefill trace (58 layers x 256 experts, 4 nodes x 8 GPUs x 9 slots),
//! scoring included (experienced imbalance, optimal routing, the oracle).
//!
//! ```text
//! cargo bench -p ballast-replay --bench throughput            # 1000 windows
//! BALLAST_BENCH_WINDOWS=200 cargo bench -p ballast-replay --bench throughput
//! ```
//!
//! Windows are generated ahead of the clock (the generator is not what is
//! measured) in batches, so memory stays small; each policy runs alone, the
//! way a replay of one policy would.

use std::time::{Duration, Instant};

use ballast_replay::synth::{Generator, TraceShape};
use ballast_replay::{Context, Interval, PolicySpec, Replay};
use ballast_solver::Topology;

const PREFILL: &str = r#"{"num_layers": 58, "num_logical_experts": 256, "num_groups": 8,
    "num_nodes": 4, "gpus_per_node": 8, "slots_per_gpu": 9}"#;

fn main() {
    let windows: u64 = std::env::var("BALLAST_BENCH_WINDOWS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1000);
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let topology = Topology::from_json(PREFILL).expect("prefill topology");
    for policy in ["eplb", "service"] {
        if !filter.is_empty() && !filter.iter().any(|f| policy.contains(f.as_str())) {
            continue;
        }
        let spec: PolicySpec = policy.parse().expect("policy");
        let elapsed = replay(&topology, spec, windows);
        println!(
            "replay {policy:>8}: {windows} windows in {:>8.2} s = {:>8.1} windows/s",
            elapsed.as_secs_f64(),
            windows as f64 / elapsed.as_secs_f64()
        );
    }
}

fn replay(topology: &Topology, spec: PolicySpec, windows: u64) -> Duration {
    let context = Context {
        topology: topology.clone(),
        expert_bytes: Some(44_040_192),
        link_bandwidth: Some(50e9),
    };
    // Interval 1: re-plan (or, for the service, evaluate) after every window.
    let spec = PolicySpec {
        interval: Some(Interval::ONE),
        ..spec
    };
    let mut replay = Replay::new(context, &[spec], &[Interval::ONE]);
    let mut generator = Generator::new(topology, TraceShape::default());
    let mut elapsed = Duration::ZERO;
    let mut index = 0;
    while index < windows {
        let batch: Vec<_> = (0..64.min(windows - index))
            .map(|_| generator.next_window())
            .collect();
        let started = Instant::now();
        for load in batch {
            replay.push(index, load).expect("replay");
            index += 1;
        }
        elapsed += started.elapsed();
    }
    let started = Instant::now();
    let (_, data) = replay.finish().expect("replay");
    elapsed += started.elapsed();
    assert_eq!(data.summary.windows, windows);
    elapsed
}
