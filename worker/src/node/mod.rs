//! A node's expert weights: `G` simulated GPUs × `S` slots per MoE layer,
//! each slot holding real FP8 weights and scales, and the switch to a new
//! plan.
//!
//! Steps read an immutable [`NodeWeights`] snapshot. [`NodeState::apply`]
//! builds the next snapshot beside the current one — unchanged slots share
//! their bytes, changed slots get fresh copies from the sources chosen by
//! [`moves::layer_moves`], each verified against the host copy's checksum —
//! and then swaps it in with one pointer store. A step that started before
//! the swap finishes on the old weights; no step sees a half-applied layer.
//! A failed apply leaves the node as it was.

pub mod moves;
pub mod shape;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::NodeError;
use crate::moe::expert::ExpertWeights;
use crate::moe::layer::SlotWeights;
use crate::moe::placement::Placement;
pub use moves::{Move, Source};
pub use shape::NodeShape;

/// The model's routed experts in host memory, `[layer][logical expert]`, with
/// the checksum every device copy must match.
#[derive(Debug)]
pub struct HostCopy {
    layers: Vec<Vec<Arc<ExpertWeights>>>,
    checksums: Vec<Vec<u64>>,
}

impl HostCopy {
    /// Takes the experts of each layer (every layer must have the same count).
    pub fn new(layers: Vec<Vec<ExpertWeights>>) -> Result<Self, NodeError> {
        let experts = layers.first().map_or(0, Vec::len);
        if let Some(bad) = layers.iter().find(|l| l.len() != experts || l.is_empty()) {
            return Err(NodeError::Mismatch {
                what: "experts per layer in the host copy",
                expected: experts.max(1),
                actual: bad.len(),
            });
        }
        let checksums = layers
            .par_iter()
            .map(|l| l.iter().map(ExpertWeights::checksum).collect())
            .collect();
        let layers = layers
            .into_iter()
            .map(|l| l.into_iter().map(Arc::new).collect())
            .collect();
        Ok(HostCopy { layers, checksums })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn num_experts(&self) -> usize {
        self.layers.first().map_or(0, Vec::len)
    }

    /// An expert's host weights.
    pub fn expert(&self, layer: usize, expert: usize) -> &ExpertWeights {
        &self.layers[layer][expert]
    }
}

/// One slot's contents.
#[derive(Clone, Debug)]
struct Slot {
    expert: u32,
    weights: Arc<ExpertWeights>,
}

/// An immutable set of slot contents for every layer, tagged with the plan
/// version it implements.
#[derive(Debug)]
pub struct NodeWeights {
    version: u64,
    shape: NodeShape,
    layers: Vec<Vec<Slot>>,
}

impl NodeWeights {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The node's `phy2log` slice for `layer`.
    pub fn layer_row(&self, layer: usize) -> Vec<u32> {
        self.layers[layer].iter().map(|s| s.expert).collect()
    }

    /// The weights of `layer`, addressed by global physical slot.
    pub fn layer(&self, layer: usize) -> LayerSlots<'_> {
        LayerSlots {
            weights: self,
            layer,
        }
    }
}

/// One layer of a [`NodeWeights`] as the MoE layer sees it.
pub struct LayerSlots<'a> {
    weights: &'a NodeWeights,
    layer: usize,
}

impl SlotWeights for LayerSlots<'_> {
    fn slot(&self, p: usize) -> Option<&ExpertWeights> {
        let range = self.weights.shape.slot_range();
        range
            .contains(&p)
            .then(|| &*self.weights.layers[self.layer][p - range.start].weights)
    }
}

/// What applying a plan did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApplyReport {
    /// The version now active (the ack).
    pub version: u64,
    pub moves: Vec<Move>,
    /// Slots whose expert did not change.
    pub kept_slots: usize,
    /// Bytes copied between slots of one GPU.
    pub same_gpu_bytes: u64,
    /// Bytes copied between GPUs of this node.
    pub intra_node_bytes: u64,
    /// Bytes copied from the host copy.
    pub host_bytes: u64,
    /// Experts copied onto a GPU from another device (peer or host).
    pub migrations: usize,
}

/// A node's weights and the lock that serializes plan changes.
#[derive(Debug)]
pub struct NodeState {
    shape: NodeShape,
    host: Arc<HostCopy>,
    current: RwLock<Arc<NodeWeights>>,
    applying: Mutex<()>,
}

impl NodeState {
    /// Loads the first plan (`placements`, one per layer) from the host copy.
    pub fn new(
        shape: NodeShape,
        host: Arc<HostCopy>,
        placements: &[Placement],
        version: u64,
    ) -> Result<(Self, ApplyReport), NodeError> {
        // An empty snapshot (version 0 holds nothing) makes every slot a host copy.
        let empty = NodeWeights {
            version: 0,
            shape,
            layers: Vec::new(),
        };
        let (weights, report) = build(&shape, &host, &empty, placements, version)?;
        let state = NodeState {
            shape,
            host,
            current: RwLock::new(Arc::new(weights)),
            applying: Mutex::new(()),
        };
        Ok((state, report))
    }

    pub fn shape(&self) -> &NodeShape {
        &self.shape
    }

