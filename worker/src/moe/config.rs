//! The shape of an MoE layer and its routing rule.

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::fp8::quant::BLOCK;

/// The wire form of an MoE layer's configuration; [`MoeConfig::new`] checks it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoeSpec {
    /// Model width (gate and expert input, expert output); a multiple of 128.
    pub hidden: usize,
    /// Intermediate width of each SwiGLU expert; a multiple of 128.
    pub expert_width: usize,
    /// Routed (logical) experts.
    pub num_experts: usize,
    /// Expert groups for group-limited routing; divides `num_experts`.
    pub num_groups: usize,
    /// Groups a token may use.
    pub topk_groups: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Factor applied to the normalized gates (2.5 in DeepSeek-V3).
    pub routed_scaling: f32,
}

/// A checked [`MoeSpec`]: widths are multiples of 128, groups divide the
/// experts, and `top_k` experts fit into `topk_groups` groups.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    spec: MoeSpec,
}

impl MoeConfig {
    pub fn new(spec: MoeSpec) -> Result<Self, ConfigError> {
        for (field, value) in [("hidden", spec.hidden), ("expert_width", spec.expert_width)] {
            if value == 0 || !value.is_multiple_of(BLOCK) {
                return Err(ConfigError::new(
                    field,
                    format!("{value} is not a positive multiple of {BLOCK}"),
                ));
            }
        }
        if spec.num_experts == 0
            || spec.num_groups == 0
            || !spec.num_experts.is_multiple_of(spec.num_groups)
        {
            return Err(ConfigError::new(
                "num_groups",
                format!(
                    "{} groups must divide {} experts",
                    spec.num_groups, spec.num_experts
                ),
            ));
        }
        if spec.num_experts > u32::MAX as usize {
            return Err(ConfigError::new("num_experts", "too many experts"));
        }
        if spec.topk_groups == 0 || spec.topk_groups > spec.num_groups {
            return Err(ConfigError::new(
                "topk_groups",
                format!("{} is not in 1..={}", spec.topk_groups, spec.num_groups),
            ));
        }
        let reachable = spec.topk_groups * (spec.num_experts / spec.num_groups);
        if spec.top_k == 0 || spec.top_k > reachable {
            return Err(ConfigError::new(
                "top_k",
                format!(
                    "{} is not in 1..={reachable} (experts in {} groups)",
                    spec.top_k, spec.topk_groups
                ),
            ));
        }
        if !(spec.routed_scaling.is_finite() && spec.routed_scaling > 0.0) {
            return Err(ConfigError::new(
                "routed_scaling",
                format!("{} is not a finite positive number", spec.routed_scaling),
            ));
        }
        Ok(MoeConfig { spec })
    }

    /// DeepSeek-V3's MoE layer: hidden 7168, expert width 2048, 256 experts in
    /// 8 groups, 4 groups and 8 experts per token, gates scaled by 2.5.
    pub fn deepseek_v3() -> Self {
        MoeConfig {
            spec: MoeSpec {
                hidden: 7168,
                expert_width: 2048,
                num_experts: 256,
                num_groups: 8,
                topk_groups: 4,
                top_k: 8,
                routed_scaling: 2.5,
            },
        }
    }

    pub fn spec(&self) -> &MoeSpec {
        &self.spec
    }

    pub fn hidden(&self) -> usize {
        self.spec.hidden
    }

    pub fn expert_width(&self) -> usize {
        self.spec.expert_width
    }

    pub fn num_experts(&self) -> usize {
        self.spec.num_experts
    }

    pub fn num_groups(&self) -> usize {
        self.spec.num_groups
    }

    /// Experts per group.
    pub fn group_size(&self) -> usize {
        self.spec.num_experts / self.spec.num_groups
    }

    pub fn topk_groups(&self) -> usize {
        self.spec.topk_groups
    }

    pub fn top_k(&self) -> usize {
        self.spec.top_k
    }

    pub fn routed_scaling(&self) -> f32 {
        self.spec.routed_scaling
    }
}

#[cfg(test)]
pub(crate) fn small_spec() -> MoeSpec {
    MoeSpec {
        hidden: 256,
        expert_width: 128,
        num_experts: 16,
        num_groups: 4,
        topk_groups: 2,
        top_k: 4,
        routed_scaling: 2.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_deepseek_v3_and_small_shapes() {
        assert_eq!(
            MoeConfig::new(MoeConfig::deepseek_v3().spec().clone()),
            Ok(MoeConfig::deepseek_v3())
        );
        let c = MoeConfig::new(small_spec()).unwrap();
        assert_eq!(c.group_size(), 4);
    }

    #[test]
    fn rejects_impossible_shapes() {
        let bad = |f: fn(&mut MoeSpec)| {
            let mut s = small_spec();
            f(&mut s);
            MoeConfig::new(s).unwrap_err().field
        };
        assert_eq!(bad(|s| s.hidden = 100), "hidden");
        assert_eq!(bad(|s| s.expert_width = 0), "expert_width");
        assert_eq!(bad(|s| s.num_groups = 3), "num_groups");
        assert_eq!(bad(|s| s.topk_groups = 5), "topk_groups");
        assert_eq!(bad(|s| s.top_k = 9), "top_k");
        assert_eq!(bad(|s| s.routed_scaling = f32::NAN), "routed_scaling");
    }
}
