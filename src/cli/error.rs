//! Errors of the command line: always a file and what is wrong with it.

use std::path::{Path, PathBuf};

use ballast_replay::ReplayError;
use ballast_solver::export::ExportError;
use ballast_solver::planner::PlanError;
use ballast_solver::ParseError;
use thiserror::Error;

use super::import::ImportError;
use crate::history::HistoryError;

/// Why a command failed, and (nearly always) the file at fault; displays as
/// `<path>: <what and where>` (the binary prefixes `error: `).
#[derive(Debug, Error)]
pub struct CliError {
    /// `None` only when no file is to blame (an option the planner cannot serve).
    pub path: Option<PathBuf>,
    pub problem: Problem,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.problem),
            None => write!(f, "{}", self.problem),
        }
    }
}

#[derive(Debug, Error)]
pub enum Problem {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// The content does not parse or does not fit the topology.
    #[error(transparent)]
    Parse(ParseError),
    /// The planner refused this input (e.g. a hierarchical policy the
    /// topology cannot follow), or failed.
    #[error(transparent)]
    Plan(PlanError),
    /// The plan cannot be written in the engine format asked for.
    #[error(transparent)]
    Export(ExportError),
    #[error("cannot encode: {0}")]
    Encode(serde_json::Error),
    #[error("cannot write: {0}")]
    Write(std::io::Error),
    /// The service's configuration is unusable (bad flag or env value).
    #[error("bad configuration: {0}")]
    Config(String),
    /// A command-line flag is unusable; the message starts with the flag.
    #[error("{0}")]
    Flag(String),
    /// A trace line (or stored window) that is not a window of the topology.
    #[error("line {line}{}: {detail}", window.map(|w| format!(" (window {w})")).unwrap_or_default())]
    Trace {
        line: usize,
        window: Option<u64>,
        detail: String,
    },
    #[error(transparent)]
    Replay(ReplayError),
    /// An engine's expert statistics that cannot be imported.
    #[error(transparent)]
    Import(ImportError),
    /// Reading a cluster's stored history failed.
    #[error(transparent)]
    History(HistoryError),
    /// The service stopped on an error after starting.
    #[error("service failed: {0}")]
    Service(String),
}

impl CliError {
    pub fn new(path: &Path, problem: Problem) -> Self {
        CliError {
            path: Some(path.to_path_buf()),
            problem,
        }
    }

    /// An error no input file is to blame for.
    pub fn without_file(problem: Problem) -> Self {
        CliError {
            path: None,
            problem,
        }
    }

    /// 2 for bad input or a request that cannot be served (SPEC), 1 when
    /// the output could not be produced or the planner failed on its own.
    pub fn exit_code(&self) -> u8 {
        match self.problem {
            Problem::Read(_) | Problem::Parse(_) => 2,
            Problem::Plan(PlanError::Internal(_)) => 1,
            Problem::Plan(_) | Problem::Export(_) => 2,
            Problem::Config(_) | Problem::Flag(_) | Problem::Trace { .. } => 2,
            Problem::Import(_) => 2,
            Problem::Replay(ReplayError::Plan { .. }) => 1,
            Problem::Replay(_) => 2,
            Problem::History(ref e) => history_exit_code(e),
            Problem::Encode(_) | Problem::Write(_) | Problem::Service(_) => 1,
        }
    }
}

/// 2 when the request names something that is not there or not usable
/// (bad name, unknown cluster, an old database, a 4xx from the service),
/// 1 when the source failed on its own.
fn history_exit_code(error: &HistoryError) -> u8 {
    match error {
        HistoryError::ClusterName(_)
        | HistoryError::UnknownCluster(_)
        | HistoryError::Schema { .. }
        | HistoryError::NoGrid { .. } => 2,
        HistoryError::Service { status, .. } if (400..500).contains(status) => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_first() {
        let err = CliError::new(
            Path::new("loads/x.json"),
            Problem::Parse(ParseError::Malformed {
                what: "load JSON",
                detail: "EOF while parsing".into(),
            }),
        );
        assert_eq!(
            err.to_string(),
            "loads/x.json: malformed load JSON: EOF while parsing"
        );
        assert_eq!(err.exit_code(), 2);
        let err = CliError::new(
            Path::new("out.json"),
            Problem::Write(std::io::ErrorKind::NotFound.into()),
        );
        assert!(
            err.to_string().starts_with("out.json: cannot write: "),
            "{err}"
        );
        assert_eq!(err.exit_code(), 1);
        let err = CliError::without_file(Problem::Plan(PlanError::Unsupported(
            "--split weighted".into(),
        )));
        assert_eq!(err.to_string(), "unsupported: --split weighted");
        assert_eq!(err.exit_code(), 2);
    }
}
