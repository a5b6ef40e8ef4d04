//! `ballast-worker`: one process per node. `run` is the agent that talks to
//! the Ballast service; `selftest` measures the FP8 accuracy figures.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ballast_worker::accuracy::selftest::{self, SelftestConfig, SelftestReport};
use ballast_worker::agent::{self, RunArgs};

#[derive(Parser)]
#[command(
    name = "ballast-worker",
    version,
    about = "Ballast worker: FP8 MoE execution on CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent for one node: synthetic batches through the MoE layers,
    /// telemetry to the service, plans from it (logs: BALLAST_WORKER_LOG).
    Run(Box<RunArgs>),
    /// Measure the FP8 accuracy figures on seeded N(0,1) inputs and check their targets.
    Selftest {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Tokens in the test GEMM.
        #[arg(long, default_value_t = SelftestConfig::default().tokens)]
        tokens: usize,
        /// Output features (a multiple of 128).
        #[arg(long, default_value_t = SelftestConfig::default().features)]
        features: usize,
        /// Inner dimension K (a multiple of 128).
        #[arg(long, default_value_t = SelftestConfig::default().k)]
        k: usize,
        #[arg(long, default_value_t = SelftestConfig::default().seed)]
        seed: u64,
        /// Bits the emulated tensor-core accumulator keeps.
        #[arg(long, default_value_t = SelftestConfig::default().fraction_bits)]
        fraction_bits: u32,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Run(args) => {
            init_logging();
            let config = args.into_config().context("invalid option")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(agent::run(config, ballast_protocol::shutdown::signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Selftest {
            json,
            tokens,
            features,
            k,
            seed,
            fraction_bits,
        } => {
            let config = SelftestConfig {
                tokens,
                features,
                k,
                seed,
                fraction_bits,
            };
            let report = selftest::run(&config).context("self-test inputs")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_table(&report);
            }
            Ok(if report.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn print_table(report: &SelftestReport) {
    let c = &report.config;
    println!(
        "FP8 self-test: {} tokens x {} features, K = {}, seed {}, {} accumulator bits",
        c.tokens, c.features, c.k, c.seed, c.fraction_bits
    );
    for t in &report.targets {
        let relation = match t.bound {
            selftest::Bound::AtMost => "<=",
            selftest::Bound::AtLeast => ">=",
        };
        let verdict = if t.pass { "ok" } else { "MISSED" };
        println!(
            "  {:<30} {:>12.4e}  (target {relation} {:e})  {verdict}",
            t.figure, t.value, t.limit
        );
    }
    let f = &report.figures;
    println!(
        "  {:<30} {:>12.4e}",
        "fine_grained_pow2_rel_err", f.fine_grained_pow2_rel_err
    );
    println!(
        "  {:<30} {:>12.4e}",
        "production_accum_err", f.production_accum_err
    );
    println!(
        "  {:<30} {:>12.4e}",
        "limited_accum_err", f.limited_accum_err
    );
    println!(
        "  {:<30} {:>12.4e}",
        "moe_layer_rel_err", f.moe_layer_rel_err
    );
}

/// Text logs on stderr, filtered by `BALLAST_WORKER_LOG` (default `info`).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BALLAST_WORKER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
