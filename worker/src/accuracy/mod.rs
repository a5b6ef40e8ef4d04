//! How accurate the FP8 path is: f64 references, the tensor-core accumulation
//! model, and the self-test that puts numbers on both.

pub mod reference;
pub mod selftest;
pub mod tensor_core;
