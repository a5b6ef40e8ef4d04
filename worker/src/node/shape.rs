//! Which part of the cluster this node is.

use crate::error::ConfigError;

/// Node `node` of `num_nodes`, each with `gpus_per_node` GPUs of
/// `slots_per_gpu` slots. Physical slot `p` of a layer lives on global GPU
/// `p / slots_per_gpu`, which lives on node `gpu / gpus_per_node` (SPEC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeShape {
    node: usize,
    num_nodes: usize,
    gpus_per_node: usize,
    slots_per_gpu: usize,
}

impl NodeShape {
    pub fn new(
        node: usize,
        num_nodes: usize,
        gpus_per_node: usize,
        slots_per_gpu: usize,
    ) -> Result<Self, ConfigError> {
        for (field, value) in [
            ("num_nodes", num_nodes),
            ("gpus_per_node", gpus_per_node),
            ("slots_per_gpu", slots_per_gpu),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, "must be positive"));
            }
        }
        if node >= num_nodes {
            return Err(ConfigError::new(
                "node",
                format!("{node} is not below {num_nodes} nodes"),
            ));
        }
        num_nodes
            .checked_mul(gpus_per_node)
            .and_then(|g| g.checked_mul(slots_per_gpu))
            .ok_or_else(|| ConfigError::new("slots_per_gpu", "too many slots"))?;
        Ok(NodeShape {
            node,
            num_nodes,
            gpus_per_node,
            slots_per_gpu,
        })
    }

    pub fn node(&self) -> usize {
        self.node
    }

    pub fn gpus_per_node(&self) -> usize {
        self.gpus_per_node
    }

    pub fn slots_per_gpu(&self) -> usize {
        self.slots_per_gpu
    }

    /// Physical slots per layer in the whole cluster.
    pub fn cluster_slots(&self) -> usize {
        self.num_nodes * self.gpus_per_node * self.slots_per_gpu
    }

    /// Slots per layer on this node.
    pub fn local_slots(&self) -> usize {
        self.gpus_per_node * self.slots_per_gpu
    }

    /// This node's physical slot indices.
    pub fn slot_range(&self) -> std::ops::Range<usize> {
        let start = self.node * self.local_slots();
        start..start + self.local_slots()
    }

    /// Global index of local GPU `gpu`.
    pub fn global_gpu(&self, gpu: usize) -> usize {
        self.node * self.gpus_per_node + gpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_the_spec_numbering() {
        let s = NodeShape::new(1, 2, 4, 3).unwrap();
        assert_eq!(s.cluster_slots(), 24);
        assert_eq!(s.slot_range(), 12..24);
        assert_eq!(s.global_gpu(2), 6);
        assert!(NodeShape::new(2, 2, 4, 3).is_err());
        assert!(NodeShape::new(0, 1, 0, 3).is_err());
    }
}
