//! # ballast-worker
//!
//! The compute half of a Ballast worker: one process per node of G GPUs,
//! simulated on CPU with numerically faithful FP8 arithmetic.
//!
//! - [`fp8`]: all FP8 numerics — E4M3 codec, fine-grained (1×128 / 128×128)
//!   quantization, the grouped FP8 GEMM with promotion every 128 elements,
//!   as in the DeepSeek-V3 report (§3.3), and an emulation of tensor-core
//!   accumulation.
//! - [`moe`]: top-k gate, dispatch to replicas, SwiGLU experts and the whole
//!   layer, checked against an f64 reference.
//! - [`node`]: a node's G GPUs × S slots of FP8 weights per layer, and the
//!   double-buffered switch to a new plan (moves, byte counts, checksums).
//! - [`traffic`]: seeded synthetic routing traffic with skew and drift.
//! - [`agent`]: the `ballast-worker run` process: telemetry windows to the
//!   Ballast service, plans from it, applied at step boundaries, `/metrics`.
//! - [`accuracy`]: f64 references and the self-test behind
//!   `ballast-worker selftest`.
//!
//! Heavy loops run on rayon's global pool; results do not depend on its size.

pub mod accuracy;
pub mod agent;
pub mod error;
pub mod fp8;
pub mod matrix;
pub mod moe;
pub mod node;
pub mod random;
pub mod traffic;

pub use error::{ConfigError, MoeError, NodeError, PlanError, QuantError, ShapeError};
pub use matrix::Matrix;
