//! A plan in the formats inference engines read at start-up.
//!
//! Every engine takes the same core table — `physical_to_logical_map[layer][slot]`
//! — but they disagree on the layer axis and on the side tables:
//!
//! * **SGLang** (`--init-expert-location FILE.json`) accepts exactly one key,
//!   `physical_to_logical_map`, and its layer axis counts *all* model layers:
//!   the `first_moe_layer` dense layers come first as trivial rows.
//! * **vLLM** counts MoE layers only and wants `logical_to_physical_map`
//!   (`[L][E][R]`, `-1` padded) and `logical_replica_count` (`[L][E]`) beside it.
//! * **TensorRT-LLM** reads YAML: `num_slots`, `layer_updates_per_iter` and
//!   `initial_global_assignments` keyed by the absolute layer index.
//!
//! No engine can split an expert's tokens unevenly among its replicas, so a
//! plan's `replica_share` is not exported; callers should warn about it
//! (see [`drops_shares`]).

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::plan::{self, Plan};
use crate::topology::Topology;

/// An engine whose start-up plan format Ballast can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    Sglang,
    Vllm,
    Trtllm,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::Sglang, Engine::Vllm, Engine::Trtllm];

    /// The name used on the command line and in the service.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sglang => "sglang",
            Engine::Vllm => "vllm",
            Engine::Trtllm => "trtllm",
        }
    }

    pub fn parse(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The plan as the text of this engine's file.
    pub fn render(self, topology: &Topology, plan: &Plan) -> String {
        match self {
            Engine::Sglang => json_text(&sglang(topology, plan)),
            Engine::Vllm => json_text(&vllm(topology, plan)),
            Engine::Trtllm => trtllm(topology, plan),
        }
    }
}

/// True when exporting `plan` loses information: engines split evenly.
pub fn drops_shares(plan: &Plan) -> bool {
    plan.replica_share().is_some()
}

/// SGLang's `--init-expert-location` document. Dense layers before
/// `first_moe_layer` get the linear row ([`plan::linear_row`]):
/// SGLang indexes the map by model layer and never reads those rows.
pub fn sglang(topology: &Topology, plan: &Plan) -> Value {
    let trivial = plan::linear_row(topology);
    let rows: Vec<&[u32]> = std::iter::repeat_n(trivial.as_slice(), topology.first_moe_layer())
        .chain(plan.phy2log().iter().map(Vec::as_slice))
        .collect();
    json!({ "physical_to_logical_map": rows })
}

/// vLLM's expert-placement tables (MoE layers only).
pub fn vllm(topology: &Topology, plan: &Plan) -> Value {
    let num_experts = topology.num_logical_experts();
    json!({
        "physical_to_logical_map": plan.phy2log(),
        "logical_to_physical_map": plan.log2phy(num_experts),
        "logical_replica_count": plan.logcnt(num_experts),
    })
}

/// TensorRT-LLM's `MoeLoadBalancerConfig` YAML with a static placement
/// (`layer_updates_per_iter: 0`): one flow-style list of expert ids per
/// layer, keyed by absolute layer index. Written by hand: the document is
/// integers only, so no quoting or escaping can arise.
pub fn trtllm(topology: &Topology, plan: &Plan) -> String {
    let mut yaml = String::new();
    // `write!` into a String cannot fail; the results are discarded on purpose.
    let _ = writeln!(yaml, "num_slots: {}", topology.num_slots());
    yaml.push_str("layer_updates_per_iter: 0\n");
    yaml.push_str("initial_global_assignments:\n");
    for (layer, row) in plan.phy2log().iter().enumerate() {
        let _ = write!(yaml, "  {}: [", topology.first_moe_layer() + layer);
        for (slot, expert) in row.iter().enumerate() {
            if slot > 0 {
                yaml.push_str(", ");
            }
            let _ = write!(yaml, "{expert}");
        }
        yaml.push_str("]\n");
    }
    yaml
}

/// Compact JSON (these tables run to tens of thousands of numbers) plus a newline.
fn json_text(value: &Value) -> String {
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// 2 layers after 3 dense ones; 4 experts on 2 GPUs × 3 slots.
    fn setup() -> (Topology, Plan) {
        let topology = Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3,
                "first_moe_layer": 3}"#,
        )
        .unwrap();
        let plan = Plan::new(
            vec![vec![0, 1, 2, 3, 0, 0], vec![3, 2, 1, 0, 1, 2]],
            None,
            &topology,
        )
        .unwrap();
        (topology, plan)
    }

    #[test]
    fn sglang_prepends_dense_layers_and_has_one_key() {
        let (topology, plan) = setup();
        let doc = sglang(&topology, &plan);
        assert_eq!(doc.as_object().unwrap().len(), 1);
        let rows = doc["physical_to_logical_map"].as_array().unwrap();
        assert_eq!(rows.len(), 3 + 2);
        assert_eq!(rows[0], json!([0, 1, 2, 3, 0, 1]));
        assert_eq!(rows[2], rows[0]);
        assert_eq!(rows[3], json!([0, 1, 2, 3, 0, 0]));
        assert_eq!(rows[4], json!([3, 2, 1, 0, 1, 2]));
    }

    #[test]
    fn vllm_tables_are_padded_and_counted() {
        let (topology, plan) = setup();
        let doc = vllm(&topology, &plan);
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
    fn trtllm_yaml_parses_with_absolute_layers() {
        #[derive(serde::Deserialize)]
        struct Config {
            num_slots: usize,
            layer_updates_per_iter: usize,
            initial_global_assignments: BTreeMap<usize, Vec<u32>>,
        }
        let (topology, plan) = setup();
        let config: Config = serde_norway::from_str(&trtllm(&topology, &plan)).unwrap();
        assert_eq!(config.num_slots, 6);
        assert_eq!(config.layer_updates_per_iter, 0);
        let layers: Vec<_> = config.initial_global_assignments.keys().copied().collect();
        assert_eq!(layers, vec![3, 4]);
        assert_eq!(
            config.initial_global_assignments[&4],
            vec![3, 2, 1, 0, 1, 2]
        );
    }

    #[test]
    fn shares_are_reported_as_dropped() {
        let (topology, plan) = setup();
        assert!(!drops_shares(&plan));
        let shares = vec![
            vec![0.5, 1.0, 1.0, 1.0, 0.25, 0.25],
            vec![1.0, 0.5, 0.5, 1.0, 0.5, 0.5],
        ];
        let weighted = Plan::new(plan.phy2log().to_vec(), Some(shares), &topology).unwrap();
        assert!(drops_shares(&weighted));
        // The placement itself still exports.
        assert_eq!(
            vllm(&topology, &weighted)["physical_to_logical_map"],
            json!(plan.phy2log())
        );
    }

    #[test]
    fn engine_names_round_trip() {
        for engine in Engine::ALL {
            assert_eq!(Engine::parse(engine.name()), Some(engine));
        }
        assert_eq!(Engine::parse("native"), None);
    }
}
