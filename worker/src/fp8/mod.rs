//! All FP8 numerics of the worker, after the DeepSeek-V3 report (§3.3):
//!
//! - [`e4m3`]: the E4M3 format — encoding, decoding, its definition.
//! - [`quant`]: fine-grained quantization into FP8 containers (1×128
//!   activation tiles, 128×128 weight blocks), and per-tensor scaling for
//!   comparison.
//! - [`gemm`]: the production grouped FP8 GEMM with promotion every 128
//!   elements — packed weights, the tiled parallel driver, and the SIMD
//!   decode and micro-kernels chosen per CPU ([`gemm::isa`]).
//! - [`tensor_core`]: an emulation of Hopper tensor-core accumulation, the
//!   hardware behaviour the production kernel's promotion is measured against.
//!
//! What these numerics cost in accuracy is measured in
//! [`accuracy`](crate::accuracy).

pub mod e4m3;
pub mod gemm;
pub mod quant;
pub mod tensor_core;
