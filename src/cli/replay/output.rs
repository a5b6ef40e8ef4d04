//! What a replay writes: the `--report` directory (built in a temporary
//! directory beside it and renamed into place at the end), the summary
//! table, and the progress bar on a terminal.

use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::{Path, PathBuf};

use ballast_replay::{Interval, ReportData, Summary, WindowRecord};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tempfile::TempDir;

use crate::cli::error::{CliError, Problem};
use crate::cli::{gap_percent, ratio, transfers_text};

/// The files a report directory holds; a directory holding anything else is
/// not replaced.
const REPORT_FILES: [&str; 3] = ["summary.json", "windows.csv", "report.html"];

/// A report being written.
pub struct ReportDir {
    target: PathBuf,
    staging: TempDir,
    windows: csv::Writer<BufWriter<File>>,
    /// Per run: its policy name and interval, for the CSV rows.
    runs: Vec<(String, Interval)>,
}

/// One row of `windows.csv`.
#[derive(Serialize)]
struct CsvRow<'a> {
    window: u64,
    policy: &'a str,
    interval: String,
    experienced_imbalance: Option<f64>,
    experienced_imbalance_optimal_routing: Option<f64>,
    oracle_imbalance: f64,
    planned: bool,
    replanned: bool,
    reloaded_slots: u64,
    reloaded_bytes: Option<u64>,
    move_seconds: Option<f64>,
    plan_ms: f64,
    covisit_served: Option<f64>,
    transfers_per_token_low: Option<f64>,
    transfers_per_token_high: Option<f64>,
    transfers_per_token_estimate: Option<f64>,
}

impl ReportDir {
    /// Starts a report for `target`; refuses a target that holds other
    /// files than a report's.
    pub fn create(target: &Path, runs: Vec<(String, Interval)>) -> Result<ReportDir, CliError> {
        let fail = |e: std::io::Error| CliError::new(target, Problem::Write(e));
        if target.exists() {
            let entries = std::fs::read_dir(target).map_err(fail)?;
            for entry in entries {
                let name = entry.map_err(fail)?.file_name();
                if !REPORT_FILES.iter().any(|f| name == *f) {
                    return Err(CliError::new(
                        target,
                        Problem::Flag(format!(
                            "--report: the directory holds {} (not a report's file); choose an empty or new directory",
                            name.to_string_lossy()
                        )),
                    ));
                }
            }
        }
        let parent = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let staging = tempfile::Builder::new()
            .prefix(".ballast-report-")
            .tempdir_in(parent)
            .map_err(fail)?;
        let file = File::create(staging.path().join("windows.csv")).map_err(fail)?;
        Ok(ReportDir {
            target: target.to_path_buf(),
            staging,
            windows: csv::Writer::from_writer(BufWriter::new(file)),
            runs,
        })
    }

    pub fn write_records(&mut self, records: &[WindowRecord]) -> Result<(), CliError> {
        for r in records {
            let (policy, interval) = &self.runs[r.run];
            let row = CsvRow {
                window: r.window,
                policy,
                interval: interval.to_string(),
                experienced_imbalance: r.experienced_imbalance,
                experienced_imbalance_optimal_routing: r.experienced_imbalance_optimal_routing,
                oracle_imbalance: r.oracle_imbalance,
                planned: r.planned,
                replanned: r.replanned,
                reloaded_slots: r.reloaded_slots,
                reloaded_bytes: r.reloaded_bytes,
                move_seconds: r.move_seconds,
                plan_ms: r.plan_ms,
                covisit_served: r.covisit_served,
                transfers_per_token_low: r.transfers_per_token.map(|t| t.low),
                transfers_per_token_high: r.transfers_per_token.map(|t| t.high),
                transfers_per_token_estimate: r.transfers_per_token.and_then(|t| t.estimate),
            };
            self.windows.serialize(row).map_err(|e| self.csv_error(e))?;
        }
        Ok(())
    }

    fn csv_error(&self, e: csv::Error) -> CliError {
        CliError::new(&self.target, Problem::Write(std::io::Error::other(e)))
    }

