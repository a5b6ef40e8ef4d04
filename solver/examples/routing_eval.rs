//! How much per-batch routing among replicas matters, on the repo's sample
//! data.
//!
//! For each topology and load, an EPLB-style plan is built from the window
//! load; then, for every layer, batches of `n` token→expert assignments are
//! drawn from that layer's load (multinomial, seeded) and dispatched three
//! ways:
//! - **optimal**: `Router::route` (exact min–max, whole tokens);
//! - **even**: each expert's tokens split evenly among its replicas (the
//!   remainder one token each to its first replicas);
//! - **random**: each token picks one of its expert's replicas uniformly
//!   (SGLang's / vLLM's dynamic dispatch).
//!
//! Reported: mean over batches of the largest GPU load (tokens / speed) and
//! of the imbalance (largest load / ideal load). A last section runs dynamic
//! redundancy (16 replicas hosted per GPU, 9 or 8 active) on the prefill
//! shape and on one node, with the proof rate, the gap of unproven batches
//! (routing / lower bound - 1) and the search time; `--dynamic` runs only
//! that section.
//!
//! ```text
//! cargo run --release -p ballast-solver --example routing_eval [-- --dynamic]
//! ```

mod support;

use std::time::{Duration, Instant};

use ballast_solver::routing::{Router, Routing, SearchLimits};
use ballast_solver::{LoadMatrix, Plan, Topology};

use support::{draw_batch, eplb_plan, read_load, read_topology, with_backups, Rng};

/// Batches drawn per layer and batch size.
const BATCHES_PER_LAYER: usize = 4;

#[derive(Default)]
struct Mean {
    sum: f64,
    count: usize,
}

