//! The cluster shape a plan is made for.

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// A validated cluster topology: `N` nodes × `G` GPUs × `S` slots serving `L`
/// MoE layers of `E` logical experts split into `K` equal groups.
///
/// Invariants (checked once in [`Topology::new`]): every count is positive,
/// `K` divides `E`, there are at least `E` slots, `gpu_speed` holds `N*G`
/// finite positive numbers, and a model layout, when given, places the `L`
/// MoE layers last among the hidden layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    num_layers: usize,
    num_logical_experts: usize,
    num_groups: usize,
    num_nodes: usize,
    gpus_per_node: usize,
    slots_per_gpu: usize,
    gpu_speed: Vec<f64>,
    uniform_speed: bool,
    expert_bytes: Option<u64>,
    layout: Option<ModelLayout>,
}

/// Where the MoE layers sit among the model's layers. Engines index plans by
/// model layer (SGLang's rows, TensorRT-LLM's keys), so exports need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLayout {
    /// Hidden (decoder) layers of the model (DeepSeek-V3/R1: 61).
    pub num_hidden_layers: usize,
    /// Dense layers before the first MoE layer (DeepSeek-V3/R1: 3); the MoE
    /// layers are `first_moe_layer..num_hidden_layers`.
    pub first_moe_layer: usize,
    /// MoE layers after the hidden ones (DeepSeek-V3/R1: one MTP layer).
    /// Ballast has no load of their own: each reuses the placement of the
    /// last hidden MoE layer, the layer it is built on.
    pub mtp_layers: usize,
}

/// The wire form of `topology.json` (SPEC); only [`Topology`] leaves this module.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologySpec {
    pub num_layers: i64,
    pub num_logical_experts: i64,
    pub num_groups: i64,
    pub num_nodes: i64,
    pub gpus_per_node: i64,
    pub slots_per_gpu: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_speed: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_hidden_layers: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_moe_layer: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtp_layers: Option<i64>,
}

fn positive(field: &str, value: i64) -> Result<usize, ParseError> {
    if value <= 0 {
        return Err(ParseError::field(
            field,
            format!("must be positive, got {value}"),
        ));
    }
    usize::try_from(value).map_err(|_| ParseError::field(field, "too large"))
}

impl Topology {
    /// Parses `topology.json` text.
    pub fn from_json(text: &str) -> Result<Self, ParseError> {
        let spec: TopologySpec = serde_json::from_str(text).map_err(|e| ParseError::Malformed {
            what: "topology JSON",
            detail: e.to_string(),
        })?;
        Self::new(spec)
    }

    /// Checks a [`TopologySpec`] and turns it into a `Topology`.
    pub fn new(spec: TopologySpec) -> Result<Self, ParseError> {
        let num_layers = positive("num_layers", spec.num_layers)?;
        let num_logical_experts = positive("num_logical_experts", spec.num_logical_experts)?;
        let num_groups = positive("num_groups", spec.num_groups)?;
        let num_nodes = positive("num_nodes", spec.num_nodes)?;
        let gpus_per_node = positive("gpus_per_node", spec.gpus_per_node)?;
        let slots_per_gpu = positive("slots_per_gpu", spec.slots_per_gpu)?;
        if num_logical_experts % num_groups != 0 {
            return Err(ParseError::field(
                "num_groups",
                format!("{num_groups} groups do not divide {num_logical_experts} experts evenly"),
            ));
        }
        let num_gpus = num_nodes
            .checked_mul(gpus_per_node)
            .ok_or_else(|| ParseError::field("gpus_per_node", "too many GPUs"))?;
        let num_slots = num_gpus
            .checked_mul(slots_per_gpu)
            .filter(|&p| p <= u32::MAX as usize)
            .ok_or_else(|| ParseError::field("slots_per_gpu", "too many slots"))?;
        if num_slots < num_logical_experts {
            return Err(ParseError::field(
                "slots_per_gpu",
                format!(
                    "{num_nodes} nodes x {gpus_per_node} GPUs x {slots_per_gpu} slots = {num_slots} slots cannot hold {num_logical_experts} experts"
                ),
            ));
        }
        if num_logical_experts > u32::MAX as usize {
            return Err(ParseError::field("num_logical_experts", "too many experts"));
        }
        let gpu_speed = match spec.gpu_speed {
            None => vec![1.0; num_gpus],
            Some(speeds) => {
                if speeds.len() != num_gpus {
                    return Err(ParseError::field(
                        "gpu_speed",
                        format!(
                            "has {} entries, expected {num_gpus} (one per GPU)",
                            speeds.len()
                        ),
                    ));
                }
                if let Some((g, s)) = speeds
                    .iter()
                    .enumerate()
                    .find(|(_, s)| !(s.is_finite() && **s > 0.0))
                {
                    return Err(ParseError::field(
                        format!("gpu_speed[{g}]"),
                        format!("must be a finite positive number, got {s}"),
                    ));
                }
                speeds
            }
        };
        let uniform_speed = gpu_speed.iter().all(|&s| s == gpu_speed[0]);
        let expert_bytes = match spec.expert_bytes {
            None => None,
            Some(b) if b < 0 => {
                return Err(ParseError::field(
                    "expert_bytes",
                    format!("must not be negative, got {b}"),
                ))
            }
            Some(b) => Some(b as u64),
        };
        let layout = ModelLayout::parse(
            num_layers,
            spec.num_hidden_layers,
            spec.first_moe_layer,
            spec.mtp_layers,
        )?;
        Ok(Topology {
            num_layers,
            num_logical_experts,
            num_groups,
            num_nodes,
            gpus_per_node,
            slots_per_gpu,
            gpu_speed,
            uniform_speed,
            expert_bytes,
            layout,
        })
    }

