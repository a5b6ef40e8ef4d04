//! How accurate the FP8 path is: f64 references, and the self-test that puts
//! numbers on the production GEMM and on the tensor-core accumulation model
//! ([`fp8::tensor_core`](crate::fp8::tensor_core)).

pub mod reference;
pub mod selftest;
