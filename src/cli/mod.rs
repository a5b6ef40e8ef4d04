//! The one-shot command line (SPEC "Command line"): one module per subcommand,
//! plus the file handling they share.
//!
//! Each subcommand reads and parses all of its input first, computes, and only
//! then writes anything, so a bad input never leaves a half-written file. It
//! returns a [`Report`] (what to print) or a [`CliError`] naming the file at
//! fault; the binary turns those into output and an exit status.

mod bound;
mod error;
mod import;
mod io;
mod replay;
mod score;
mod serve;
mod solve;

use clap::{Parser, Subcommand};

pub use bound::BoundArgs;
pub use error::{CliError, Problem};
pub use import::ImportArgs;
pub use replay::ReplayArgs;
pub use score::ScoreArgs;
pub use solve::{Format, SolveArgs};

/// Expert load balancing and placement for Mixture-of-Experts inference.
#[derive(Debug, Parser)]
#[command(name = "ballast", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// `serve`'s arguments dwarf the others; the enum is built once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan expert placement for a load and write the plan.
    Solve(SolveArgs),
    /// Score a plan against a load (imbalance, migrations, locality).
    Score(ScoreArgs),
    /// Print the lower bounds on imbalance for a load.
    Bound(BoundArgs),
    /// Replay historical load through planning policies; score each plan on
    /// the window after it.
    Replay(ReplayArgs),
    /// Read an engine's expert statistics (SGLang, TensorRT-LLM) into a load
    /// matrix or a trace.
    Import(ImportArgs),
    /// Run the placement service (HTTP API, planner loop) until stopped.
    Serve(crate::ServeArgs),
}

/// What a successful command prints: `stdout` as is, each warning on stderr.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub stdout: String,
    pub warnings: Vec<String>,
}

impl Report {
    fn from_lines(lines: Vec<String>) -> Self {
        let mut stdout = lines.join("\n");
        stdout.push('\n');
        Report {
            stdout,
            warnings: Vec::new(),
        }
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> Result<Report, CliError> {
    match cli.command {
        Command::Solve(args) => solve::run(&args),
        Command::Score(args) => score::run(&args),
        Command::Bound(args) => bound::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Import(args) => import::run(&args),
        Command::Serve(args) => serve::run(args),
    }
}

/// A figure as the summaries print it.
fn ratio(value: f64) -> String {
    format!("{value:.4}")
}

/// Cross-node transfers per token and layer as the summaries print them:
/// the estimate with the provable range, or the range alone. `at_home`: the
/// plan has co-visit replicas, which can only lower the figure.
fn transfers_text(range: &ballast_solver::covisit::Interval, at_home: bool) -> String {
    const HOME: &str = "at the home nodes, which co-visit replicas only lower";
    match (range.is_exact(), range.estimate, at_home) {
        (true, _, false) => format!("{:.4}", range.low),
        (true, _, true) => format!("at most {:.4} ({HOME})", range.low),
        (false, Some(estimate), false) => format!(
            "about {estimate:.4} (provably {:.4} to {:.4})",
            range.low, range.high
        ),
        (false, Some(estimate), true) => format!(
            "about {estimate:.4} {HOME} (provably at most {:.4})",
            range.high
        ),
        (false, None, false) => format!("{:.4} to {:.4}", range.low, range.high),
        (false, None, true) => format!("at most {:.4} ({HOME})", range.high),
    }
}

/// How far `value` is above `bound`, in percent.
fn gap_percent(value: f64, bound: f64) -> String {
    format!("{:+.3} %", (value / bound - 1.0) * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn gap_is_relative_to_the_bound() {
        assert_eq!(gap_percent(1.0404, 1.04), "+0.038 %");
        assert_eq!(ratio(1.0), "1.0000");
    }
}