    /// The wire form, for writing the topology back out.
    pub fn to_spec(&self) -> TopologySpec {
        TopologySpec {
            num_layers: self.num_layers as i64,
            num_logical_experts: self.num_logical_experts as i64,
            num_groups: self.num_groups as i64,
            num_nodes: self.num_nodes as i64,
            gpus_per_node: self.gpus_per_node as i64,
            slots_per_gpu: self.slots_per_gpu as i64,
            gpu_speed: (!self.uniform_speed || self.gpu_speed[0] != 1.0)
                .then(|| self.gpu_speed.clone()),
            expert_bytes: self.expert_bytes.map(|b| b as i64),
            num_hidden_layers: self.layout.map(|l| l.num_hidden_layers as i64),
            first_moe_layer: self.layout.map(|l| l.first_moe_layer as i64),
            mtp_layers: self
                .layout
                .filter(|l| l.mtp_layers > 0)
                .map(|l| l.mtp_layers as i64),
        }
    }

    pub fn num_layers(&self) -> usize {
        self.num_layers
    }
    pub fn num_logical_experts(&self) -> usize {
        self.num_logical_experts
    }
    pub fn num_groups(&self) -> usize {
        self.num_groups
    }
    pub fn num_nodes(&self) -> usize {
        self.num_nodes
    }
    pub fn gpus_per_node(&self) -> usize {
        self.gpus_per_node
    }
    pub fn slots_per_gpu(&self) -> usize {
        self.slots_per_gpu
    }
    pub fn num_gpus(&self) -> usize {
        self.num_nodes * self.gpus_per_node
    }
    /// Physical slots in the whole cluster (`N*G*S`).
    pub fn num_slots(&self) -> usize {
        self.num_gpus() * self.slots_per_gpu
    }
    /// Slots on one node (`G*S`).
    pub fn slots_per_node(&self) -> usize {
        self.gpus_per_node * self.slots_per_gpu
    }
    pub fn experts_per_group(&self) -> usize {
        self.num_logical_experts / self.num_groups
    }
    pub fn group_of_expert(&self, expert: usize) -> usize {
        expert / self.experts_per_group()
    }
    pub fn gpu_of_slot(&self, slot: usize) -> usize {
        slot / self.slots_per_gpu
    }
    pub fn node_of_gpu(&self, gpu: usize) -> usize {
        gpu / self.gpus_per_node
    }
    /// Relative throughput of each GPU (1.0 unless the topology says otherwise).
    pub fn gpu_speed(&self) -> &[f64] {
        &self.gpu_speed
    }
    /// True when every GPU has the same speed (lets planners skip weighting).
    pub fn has_uniform_speed(&self) -> bool {
        self.uniform_speed
    }
    pub fn total_speed(&self) -> f64 {
        self.gpu_speed.iter().sum()
    }
    pub fn expert_bytes(&self) -> Option<u64> {
        self.expert_bytes
    }
    /// Dense layers before the first MoE layer: 0 unless the topology
    /// gives a [`ModelLayout`].
    pub fn first_moe_layer(&self) -> usize {
        self.layout.map_or(0, |l| l.first_moe_layer)
    }
    /// The model's layer layout, when the topology gives `first_moe_layer`.
    pub fn layout(&self) -> Option<ModelLayout> {
        self.layout
    }
    /// Node-local (hierarchical) placement is possible when whole groups
    /// divide evenly among the nodes (SPEC: `K % N == 0`).
    pub fn supports_hierarchical(&self) -> bool {
        self.num_groups.is_multiple_of(self.num_nodes)
    }
}

