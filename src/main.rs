//! The `ballast` binary: parse arguments, run, print, map errors to exit codes.

use std::io::Write;
use std::process::ExitCode;

use ballast::cli::{self, Cli};
use clap::Parser;

fn main() -> ExitCode {
    // Clap prints its own usage errors and exits with status 2.
    let args = Cli::parse();
    match cli::run(args) {
        Ok(report) => {
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            // A closed stdout (`ballast score | head -1`) is not an error of ours.
            let _ = std::io::stdout().lock().write_all(report.stdout.as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            // The contract is one line, whatever the underlying library printed.
            let message = err.to_string().replace(['\n', '\r'], " ");
            eprintln!("error: {message}");
            ExitCode::from(err.exit_code())
        }
    }
}
