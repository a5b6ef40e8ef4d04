//! A dense row-major matrix: the one container every numeric module passes around.

use crate::error::ShapeError;

/// `rows × cols` values stored row by row. The length invariant is checked once
/// in [`Matrix::new`]; row accessors rely on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

impl<T: Copy + Default> Matrix<T> {
    /// Wraps `data` (row-major) as a `rows × cols` matrix.
    pub fn new(rows: usize, cols: usize, data: Vec<T>) -> Result<Self, ShapeError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(ShapeError::Length {
                what: "matrix",
                len: data.len(),
                rows,
                cols,
            });
        }
        Ok(Matrix { rows, cols, data })
    }

    /// A matrix of `T::default()` (zeros for numbers).
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![T::default(); rows * cols],
        }
    }

    /// Builds a matrix from `f(row, col)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> T) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                data.push(f(r, c));
            }
        }
        Matrix { rows, cols, data }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// All values, row-major.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    pub fn row(&self, r: usize) -> &[T] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn row_mut(&mut self, r: usize) -> &mut [T] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    pub fn get(&self, r: usize, c: usize) -> T {
        self.data[r * self.cols + c]
    }

    /// Applies `f` to every value, keeping the shape.
    pub fn map<U: Copy + Default>(&self, f: impl Fn(T) -> U) -> Matrix<U> {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_length() {
        assert!(Matrix::new(2, 3, vec![0.0f32; 6]).is_ok());
        assert!(matches!(
            Matrix::new(2, 3, vec![0.0f32; 5]),
            Err(ShapeError::Length { len: 5, .. })
        ));
        assert!(Matrix::<f32>::new(usize::MAX, 2, vec![]).is_err());
    }

    #[test]
    fn rows_are_row_major() {
        let m = Matrix::from_fn(2, 3, |r, c| (r * 10 + c) as i32);
        assert_eq!(m.row(1), &[10, 11, 12]);
        assert_eq!(m.get(0, 2), 2);
        assert_eq!(m.map(|v| v * 2).row(1), &[20, 22, 24]);
    }
}