    /// Writes the summary and the HTML report, then puts the directory in
    /// place of `target`.
    pub fn finish(mut self, data: &ReportData) -> Result<(), CliError> {
        let fail = |e: std::io::Error| CliError::new(&self.target, Problem::Write(e));
        self.windows.flush().map_err(fail)?;
        let summary = serde_json::to_string_pretty(&data.summary)
            .map_err(|e| CliError::new(&self.target, Problem::Encode(e)))?;
        let dir = self.staging.path();
        std::fs::write(dir.join("summary.json"), summary + "\n").map_err(fail)?;
        let html = ballast_replay::report::render_html(data);
        std::fs::write(dir.join("report.html"), html).map_err(fail)?;
        // Readable by others, like any output of a command (a temporary
        // directory starts private).
        set_mode(dir, 0o755).map_err(fail)?;
        if self.target.exists() {
            for name in REPORT_FILES {
                let old = self.target.join(name);
                if old.exists() {
                    std::fs::remove_file(old).map_err(fail)?;
                }
            }
            std::fs::remove_dir(&self.target).map_err(fail)?;
        }
        let staged = self.staging.keep();
        std::fs::rename(&staged, &self.target).map_err(fail)?;
        Ok(())
    }
}

#[cfg(unix)]
fn set_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_dir: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub fn progress(len: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{spinner} replaying [{bar:40}] {percent:>3}% {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} replaying: {pos} windows, {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

/// The summary as a table for people.
pub fn table(summary: &Summary, source: &str) -> String {
    let mut out = format!(
        "replayed {} windows of {source} ({} scored: each plan on the window after it)\n",
        summary.windows, summary.scored_windows
    );
    let header = format!(
        "{:<28} {:>8} {:>11} {:>11} {:>8} {:>10} {:>9}  {}",
        "policy",
        "interval",
        "experienced",
        "opt.routing",
        "oracle",
        "reloads/w",
        "plan ms",
        "vs EPLB at equal movement"
    );
    out.push_str(&header);
    out.push('\n');
    for p in &summary.policies {
        let interval = p.interval.map_or("never".to_owned(), |n| n.to_string());
        let versus = match (p.eplb_at_equal_budget, p.vs_eplb_at_equal_budget) {
            (Some(eplb), Some(r)) => format!("{:.3}x (EPLB {})", r, ratio(eplb)),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<28} {:>8} {:>11} {:>11} {:>8} {:>9.2}% {:>9.1}  {}\n",
            p.name,
            interval,
            ratio(p.experienced_imbalance),
            ratio(p.experienced_imbalance_optimal_routing),
            ratio(p.oracle_imbalance),
            p.reloaded_slots_per_window * 100.0,
            p.plan_ms,
            versus
        ));
    }
    if let Some(first) = summary.policies.first() {
        out.push_str(&format!(
            "oracle: each window's own bound; {} is {} above it\n",
            first.name,
            gap_percent(first.experienced_imbalance, first.oracle_imbalance)
        ));
    }
    for p in &summary.policies {
        if let Some(t) = p.transfers_per_token {
            let interval = p.interval.map_or("never".to_owned(), |n| n.to_string());
            let figure = transfers_text(&t, p.covisit_served.is_some());
            let known = if p.transfers_known_windows < summary.scored_windows {
                format!(
                    " ({} of {} windows)",
                    p.transfers_known_windows, summary.scored_windows
                )
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{} (interval {interval}): cross-node transfers per token and layer {figure}{known}, read off the co-visit counts\n",
                p.name
            ));
        }
    }
    for p in &summary.policies {
        if let Some(served) = p.covisit_served {
            out.push_str(&format!(
                "{} (interval {}): co-visit replicas served {:.2}% of token assignments, all on nodes the tokens visited anyway (no added cross-node transfer)\n",
                p.name,
                p.interval.map_or("never".to_owned(), |n| n.to_string()),
                served * 100.0
            ));
        }
    }
    out
}
