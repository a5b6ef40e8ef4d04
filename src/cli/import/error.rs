//! What can be wrong with an engine's statistics; the file at fault is
//! named by the [`CliError`](crate::cli::CliError) around it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImportError {
    /// The container does not parse: truncated, corrupt, or another kind
    /// of file.
    #[error("not a readable {format} file: {detail}")]
    Container {
        format: &'static str,
        detail: String,
    },
    /// The file parses but does not hold what the engine writes there.
    #[error("{0}")]
    Content(String),
    /// The statistics do not fit the topology (experts, layer layout).
    #[error("{0}")]
    Layout(String),
    #[error("{at}: {value} is negative")]
    Negative { at: String, value: i64 },
    #[error("holds no tokens: every step is empty")]
    NoTokens,
}
