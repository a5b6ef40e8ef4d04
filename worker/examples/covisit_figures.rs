//! Figures for co-visit replicas (issue 16) on the prefill topology.
//!
//! ```text
//! cargo run --release -p ballast-worker --example covisit_figures -- [--seeds N]
//!     [--tokens T] [--batches B] [--sigma S] [--group-sigma G] [--token-noise X]
//! ```
//!
//! Per seed: the worker's DeepSeek router (log-normal popularity σ with
//! group factors σ_g) routes `B` batches of `T` tokens through 58 layers
//! (top-8 of 256 experts, top-4 of 8 groups); their load and co-visit counts
//! are planned with `optimal` (node-local) and `optimal-covisit`. Printed:
//! the node-local bound of that load, each plan's model imbalance (the
//! planner's own figure), how far the co-visit plan is below the node-local
//! bound, planning times, and — measured by the worker's dispatch on one
//! fresh batch of the same popularity, the same tokens for both plans —
//! cross-node transfers and bytes per token and layer, and the GPU
//! imbalance the dispatch produced. Tokens start on the nodes in contiguous
//! ranges (each node's data-parallel ranks own a quarter of the batch).
//! A transfer is one token's FP8 hidden state (7168 bytes plus one f32
//! scale per 128: 7392 bytes) sent to one other node in one layer.

use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use ballast_solver::covisit::{cross_node_traffic, Interval};
use ballast_solver::{model_bounds, solve, PlanError, PlanOptions, Policy, Topology};
use ballast_worker::agent::plans::PlanUpdate;
use ballast_worker::moe::dispatch::{dispatch, fp8_dispatch_bytes, home_transfers_of, NodeTraffic};
use ballast_worker::moe::{DispatchMode, MoeConfig};
use ballast_worker::traffic::{load_with_covisit, Batch, Skew, TrafficGenerator, TrafficSpec};

struct Args {
    seeds: u64,
    tokens: usize,
    batches: usize,
    sigma: f64,
    group_sigma: f64,
    token_noise: f64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        seeds: 4,
        tokens: 4096,
        batches: 4,
        sigma: 0.8,
        group_sigma: 0.5,
        token_noise: 1.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        let bad = || format!("{flag}: `{value}` is not a valid number");
        match flag.as_str() {
            "--seeds" => args.seeds = value.parse().with_context(bad)?,
            "--tokens" => args.tokens = value.parse().with_context(bad)?,
            "--batches" => args.batches = value.parse().with_context(bad)?,
            "--sigma" => args.sigma = value.parse().with_context(bad)?,
            "--group-sigma" => args.group_sigma = value.parse().with_context(bad)?,
            "--token-noise" => args.token_noise = value.parse().with_context(bad)?,
            _ => bail!("unknown option {flag}"),
        }
    }
    if args.seeds == 0 || args.tokens == 0 || args.batches == 0 {
        bail!("--seeds, --tokens and --batches must be positive");
    }
    Ok(args)
}

/// What the worker's dispatch measured for one plan on one batch.
struct Measured {
    traffic: NodeTraffic,
    /// For a co-visit plan: transfers of the same tokens under the same
    /// plan without its co-visit replicas (same group homes), and whether
    /// every token made no more than that, layer by layer.
    home_transfers: Option<(u64, bool)>,
    /// Σ_l max GPU assignments / Σ_l mean GPU assignments.
    gpu_imbalance: f64,
    /// Transfers per token and layer as `ballast score` derives them from
    /// the batch's load and co-visit counts (at the experts' home nodes).
    estimate: Option<Interval>,
}

