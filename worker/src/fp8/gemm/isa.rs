//! The instruction sets the GEMM's hot loops (bulk FP8 decode, micro-kernel) can
//! use, detected once at run time so one binary runs everywhere and still uses
//! AVX2/FMA where the CPU has them.

use std::sync::OnceLock;

/// A code path for the FP8 decode and GEMM kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust; correct on every target, slow.
    Portable,
    /// x86-64 with AVX2 and FMA (Haswell, Zen and later).
    Avx2Fma,
}

impl Isa {
    /// The best path this CPU supports.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            if Isa::Avx2Fma.is_supported() {
                Isa::Avx2Fma
            } else {
                Isa::Portable
            }
        })
    }

    /// Whether this CPU can run `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2Fma => avx2_fma_supported(),
        }
    }

    /// Every path this CPU can run, so tests can compare them.
    pub fn all_supported() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2Fma]
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma_supported() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_fma_supported() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_is_supported_and_portable_always_is() {
        assert!(Isa::best().is_supported());
        assert!(Isa::all_supported().contains(&Isa::Portable));
        assert!(Isa::all_supported().contains(&Isa::best()));
    }
}