impl Mean {
    fn add(&mut self, x: f64) {
        self.sum += x;
        self.count += 1;
    }
    fn get(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

fn mean_of(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// The `q`-quantile (nearest rank) of `xs`; 0 when empty.
fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(rank).copied().unwrap_or(0.0)
}

/// Largest GPU load of per-slot token counts.
fn max_gpu_load(topology: &Topology, slot_tokens: &[u64]) -> f64 {
    slot_tokens
        .chunks_exact(topology.slots_per_gpu())
        .zip(topology.gpu_speed())
        .map(|(slots, speed)| slots.iter().sum::<u64>() as f64 / speed)
        .fold(0.0, f64::max)
}

/// Slots of each expert in one plan row.
fn replicas(row: &[u32], experts: usize) -> Vec<Vec<usize>> {
    let mut r = vec![Vec::new(); experts];
    for (slot, &e) in row.iter().enumerate() {
        r[e as usize].push(slot);
    }
    r
}

fn even_split(replicas: &[Vec<usize>], tokens: &[u64], slot_tokens: &mut [u64]) {
    slot_tokens.iter_mut().for_each(|x| *x = 0);
    for (slots, &t) in replicas.iter().zip(tokens) {
        let k = slots.len() as u64;
        for (i, &slot) in slots.iter().enumerate() {
            slot_tokens[slot] = t / k + u64::from((i as u64) < t % k);
        }
    }
}

fn random_choice(replicas: &[Vec<usize>], tokens: &[u64], slot_tokens: &mut [u64], rng: &mut Rng) {
    slot_tokens.iter_mut().for_each(|x| *x = 0);
    for (slots, &t) in replicas.iter().zip(tokens) {
        for _ in 0..t {
            slot_tokens[slots[rng.below(slots.len())]] += 1;
        }
    }
}

fn evaluate(
    label: &str,
    topology: &Topology,
    load: &LoadMatrix,
    plan: &Plan,
    batch_sizes: &[usize],
) {
    let experts = topology.num_logical_experts();
    let mut routers: Vec<Router> = (0..topology.num_layers())
        .map(|l| Router::new(topology, plan, l).expect("plan layer"))
        .collect();
    let tables: Vec<Vec<Vec<usize>>> = plan
        .phy2log()
        .iter()
        .map(|row| replicas(row, experts))
        .collect();
    let mut routing = Routing::new();
    let mut slot_tokens = vec![0u64; topology.num_slots()];
    for &n in batch_sizes {
        let mut rng = Rng::new(0xba11a57 ^ n as u64);
        let ideal = n as f64 / topology.total_speed();
        let (mut opt, mut even, mut random) = (Mean::default(), Mean::default(), Mean::default());
        for layer in 0..topology.num_layers() {
            for _ in 0..BATCHES_PER_LAYER {
                let tokens = draw_batch(load.layer(layer), n, &mut rng);
                routers[layer]
                    .route(&tokens, &mut routing)
                    .expect("batch fits");
                opt.add(routing.max_load());
                even_split(&tables[layer], &tokens, &mut slot_tokens);
                even.add(max_gpu_load(topology, &slot_tokens));
                random_choice(&tables[layer], &tokens, &mut slot_tokens, &mut rng);
                random.add(max_gpu_load(topology, &slot_tokens));
            }
        }
        println!(
            "{label:<34} {n:>6} {:>9.1} {:>7.4} {:>9.1} {:>7.4} {:>9.1} {:>7.4}",
            opt.get(),
            opt.get() / ideal,
            even.get(),
            even.get() / ideal,
            random.get(),
            random.get() / ideal,
        );
    }
}

/// Dynamic redundancy on the prefill shape: 16 replicas hosted per GPU (the
/// static 9-slot plan plus 7 backups), `budget` active per batch, against
/// all 16 active (a lower bound) and against the static 9-slot plan routed
/// optimally (with a budget of 9 an upper bound: activating its 9 slots is
/// one choice). A budget of 8 is the hard case: a node's 8 GPUs then
/// activate 64 replicas for its 64 experts, so no expert may split.
fn dynamic_redundancy(shape: &str, fixed: &Topology, load_name: &str, budget: usize) {
    let hosted = Topology::from_json(&format!(
        r#"{{"num_layers": {}, "num_logical_experts": {}, "num_groups": {},
            "num_nodes": {}, "gpus_per_node": {}, "slots_per_gpu": 16}}"#,
        fixed.num_layers(),
        fixed.num_logical_experts(),
        fixed.num_groups(),
        fixed.num_nodes(),
        fixed.gpus_per_node(),
    ))
    .expect("hosted topology");
    let load = read_load(load_name, &hosted);
    let fixed_load = read_load(load_name, fixed);
    let fixed_plan = eplb_plan(fixed, &fixed_load, true);
    let hosted_plan = with_backups(&hosted, fixed, &fixed_plan, &load);
    let limits = SearchLimits {
        max_nodes: 2_000,
        exact_time: Duration::from_secs(1),
    };
    let n = 16 * 1024;
    let ideal = n as f64 / hosted.total_speed();
    let mut rng = Rng::new(0xd1a);
    let (mut all_active, mut budgeted, mut lower, mut static9) = (
        Mean::default(),
        Mean::default(),
        Mean::default(),
        Mean::default(),
    );
    let (mut proven, mut nodes, mut runs) = (0, 0, 0);
    let mut routing = Routing::new();
    let mut times = Vec::new();
    let mut gaps = Vec::new();
    // The static plan's slots come first on every GPU: the warm start.
    let primaries: Vec<bool> = (0..hosted.num_slots())
        .map(|p| p % hosted.slots_per_gpu() < fixed.slots_per_gpu())
        .collect();
    for layer in (0..hosted.num_layers()).step_by(4) {
        let mut router = Router::new(&hosted, &hosted_plan, layer).expect("layer");
        let mut fixed_router = Router::new(fixed, &fixed_plan, layer).expect("layer");
        for _ in 0..2 {
            let tokens = draw_batch(load.layer(layer), n, &mut rng);
            router.route(&tokens, &mut routing).expect("batch fits");
            all_active.add(routing.max_load());
            fixed_router
                .route(&tokens, &mut routing)
                .expect("batch fits");
            static9.add(routing.max_load());
            let t0 = Instant::now();
            let outcome = router
                .route_with_budget(&tokens, budget, Some(&primaries), limits)
                .expect("the budget covers every expert");
            times.push(t0.elapsed().as_secs_f64());
            gaps.push(outcome.routing.max_load() / outcome.lower_bound - 1.0);
            budgeted.add(outcome.routing.max_load());
            lower.add(outcome.lower_bound);
            proven += usize::from(outcome.is_proven_optimal());
            nodes += outcome.nodes;
            runs += 1;
        }
    }
    println!(
        "{shape} {load_name}: {runs} batches of {n}; mean imbalance: 16 active {:.4} | {budget} of 16 active {:.4} \
         (lower bound {:.4}, proven optimal {proven}/{runs}, mean {} search nodes) | \
         static 9-slot plan {:.4}",
        all_active.get() / ideal,
        budgeted.get() / ideal,
        lower.get() / ideal,
        nodes / runs.max(1),
        static9.get() / ideal,
    );
    let search_ms: Vec<f64> = times.iter().map(|t| t * 1e3).collect();
    let open: Vec<f64> = gaps.iter().copied().filter(|&g| g > 0.0).collect();
    println!(
        "    search time ms: mean {:.2}, median {:.2}, max {:.2}; gap (routing / lower bound - 1) \
         of the {} unproven: mean {:.5}, max {:.5}",
        mean_of(&search_ms),
        quantile(&search_ms, 0.5),
        quantile(&search_ms, 1.0),
        open.len(),
        mean_of(&open),
        quantile(&open, 1.0),
    );
}

