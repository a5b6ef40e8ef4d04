//! Tiling, packing and the parallel loop of the grouped GEMM.
//!
//! Every problem's output is cut into `MC × NC` tiles; rayon spreads the
//! tiles of all problems over the threads, so experts with few tokens and
//! experts with many share one call. A tile walks K in chunks of `KC`
//! (a multiple of 128): it decodes the chunk's weight panels and token rows
//! from FP8 into per-thread f32 buffers, then runs the micro-kernel over
//! `MR × NR` blocks with the weight panel innermost in cache (the BLIS loop
//! order). Buffers are allocated once per rayon work split, never per tile.

use half::bf16;
use rayon::prelude::*;

use crate::fp8::e4m3::decode_table;
use crate::fp8::gemm::isa::Isa;
use crate::fp8::gemm::kernel::{self, Block};
use crate::fp8::gemm::stream;
use crate::fp8::gemm::{GemmProblem, Output, PackedWeights, MR, NR};
use crate::fp8::quant::{QuantizedActivations, BLOCK};

/// Rows of C per tile (a multiple of MR).
const MC: usize = 144;
/// Columns of C per tile (a multiple of 128).
const NC: usize = 256;
/// K per packing chunk (a multiple of 128).
const KC: usize = 256;

/// One tile of one problem's output.
struct Tile {
    problem: usize,
    m0: usize,
    rows: usize,
    n0: usize,
    cols: usize,
}

/// Where a problem's output lives. Tiles write disjoint rectangles of it.
#[derive(Clone, Copy)]
enum OutPtr {
    F32(*mut f32),
    Bf16(*mut bf16),
}

/// Raw output pointers shared by the worker threads.
struct SharedOutputs(Vec<OutPtr>);

// SAFETY: every tile writes only its own rectangle of its problem's output,
// the rectangles partition each output, and the borrowed output slices
// outlive the parallel loop (see `run`).
unsafe impl Sync for SharedOutputs {}

/// Per-thread packing buffers.
struct Scratch {
    a: Vec<f32>,
    a_scales: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            a: vec![0.0; MC * KC],
            a_scales: vec![0.0; MC * (KC / BLOCK)],
            b: vec![0.0; KC * NC],
            c: Vec::new(),
        }
    }
}

/// Runs every problem (shapes already checked by the caller).
pub(crate) fn run(isa: Isa, problems: Vec<GemmProblem<'_>>) {
    let mut tiles = Vec::new();
    for (p, problem) in problems.iter().enumerate() {
        let (m, n) = (problem.a.rows(), problem.b.rows());
        for m0 in (0..m).step_by(MC) {
            for n0 in (0..n).step_by(NC) {
                tiles.push(Tile {
                    problem: p,
                    m0,
                    rows: MC.min(m - m0),
                    n0,
                    cols: NC.min(n - n0),
                });
            }
        }
    }
    // Operands and output pointers are taken apart so the threads never
    // see the `&mut` output borrows, which `problems` keeps alive meanwhile.
    let mut problems = problems;
    let operands: Vec<(&QuantizedActivations, &PackedWeights)> =
        problems.iter().map(|p| (p.a, p.b)).collect();
    let outputs = SharedOutputs(
        problems
            .iter_mut()
            .map(|p| match &mut p.out {
                Output::F32(out) => OutPtr::F32(out.as_mut_ptr()),
                Output::Bf16(out) => OutPtr::Bf16(out.as_mut_ptr()),
            })
            .collect(),
    );
    let (operands, outputs) = (&operands, &outputs);
    tiles
        .par_iter()
        .for_each_init(Scratch::new, |scratch, tile| {
            let (a, b) = operands[tile.problem];
            // SAFETY: `tile` is one of a partition of this problem's output into
            // rectangles, and `problems` keeps the output borrowed until the loop ends.
            unsafe { run_tile(isa, a, b, outputs.0[tile.problem], tile, scratch) }
        });
    drop(problems);
}

