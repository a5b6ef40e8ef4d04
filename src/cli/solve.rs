//! `ballast solve`: plan a load, write the plan (native or an engine's format)
//! and print its figures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_solver::export::{self, Engine};
use ballast_solver::planner::{MigrationPricing, Placement, PlanError, DEFAULT_BALANCE_TOLERANCE};
use ballast_solver::score;
use ballast_solver::{
    LoadMatrix, Plan, PlanOptions, PlanOutcome, PlanStats, Policy, Split, Topology,
};
use clap::{Args, ValueEnum};

use super::error::{CliError, Problem};
use super::{gap_percent, io, ratio, Report};
use crate::args::{policy_parser, split_parser};

#[derive(Debug, Args)]
pub struct SolveArgs {
    /// Cluster shape (topology.json).
    #[arg(long)]
    pub topology: PathBuf,
    /// Per-layer, per-expert load: JSON (`{"load": [[..]]}`), or CSV when the name ends in .csv.
    #[arg(long)]
    pub load: PathBuf,
    /// The plan in force; makes the planner migration-aware and reports migrations.
    #[arg(long)]
    pub previous: Option<PathBuf>,
    /// Planner; `-hierarchical` / `-global` force the placement rule.
    #[arg(long, default_value = "optimal", value_parser = policy_parser())]
    pub policy: Policy,
    /// How an expert's tokens split among its replicas (`weighted` adds `replica_share`).
    #[arg(long, default_value = Split::Even.name(), value_parser = split_parser())]
    pub split: Split,
    /// Where to write the plan (written only when everything succeeded).
    #[arg(long)]
    pub out: PathBuf,
    /// File format of `--out`.
    #[arg(long, value_enum, default_value_t = Format::Native)]
    pub format: Format,
    /// Wall-time limit of an optimal run, in seconds (also lets exact models
    /// use the time the searches leave).
    #[arg(long, value_name = "SECONDS")]
    pub time_limit: Option<f64>,
    /// With --previous: model imbalance a re-plan may give up, as a fraction
    /// of a fresh plan's, to move fewer experts.
    #[arg(long, value_name = "FRACTION", default_value_t = DEFAULT_BALANCE_TOLERANCE)]
    pub balance_tolerance: f64,
    /// With --previous: price migrations (expert_bytes over this many bytes
    /// per second) against the compute time balance saves over --serve-seconds.
    #[arg(long, value_name = "BYTES_PER_S", requires = "serve_seconds")]
    pub link_bandwidth: Option<f64>,
    /// With --link-bandwidth: seconds of MoE compute the new plan will serve.
    #[arg(long, value_name = "SECONDS", requires = "link_bandwidth")]
    pub serve_seconds: Option<f64>,
    /// GPUs (numbered `0..N*G`) that must take no load, comma-separated:
    /// their nodes keep their groups on the GPUs left and their slots get
    /// share 0.
    #[arg(long, value_name = "GPUS", value_delimiter = ',')]
    pub down_gpus: Vec<usize>,
}

/// What `--out` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// plan.json: phy2log, replica_share, log2phy, logcnt and stats.
    Native,
    /// SGLang `--init-expert-location` JSON (one row per hidden layer).
    Sglang,
    /// The bare `[L][P]` list of vLLM's loader proposal (no vLLM release
    /// reads a placement; docs/engines.md).
    Vllm,
    /// vLLM `EplbState` tables (MoE layers only), for a patched vLLM.
    VllmEplbState,
    /// TensorRT-LLM MoE load-balancer YAML (MoE and MTP layers).
    Trtllm,
}

impl Format {
    fn engine(self) -> Option<Engine> {
        match self {
            Format::Native => None,
            Format::Sglang => Some(Engine::Sglang),
            Format::Vllm => Some(Engine::Vllm),
            Format::VllmEplbState => Some(Engine::VllmEplbState),
            Format::Trtllm => Some(Engine::Trtllm),
        }
    }
}