/// Dynamic redundancy on the prefill shape (4 x 8 GPUs x 9 slots) and on
/// one node (8 GPUs x 9 slots, 64 experts), each GPU hosting 16.
fn dynamic_sections() {
    let intra = Topology::from_json(
        r#"{"num_layers": 26, "num_logical_experts": 64, "num_groups": 8,
            "num_nodes": 1, "gpus_per_node": 8, "slots_per_gpu": 9}"#,
    )
    .expect("intra-node topology");
    for (shape, fixed, loads) in [
        (
            "prefill",
            read_topology("prefill"),
            ["E256_lognorm0.8", "E256_zipf0.8"],
        ),
        ("intra-node", intra, ["E64_lognorm0.8", "E64_zipf0.8"]),
    ] {
        for load_name in loads {
            for budget in [9, 8] {
                dynamic_redundancy(shape, &fixed, load_name, budget);
            }
        }
    }
}

fn main() {
    // `--dynamic`: only the dynamic-redundancy section (the slow one).
    if std::env::args().any(|a| a == "--dynamic") {
        dynamic_sections();
        return;
    }
    println!(
        "{:<34} {:>6} {:>9} {:>7} {:>9} {:>7} {:>9} {:>7}",
        "topology / plan / load", "tokens", "opt max", "imb", "even max", "imb", "rand max", "imb"
    );
    let sizes = [4096, 16384];
    for load_name in ["E256_lognorm0.8", "E256_zipf0.8"] {
        for (topo_name, hierarchical) in [
            ("prefill", true),
            ("prefill", false),
            ("ep64", true),
            ("decode", false),
        ] {
            let topology = read_topology(topo_name);
            let load = read_load(load_name, &topology);
            let plan = eplb_plan(&topology, &load, hierarchical);
            let policy = if hierarchical { "node-local" } else { "global" };
            evaluate(
                &format!("{topo_name} {policy} {load_name}"),
                &topology,
                &load,
                &plan,
                &sizes,
            );
        }
    }
    for load_name in ["E64_lognorm0.8", "E64_zipf0.8"] {
        let topology = read_topology("small");
        let load = read_load(load_name, &topology);
        let plan = eplb_plan(&topology, &load, true);
        evaluate(
            &format!("small node-local {load_name}"),
            &topology,
            &load,
            &plan,
            &sizes,
        );
    }
    println!();
    println!("dynamic redundancy, node-local EPLB-style plans plus backups, every 4th layer:");
    dynamic_sections();
}
