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
//! redundancy (16 replicas hosted per GPU, 9 active) on the prefill shape.
//!
//! ```text
//! cargo run --release -p ballast-solver --example routing_eval
//! ```

mod support;

use std::time::Instant;

use ballast_solver::routing::{Router, Routing, SearchLimits};
use ballast_solver::{LoadMatrix, Plan, Topology};

use support::{draw_batch, eplb_like_plan, read_load, read_topology, with_backups, Rng};

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
/// static 9-slot plan plus 7 backups), 9 active per batch, against all 16
/// active (a lower bound) and against the static 9-slot plan routed
/// optimally (an upper bound: activating its 9 slots is one choice).
fn dynamic_redundancy(load_name: &str) {
    let hosted = Topology::from_json(
        r#"{"num_layers": 58, "num_logical_experts": 256, "num_groups": 8,
            "num_nodes": 4, "gpus_per_node": 8, "slots_per_gpu": 16}"#,
    )
    .expect("hosted topology");
    let fixed = read_topology("prefill");
    let load = read_load(load_name, &hosted);
    let fixed_load = read_load(load_name, &fixed);
    let fixed_plan = eplb_like_plan(&fixed, &fixed_load, true);
    let hosted_plan = with_backups(&hosted, &fixed, &fixed_plan, &load);
    let limits = SearchLimits { max_nodes: 2_000 };
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
    let mut search_time = 0.0;
    // The static plan's slots come first on every GPU: the warm start.
    let primaries: Vec<bool> = (0..hosted.num_slots())
        .map(|p| p % hosted.slots_per_gpu() < fixed.slots_per_gpu())
        .collect();
    for layer in (0..hosted.num_layers()).step_by(4) {
        let mut router = Router::new(&hosted, &hosted_plan, layer).expect("layer");
        let mut fixed_router = Router::new(&fixed, &fixed_plan, layer).expect("layer");
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
                .route_with_budget(&tokens, 9, Some(&primaries), limits)
                .expect("budget 9 covers every expert");
            search_time += t0.elapsed().as_secs_f64();
            budgeted.add(outcome.routing.max_load());
            lower.add(outcome.lower_bound);
            proven += usize::from(outcome.is_proven_optimal());
            nodes += outcome.nodes;
            runs += 1;
        }
    }
    println!(
        "{load_name}: {runs} batches of {n}; mean imbalance: 16 active {:.4} | 9 of 16 active {:.4} \
         (lower bound {:.4}, proven optimal {proven}/{runs}, mean {} search nodes, mean {:.1} ms) | \
         static 9-slot plan {:.4}",
        all_active.get() / ideal,
        budgeted.get() / ideal,
        lower.get() / ideal,
        nodes / runs.max(1),
        search_time * 1e3 / runs.max(1) as f64,
        static9.get() / ideal,
    );
}

fn main() {
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
            let plan = eplb_like_plan(&topology, &load, hierarchical);
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
        let plan = eplb_like_plan(&topology, &load, true);
        evaluate(
            &format!("small node-local {load_name}"),
            &topology,
            &load,
            &plan,
            &sizes,
        );
    }
    println!();
    println!("dynamic redundancy, prefill shape (4 x 8 GPUs), node-local EPLB-style plans, every 4th layer:");
    for load_name in ["E256_lognorm0.8", "E256_zipf0.8"] {
        dynamic_redundancy(load_name);
    }
}
