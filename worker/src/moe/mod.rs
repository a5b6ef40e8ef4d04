//! A DeepSeek-style MoE layer on the FP8 path: the [`gate`] picks each
//! token's top-k experts, [`mod@dispatch`] sends each assignment to a
//! physical replica by the layer's [`placement`] (or [`optimal`] routes each
//! batch exactly), [`expert`] runs SwiGLU experts in grouped FP8 GEMMs,
//! [`layer`] combines the results in f32. [`master`] holds unquantized
//! weights and the f64 reference. Widths are configurable ([`config`]) so
//! tests stay small.

pub mod config;
pub mod dispatch;
pub mod expert;
pub mod gate;
pub mod layer;
pub mod master;
pub mod optimal;
pub mod placement;

pub use config::{MoeConfig, MoeSpec};
pub use dispatch::{dispatch, dispatch_counts, Dispatch, DispatchMode};
pub use expert::{ExpertMaster, ExpertWeights};
pub use gate::{Gate, TopK};
pub use layer::{LayerOutput, MoeLayer, SlotWeights};
pub use master::LayerMaster;
pub use optimal::OptimalDispatcher;
pub use placement::Placement;
