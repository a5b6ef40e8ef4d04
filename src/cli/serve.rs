//! `ballast serve`: runs the placement service on its own runtime until a
//! shutdown signal, so the one-shot commands never pay for tokio.

use super::{CliError, Problem, Report};

pub fn run(args: crate::ServeArgs) -> Result<Report, CliError> {
    let config = args
        .into_config()
        .map_err(|e| CliError::without_file(Problem::Config(format!("{e:#}"))))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::without_file(Problem::Service(e.to_string())))?;
    runtime
        .block_on(crate::serve(config))
        .map_err(|e| CliError::without_file(Problem::Service(format!("{e:#}"))))?;
    Ok(Report::default())
}