fn measure(
    topology: &Topology,
    update: &PlanUpdate,
    batch: &Batch,
    hidden: usize,
) -> Result<Measured> {
    let placements = update.placements(DispatchMode::Share)?;
    let (nodes, per_node) = (topology.num_nodes(), topology.slots_per_node());
    let mut traffic = NodeTraffic::default();
    let (mut max_sum, mut mean_sum) = (0.0, 0.0);
    let mut home: Option<(u64, bool)> = None;
    for (routing, placement) in batch.routings.iter().zip(&placements) {
        let d = dispatch(routing, placement);
        let tokens = routing.tokens();
        for t in 0..tokens {
            let source = t * nodes / tokens.max(1);
            if let Some(h) = home_transfers_of(routing, placement, t, source) {
                let (sum, never_above) = home.get_or_insert((0, true));
                *sum += h as u64;
                *never_above &= d.node_traffic_of(t, per_node, source) <= h;
            }
        }
        traffic.add(&d.node_traffic(
            per_node,
            |t| t * nodes / tokens.max(1),
            fp8_dispatch_bytes(hidden),
        ));
        let gpus = d.gpu_counts(topology.slots_per_gpu());
        max_sum += gpus.iter().copied().max().unwrap_or(0) as f64;
        mean_sum += gpus.iter().sum::<usize>() as f64 / gpus.len().max(1) as f64;
    }
    Ok(Measured {
        traffic,
        home_transfers: home,
        gpu_imbalance: max_sum / mean_sum.max(f64::MIN_POSITIVE),
        estimate: None,
    })
}

/// One seed's figures; `covisit` is `None` when the planner refused.
struct Row {
    bound_local: f64,
    bound_covisit: Option<f64>,
    local: f64,
    local_ms: f64,
    local_measured: Measured,
    covisit: Option<(f64, f64, Measured)>,
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/topologies/prefill.json"
    );
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let topology = Topology::from_json(&text)?;
    let config = MoeConfig::deepseek_v3();
    let skew = Skew::LogNormal {
        sigma: args.sigma,
        group_sigma: args.group_sigma,
    };
    println!(
        "prefill topology: {} layers, {} experts in {} groups, {} nodes x {} GPUs x {} slots; \
         top-{} of {} experts, top-{} of {} groups",
        topology.num_layers(),
        topology.num_logical_experts(),
        topology.num_groups(),
        topology.num_nodes(),
        topology.gpus_per_node(),
        topology.slots_per_gpu(),
        config.top_k(),
        config.num_experts(),
        config.topk_groups(),
        config.num_groups(),
    );
    println!(
        "traffic: log-normal sigma {} with group factors sigma_g {}, token noise {}; \
         planned on {} x {} tokens, dispatched on a fresh batch of {} tokens",
        args.sigma, args.group_sigma, args.token_noise, args.batches, args.tokens, args.tokens
    );
    println!(
        "transfers and bytes: per token and layer, measured by the worker's dispatch \
         (bytes = transfers x {} B: FP8 7168 + 56 f32 scales)\n",
        fp8_dispatch_bytes(config.hidden())
    );
    println!(
        "{:>4} | {:>8} {:>8} | {:>8} {:>8} {:>7} | {:>8} {:>8} | {:>7} {:>7} | {:>9} {:>9} | {:>8} {:>8}",
        "seed", "nl bound", "cv bound", "nl plan", "cv plan", "below%", "nl ms", "cv ms",
        "nl xfer", "cv xfer", "nl B/tok", "cv B/tok", "nl gpu", "cv gpu"
    );
    let mut rows = Vec::new();
    for seed in 0..args.seeds {
        let spec = TrafficSpec {
            layers: topology.num_layers(),
            tokens_per_batch: args.tokens,
            skew,
            token_noise: args.token_noise,
            drift_per_batch: 0.0,
            seed,
            stream: 0,
        };
        let mut generator = TrafficGenerator::new(&config, spec.clone())?;
        let planned: Vec<Batch> = (0..args.batches).map(|_| generator.next_batch()).collect();
        let load = load_with_covisit(&topology, &planned)?;
        let bounds = model_bounds(&topology, &load);
        let bound_local = bounds
            .node_local
            .ok_or_else(|| anyhow!("the prefill topology has no node-local bound"))?;
        // The same popularity (seeded by `seed`), fresh tokens (another stream).
        let mut fresh = TrafficGenerator::new(
            &config,
            TrafficSpec {
                stream: 1000,
                ..spec
            },
        )?;
        let batch = fresh.next_batch();
        // What `ballast score` reads off the fresh batch's own counts.
        let fresh_load = load_with_covisit(&topology, std::slice::from_ref(&batch))?;
        let estimate = |plan: &ballast_solver::Plan| {
            cross_node_traffic(&topology, &fresh_load, plan)
                .ok()
                .map(|t| t.transfers_per_token)
        };

        let started = Instant::now();
        let local = solve(&topology, &load, &PlanOptions::default())?;
        let local_ms = started.elapsed().as_secs_f64() * 1e3;
        let local_estimate = estimate(&local.plan);
        let local_plan = PlanUpdate::from_plan(1, local.plan, &topology);
        let mut local_measured = measure(&topology, &local_plan, &batch, config.hidden())?;
        local_measured.estimate = local_estimate;

        let started = Instant::now();
        let options = PlanOptions {
            policy: Policy::OptimalCovisit,
            ..PlanOptions::default()
        };
        let covisit = match solve(&topology, &load, &options) {
            Ok(outcome) => {
                let ms = started.elapsed().as_secs_f64() * 1e3;
                let covisit_estimate = estimate(&outcome.plan);
                let plan = PlanUpdate::from_plan(2, outcome.plan, &topology);
                let mut measured = measure(&topology, &plan, &batch, config.hidden())?;
                measured.estimate = covisit_estimate;
                Some((outcome.stats.model_imbalance, ms, measured))
            }
            Err(PlanError::Unsupported(why)) => {
                if seed == 0 {
                    println!("(optimal-covisit refused: {why}; its columns are left empty)");
                }
                None
            }
            Err(err) => return Err(err.into()),
        };
        let row = Row {
            bound_local,
            bound_covisit: bounds.covisit,
            local: local.stats.model_imbalance,
            local_ms,
            local_measured,
            covisit,
        };
        print_row(&seed.to_string(), &row);
        rows.push(row);
    }
    print_mean(&rows);
    print_estimates(&rows);
    Ok(())
}

