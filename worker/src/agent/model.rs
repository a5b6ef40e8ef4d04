//! The model a node runs: its MoE layer shape (from the topology and the
//! command line) and seeded random weights, the same on every node.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use ballast_solver::Topology;

use super::error::AgentError;
use crate::error::ConfigError;
use crate::fp8::quant::ScaleMode;
use crate::moe::{LayerMaster, MoeConfig, MoeLayer, MoeSpec};
use crate::node::HostCopy;

/// Model settings not in the topology.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    pub hidden: usize,
    pub expert_width: usize,
    pub top_k: Option<usize>,
    pub topk_groups: Option<usize>,
    pub seed: u64,
}

/// The layer shape: experts and groups from the topology; `topk_groups`
/// defaults to half the groups and `top_k` to 8 (DeepSeek-V3's 4 of 8
/// groups, 8 experts) or half the experts of `topk_groups` groups if fewer,
/// so a token always has a choice.
pub fn moe_config(options: &ModelOptions, topology: &Topology) -> Result<MoeConfig, ConfigError> {
    let groups = topology.num_groups();
    let topk_groups = options.topk_groups.unwrap_or((groups / 2).max(1));
    let reachable = topk_groups.min(groups) * topology.experts_per_group();
    MoeConfig::new(MoeSpec {
        hidden: options.hidden,
        expert_width: options.expert_width,
        num_experts: topology.num_logical_experts(),
        num_groups: groups,
        topk_groups,
        top_k: options.top_k.unwrap_or((reachable / 2).clamp(1, 8)),
        routed_scaling: 2.5,
    })
}

/// Each layer's FP8 gate and shared expert, and the routed experts' host
/// copy, from `seed`.
pub fn build(
    config: &MoeConfig,
    layers: usize,
    seed: u64,
) -> Result<(Vec<MoeLayer>, HostCopy), AgentError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut moe_layers = Vec::with_capacity(layers);
    let mut experts = Vec::with_capacity(layers);
    for _ in 0..layers {
        let (layer, routed) = LayerMaster::random(config, &mut rng).quantize(ScaleMode::Exact)?;
        moe_layers.push(layer);
        experts.push(routed);
    }
    Ok((moe_layers, HostCopy::new(experts)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ModelOptions {
        ModelOptions {
            hidden: 128,
            expert_width: 128,
            top_k: None,
            topk_groups: None,
            seed: 1,
        }
    }

    #[test]
    fn routing_defaults_follow_the_topology() {
        let t = Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 16, "num_groups": 4,
                "num_nodes": 2, "gpus_per_node": 2, "slots_per_gpu": 5}"#,
        )
        .unwrap();
        let c = moe_config(&options(), &t).unwrap();
        assert_eq!((c.topk_groups(), c.top_k()), (2, 4));
        let mut narrow = options();
        narrow.topk_groups = Some(1);
        let c = moe_config(&narrow, &t).unwrap();
        assert_eq!((c.topk_groups(), c.top_k()), (1, 2));
        narrow.hidden = 100;
        assert_eq!(moe_config(&narrow, &t).unwrap_err().field, "hidden");
    }

    #[test]
    fn the_same_seed_builds_the_same_weights() {
        let t = Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 1, "slots_per_gpu": 4}"#,
        )
        .unwrap();
        let c = moe_config(&options(), &t).unwrap();
        let (_, a) = build(&c, 1, 5).unwrap();
        let (_, b) = build(&c, 1, 5).unwrap();
        assert_eq!(a.expert(0, 3).checksum(), b.expert(0, 3).checksum());
        assert_eq!(a.num_experts(), 4);
    }
}
