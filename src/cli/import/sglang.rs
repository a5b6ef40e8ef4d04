//! SGLang's `stat` dump: `/dump_expert_distribution_record` with
//! `--expert-distribution-recorder-mode stat` writes `torch.save` of
//! `{rank, logical_count, average_utilization_rate_over_window}`, where
//! `logical_count` is int32 `[steps, num_hidden_layers, E]`
//! (`_StatAccumulator.dump` in `python/sglang/srt/eplb/expert_distribution.py`).
//! Rows of dense layers are zero; rows of a circular buffer not yet filled
//! are zero too.

use std::path::Path;

use ballast_solver::Topology;
use pytorch_reader::{DType, PytorchReader};

use super::error::ImportError;
use super::recording::Recording;
use crate::cli::error::{CliError, Problem};

const TENSOR: &str = "logical_count";

pub fn read(path: &Path, topology: &Topology) -> Result<Recording, CliError> {
    let fail = |e: ImportError| CliError::new(path, Problem::Import(e));
    // A missing or unreadable file is a read error like any other input's.
    std::fs::File::open(path).map_err(|e| CliError::new(path, Problem::Read(e)))?;
    let torch = |detail: String| {
        fail(ImportError::Container {
            format: "PyTorch (torch.save)",
            detail,
        })
    };
    let reader = PytorchReader::new(path).map_err(|e| torch(e.to_string()))?;
    let tensor = reader.get(TENSOR).ok_or_else(|| {
        fail(ImportError::Content(format!(
            "no `{TENSOR}` tensor: not an SGLang `stat` dump (--expert-distribution-recorder-mode stat)"
        )))
    })?;
    let &[steps, hidden, experts] = tensor.shape() else {
        return Err(fail(ImportError::Content(format!(
            "`{TENSOR}` has shape {:?}, expected [steps, layers, experts]",
            tensor.shape()
        ))));
    };
    check_layout(hidden, experts, topology).map_err(fail)?;
    let bytes = tensor.read().map_err(|e| torch(e.to_string()))?;
    // Native-endian, contiguous row-major (the reader gathers any view).
    let values: Vec<i64> = match tensor.dtype() {
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|b| i64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        other => {
            return Err(fail(ImportError::Content(format!(
                "`{TENSOR}` holds {other:?}, expected integer counts (int32)"
            ))))
        }
    };
    let first = topology.first_moe_layer();
    let mut recording = Recording::new(topology);
    for (step, block) in values
        .chunks_exact(hidden * experts)
        .take(steps)
        .enumerate()
    {
        let out = recording.push_step();
        for (layer, row) in block.chunks_exact(experts).enumerate() {
            for (expert, &value) in row.iter().enumerate() {
                let at = || format!("`{TENSOR}` step {step} layer {layer} expert {expert}");
                if value < 0 {
                    return Err(fail(ImportError::Negative { at: at(), value }));
                }
                if layer < first {
                    if value != 0 {
                        return Err(fail(ImportError::Layout(format!(
                            "{}: {value} tokens in a layer before first_moe_layer {first}: the topology's layer layout is not the model's",
                            at()
                        ))));
                    }
                    continue;
                }
                out[(layer - first) * experts + expert] = value as u64;
            }
        }
    }
    if recording.total() == 0 {
        return Err(fail(ImportError::NoTokens));
    }
    Ok(recording)
}

/// `logical_count` has a row per hidden layer: the dense ones, then the
/// topology's MoE layers.
fn check_layout(hidden: usize, experts: usize, topology: &Topology) -> Result<(), ImportError> {
    if experts != topology.num_logical_experts() {
        return Err(ImportError::Layout(format!(
            "`{TENSOR}` counts {experts} experts per layer, the topology has {} (num_logical_experts)",
            topology.num_logical_experts()
        )));
    }
    let first = topology.first_moe_layer();
    let expected = first + topology.num_layers();
    if hidden != expected {
        return Err(ImportError::Layout(format!(
            "`{TENSOR}` has {hidden} layers, the topology's layout has {expected} (first_moe_layer {first} dense + num_layers {} MoE)",
            topology.num_layers()
        )));
    }
    Ok(())
}
