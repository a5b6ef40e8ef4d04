//! One MoE layer's forward pass on FP8: gate, dispatch to replicas, run the
//! experts in grouped GEMMs, combine in f32.

use rayon::prelude::*;

use crate::error::{MoeError, ShapeError};
use crate::fp8::quant::{QuantizedActivations, ScaleMode};
use crate::matrix::Matrix;
use crate::moe::config::MoeConfig;
use crate::moe::dispatch::{dispatch, Dispatch};
use crate::moe::expert::{forward_grouped, ExpertJob, ExpertWeights};
use crate::moe::gate::{Gate, TopK};
use crate::moe::placement::Placement;

/// The expert weights a process holds, by physical slot: all of them for a
/// whole-layer test, one node's for a worker (`None` elsewhere).
pub trait SlotWeights {
    fn slot(&self, p: usize) -> Option<&ExpertWeights>;
}

impl SlotWeights for [&ExpertWeights] {
    fn slot(&self, p: usize) -> Option<&ExpertWeights> {
        self.get(p).copied()
    }
}

/// The parts of a layer every GPU has: gate and shared expert.
#[derive(Clone, Debug)]
pub struct MoeLayer {
    config: MoeConfig,
    gate: Gate,
    shared: ExpertWeights,
    scale_mode: ScaleMode,
}

/// What a forward pass produced.
#[derive(Clone, Debug)]
pub struct LayerOutput {
    /// `tokens × hidden`: shared expert plus the gated outputs of the replicas
    /// held here.
    pub output: Matrix<f32>,
    pub routing: TopK,
    pub dispatch: Dispatch,
    /// Assignments sent to slots not held here (computed by another node).
    pub remote_assignments: usize,
}

impl MoeLayer {
    /// Assembles a layer; the shared expert must match the configured widths.
    pub fn new(
        config: MoeConfig,
        gate: Gate,
        shared: ExpertWeights,
        scale_mode: ScaleMode,
    ) -> Result<Self, ShapeError> {
        check_expert(&config, &shared)?;
        Ok(MoeLayer {
            config,
            gate,
            shared,
            scale_mode,
        })
    }

    /// Routes `hidden` with the layer's gate, then runs [`forward_routed`](Self::forward_routed).
    pub fn forward(
        &self,
        hidden: &Matrix<f32>,
        placement: &Placement,
        slots: &(impl SlotWeights + ?Sized),
    ) -> Result<LayerOutput, MoeError> {
        self.check_hidden(hidden)?;
        let routing = self.gate.route(&self.config, hidden);
        self.forward_routed(hidden, routing, placement, slots)
    }

    /// The layer with a given routing (e.g. from the traffic generator),
    /// dispatched by the placement's split.
    pub fn forward_routed(
        &self,
        hidden: &Matrix<f32>,
        routing: TopK,
        placement: &Placement,
        slots: &(impl SlotWeights + ?Sized),
    ) -> Result<LayerOutput, MoeError> {
        self.check_routing(hidden, &routing)?;
        if placement.num_experts() != self.config.num_experts() {
            return Err(ShapeError::Mismatch {
                what: "placement",
                dim: "logical experts",
                expected: self.config.num_experts(),
                actual: placement.num_experts(),
            }
            .into());
        }
        let dispatch = dispatch(&routing, placement);
        self.forward_dispatched(hidden, routing, dispatch, slots)
    }

    /// The layer with a given routing and dispatch (e.g. from
    /// [`dispatch_counts`](crate::moe::dispatch_counts)); `dispatch` must have
    /// been made from `routing`.
    pub fn forward_dispatched(
        &self,
        hidden: &Matrix<f32>,
        routing: TopK,
        dispatch: Dispatch,
        slots: &(impl SlotWeights + ?Sized),
    ) -> Result<LayerOutput, MoeError> {
        self.check_routing(hidden, &routing)?;
        if dispatch.assignments() != routing.tokens() * routing.top_k() {
            return Err(ShapeError::Mismatch {
                what: "dispatch",
                dim: "assignments",
                expected: routing.tokens() * routing.top_k(),
                actual: dispatch.assignments(),
            }
            .into());
        }
        let tokens = QuantizedActivations::quantize(hidden, self.scale_mode)?;

        // Job 0 is the shared expert on every token; then one job per held,
        // non-empty slot, with its tokens gathered in dispatch order.
        let mut job_of_slot = vec![None; dispatch.slots()];
        let mut held = Vec::new();
        for (p, job) in job_of_slot.iter_mut().enumerate() {
            let assigned = dispatch.tokens_of(p);
            if assigned.is_empty() {
                continue;
            }
            if let Some(weights) = slots.slot(p) {
                check_expert(&self.config, weights)?;
                let rows: Vec<usize> = assigned.iter().map(|&t| t as usize).collect();
                *job = Some(held.len() + 1);
                held.push((tokens.gather_rows(&rows), weights));
            }
        }
        let mut jobs = vec![ExpertJob {
            tokens: &tokens,
            weights: &self.shared,
        }];
        jobs.extend(held.iter().map(|(t, w)| ExpertJob {
            tokens: t,
            weights: w,
        }));
        let outputs = forward_grouped(&jobs, self.scale_mode)?;

        let mut output = outputs[0].clone();
        let hidden_width = self.config.hidden();
        output
            .data_mut()
            .par_chunks_mut(hidden_width)
            .enumerate()
            .for_each(|(t, out)| {
                for (i, &gate) in routing.gates_of(t).iter().enumerate() {
                    let (p, row) = dispatch.target(t, i);
                    if let Some(j) = job_of_slot[p] {
                        for (o, &y) in out.iter_mut().zip(outputs[j].row(row)) {
                            *o += gate * y;
                        }
                    }
                }
            });
        let remote_assignments = (0..dispatch.slots())
            .filter(|&p| job_of_slot[p].is_none())
            .map(|p| dispatch.tokens_of(p).len())
            .sum();
        Ok(LayerOutput {
            output,
            routing,
            dispatch,
            remote_assignments,
        })
    }

    fn check_routing(&self, hidden: &Matrix<f32>, routing: &TopK) -> Result<(), ShapeError> {
        self.check_hidden(hidden)?;
        if routing.tokens() != hidden.rows() {
            return Err(ShapeError::Mismatch {
                what: "routing",
                dim: "tokens",
                expected: hidden.rows(),
                actual: routing.tokens(),
            });
        }
        if routing.num_experts() != self.config.num_experts() {
            return Err(ShapeError::Mismatch {
                what: "routing",
                dim: "logical experts",
                expected: self.config.num_experts(),
                actual: routing.num_experts(),
            });
        }
        Ok(())
    }

    fn check_hidden(&self, hidden: &Matrix<f32>) -> Result<(), ShapeError> {
        if hidden.cols() != self.config.hidden() {
            return Err(ShapeError::Mismatch {
                what: "hidden states",
                dim: "columns",
                expected: self.config.hidden(),
                actual: hidden.cols(),
            });
        }
        Ok(())
    }
}

fn check_expert(config: &MoeConfig, weights: &ExpertWeights) -> Result<(), ShapeError> {
    if weights.hidden() != config.hidden() || weights.width() != config.expert_width() {
        return Err(ShapeError::Mismatch {
            what: "expert weights",
            dim: "hidden x width",
            expected: config.hidden() * config.expert_width(),
            actual: weights.hidden() * weights.width(),
        });
    }
    Ok(())
}
