//! FP8 grouped GEMM against the `gemm` crate's f32 GEMM on the same shapes,
//! side by side. Throughput is reported in FLOP/s (2·M·N·K per GEMM), so
//! criterion's "elem/s" reads as FLOP/s.
//!
//! Shapes (DeepSeek-V3 expert projections, K = hidden 7168, N = expert width 2048):
//! - `prefill`: 4096 tokens × 7168 → 2048, one expert;
//! - `decode`: 32 tokens × 7168 → 2048, one expert;
//! - `grouped`: 8 experts with 1024, 768, 640, 512, 448, 320, 256, 128 tokens
//!   (4096 in all) in one FP8 call; the f32 side runs the 8 GEMMs in turn.
//!
//! Run: `cargo bench -p ballast-worker --bench gemm`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use ballast_worker::fp8::gemm::{grouped_gemm, GemmProblem, Output, PackedWeights};
use ballast_worker::fp8::quant::{QuantizedActivations, QuantizedWeights, ScaleMode};
use ballast_worker::matrix::Matrix;
use ballast_worker::random::normal_matrix;

const K: usize = 7168;
const N: usize = 2048;

/// One expert's operands in both precisions.
struct Expert {
    w: Matrix<f32>,
    packed: PackedWeights,
}

struct Tokens {
    x: Matrix<f32>,
    quantized: QuantizedActivations,
}

fn expert(rng: &mut ChaCha8Rng) -> Expert {
    let w = normal_matrix(rng, N, K);
    let packed = PackedWeights::pack(&QuantizedWeights::quantize(&w, ScaleMode::Exact).unwrap());
    Expert { w, packed }
}

fn tokens(rng: &mut ChaCha8Rng, m: usize) -> Tokens {
    let x = normal_matrix(rng, m, K);
    let quantized = QuantizedActivations::quantize(&x, ScaleMode::Exact).unwrap();
    Tokens { x, quantized }
}

/// `out = x · wᵀ` with the `gemm` crate (row-major x and out; w read transposed
/// through strides, as our FP8 kernel reads it).
fn f32_gemm(x: &Matrix<f32>, w: &Matrix<f32>, out: &mut [f32]) {
    let (m, k, n) = (x.rows(), x.cols(), w.rows());
    assert_eq!(out.len(), m * n);
    // SAFETY: the pointers and strides describe x (m×k), wᵀ (k×n) and out
    // (m×n) exactly, and out does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.data().as_ptr(),
            1,
            k as isize,
            w.data().as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

fn flops(tokens: &[usize]) -> u64 {
    tokens.iter().map(|&m| (2 * m * N * K) as u64).sum()
}

fn bench_shape(c: &mut Criterion, name: &str, token_counts: &[usize], sample_size: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let experts: Vec<Expert> = token_counts.iter().map(|_| expert(&mut rng)).collect();
    let inputs: Vec<Tokens> = token_counts.iter().map(|&m| tokens(&mut rng, m)).collect();
    let mut outputs: Vec<Vec<f32>> = token_counts.iter().map(|&m| vec![0.0; m * N]).collect();

    let mut group = c.benchmark_group(name);
    group.sample_size(sample_size);
    group.throughput(Throughput::Elements(flops(token_counts)));
    let label = format!(
        "{}x{K}x{N}",
        token_counts
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join("+")
    );
    group.bench_function(BenchmarkId::new("fp8_grouped", &label), |bench| {
        bench.iter(|| {
            let problems = experts
                .iter()
                .zip(&inputs)
                .zip(outputs.iter_mut())
                .map(|((e, t), out)| GemmProblem {
                    a: &t.quantized,
                    b: &e.packed,
                    out: Output::F32(out),
                })
                .collect();
            grouped_gemm(problems).unwrap();
        })
    });
    group.bench_function(BenchmarkId::new("f32_gemm_crate", &label), |bench| {
        bench.iter(|| {
            for ((e, t), out) in experts.iter().zip(&inputs).zip(outputs.iter_mut()) {
                f32_gemm(&t.x, &e.w, out);
            }
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_shape(c, "decode", &[32], 20);
    bench_shape(c, "prefill", &[4096], 10);
    bench_shape(c, "grouped", &[1024, 768, 640, 512, 448, 320, 256, 128], 10);
}

criterion_group!(gemm_benches, benches);
criterion_main!(gemm_benches);
