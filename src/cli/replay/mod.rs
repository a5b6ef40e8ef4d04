//! `ballast replay`: historical load through planning policies, each plan
//! scored on the load that came after it (SPEC "experienced imbalance").
//!
//! Input is streamed from its source ([`source`]) into the replay
//! (`ballast-replay`); records stream into `windows.csv` in a temporary
//! directory that replaces `--report` only when the whole replay succeeded
//! ([`output`]), so a bad window half-way leaves nothing behind.

mod output;
mod source;

use std::num::NonZeroUsize;
use std::path::PathBuf;

use ballast_replay::{Context, Interval, PolicySpec, Replay, ReportData};
use clap::Args;

use super::error::{CliError, Problem};
use super::import::EngineSource;
use super::Report;
use source::Source;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["trace", "loads", "sglang", "trtllm", "database_url", "service"])))]
pub struct ReplayArgs {
    /// A trace: one window per line, `{"window": i, "load": [[..]]}`.
    #[arg(long, requires = "topology")]
    pub trace: Option<PathBuf>,
    /// A directory of load matrices (JSON or CSV), one window per file, in
    /// file-name order.
    #[arg(long, requires = "topology")]
    pub loads: Option<PathBuf>,
    /// An engine's own statistics (`ballast import`'s sources), `--window`
    /// steps per window.
    #[command(flatten)]
    pub engine: EngineSource,
    /// Steps (forward passes, iterations) per window of `--sglang` or
    /// `--trtllm`; steps without tokens are skipped.
    #[arg(long, value_name = "STEPS")]
    pub window: Option<NonZeroUsize>,
    /// The service's database: replay a cluster's stored windows.
    #[arg(long, requires = "cluster", conflicts_with = "topology")]
    pub database_url: Option<String>,
    /// A running service (`http://host:port`): replay a cluster's stored
    /// windows through its API.
    #[arg(long, requires = "cluster", conflicts_with = "topology")]
    pub service: Option<String>,
    /// The cluster to read from `--database-url` or `--service`.
    #[arg(long)]
    pub cluster: Option<String>,
    /// API token for `--service`.
    #[arg(long, env = "BALLAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Stored windows starting at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Stored windows starting before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Cluster shape (topology.json) of a trace, load directory or engine
    /// statistics.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// A policy to replay, `NAME[:KEY=VALUE,...]`; repeat for several.
    /// Names: service, eplb, greedy, optimal (and -global/-hierarchical
    /// forms), static. Default: service and eplb.
    #[arg(long = "policy", value_name = "SPEC")]
    pub policies: Vec<String>,
    /// Re-plan every N windows; a comma-separated list is a sweep
    /// (`1,2,4,8,16,never`).
    #[arg(long, default_value = "1", value_name = "N[,N...]")]
    pub interval: String,
    /// Bytes of one expert's weights (default: the topology's
    /// `expert_bytes`).
    #[arg(long)]
    pub expert_bytes: Option<u64>,
    /// Bytes per second into one GPU while loading experts, for the
    /// estimated move time.
    #[arg(long, value_name = "BYTES_PER_S")]
    pub link_bandwidth: Option<f64>,
    /// Write summary.json, windows.csv and report.html into this directory
    /// (created or replaced whole).
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ReplayArgs) -> Result<Report, CliError> {
    let policies = parse_policies(&args.policies)?;
    let sweep = Interval::parse_list(&args.interval).map_err(|e| flag("--interval", e))?;
    let link_bandwidth = match args.link_bandwidth {
        Some(b) if !(b.is_finite() && b > 0.0) => {
            return Err(flag(
                "--link-bandwidth",
                format!("must be a positive number of bytes per second, not {b}"),
            ))
        }
        b => b,
    };
    let mut source = Source::open(args)?;
    let topology = source.topology().clone();
    let context = Context {
        expert_bytes: args.expert_bytes.or(topology.expert_bytes()),
        topology,
        link_bandwidth,
    };
    let replay = Replay::new(context, &policies, &sweep);
    let runs: Vec<(String, Interval)> = replay
        .runs()
        .map(|r| (r.spec.name.clone(), r.interval))
        .collect();
    let mut report = args
        .report
        .as_deref()
        .map(|dir| output::ReportDir::create(dir, runs))
        .transpose()?;
    let data = feed(replay, &mut source, report.as_mut())?;
    if let Some(report) = report {
        report.finish(&data)?;
    }
    let stdout = if args.json {
        let mut text = serde_json::to_string_pretty(&data.summary)
            .map_err(|e| CliError::without_file(Problem::Encode(e)))?;
        text.push('\n');
        text
    } else {
        output::table(&data.summary, &source.describe())
    };
    Ok(Report {
        stdout,
        warnings: Vec::new(),
    })
}

/// Streams every window of `source` through `replay`, records into
/// `report`.
fn feed(
    mut replay: Replay,
    source: &mut Source,
    mut report: Option<&mut output::ReportDir>,
) -> Result<ReportData, CliError> {
    let progress = output::progress(source.len_hint());
    while let Some(window) = source.next_window() {
        let (index, load) = window?;
        let records = replay
            .push(index, load)
            .map_err(|e| source.blame(Problem::Replay(e)))?;
        if let Some(report) = report.as_deref_mut() {
            report.write_records(&records)?;
        }
        progress.set_position(source.position());
    }
    let (records, data) = replay
        .finish()
        .map_err(|e| source.blame(Problem::Replay(e)))?;
    if let Some(report) = report {
        report.write_records(&records)?;
    }
    progress.finish_and_clear();
    Ok(data)
}

/// The `--policy` arguments, or the default pair.
fn parse_policies(args: &[String]) -> Result<Vec<PolicySpec>, CliError> {
    let defaults = ["service".to_owned(), "eplb".to_owned()];
    let texts = if args.is_empty() { &defaults[..] } else { args };
    texts
        .iter()
        .map(|text| text.parse().map_err(|e| flag("--policy", e)))
        .collect()
}

fn flag(name: &str, problem: impl ToString) -> CliError {
    CliError::without_file(Problem::Flag(format!("{name}: {}", problem.to_string())))
}
