//! `ballast-worker`: one process per node. For now it offers the numerical
//! self-test; the agent that talks to the Ballast service comes later.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ballast_worker::accuracy::selftest::{self, SelftestConfig, SelftestReport};

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
