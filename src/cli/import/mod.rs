//! `ballast import`: an engine's own expert statistics (an SGLang `stat`
//! dump, a TensorRT-LLM expert-statistic directory) as a load matrix
//! (`load.json`, every step summed) or a trace (`trace.jsonl`, `--window`
//! steps per window), without Python. `ballast replay` reads the same
//! sources through [`read`].

mod error;
mod recording;
mod sglang;
mod trtllm;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use ballast_solver::Topology;
use clap::Args;
use serde::Serialize;

use super::error::{CliError, Problem};
use super::{io, Report};
pub use error::ImportError;
pub use recording::to_load;
use recording::Recording;

/// Where an engine's statistics are; shared by `import` and `replay`.
#[derive(Debug, Args)]
pub struct EngineSource {
    /// An SGLang `stat` dump (`expert_distribution_recorder_<time>.pt`).
    #[arg(long, value_name = "FILE", conflicts_with = "trtllm")]
    pub sglang: Option<PathBuf>,
    /// A TensorRT-LLM expert-statistic directory (`$EXPERT_STATISTIC_PATH`:
    /// `meta_info.json`, `rank{r}.safetensors`).
    #[arg(long, value_name = "DIR")]
    pub trtllm: Option<PathBuf>,
}

impl EngineSource {
    pub fn path(&self) -> Option<&Path> {
        self.sglang.as_deref().or(self.trtllm.as_deref())
    }
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("engine").required(true).args(["sglang", "trtllm"])))]
pub struct ImportArgs {
    /// Cluster shape (topology.json); `first_moe_layer` and `num_layers`
    /// place the MoE layers among the model's layers.
    #[arg(long)]
    pub topology: PathBuf,
    #[command(flatten)]
    pub source: EngineSource,
    /// Where to write the load (`load.json`) or, with `--window`, the trace
    /// (`trace.jsonl`); written only when everything succeeded.
    #[arg(long)]
    pub out: PathBuf,
    /// Write a trace: this many steps (forward passes, iterations) per
    /// window, steps without tokens skipped.
    #[arg(long, value_name = "STEPS")]
    pub window: Option<NonZeroUsize>,
}

pub fn run(args: &ImportArgs) -> Result<Report, CliError> {
    let topology = io::read_topology(&args.topology)?;
    let recording = read(&args.source, &topology)?;
    let (contents, wrote) = match args.window {
        None => (load_json(&recording), "load (every step summed)".to_owned()),
        Some(n) => {
            let windows = recording.windows(n.get());
            let wrote = format!("trace of {} windows of up to {n} steps", windows.len());
            (trace_jsonl(&windows), wrote)
        }
    };
    let contents = contents.map_err(|e| CliError::new(&args.out, Problem::Encode(e)))?;
    io::write_atomically(&args.out, &contents)?;
    let source = args
        .source
        .path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Ok(Report::from_lines(vec![
        format!(
            "read {} steps from {source} ({} without tokens)",
            recording.num_steps(),
            recording.empty_steps()
        ),
        format!(
            "{} token->expert assignments over {} MoE layers x {} experts",
            recording.total(),
            topology.num_layers(),
            topology.num_logical_experts()
        ),
        format!("wrote {}: {wrote}", args.out.display()),
    ]))
}

/// Reads the engine statistics `source` names, shaped for `topology`.
pub fn read(source: &EngineSource, topology: &Topology) -> Result<Recording, CliError> {
    match (&source.sglang, &source.trtllm) {
        (Some(file), _) => sglang::read(file, topology),
        (None, Some(dir)) => trtllm::read(dir, topology),
        (None, None) => Err(CliError::without_file(Problem::Flag(
            "--sglang or --trtllm is required".to_owned(),
        ))),
    }
}

fn load_json(recording: &Recording) -> Result<String, serde_json::Error> {
    #[derive(Serialize)]
    struct Load {
        load: Vec<Vec<u64>>,
    }
    let mut text = serde_json::to_string(&Load {
        load: recording.summed(),
    })?;
    text.push('\n');
    Ok(text)
}

fn trace_jsonl(windows: &[Vec<Vec<u64>>]) -> Result<String, serde_json::Error> {
    // The trace line of README "Formats", counts kept as integers.
    #[derive(Serialize)]
    struct Line<'a> {
        window: usize,
        load: &'a [Vec<u64>],
    }
    let mut text = String::new();
    for (window, load) in windows.iter().enumerate() {
        text.push_str(&serde_json::to_string(&Line { window, load })?);
        text.push('\n');
    }
    Ok(text)
}