pub fn run(args: &SolveArgs) -> Result<Report, CliError> {
    let topology = io::read_topology(&args.topology)?;
    let load = io::read_load(&args.load, &topology)?;
    let previous = args
        .previous
        .as_deref()
        .map(|path| io::read_plan(path, &topology))
        .transpose()?;
    let time_limit = args
        .time_limit
        .map(|seconds| {
            Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    CliError::without_file(Problem::Plan(PlanError::InvalidOption(format!(
                        "--time-limit must be a positive number of seconds, got {seconds}"
                    ))))
                })
        })
        .transpose()?;
    let options = PlanOptions {
        policy: args.policy,
        split: args.split,
        previous,
        time_limit,
        balance_tolerance: args.balance_tolerance,
        pricing: args.link_bandwidth.zip(args.serve_seconds).map(
            |(link_bytes_per_s, serve_seconds)| MigrationPricing {
                link_bytes_per_s,
                serve_seconds,
            },
        ),
        down_gpus: args.down_gpus.clone(),
    };
    let mut outcome =
        ballast_solver::solve(&topology, &load, &options).map_err(|e| plan_error(args, e))?;

    let mut warnings = Vec::new();
    let contents = match args.format.engine() {
        None => native_document(&topology, &outcome)
            .map_err(|e| CliError::new(&args.out, Problem::Encode(e)))?,
        Some(engine) => {
            let contents = engine
                .render(&topology, &outcome.plan)
                .map_err(|e| CliError::new(&args.topology, Problem::Export(e)))?;
            if export::drops_shares(&outcome.plan) {
                let weighted = outcome.stats.model_imbalance;
                score_as_written(&topology, &load, &mut outcome);
                warnings.push(format!(
                    "{}: replica_share dropped ({} splits every expert's tokens evenly): the figures are the even split's; with the shares the model imbalance was {}",
                    args.out.display(),
                    engine.name(),
                    ratio(weighted)
                ));
                if outcome.plan.replica_scope().is_some() {
                    warnings.push(format!(
                        "{}: replica_scope dropped ({} cannot restrict a replica to tokens already visiting its node): its co-visit replicas will take any token and add cross-node transfers",
                        args.out.display(),
                        engine.name()
                    ));
                }
            }
            contents
        }
    };
    io::write_atomically(&args.out, &contents)?;

    let mut report = Report::from_lines(summary(&outcome.stats, &args.out, args.format));
    report.warnings = warnings;
    Ok(report)
}

/// Replaces the balance figures of `outcome.stats` with those of the plan an
/// engine will run: the same placement, every expert split evenly.
fn score_as_written(topology: &Topology, load: &LoadMatrix, outcome: &mut PlanOutcome) {
    let Ok(even) = Plan::new(outcome.plan.phy2log().to_vec(), None, topology) else {
        // Dropping shares keeps a valid placement valid; nothing to rescore otherwise.
        return;
    };
    let written = score::score(topology, load, &even);
    let stats = &mut outcome.stats;
    stats.model_imbalance = written.model_imbalance;
    stats.mean_layer_imbalance = written.mean_layer_imbalance;
    stats.max_layer_imbalance = written.max_layer_imbalance;
    stats.split = Split::Even;
}

/// Blames the file the planner's complaint is about.
fn plan_error(args: &SolveArgs, err: PlanError) -> CliError {
    let path: Option<&Path> = match &err {
        PlanError::HierarchicalImpossible { .. } => Some(&args.topology),
        PlanError::PreviousMismatch(_) => args.previous.as_deref(),
        PlanError::LoadMismatch(_) => Some(&args.load),
        PlanError::Capacity { .. } => Some(&args.topology),
        PlanError::Unsupported(_) | PlanError::InvalidOption(_) | PlanError::Internal(_) => None,
    };
    match path {
        Some(path) => CliError::new(path, Problem::Plan(err)),
        None => CliError::without_file(Problem::Plan(err)),
    }
}

/// plan.json: the plan's tables plus `stats`.
fn native_document(
    topology: &Topology,
    outcome: &PlanOutcome,
) -> Result<String, serde_json::Error> {
    let mut doc = outcome.plan.to_document(topology.num_logical_experts());
    doc.insert("stats".into(), serde_json::to_value(&outcome.stats)?);
    let mut text = serde_json::to_string(&doc)?;
    text.push('\n');
    Ok(text)
}