    /// The weights a step should use from start to end.
    pub fn snapshot(&self) -> Arc<NodeWeights> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Switches to a newer plan. Concurrent steps keep their snapshots;
    /// concurrent applies run one after the other.
    pub fn apply(&self, placements: &[Placement], version: u64) -> Result<ApplyReport, NodeError> {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.snapshot();
        if version <= old.version {
            return Err(NodeError::StaleVersion {
                current: old.version,
                requested: version,
            });
        }
        let (weights, report) = build(&self.shape, &self.host, &old, placements, version)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(weights);
        Ok(report)
    }

    /// Re-hashes every slot against the host checksums (an audit; `apply`
    /// already checks every slot it writes).
    pub fn verify_all(&self) -> Result<(), NodeError> {
        let snapshot = self.snapshot();
        snapshot
            .layers
            .par_iter()
            .enumerate()
            .try_for_each(|(layer, slots)| {
                slots.iter().enumerate().try_for_each(|(local, slot)| {
                    verify(&self.shape, &self.host, layer, local, slot)
                })
            })
    }
}

/// Builds the snapshot for `placements` from `old` and the host copy.
fn build(
    shape: &NodeShape,
    host: &HostCopy,
    old: &NodeWeights,
    placements: &[Placement],
    version: u64,
) -> Result<(NodeWeights, ApplyReport), NodeError> {
    check_placements(shape, host, placements)?;
    let range = shape.slot_range();
    let mut moves = Vec::new();
    for (layer, placement) in placements.iter().enumerate() {
        let new_row = &placement.phy2log()[range.clone()];
        match old.layers.get(layer) {
            Some(slots) => {
                let old_row: Vec<u32> = slots.iter().map(|s| s.expert).collect();
                moves.extend(moves::layer_moves(shape, layer, &old_row, new_row));
            }
            None => moves.extend(new_row.iter().enumerate().map(|(local, &expert)| Move {
                layer,
                gpu: local / shape.slots_per_gpu(),
                slot: local % shape.slots_per_gpu(),
                expert,
                source: Source::Host,
            })),
        }
    }

    // Copy every moved slot's bytes (in parallel) and check each copy.
    let per_gpu = shape.slots_per_gpu();
    let copies = moves
        .par_iter()
        .map(|m| {
            let source: &ExpertWeights = match m.source {
                Source::SameGpu { slot } => &old.layers[m.layer][m.gpu * per_gpu + slot].weights,
                Source::PeerGpu { gpu, slot } => &old.layers[m.layer][gpu * per_gpu + slot].weights,
                Source::Host => host.expert(m.layer, m.expert as usize),
            };
            let slot = Slot {
                expert: m.expert,
                weights: Arc::new(source.clone()),
            };
            verify(shape, host, m.layer, m.gpu * per_gpu + m.slot, &slot)?;
            Ok(slot)
        })
        .collect::<Result<Vec<Slot>, NodeError>>()?;

    let mut layers: Vec<Vec<Option<Slot>>> = placements
        .iter()
        .enumerate()
        .map(|(layer, _)| match old.layers.get(layer) {
            Some(slots) => slots.iter().cloned().map(Some).collect(),
            None => vec![None; shape.local_slots()],
        })
        .collect();
    let mut report = ApplyReport {
        version,
        moves: moves.clone(),
        kept_slots: placements.len() * shape.local_slots() - moves.len(),
        same_gpu_bytes: 0,
        intra_node_bytes: 0,
        host_bytes: 0,
        migrations: 0,
    };
    for (m, slot) in moves.iter().zip(copies) {
        let bytes = slot.weights.bytes() as u64;
        match m.source {
            Source::SameGpu { .. } => report.same_gpu_bytes += bytes,
            Source::PeerGpu { .. } => report.intra_node_bytes += bytes,
            Source::Host => report.host_bytes += bytes,
        }
        if !matches!(m.source, Source::SameGpu { .. }) {
            report.migrations += 1;
        }
        layers[m.layer][m.gpu * per_gpu + m.slot] = Some(slot);
    }
    let layers = layers
        .into_iter()
        .map(|slots| {
            slots
                .into_iter()
                .map(|s| s.expect("every slot is kept or moved"))
                .collect()
        })
        .collect();
    Ok((
        NodeWeights {
            version,
            shape: *shape,
            layers,
        },
        report,
    ))
}

fn check_placements(
    shape: &NodeShape,
    host: &HostCopy,
    placements: &[Placement],
) -> Result<(), NodeError> {
    if placements.len() != host.num_layers() {
        return Err(NodeError::Mismatch {
            what: "layers in the plan",
            expected: host.num_layers(),
            actual: placements.len(),
        });
    }
    for p in placements {
        if p.slots() != shape.cluster_slots() {
            return Err(NodeError::Mismatch {
                what: "slots per layer in the plan",
                expected: shape.cluster_slots(),
                actual: p.slots(),
            });
        }
        if p.num_experts() != host.num_experts() {
            return Err(NodeError::Mismatch {
                what: "logical experts in the plan",
                expected: host.num_experts(),
                actual: p.num_experts(),
            });
        }
    }
    Ok(())
}

fn verify(
    shape: &NodeShape,
    host: &HostCopy,
    layer: usize,
    local: usize,
    slot: &Slot,
) -> Result<(), NodeError> {
    let expected = host.checksums[layer][slot.expert as usize];
    let actual = slot.weights.checksum();
    if actual != expected {
        return Err(NodeError::Checksum {
            layer,
            gpu: local / shape.slots_per_gpu(),
            slot: local % shape.slots_per_gpu(),
            expert: slot.expert,
            expected,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