fn cell(v: Option<f64>, width: usize, precision: usize) -> String {
    v.map_or_else(
        || format!("{:>width$}", "-"),
        |v| format!("{v:>width$.precision$}"),
    )
}

fn print_row(label: &str, r: &Row) {
    let cv = r.covisit.as_ref();
    let below = cv.map(|(imb, _, _)| 100.0 * (1.0 - imb / r.bound_local));
    println!(
        "{:>4} | {} {} | {} {} {} | {} {} | {} {} | {} {} | {} {}",
        label,
        cell(Some(r.bound_local), 8, 4),
        cell(r.bound_covisit, 8, 4),
        cell(Some(r.local), 8, 4),
        cell(cv.map(|c| c.0), 8, 4),
        cell(below, 7, 2),
        cell(Some(r.local_ms), 8, 0),
        cell(cv.map(|c| c.1), 8, 0),
        cell(Some(r.local_measured.traffic.transfers_per_token()), 7, 4),
        cell(cv.map(|c| c.2.traffic.transfers_per_token()), 7, 4),
        cell(Some(r.local_measured.traffic.bytes_per_token()), 9, 0),
        cell(cv.map(|c| c.2.traffic.bytes_per_token()), 9, 0),
        cell(Some(r.local_measured.gpu_imbalance), 8, 4),
        cell(cv.map(|c| c.2.gpu_imbalance), 8, 4),
    );
}

