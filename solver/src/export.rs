//! A plan in the formats inference engines read at start-up.
//!
//! Every engine takes the same core table — `physical_to_logical_map[layer][slot]`
//! — but they disagree on the layer axis and on the side tables:
//!
//! * **SGLang** (`--init-expert-location FILE.json`) accepts exactly one key,
//!   `physical_to_logical_map`, with one row per *hidden* layer of the model
//!   (`num_hidden_layers`): the dense layers first, as SGLang's own trivial
//!   rows.
//! * **TensorRT-LLM** reads YAML: `num_slots`, `layer_updates_per_iter` and
//!   `initial_global_assignments` keyed by absolute layer index, MoE layers
//!   and then the MTP layers after the hidden ones.
//! * **vLLM** reads no placement in any release. `vllm` is the bare `[L][P]`
//!   list that the open loader proposal (vllm-project/vllm#49572) reads;
//!   `vllm-eplb-state` is `EplbState`'s three tables, for a patch that fills
//!   them directly. Both count MoE layers only.
//!
//! SGLang and TensorRT-LLM index by model layer, so they need the topology's
//! [`ModelLayout`]; guessing "no dense layers" would shift every row of a
//! DeepSeek-V3 plan by three.
//!
//! No engine can split an expert's tokens unevenly among its replicas, so a
//! plan's `replica_share` is not exported; callers should warn about it
//! (see [`drops_shares`]).

use std::fmt::Write as _;

use serde_json::{json, Value};
use thiserror::Error;

use crate::plan::{self, Plan};
use crate::topology::{ModelLayout, Topology};

/// An engine format Ballast can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    Sglang,
    Vllm,
    VllmEplbState,
    Trtllm,
}

/// Why a plan cannot be written in an engine's format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExportError {
    #[error(
        "{engine} indexes plans by model layer: add `first_moe_layer` to the topology (dense layers before the first MoE layer: 3 for DeepSeek-V3/R1, 0 for all-MoE models such as Qwen3-MoE or Mixtral), with `num_hidden_layers` and `mtp_layers` if the model has them"
    )]
    LayoutMissing { engine: &'static str },
}

impl Engine {
    pub const ALL: [Engine; 4] = [
        Engine::Sglang,
        Engine::Vllm,
        Engine::VllmEplbState,
        Engine::Trtllm,
    ];

    /// The name used on the command line and in the service.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sglang => "sglang",
            Engine::Vllm => "vllm",
            Engine::VllmEplbState => "vllm-eplb-state",
            Engine::Trtllm => "trtllm",
        }
    }

    pub fn parse(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }

    /// YAML for TensorRT-LLM, JSON for the others.
    pub fn is_yaml(self) -> bool {
        self == Engine::Trtllm
    }

    /// The plan as the text of this engine's file.
    pub fn render(self, topology: &Topology, plan: &Plan) -> Result<String, ExportError> {
        Ok(match self {
            Engine::Sglang => json_text(&sglang(topology, plan)?),
            Engine::Vllm => json_text(&vllm(plan)),
            Engine::VllmEplbState => json_text(&vllm_eplb_state(topology, plan)),
            Engine::Trtllm => trtllm(topology, plan)?,
        })
    }

    fn layout(self, topology: &Topology) -> Result<ModelLayout, ExportError> {
        topology.layout().ok_or(ExportError::LayoutMissing {
            engine: self.name(),
        })
    }
}

/// True when exporting `plan` loses information: engines split evenly.
pub fn drops_shares(plan: &Plan) -> bool {
    plan.replica_share().is_some()
}

