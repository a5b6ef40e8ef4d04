//! Errors of the command line: always a file and what is wrong with it.

use std::path::{Path, PathBuf};

use ballast_solver::planner::PlanError;
use ballast_solver::ParseError;
use thiserror::Error;

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
    #[error("cannot encode: {0}")]
    Encode(serde_json::Error),
    #[error("cannot write: {0}")]
    Write(std::io::Error),
    /// The service's configuration is unusable (bad flag or env value).
    #[error("bad configuration: {0}")]
    Config(String),
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
            Problem::Plan(_) => 2,
            Problem::Config(_) => 2,
            Problem::Encode(_) | Problem::Write(_) | Problem::Service(_) => 1,
        }
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
