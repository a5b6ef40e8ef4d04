//! TensorRT-LLM's expert statistics: with `EXPERT_STATISTIC_ITER_RANGE`
//! set, each rank writes `$EXPERT_STATISTIC_PATH/rank{r}.safetensors`, one
//! int64 tensor of `num_experts` counts per key `"{iter}_{layer}"` (absolute
//! layer index), and rank 0 writes `meta_info.json` (`num_experts`,
//! `num_experts_per_token`) (`tensorrt_llm/_torch/expert_statistic.py`).
//! A step is an iteration, summed over ranks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ballast_solver::Topology;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::error::ImportError;
use super::recording::Recording;
use crate::cli::error::{CliError, Problem};

#[derive(Debug, Deserialize)]
struct MetaInfo {
    num_experts: u64,
}

/// Counts per iteration, `[layer * E + expert]` over the MoE layers, and
/// the MoE layers each iteration had a key for.
#[derive(Default)]
struct Iteration {
    counts: Vec<u64>,
    layers: BTreeSet<usize>,
}

pub fn read(dir: &Path, topology: &Topology) -> Result<Recording, CliError> {
    let experts = topology.num_logical_experts();
    read_meta(&dir.join("meta_info.json"), experts)?;
    let mut iterations: BTreeMap<u64, Iteration> = BTreeMap::new();
    for file in rank_files(dir)? {
        read_rank(&file, topology, &mut iterations)?;
    }
    let mut recording = Recording::new(topology);
    let first = topology.first_moe_layer();
    for (iter, iteration) in iterations {
        if let Some(layer) = (0..topology.num_layers()).find(|l| !iteration.layers.contains(l)) {
            let absolute = first + layer;
            return Err(CliError::new(
                dir,
                Problem::Import(ImportError::Layout(format!(
                    "no rank file has key `{iter}_{absolute}`: iteration {iter} lacks MoE layer {absolute} (first_moe_layer {first}, num_layers {})",
                    topology.num_layers()
                ))),
            ));
        }
        recording.push_step().copy_from_slice(&iteration.counts);
    }
    if recording.total() == 0 {
        return Err(CliError::new(dir, Problem::Import(ImportError::NoTokens)));
    }
    Ok(recording)
}

fn read_meta(path: &Path, experts: usize) -> Result<(), CliError> {
    let fail = |e: ImportError| CliError::new(path, Problem::Import(e));
    let text = std::fs::read_to_string(path).map_err(|e| CliError::new(path, Problem::Read(e)))?;
    let meta: MetaInfo = serde_json::from_str(&text).map_err(|e| {
        fail(ImportError::Container {
            format: "meta_info.json",
            detail: e.to_string(),
        })
    })?;
    if meta.num_experts != experts as u64 {
        // With the load balancer on, TensorRT-LLM counts slots, not experts.
        return Err(fail(ImportError::Layout(format!(
            "num_experts is {}, the topology has {experts} (num_logical_experts); record with the MoE load balancer off, so that experts and not slots are counted",
            meta.num_experts
        ))));
    }
    Ok(())
}

/// `rank{r}.safetensors` for r = 0..R, every rank present: a rank missing
/// would silently drop its tokens.
fn rank_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let read_error = |e| CliError::new(dir, Problem::Read(e));
    let mut ranks = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let rank = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("rank"))
            .and_then(|n| n.strip_suffix(".safetensors"))
            .and_then(|r| r.parse::<usize>().ok());
        if let Some(rank) = rank {
            ranks.insert(rank, path);
        }
    }
    let content =
        |detail: String| CliError::new(dir, Problem::Import(ImportError::Content(detail)));
    if ranks.is_empty() {
        return Err(content(
            "no rank{r}.safetensors files: not an EXPERT_STATISTIC_PATH directory".to_owned(),
        ));
    }
    if let Some(missing) = (0..ranks.len()).find(|r| !ranks.contains_key(r)) {
        return Err(content(format!(
            "rank{missing}.safetensors is missing ({} rank files, numbered up to {})",
            ranks.len(),
            ranks.keys().next_back().copied().unwrap_or_default()
        )));
    }
    Ok(ranks.into_values().collect())
}

fn read_rank(
    path: &Path,
    topology: &Topology,
    iterations: &mut BTreeMap<u64, Iteration>,
) -> Result<(), CliError> {
    let fail = |e: ImportError| CliError::new(path, Problem::Import(e));
    let bytes = std::fs::read(path).map_err(|e| CliError::new(path, Problem::Read(e)))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| {
        fail(ImportError::Container {
            format: "safetensors",
            detail: e.to_string(),
        })
    })?;
    let experts = topology.num_logical_experts();
    let first = topology.first_moe_layer();
    let moe = first..first + topology.num_layers();
    // MTP layers (keys after the hidden layers) have no load of their own
    // in Ballast: their placement is the last hidden layer's.
    let mtp = topology.layout().map_or(0..0, |l| {
        l.num_hidden_layers..l.num_hidden_layers + l.mtp_layers
    });
    let mut names = file.names();
    names.sort();
    for name in names {
        let key_error =
            |detail: String| fail(ImportError::Content(format!("key `{name}`: {detail}")));
        let (iter, layer) =
            parse_key(name).ok_or_else(|| key_error("not `{iter}_{layer}`".to_owned()))?;
        if mtp.contains(&layer) {
            continue;
        }
        if !moe.contains(&layer) {
            return Err(fail(ImportError::Layout(format!(
                "key `{name}`: layer {layer} is not one of the topology's MoE layers {}..={} (first_moe_layer {first}, num_layers {}; mtp_layers for keys after them)",
                moe.start,
                moe.end - 1,
                topology.num_layers()
            ))));
        }
        let view = file.tensor(name).map_err(|e| key_error(e.to_string()))?;
        if view.shape() != [experts] {
            return Err(fail(ImportError::Layout(format!(
                "key `{name}`: shape {:?}, expected [{experts}] (num_logical_experts)",
                view.shape()
            ))));
        }
        let values = counts(view.dtype(), view.data())
            .ok_or_else(|| key_error(format!("holds {:?}, expected int64 counts", view.dtype())))?;
        let iteration = iterations.entry(iter).or_default();
        iteration.layers.insert(layer - first);
        if iteration.counts.is_empty() {
            iteration.counts = vec![0; topology.num_layers() * experts];
        }
        let row = &mut iteration.counts[(layer - first) * experts..][..experts];
        for (expert, (acc, value)) in row.iter_mut().zip(values).enumerate() {
            if value < 0 {
                return Err(fail(ImportError::Negative {
                    at: format!("key `{name}` expert {expert}"),
                    value,
                }));
            }
            *acc += value as u64;
        }
    }
    Ok(())
}

/// `"{iter}_{layer}"`.
fn parse_key(name: &str) -> Option<(u64, usize)> {
    let (iter, layer) = name.split_once('_')?;
    Some((iter.parse().ok()?, layer.parse().ok()?))
}

/// Little-endian integers (safetensors' byte order).
fn counts(dtype: Dtype, data: &[u8]) -> Option<Vec<i64>> {
    match dtype {
        Dtype::I64 => Some(
            data.chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        ),
        Dtype::I32 => Some(
            data.chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_iteration_then_absolute_layer() {
        assert_eq!(parse_key("100_3"), Some((100, 3)));
        assert_eq!(parse_key("100_61"), Some((100, 61)));
        assert_eq!(parse_key("100-3"), None);
        assert_eq!(parse_key("a_3"), None);
        assert_eq!(parse_key("1_2_3"), None);
    }
}