fn print_mean(rows: &[Row]) {
    let n = rows.len() as f64;
    let mean = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let all_cv = rows.iter().all(|r| r.covisit.is_some());
    let mean_cv = |f: &dyn Fn(&(f64, f64, Measured)) -> f64| {
        all_cv.then(|| {
            rows.iter()
                .filter_map(|r| r.covisit.as_ref())
                .map(f)
                .sum::<f64>()
                / n
        })
    };
    let bound_local = mean(&|r| r.bound_local);
    let covisit_bound = rows
        .iter()
        .map(|r| r.bound_covisit)
        .sum::<Option<f64>>()
        .map(|s| s / n);
    let cv_imbalance = mean_cv(&|c| c.0);
    println!(
        "mean | {} {} | {} {} {} | {} {} | {} {} | {} {} | {} {}",
        cell(Some(bound_local), 8, 4),
        cell(covisit_bound, 8, 4),
        cell(Some(mean(&|r| r.local)), 8, 4),
        cell(cv_imbalance, 8, 4),
        cell(
            mean_cv(&|c| c.0).map(|_| {
                100.0
                    * rows
                        .iter()
                        .filter_map(|r| r.covisit.as_ref().map(|c| 1.0 - c.0 / r.bound_local))
                        .sum::<f64>()
                    / n
            }),
            7,
            2
        ),
        cell(Some(mean(&|r| r.local_ms)), 8, 0),
        cell(mean_cv(&|c| c.1), 8, 0),
        cell(
            Some(mean(&|r| r.local_measured.traffic.transfers_per_token())),
            7,
            4
        ),
        cell(mean_cv(&|c| c.2.traffic.transfers_per_token()), 7, 4),
        cell(
            Some(mean(&|r| r.local_measured.traffic.bytes_per_token())),
            9,
            0
        ),
        cell(mean_cv(&|c| c.2.traffic.bytes_per_token()), 9, 0),
        cell(Some(mean(&|r| r.local_measured.gpu_imbalance)), 8, 4),
        cell(mean_cv(&|c| c.2.gpu_imbalance), 8, 4),
    );
    if all_cv {
        let ratio = mean_cv(&|c| c.1).unwrap_or(0.0) / mean(&|r| r.local_ms);
        let never_above = rows.iter().all(|r| {
            r.covisit
                .as_ref()
                .is_some_and(|c| c.2.traffic.transfers <= r.local_measured.traffic.transfers)
        });
        let per_token = rows.iter().all(|r| {
            r.covisit
                .as_ref()
                .is_some_and(|c| c.2.home_transfers.is_none_or(|(_, ok)| ok))
        });
        let home = mean_cv(&|c| {
            c.2.home_transfers.map_or(f64::NAN, |(h, _)| h as f64)
                / c.2.traffic.tokens.max(1) as f64
        });
        println!(
            "\nplanning time optimal-covisit / optimal: {ratio:.2}x\n\
             co-visit plan's transfers (all tokens) never above the node-local plan's on the same tokens: {never_above}\n\
             same tokens, co-visit plan without its co-visit replicas (same group homes): \
             {} transfers per token and layer; no token in any layer above it under the co-visit plan: {per_token}",
            cell(home, 6, 4).trim()
        );
    }
}

/// `ballast score`'s transfers per token (read off the fresh batch's own
/// counts, tokens starting on every node alike: the provable range and the
/// estimate) beside the dispatch's count on the same batch. For the
/// co-visit plan the figures read off the counts are visits at the home
/// nodes, compared with the dispatch's count of the same tokens without
/// co-visit replicas; its real count is lower.
fn print_estimates(rows: &[Row]) {
    println!(
        "\ntransfers per token and layer on the fresh batch, read off its load and co-visit \
         counts (as `ballast score` does: range ~estimate) against the dispatch's count\n"
    );
    println!(
        "{:>4} | {:>25} {:>9} | {:>25} {:>9} {:>9}",
        "seed", "nl from counts", "nl xfer", "cv at home from counts", "cv home", "cv xfer"
    );
    let range = |i: Option<Interval>| {
        i.map_or("-".into(), |i| {
            format!(
                "{:.4} to {:.4} ~{:.4}",
                i.low,
                i.high,
                i.estimate.unwrap_or(f64::NAN)
            )
        })
    };
    let mut worst = 0.0_f64;
    for (seed, r) in rows.iter().enumerate() {
        let measured = r.local_measured.traffic.transfers_per_token();
        let cv = r.covisit.as_ref().map(|c| &c.2);
        let cv_home = cv.and_then(|m| {
            m.home_transfers
                .map(|(h, _)| h as f64 / m.traffic.tokens.max(1) as f64)
        });
        for (estimate, truth) in [
            (r.local_measured.estimate, Some(measured)),
            (cv.and_then(|m| m.estimate), cv_home),
        ] {
            if let (Some(e), Some(t)) = (estimate.and_then(|i| i.estimate), truth) {
                worst = worst.max((e / t - 1.0).abs());
            }
        }
        println!(
            "{:>4} | {:>25} {} | {:>25} {} {}",
            seed,
            range(r.local_measured.estimate),
            cell(Some(measured), 9, 4),
            range(cv.and_then(|m| m.estimate)),
            cell(cv_home, 9, 4),
            cell(cv.map(|m| m.traffic.transfers_per_token()), 9, 4),
        );
    }
    println!(
        "largest relative error of the estimate against the dispatch's count: {:.2}%",
        worst * 100.0
    );
}
