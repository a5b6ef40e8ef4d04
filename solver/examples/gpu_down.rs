//! What a dead GPU costs (issue 13, item 9), on the repo's sample data.
//!
//! For each topology and load: the optimal plan with every GPU up, then with
//! one GPU down (`PlanOptions::down_gpus`)
//! - **re-plan**: migration-aware from the plan in force (what the service
//!   publishes);
//! - **fresh**: planned from scratch with the GPU down;
//! - **global**: migration-aware, all live GPUs planned as one node (how the
//!   service planned an outage before: locality is given up);
//!
//! each with its model imbalance, bound, migrations against the plan in
//! force (as % of all slots), groups spanning nodes and wall time; then the
//! GPU comes back and the re-plan from the outage plan is measured the same
//! way.
//!
//! ```text
//! cargo run --release -p ballast-solver --example gpu_down [topology load gpu]
//! ```
//!
//! Measured (debug build, shared 2-core machine, so times are only
//! relative; GPU 5 down, same load before and after; migrations as % of
//! all `L × N*G*S` slots):
//!
//! | case                   | plan    | imbalance | bound  | migrations | groups off node |
//! |------------------------|---------|-----------|--------|------------|-----------------|
//! | ep64 / E256_lognorm0.8 | all up  | 1.2649    | 1.2643 | —          | 0               |
//! |                        | re-plan | 1.3015    | 1.2643 | 650 (3.5%) | 0               |
//! |                        | fresh   | 1.2648    | 1.2643 | 14642 (79%)| 0               |
//! |                        | global  | 1.0208    | 1.0159 | 13188 (71%)| 450             |
//! |                        | back    | 1.2712    | 1.2643 | 50 (0.3%)  | 0               |
//! | prefill / E256_lognorm0.8 | all up | 1.0507 | 1.0507 | —          | 0               |
//! |                        | re-plan | 1.1789    | 1.0323 | 1195 (7.2%)| 58              |
//! |                        | fresh   | 1.1740    | 1.0323 | 10511 (63%)| 58              |
//! |                        | global  | 1.0374    | 1.0323 | 6692 (40%) | 440             |
//! |                        | back    | 1.0559    | 1.0507 | 373 (2.2%) | 0               |
//! | small / E64_lognorm0.8 | all up  | 1.0052    | 1.0052 | —          | 0               |
//! |                        | re-plan | 1.3457    | 1.1429 | 341 (16%)  | 48              |
//! |                        | fresh   | 1.3393    | 1.1429 | 1404 (68%) | 48              |
//! |                        | global  | 1.1485    | 1.1429 | 351 (17%)  | 132             |
//! |                        | back    | 1.0101    | 1.0052 | 168 (8.1%) | 0               |
//!
//! ep64 keeps node-local placement: only node 0's live GPUs re-load
//! experts. prefill and small cannot (a node with one GPU fewer has 63 live
//! slots for 64 experts, 30 for 32): one or two experts per layer leave their
//! node, and the degraded node, with no redundant slot left, sets the
//! imbalance; giving up locality altogether (`global`) balances better.

#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use ballast_solver::planner::{PlanOptions, Policy};
use ballast_solver::{score, solve, LoadMatrix, Plan, PlanOutcome, Topology};

fn run(t: &Topology, l: &LoadMatrix, options: PlanOptions) -> (PlanOutcome, f64) {
    let started = Instant::now();
    let outcome = solve(t, l, &options).unwrap_or_else(|e| panic!("{e}"));
    (outcome, started.elapsed().as_secs_f64())
}

fn options(policy: Policy, previous: Option<&Plan>, down: &[usize]) -> PlanOptions {
    PlanOptions {
        policy,
        previous: previous.cloned(),
        down_gpus: down.to_vec(),
        ..PlanOptions::default()
    }
}

fn row(name: &str, t: &Topology, l: &LoadMatrix, against: &Plan, (o, secs): &(PlanOutcome, f64)) {
    let migrations = score::migrations(t, against, &o.plan);
    let slots = t.num_layers() * t.num_slots();
    let s = score::score(t, l, &o.plan);
    println!(
        "  {name:<8} imbalance {:.4}  bound {:.4}  placement {:<12}  migrations {:>5} ({:>5.2}% of slots)  groups off node {:>4}  {:>6.2} s",
        o.stats.model_imbalance,
        o.stats.bound,
        format!("{:?}", o.stats.placement).to_lowercase(),
        migrations,
        100.0 * migrations as f64 / slots as f64,
        s.groups_off_node,
        secs
    );
}

fn case(topology: &str, load: &str, gpu: usize) {
    let t = support::read_topology(topology);
    let l = support::read_load(load, &t);
    println!("{topology} / {load}, GPU {gpu} down:");
    let before = run(&t, &l, options(Policy::Optimal, None, &[]));
    row("all up", &t, &l, &before.0.plan, &before);
    let replan = run(
        &t,
        &l,
        options(Policy::Optimal, Some(&before.0.plan), &[gpu]),
    );
    row("re-plan", &t, &l, &before.0.plan, &replan);
    let fresh = run(&t, &l, options(Policy::Optimal, None, &[gpu]));
    row("fresh", &t, &l, &before.0.plan, &fresh);
    let global = run(
        &t,
        &l,
        options(Policy::OptimalGlobal, Some(&before.0.plan), &[gpu]),
    );
    row("global", &t, &l, &before.0.plan, &global);
    let back = run(&t, &l, options(Policy::Optimal, Some(&replan.0.plan), &[]));
    row("back", &t, &l, &replan.0.plan, &back);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [topology, load, gpu] = args.as_slice() {
        case(topology, load, gpu.parse().expect("a GPU number"));
        return;
    }
    case("prefill", "E256_lognorm0.8", 5);
    case("ep64", "E256_lognorm0.8", 5);
    case("small", "E64_lognorm0.8", 5);
}