/// SGLang's `--init-expert-location` document: `num_hidden_layers` rows,
/// the dense ones SGLang's trivial row ([`plan::linear_row`], slot `p` →
/// expert `p % E`), which SGLang never reads for a dense layer.
pub fn sglang(topology: &Topology, plan: &Plan) -> Result<Value, ExportError> {
    let layout = Engine::Sglang.layout(topology)?;
    let trivial = plan::linear_row(topology);
    let rows: Vec<&[u32]> = std::iter::repeat_n(trivial.as_slice(), layout.first_moe_layer)
        .chain(plan.phy2log().iter().map(Vec::as_slice))
        .collect();
    Ok(json!({ "physical_to_logical_map": rows }))
}

/// The bare `[L][P]` list the vLLM loader proposal reads (MoE layers only).
pub fn vllm(plan: &Plan) -> Value {
    json!(plan.phy2log())
}

/// vLLM's `EplbState` tables (MoE layers only).
pub fn vllm_eplb_state(topology: &Topology, plan: &Plan) -> Value {
    let num_experts = topology.num_logical_experts();
    json!({
        "physical_to_logical_map": plan.phy2log(),
        "logical_to_physical_map": plan.log2phy(num_experts),
        "logical_replica_count": plan.logcnt(num_experts),
    })
}

/// TensorRT-LLM's `MoeLoadBalancerConfig` YAML with a static placement
/// (`layer_updates_per_iter: 0`): one flow-style list of expert ids per
/// MoE layer, keyed by absolute layer index, then one per MTP layer (the
/// last hidden layer's placement, see [`ModelLayout::mtp_layers`]). Written
/// by hand: the document is integers only, so no quoting can arise.
pub fn trtllm(topology: &Topology, plan: &Plan) -> Result<String, ExportError> {
    let layout = Engine::Trtllm.layout(topology)?;
    let moe_rows = plan.phy2log().iter();
    let mtp_rows = plan
        .phy2log()
        .last()
        .into_iter()
        .cycle()
        .take(layout.mtp_layers);
    let mut yaml = String::new();
    // `write!` into a String cannot fail; the results are discarded on purpose.
    let _ = writeln!(yaml, "num_slots: {}", topology.num_slots());
    yaml.push_str("layer_updates_per_iter: 0\n");
    yaml.push_str("initial_global_assignments:\n");
    for (offset, row) in moe_rows.chain(mtp_rows).enumerate() {
        let _ = write!(yaml, "  {}: [", layout.first_moe_layer + offset);
        for (slot, expert) in row.iter().enumerate() {
            if slot > 0 {
                yaml.push_str(", ");
            }
            let _ = write!(yaml, "{expert}");
        }
        yaml.push_str("]\n");
    }
    Ok(yaml)
}

