//! Per-batch exact routing time, one layer per call, single core.
//!
//! - `routing/intra_node_8x9`: one node, 8 GPUs x 9 slots, 64 experts
//!   (`E64` loads), EPLB-style plan; batches of 16k token-expert pairs.
//! - `routing/cross_node_32x9`: the prefill topology (4 x 8 GPUs x 9 slots,
//!   256 experts) with a *global* plan, so replicas link GPUs across nodes;
//!   batches of 64k pairs.
//! - `routing/decode_320x1`: the decode topology (40 x 8 GPUs, 1 slot);
//!   batches of 32k pairs.
//! - `routing/intra_node_8x9_mixed_speed`: the first case with GPU speeds
//!   0.8–1.25, which takes the general path (loads as `k / speed`
//!   breakpoints) instead of whole-token levels.
//!
//! - `routing/budget_intra_node_8x16_9_active` and
//!   `routing/budget_prefill_32x16_9_active`: dynamic redundancy
//!   (`Router::route_with_budget`, default limits) on the same shapes with
//!   16 replicas hosted per GPU (the EPLB-style 9-slot plan plus 7 backups)
//!   and 9 active, warm-started from the 9 static slots; 16k pairs.
//!
//! Each iteration routes the next of 64 pre-drawn batches (cycling over
//! layers, each with its own prebuilt `Router`).
//!
//! ```text
//! cargo bench -p ballast-solver --bench routing
//! ```

#[path = "../examples/support/mod.rs"]
mod support;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};

use ballast_solver::routing::{Router, Routing, SearchLimits};
use ballast_solver::{LoadMatrix, Topology};

use support::{draw_batch, eplb_plan, read_load, read_topology, with_backups, Rng};

const BATCHES: usize = 64;

struct Workload {
    routers: Vec<Router>,
    batches: Vec<(usize, Vec<u64>)>,
}

fn workload(topology: &Topology, load: &LoadMatrix, hierarchical: bool, tokens: usize) -> Workload {
    let plan = eplb_plan(topology, load, hierarchical);
    let routers = (0..topology.num_layers())
        .map(|l| Router::new(topology, &plan, l).expect("plan layer"))
        .collect();
    let mut rng = Rng::new(0x5eed);
    let batches = (0..BATCHES)
        .map(|i| {
            let layer = i % topology.num_layers();
            (layer, draw_batch(load.layer(layer), tokens, &mut rng))
        })
        .collect();
    Workload { routers, batches }
}

fn bench_workload(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut w: Workload) {
    let mut routing = Routing::new();
    let mut i = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            let (layer, tokens) = &w.batches[i % BATCHES];
            i += 1;
            w.routers[*layer]
                .route(tokens, &mut routing)
                .expect("batch fits the layer");
            routing.max_load()
        })
    });
}

/// Dynamic redundancy: `fixed` (9 slots per GPU) plus 7 backups per GPU,
/// 9 active, every layer's batches warm-started from the 9 static slots.
fn bench_budget(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    fixed: &Topology,
    hosted: &Topology,
    load_name: &str,
) {
    let fixed_load = read_load(load_name, fixed);
    let load = read_load(load_name, hosted);
    let fixed_plan = eplb_plan(fixed, &fixed_load, true);
    let plan = with_backups(hosted, fixed, &fixed_plan, &load);
    let mut routers: Vec<Router> = (0..hosted.num_layers())
        .map(|l| Router::new(hosted, &plan, l).expect("plan layer"))
        .collect();
    let mut rng = Rng::new(0x5eed);
    let batches: Vec<(usize, Vec<u64>)> = (0..BATCHES)
        .map(|i| {
            let layer = i % hosted.num_layers();
            (layer, draw_batch(load.layer(layer), 16 * 1024, &mut rng))
        })
        .collect();
    let primaries: Vec<bool> = (0..hosted.num_slots())
        .map(|p| p % hosted.slots_per_gpu() < fixed.slots_per_gpu())
        .collect();
    let mut i = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            let (layer, tokens) = &batches[i % BATCHES];
            i += 1;
            routers[*layer]
                .route_with_budget(tokens, 9, Some(&primaries), SearchLimits::default())
                .expect("budget 9 covers every expert")
                .routing
                .max_load()
        })
    });
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    let intra = Topology::from_json(
        r#"{"num_layers": 26, "num_logical_experts": 64, "num_groups": 8,
            "num_nodes": 1, "gpus_per_node": 8, "slots_per_gpu": 9}"#,
    )
    .expect("intra-node topology");
    let intra_load = read_load("E64_zipf0.8", &intra);
    bench_workload(
        &mut group,
        "intra_node_8x9",
        workload(&intra, &intra_load, true, 16 * 1024),
    );

    let mixed = Topology::from_json(
        r#"{"num_layers": 26, "num_logical_experts": 64, "num_groups": 8,
            "num_nodes": 1, "gpus_per_node": 8, "slots_per_gpu": 9,
            "gpu_speed": [1.0, 1.0, 0.8, 1.25, 1.0, 0.8, 1.25, 1.1]}"#,
    )
    .expect("mixed-speed topology");
    let mixed_load = read_load("E64_zipf0.8", &mixed);
    bench_workload(
        &mut group,
        "intra_node_8x9_mixed_speed",
        workload(&mixed, &mixed_load, true, 16 * 1024),
    );

    let prefill = read_topology("prefill");
    let prefill_load = read_load("E256_zipf0.8", &prefill);
    bench_workload(
        &mut group,
        "cross_node_32x9",
        workload(&prefill, &prefill_load, false, 64 * 1024),
    );

    let decode = read_topology("decode");
    let decode_load = read_load("E256_zipf0.8", &decode);
    bench_workload(
        &mut group,
        "decode_320x1",
        workload(&decode, &decode_load, false, 32 * 1024),
    );

    let hosted_intra = Topology::from_json(
        r#"{"num_layers": 26, "num_logical_experts": 64, "num_groups": 8,
            "num_nodes": 1, "gpus_per_node": 8, "slots_per_gpu": 16}"#,
    )
    .expect("hosted intra-node topology");
    bench_budget(
        &mut group,
        "budget_intra_node_8x16_9_active",
        &intra,
        &hosted_intra,
        "E64_zipf0.8",
    );
    let hosted_prefill = Topology::from_json(
        r#"{"num_layers": 58, "num_logical_experts": 256, "num_groups": 8,
            "num_nodes": 4, "gpus_per_node": 8, "slots_per_gpu": 16}"#,
    )
    .expect("hosted prefill topology");
    bench_budget(
        &mut group,
        "budget_prefill_32x16_9_active",
        &prefill,
        &hosted_prefill,
        "E256_zipf0.8",
    );
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
