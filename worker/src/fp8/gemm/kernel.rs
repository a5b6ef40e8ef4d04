//! The micro-kernel: an `R × NR` block of C (R ≤ MR) from packed f32 panels.
//!
//! For each 128-element K block it sums the products in fresh f32 registers,
//! then multiplies that block sum by `f32(s_a · s_b)` and adds it to C — the
//! "promotion every N_C = 128" of DeepSeek-V3 §3.3.2, with the block sum in
//! f32 instead of the tensor cores' ~14-bit accumulator. C therefore receives
//! the blocks in K order, which makes results independent of tiling and
//! thread count.
//!
//! Both paths below perform the same fused multiply-adds in the same order,
//! so they agree bit for bit (tests check that).

use crate::fp8::gemm::isa::Isa;
use crate::fp8::gemm::{MR, NR};
use crate::fp8::quant::BLOCK;

/// Operands of one micro-kernel call.
///
/// `a`: `k_blocks·128` steps of `MR` values (rows beyond `rows` unused);
/// `a_scales`: `k_blocks` groups of `MR` token scales;
/// `b`: `k_blocks·128` steps of `NR` values; `b_scales`: `k_blocks` block scales;
/// `c`: `rows` rows of `NR` f32 at stride `ldc`, accumulated into.
pub(crate) struct Block<'a> {
    pub rows: usize,
    pub k_blocks: usize,
    pub a: &'a [f32],
    pub a_scales: &'a [f32],
    pub b: &'a [f32],
    pub b_scales: &'a [f32],
    pub c: *mut f32,
    pub ldc: usize,
}

/// Runs the kernel for `block` on `isa`.
///
/// # Safety
/// `block.c` must point to `rows` rows of `NR` writable f32 at stride `ldc`
/// that nothing else accesses during the call; `isa` must be supported.
pub(crate) unsafe fn run(isa: Isa, block: &Block<'_>) {
    assert!(
        block.rows >= 1 && block.rows <= MR,
        "kernel rows out of range"
    );
    assert!(block.a.len() >= block.k_blocks * BLOCK * MR);
    assert!(block.a_scales.len() >= block.k_blocks * MR);
    assert!(block.b.len() >= block.k_blocks * BLOCK * NR);
    assert!(block.b_scales.len() >= block.k_blocks);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => avx2::run(block),
        _ => portable(block),
    }
}

unsafe fn portable(block: &Block<'_>) {
    for kb in 0..block.k_blocks {
        let mut acc = [[0.0f32; NR]; MR];
        let a = &block.a[kb * BLOCK * MR..(kb + 1) * BLOCK * MR];
        let b = &block.b[kb * BLOCK * NR..(kb + 1) * BLOCK * NR];
        for (a_k, b_k) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            for r in 0..block.rows {
                for (acc_rj, &b_kj) in acc[r].iter_mut().zip(b_k) {
                    *acc_rj = a_k[r].mul_add(b_kj, *acc_rj);
                }
            }
        }
        let sb = block.b_scales[kb];
        for (r, acc_r) in acc.iter().enumerate().take(block.rows) {
            let scale = block.a_scales[kb * MR + r] * sb;
            // SAFETY: the caller guarantees `rows` rows of NR values at `c`.
            let c = std::slice::from_raw_parts_mut(block.c.add(r * block.ldc), NR);
            for (c_j, &acc_rj) in c.iter_mut().zip(acc_r) {
                *c_j = acc_rj.mul_add(scale, *c_j);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Block;
    use crate::fp8::gemm::{MR, NR};
    use crate::fp8::quant::BLOCK;

    pub(super) unsafe fn run(block: &Block<'_>) {
        match block.rows {
            6 => rows::<6>(block),
            5 => rows::<5>(block),
            4 => rows::<4>(block),
            3 => rows::<3>(block),
            2 => rows::<2>(block),
            1 => rows::<1>(block),
            _ => unreachable!("super::run checks 1 <= rows <= MR"),
        }
    }

    /// `R` rows × 16 columns: 2R accumulators of 8 lanes (12 of the 16 ymm
    /// registers at R = 6), two B loads and one broadcast per K step.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const R: usize>(block: &Block<'_>) {
        const { assert!(NR == 16 && R <= MR) };
        let mut a = block.a.as_ptr();
        let mut b = block.b.as_ptr();
        for kb in 0..block.k_blocks {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for _ in 0..BLOCK {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let a_r = _mm256_broadcast_ss(&*a.add(r));
                    acc_r[0] = _mm256_fmadd_ps(a_r, b0, acc_r[0]);
                    acc_r[1] = _mm256_fmadd_ps(a_r, b1, acc_r[1]);
                }
                a = a.add(MR);
                b = b.add(NR);
            }
            let sb = *block.b_scales.get_unchecked(kb);
            for (r, acc_r) in acc.iter().enumerate() {
                let scale = _mm256_set1_ps(*block.a_scales.get_unchecked(kb * MR + r) * sb);
                let c = block.c.add(r * block.ldc);
                _mm256_storeu_ps(c, _mm256_fmadd_ps(acc_r[0], scale, _mm256_loadu_ps(c)));
                let c8 = c.add(8);
                _mm256_storeu_ps(c8, _mm256_fmadd_ps(acc_r[1], scale, _mm256_loadu_ps(c8)));
            }
        }
    }
}