/// Compact JSON (these tables run to tens of thousands of numbers) plus a newline.
fn json_text(value: &Value) -> String {
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// 2 MoE layers after 3 dense ones, one MTP layer; 4 experts on 2 GPUs × 3 slots.
    fn setup(layout: &str) -> (Topology, Plan) {
        let topology = Topology::from_json(&format!(
            r#"{{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3 {layout}}}"#
        ))
        .unwrap();
        let plan = Plan::new(
            vec![vec![0, 1, 2, 3, 0, 0], vec![3, 2, 1, 0, 1, 2]],
            None,
            &topology,
        )
        .unwrap();
        (topology, plan)
    }

    const DEEPSEEK_LIKE: &str =
        r#", "num_hidden_layers": 5, "first_moe_layer": 3, "mtp_layers": 1"#;

    #[test]
    fn sglang_has_a_row_per_hidden_layer_and_one_key() {
        let (topology, plan) = setup(DEEPSEEK_LIKE);
        let doc = sglang(&topology, &plan).unwrap();
        assert_eq!(doc.as_object().unwrap().len(), 1);
        let rows = doc["physical_to_logical_map"].as_array().unwrap();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0], json!([0, 1, 2, 3, 0, 1]));
        assert_eq!(rows[2], rows[0]);
        assert_eq!(rows[3], json!([0, 1, 2, 3, 0, 0]));
        assert_eq!(rows[4], json!([3, 2, 1, 0, 1, 2]));
    }

    #[test]
    fn engines_that_index_by_model_layer_need_the_layout() {
        let (topology, plan) = setup("");
        for engine in [Engine::Sglang, Engine::Trtllm] {
            let err = engine.render(&topology, &plan).unwrap_err().to_string();
            assert!(err.contains("`first_moe_layer`"), "{err}");
            assert!(err.starts_with(engine.name()), "{err}");
        }
        // vLLM counts MoE layers only.
        for engine in [Engine::Vllm, Engine::VllmEplbState] {
            assert!(engine.render(&topology, &plan).is_ok());
        }
        // An all-MoE model says 0 explicitly.
        let (topology, plan) = setup(r#", "first_moe_layer": 0"#);
        let doc = sglang(&topology, &plan).unwrap();
        assert_eq!(doc["physical_to_logical_map"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn vllm_is_a_bare_list_of_moe_layers() {
        let (topology, plan) = setup(DEEPSEEK_LIKE);
        let text = Engine::Vllm.render(&topology, &plan).unwrap();
        let rows: Vec<Vec<u32>> = serde_json::from_str(&text).unwrap();
        assert_eq!(rows, plan.phy2log());
    }

    #[test]
    fn vllm_eplb_state_tables_are_padded_and_counted() {
        let (topology, plan) = setup(DEEPSEEK_LIKE);
        let doc = vllm_eplb_state(&topology, &plan);
        assert_eq!(doc["physical_to_logical_map"].as_array().unwrap().len(), 2);
        // Widest expert: 0 has three replicas in layer 0.
        assert_eq!(doc["logical_to_physical_map"][0][0], json!([0, 4, 5]));
        assert_eq!(doc["logical_to_physical_map"][0][3], json!([3, -1, -1]));
        assert_eq!(doc["logical_to_physical_map"][1][2], json!([1, 5, -1]));
        assert_eq!(
            doc["logical_replica_count"],
            json!([[3, 1, 1, 1], [1, 2, 2, 1]])
        );
    }

    #[test]
    fn trtllm_yaml_keys_moe_then_mtp_layers() {
        #[derive(serde::Deserialize)]
        struct Config {
            num_slots: usize,
            layer_updates_per_iter: usize,
            initial_global_assignments: BTreeMap<usize, Vec<u32>>,
        }
        let (topology, plan) = setup(DEEPSEEK_LIKE);
        let config: Config = serde_norway::from_str(&trtllm(&topology, &plan).unwrap()).unwrap();
        assert_eq!(config.num_slots, 6);
        assert_eq!(config.layer_updates_per_iter, 0);
        let layers: Vec<_> = config.initial_global_assignments.keys().copied().collect();
        assert_eq!(layers, vec![3, 4, 5]);
        assert_eq!(
            config.initial_global_assignments[&4],
            vec![3, 2, 1, 0, 1, 2]
        );
        // The MTP layer reuses the last hidden layer's placement.
        assert_eq!(
            config.initial_global_assignments[&5],
            config.initial_global_assignments[&4]
        );
    }

    #[test]
    fn shares_are_reported_as_dropped() {
        let (topology, plan) = setup(DEEPSEEK_LIKE);
        assert!(!drops_shares(&plan));
        let shares = vec![
            vec![0.5, 1.0, 1.0, 1.0, 0.25, 0.25],
            vec![1.0, 0.5, 0.5, 1.0, 0.5, 0.5],
        ];
        let weighted = Plan::new(plan.phy2log().to_vec(), Some(shares), &topology).unwrap();
        assert!(drops_shares(&weighted));
        // The placement itself still exports.
        assert_eq!(vllm(&weighted), json!(plan.phy2log()));
    }

    #[test]
    fn engine_names_round_trip() {
        for engine in Engine::ALL {
            assert_eq!(Engine::parse(engine.name()), Some(engine));
        }
        assert_eq!(Engine::parse("native"), None);
    }
}