/// Computes one tile.
///
/// # Safety
/// `out` must be a live `a.rows() × b.rows()` output buffer whose tile
/// rectangle no other thread touches during the call.
unsafe fn run_tile(
    isa: Isa,
    a: &QuantizedActivations,
    b: &PackedWeights,
    out: OutPtr,
    tile: &Tile,
    scratch: &mut Scratch,
) {
    let (n, k) = (b.rows(), b.cols());
    // Accumulate in place for f32 output; in a scratch tile for BF16, which
    // is rounded once at the end.
    let (c, ldc) = match out {
        OutPtr::F32(ptr) => (ptr.add(tile.m0 * n + tile.n0), n),
        OutPtr::Bf16(_) => {
            scratch.c.resize(MC * NC, 0.0);
            (scratch.c.as_mut_ptr(), tile.cols)
        }
    };
    for r in 0..tile.rows {
        std::ptr::write_bytes(c.add(r * ldc), 0, tile.cols);
    }

    let a_panels = tile.rows.div_ceil(MR);
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let k_blocks = kc / BLOCK;
        pack_a(a, tile.m0, tile.rows, k0, kc, scratch);
        for j in 0..tile.cols / NR {
            let panel = (tile.n0 / NR) + j;
            let b_dst = &mut scratch.b[j * kc * NR..(j + 1) * kc * NR];
            stream::decode_into(isa, &b.panel(panel)[k0 * NR..(k0 + kc) * NR], b_dst);
        }
        for j in 0..tile.cols / NR {
            let row = tile.n0 + j * NR;
            let mut b_scales = [0.0f32; KC / BLOCK];
            for (kb, s) in b_scales.iter_mut().enumerate().take(k_blocks) {
                *s = b.scale(row, k0 / BLOCK + kb);
            }
            for i in 0..a_panels {
                let block = Block {
                    rows: MR.min(tile.rows - i * MR),
                    k_blocks,
                    a: &scratch.a[i * kc * MR..(i + 1) * kc * MR],
                    a_scales: &scratch.a_scales[i * k_blocks * MR..(i + 1) * k_blocks * MR],
                    b: &scratch.b[j * kc * NR..(j + 1) * kc * NR],
                    b_scales: &b_scales,
                    c: c.add(i * MR * ldc + j * NR),
                    ldc,
                };
                kernel::run(isa, &block);
            }
        }
    }

    if let OutPtr::Bf16(ptr) = out {
        for r in 0..tile.rows {
            let dst =
                std::slice::from_raw_parts_mut(ptr.add((tile.m0 + r) * n + tile.n0), tile.cols);
            for (d, &v) in dst.iter_mut().zip(&scratch.c[r * ldc..r * ldc + tile.cols]) {
                *d = bf16::from_f32(v);
            }
        }
    }
}

/// Decodes rows `m0..m0+rows`, columns `k0..k0+kc` of `a` into micro-panels
/// of MR rows (`k`-major) and gathers their scales the same way.
fn pack_a(a: &QuantizedActivations, m0: usize, rows: usize, k0: usize, kc: usize, s: &mut Scratch) {
    let table = decode_table();
    let k_blocks = kc / BLOCK;
    for i in 0..rows.div_ceil(MR) {
        let panel = &mut s.a[i * kc * MR..(i + 1) * kc * MR];
        let scales = &mut s.a_scales[i * k_blocks * MR..(i + 1) * k_blocks * MR];
        for r in 0..MR.min(rows - i * MR) {
            let token = m0 + i * MR + r;
            let codes = &a.row_codes(token)[k0..k0 + kc];
            for (k, &code) in codes.iter().enumerate() {
                panel[k * MR + r] = table[code as usize];
            }
            for kb in 0..k_blocks {
                scales[kb * MR + r] = a.scale(token, k0 / BLOCK + kb);
            }
        }
    }
}
