//! Seeded random inputs. ChaCha8 keeps a seed's stream fixed across
//! platforms and crate versions' `StdRng` changes, so figures are reproducible.

use rand::RngExt;
use rand_distr::StandardNormal;

use crate::matrix::Matrix;

/// A `rows × cols` matrix of independent N(0, 1) samples.
pub fn normal_matrix(rng: &mut impl rand::Rng, rows: usize, cols: usize) -> Matrix<f32> {
    Matrix::from_fn(rows, cols, |_, _| rng.sample(StandardNormal))
}

/// A `rows × cols` matrix of N(0, std²) samples.
pub fn scaled_normal_matrix(
    rng: &mut impl rand::Rng,
    rows: usize,
    cols: usize,
    std: f32,
) -> Matrix<f32> {
    Matrix::from_fn(rows, cols, |_, _| {
        std * rng.sample::<f32, _>(StandardNormal)
    })
}