impl ModelLayout {
    /// The layout fields of `topology.json`: none, or at least
    /// `first_moe_layer` (0 is a real answer for all-MoE models, so it is
    /// never assumed); `num_hidden_layers` defaults to
    /// `first_moe_layer + num_layers` and must equal it when given.
    fn parse(
        num_layers: usize,
        num_hidden_layers: Option<i64>,
        first_moe_layer: Option<i64>,
        mtp_layers: Option<i64>,
    ) -> Result<Option<Self>, ParseError> {
        let Some(first) = first_moe_layer else {
            if let Some(field) = [
                ("num_hidden_layers", num_hidden_layers),
                ("mtp_layers", mtp_layers),
            ]
            .into_iter()
            .find_map(|(name, value)| value.map(|_| name))
            {
                return Err(ParseError::field(
                    field,
                    "needs `first_moe_layer` (dense layers before the first MoE layer) beside it",
                ));
            }
            return Ok(None);
        };
        let first_moe_layer = not_negative("first_moe_layer", first)?;
        let moe_end = first_moe_layer
            .checked_add(num_layers)
            .ok_or_else(|| ParseError::field("first_moe_layer", "too large"))?;
        let num_hidden_layers = match num_hidden_layers {
            None => moe_end,
            Some(h) => {
                let h = not_negative("num_hidden_layers", h)?;
                if h != moe_end {
                    return Err(ParseError::field(
                        "num_hidden_layers",
                        format!(
                            "is {h}, but first_moe_layer {first_moe_layer} + num_layers {num_layers} MoE layers = {moe_end} (the MoE layers must be the last hidden layers)"
                        ),
                    ));
                }
                h
            }
        };
        let mtp_layers = mtp_layers.map_or(Ok(0), |m| not_negative("mtp_layers", m))?;
        Ok(Some(ModelLayout {
            num_hidden_layers,
            first_moe_layer,
            mtp_layers,
        }))
    }
}

fn not_negative(field: &str, value: i64) -> Result<usize, ParseError> {
    usize::try_from(value)
        .map_err(|_| ParseError::field(field, format!("must not be negative, got {value}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFILL: &str = r#"{"num_layers": 58, "num_logical_experts": 256, "num_groups": 8,
        "num_nodes": 4, "gpus_per_node": 8, "slots_per_gpu": 9}"#;

    #[test]
    fn parses_prefill() {
        let t = Topology::from_json(PREFILL).unwrap();
        assert_eq!(t.num_slots(), 288);
        assert_eq!(t.num_gpus(), 32);
        assert_eq!(t.experts_per_group(), 32);
        assert!(t.supports_hierarchical());
        assert_eq!(t.gpu_speed().len(), 32);
        assert_eq!(t.gpu_of_slot(17), 1);
        assert_eq!(t.node_of_gpu(9), 1);
    }

    #[test]
    fn rejects_too_few_slots() {
        let text = r#"{"num_layers": 1, "num_logical_experts": 64, "num_groups": 8,
            "num_nodes": 1, "gpus_per_node": 4, "slots_per_gpu": 10}"#;
        let err = Topology::from_json(text).unwrap_err().to_string();
        assert!(err.contains("slots_per_gpu"), "{err}");
    }

    #[test]
    fn rejects_bad_speed_and_groups() {
        let text = r#"{"num_layers": 1, "num_logical_experts": 64, "num_groups": 7,
            "num_nodes": 1, "gpus_per_node": 8, "slots_per_gpu": 10}"#;
        assert!(Topology::from_json(text)
            .unwrap_err()
            .to_string()
            .contains("num_groups"));
        let text = r#"{"num_layers": 1, "num_logical_experts": 8, "num_groups": 1,
            "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 4, "gpu_speed": [1.0, -1]}"#;
        assert!(Topology::from_json(text)
            .unwrap_err()
            .to_string()
            .contains("gpu_speed[1]"));
        let text = r#"{"num_layers": 0, "num_logical_experts": 8, "num_groups": 1,
            "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 4}"#;
        assert!(Topology::from_json(text)
            .unwrap_err()
            .to_string()
            .contains("num_layers"));
    }

    fn with_layout(fields: &str) -> Result<Topology, ParseError> {
        Topology::from_json(&format!(
            r#"{{"num_layers": 58, "num_logical_experts": 256, "num_groups": 8,
                "num_nodes": 4, "gpus_per_node": 8, "slots_per_gpu": 9 {fields}}}"#
        ))
    }

    #[test]
    fn layout_is_explicit_or_absent() {
        assert_eq!(with_layout("").unwrap().layout(), None);
        let deepseek =
            with_layout(r#", "num_hidden_layers": 61, "first_moe_layer": 3, "mtp_layers": 1"#)
                .unwrap();
        assert_eq!(
            deepseek.layout(),
            Some(ModelLayout {
                num_hidden_layers: 61,
                first_moe_layer: 3,
                mtp_layers: 1
            })
        );
        // All-MoE models say 0 and get 58 hidden layers.
        let all_moe = with_layout(r#", "first_moe_layer": 0"#).unwrap();
        assert_eq!(all_moe.layout().unwrap().num_hidden_layers, 58);
        // The layout survives the round trip, 0 included.
        for t in [deepseek, all_moe] {
            assert_eq!(Topology::new(t.to_spec()).unwrap(), t);
        }
    }

    #[test]
    fn layout_rejects_what_does_not_add_up() {
        for (fields, field) in [
            (r#", "num_hidden_layers": 61"#, "num_hidden_layers"),
            (r#", "mtp_layers": 1"#, "mtp_layers"),
            (
                r#", "num_hidden_layers": 60, "first_moe_layer": 3"#,
                "num_hidden_layers",
            ),
            (r#", "first_moe_layer": -1"#, "first_moe_layer"),
            (r#", "first_moe_layer": 3, "mtp_layers": -2"#, "mtp_layers"),
        ] {
            let err = with_layout(fields).unwrap_err().to_string();
            assert!(err.contains(field), "{fields}: {err}");
        }
    }
}