fn summary(stats: &PlanStats, out: &Path, format: Format) -> Vec<String> {
    let format_name = format
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned());
    let mut lines = vec![
        format!(
            "policy {} ({} placement, {} split), {} layers in {:.2} ms",
            stats.policy,
            match stats.placement {
                Placement::Hierarchical => "hierarchical",
                Placement::Global => "global",
                Placement::Covisit => "covisit",
            },
            match stats.split {
                Split::Even => "even",
                Split::Weighted => "weighted",
            },
            stats.layers.len(),
            stats.solve_ms
        ),
        format!(
            "model imbalance {}  bound {}  gap {}",
            ratio(stats.model_imbalance),
            ratio(stats.bound),
            gap_percent(stats.model_imbalance, stats.bound)
        ),
        format!(
            "layer imbalance mean {}  max {}",
            ratio(stats.mean_layer_imbalance),
            ratio(stats.max_layer_imbalance)
        ),
        format!(
            "with optimal routing: model imbalance {}  layer max {}",
            ratio(stats.optimal_routing.model_imbalance),
            ratio(stats.optimal_routing.max_layer_imbalance)
        ),
        format!("same-GPU duplicates {}", stats.same_gpu_duplicates),
    ];
    if let Some(migrations) = stats.migrations {
        lines.push(match stats.bytes_moved {
            Some(bytes) => format!("migrations {migrations} ({bytes} bytes)"),
            None => format!("migrations {migrations}"),
        });
    }
    if let Some(replan) = &stats.replan {
        lines.push(format!(
            "previous plan {}  fresh plan {}",
            ratio(replan.previous_imbalance),
            ratio(replan.fresh_imbalance)
        ));
        if let Some(bound) = replan.migrations_bound {
            lines.push(format!(
                "no re-plan within the balance tolerance migrates fewer than {bound}"
            ));
        }
        if let Some(price) = &replan.price {
            lines.push(format!(
                "transfer {:.3} s  saved {:.3} s  worth it: {}",
                price.transfer_s,
                price.saved_s,
                if price.worth_it { "yes" } else { "no" }
            ));
        }
    }
    lines.push(format!("wrote {} ({format_name})", out.display()));
    lines
}

#[cfg(test)]
mod tests {
    use ballast_solver::planner::{LayerStats, LayerStatus, RoutedStats};
    use clap::Parser;

    use super::*;

    fn stats(migrations: Option<usize>) -> PlanStats {
        PlanStats {
            policy: Policy::GreedyHierarchical,
            solve_ms: 1.5,
            model_imbalance: 1.05,
            bound: 1.04,
            placement: Placement::Hierarchical,
            split: Split::Even,
            mean_layer_imbalance: 1.06,
            max_layer_imbalance: 1.1,
            same_gpu_duplicates: 0,
            migrations,
            bytes_moved: None,
            replan: None,
            optimal_routing: RoutedStats {
                model_imbalance: 1.03,
                mean_layer_imbalance: 1.035,
                max_layer_imbalance: 1.07,
            },
            layers: vec![
                LayerStats {
                    imbalance: 1.02,
                    bound: 1.01,
                    status: LayerStatus::Heuristic,
                    objective: 1.02,
                    gap: 0.02 / 1.01,
                    solve_ms: 0.75,
                };
                2
            ],
        }
    }

    #[test]
    fn summary_shows_the_headline_figures() {
        let lines = summary(&stats(None), Path::new("plan.json"), Format::Native);
        assert_eq!(
            lines[0],
            "policy greedy-hierarchical (hierarchical placement, even split), 2 layers in 1.50 ms"
        );
        assert_eq!(
            lines[1],
            "model imbalance 1.0500  bound 1.0400  gap +0.962 %"
        );
        assert_eq!(
            lines[3],
            "with optimal routing: model imbalance 1.0300  layer max 1.0700"
        );
        assert!(!lines.iter().any(|l| l.starts_with("migrations")));
        assert_eq!(lines.last().unwrap(), "wrote plan.json (native)");
        let lines = summary(&stats(Some(7)), Path::new("p.yaml"), Format::Trtllm);
        assert!(lines.contains(&"migrations 7".to_owned()), "{lines:?}");
        assert_eq!(lines.last().unwrap(), "wrote p.yaml (trtllm)");
    }

    /// `ballast solve` with required flags and `--policy policy`.
    fn parse_with_policy(policy: &str) -> Result<crate::cli::Cli, clap::Error> {
        crate::cli::Cli::try_parse_from([
            "ballast",
            "solve",
            "--topology",
            "t",
            "--load",
            "l",
            "--out",
            "o",
            "--policy",
            policy,
        ])
    }

    #[test]
    fn every_solver_policy_is_accepted() {
        for policy in Policy::ALL {
            let args = parse_with_policy(policy.name()).unwrap();
            let crate::cli::Command::Solve(args) = args.command else {
                panic!("not a solve command");
            };
            assert_eq!(args.policy, policy);
        }
        assert!(parse_with_policy("eplb").is_err());
    }
}
