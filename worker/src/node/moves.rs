//! Which slots of a node change under a new plan, and where each new
//! expert's bytes come from.
//!
//! Per GPU, a slot whose expert is unchanged keeps its bytes. Every other
//! slot is filled from the cheapest source that holds the expert in the
//! *old* state (the new state is built beside the old one, so copies never
//! read half-written slots): another slot of the same GPU (a device-local
//! copy), else another GPU of this node (over the intra-node links), else the
//! host copy of the model (host-to-device, which for a real cluster also
//! stands for a cross-node fetch). Peer sources are spread: each copy reads
//! from the peer that has served the fewest copies so far.

use serde::Serialize;

use crate::node::shape::NodeShape;

/// Where a slot's new bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Another slot (old state) of the same GPU.
    SameGpu { slot: usize },
    /// A slot (old state) of another GPU of this node.
    PeerGpu { gpu: usize, slot: usize },
    /// The host's copy of the model.
    Host,
}

/// One slot to refill. `gpu` and `slot` are node-local indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Move {
    pub layer: usize,
    pub gpu: usize,
    pub slot: usize,
    pub expert: u32,
    pub source: Source,
}

/// The moves that turn `old` into `new` for one layer of this node; both are
/// the node's `gpus × slots` slice of `phy2log`, GPU-major.
///
/// # Panics
/// If a slice does not have `gpus × slots` entries (callers slice validated
/// placements).
pub fn layer_moves(shape: &NodeShape, layer: usize, old: &[u32], new: &[u32]) -> Vec<Move> {
    let per_gpu = shape.slots_per_gpu();
    assert_eq!(old.len(), shape.local_slots(), "old slice length");
    assert_eq!(new.len(), shape.local_slots(), "new slice length");
    let mut served = vec![0usize; shape.gpus_per_node()];
    let mut moves = Vec::new();
    for (gpu, (old_gpu, new_gpu)) in old.chunks(per_gpu).zip(new.chunks(per_gpu)).enumerate() {
        for (slot, (&was, &expert)) in old_gpu.iter().zip(new_gpu).enumerate() {
            if was == expert {
                continue;
            }
            let source = if let Some(s) = old_gpu.iter().position(|&e| e == expert) {
                Source::SameGpu { slot: s }
            } else {
                old.chunks(per_gpu)
                    .enumerate()
                    .filter_map(|(g, slots)| {
                        slots.iter().position(|&e| e == expert).map(|s| (g, s))
                    })
                    .min_by_key(|&(g, _)| (served[g], g))
                    .map_or(Source::Host, |(g, s)| {
                        served[g] += 1;
                        Source::PeerGpu { gpu: g, slot: s }
                    })
            };
            moves.push(Move {
                layer,
                gpu,
                slot,
                expert,
                source,
            });
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shape() -> NodeShape {
        NodeShape::new(0, 1, 2, 3).unwrap()
    }

    #[test]
    fn sources_prefer_same_gpu_then_peer_then_host() {
        // GPU 0: [0, 1, 2] -> [0, 2, 3]; GPU 1: [4, 5, 6] -> [1, 5, 9]
        let moves = layer_moves(&shape(), 7, &[0, 1, 2, 4, 5, 6], &[0, 2, 3, 1, 5, 9]);
        assert_eq!(
            moves,
            vec![
                Move {
                    layer: 7,
                    gpu: 0,
                    slot: 1,
                    expert: 2,
                    source: Source::SameGpu { slot: 2 }
                },
                Move {
                    layer: 7,
                    gpu: 0,
                    slot: 2,
                    expert: 3,
                    source: Source::Host
                },
                Move {
                    layer: 7,
                    gpu: 1,
                    slot: 0,
                    expert: 1,
                    source: Source::PeerGpu { gpu: 0, slot: 1 }
                },
                Move {
                    layer: 7,
                    gpu: 1,
                    slot: 2,
                    expert: 9,
                    source: Source::Host
                },
            ]
        );
    }

    #[test]
    fn unchanged_layer_has_no_moves() {
        let row = [3, 1, 4, 1, 5, 9];
        assert!(layer_moves(&shape(), 0, &row, &row).is_empty());
    }

    #[test]
    fn peer_copies_are_spread_over_holders() {
        let shape = NodeShape::new(0, 1, 3, 2).unwrap();
        // Experts 7 and 8 are on both GPU 0 and GPU 1; GPU 2 needs both.
        let moves = layer_moves(&shape, 0, &[7, 8, 7, 8, 0, 1], &[7, 8, 7, 8, 7, 8]);
        let sources: Vec<Source> = moves.iter().map(|m| m.source).collect();
        assert_eq!(
            sources,
            vec![
                Source::PeerGpu { gpu: 0, slot: 0 },
                Source::PeerGpu { gpu: 1, slot: 1 }
            ]
        );
    }

    proptest! {
        /// Applying the moves to the old slice yields the new slice, and every
        /// source really held the expert.
        #[test]
        fn moves_rebuild_the_new_slice(
            old in prop::collection::vec(0u32..6, 6),
            new in prop::collection::vec(0u32..6, 6),
        ) {
            let moves = layer_moves(&shape(), 0, &old, &new);
            let mut rebuilt = old.clone();
            for m in &moves {
                let held = match m.source {
                    Source::SameGpu { slot } => Some(old[m.gpu * 3 + slot]),
                    Source::PeerGpu { gpu, slot } => {
                        prop_assert_ne!(gpu, m.gpu);
                        Some(old[gpu * 3 + slot])
                    }
                    Source::Host => {
                        prop_assert!(!old.contains(&m.expert));
                        None
                    }
                };
                if let Some(e) = held {
                    prop_assert_eq!(e, m.expert);
                }
                rebuilt[m.gpu * 3 + m.slot] = m.expert;
            }
            prop_assert_eq!(rebuilt, new);
        }
    }
}
