//! Dense exact diagonalization for tiny spaces: the independent cross-check of Lanczos, and
//! the solver used directly when a space is so small that Lanczos would gain nothing.

use nalgebra::{DMatrix, SymmetricEigen};
use num_complex::Complex64;

use super::lanczos::LanczosResult;
use crate::operator::{Connections, Operator};
use crate::scalar::Scalar;

/// The matrix `H[s', s]` in the full computational basis, built from the operator's connected
/// elements alone (mixed-radix ordering, site 0 least significant).
pub fn dense_matrix(op: &dyn Operator) -> DMatrix<Complex64> {
    let hilbert = op.hilbert();
    let dim = hilbert.dim().expect("dense matrix of a huge space") as usize;
    assert!(dim <= 1 << 14, "dense matrices are limited to 16384 states");
    let mut h = DMatrix::zeros(dim, dim);
    let mut s = vec![0u8; hilbert.n_sites];
    let mut conn = Connections::new();
    for col in 0..dim {
        hilbert.config_of(col as u64, &mut s);
        op.connected(&s, &mut conn);
        h[(col, col)] += conn.diag;
        for k in 0..conn.len() {
            let row = hilbert.index_of(conn.config(k)) as usize;
            h[(row, col)] += conn.values[k];
        }
    }
    h
}

/// The matrix of a linear map given only as `x -> H x`, column by column (tiny spaces).
pub fn dense_from_apply(
    dim: usize,
    apply: impl Fn(&[Complex64], &mut [Complex64]),
) -> DMatrix<Complex64> {
    let mut h = DMatrix::zeros(dim, dim);
    let mut e = vec![Complex64::new(0.0, 0.0); dim];
    let mut y = vec![Complex64::new(0.0, 0.0); dim];
    for col in 0..dim {
        e[col] = Complex64::new(1.0, 0.0);
        apply(&e, &mut y);
        for row in 0..dim {
            h[(row, col)] = y[row];
        }
        e[col] = Complex64::new(0.0, 0.0);
    }
    h
}

/// All eigenvalues of a Hermitian matrix, ascending.
pub fn eigenvalues(h: DMatrix<Complex64>) -> Vec<f64> {
    let mut v: Vec<f64> = SymmetricEigen::new(h).eigenvalues.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Eigenvalues and the eigenvector of the lowest one.
pub fn ground_state(h: DMatrix<Complex64>) -> (Vec<f64>, Vec<Complex64>) {
    let eig = SymmetricEigen::new(h);
    let mut order: Vec<usize> = (0..eig.eigenvalues.len()).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[i].total_cmp(&eig.eigenvalues[j]));
    let vals = order.iter().map(|&i| eig.eigenvalues[i]).collect();
    let vec = eig.eigenvectors.column(order[0]).iter().copied().collect();
    (vals, vec)
}

/// Lowest `k` distinct values of an ascending list (levels closer than `tol` merge).
pub fn distinct(values: &[f64], k: usize, tol: f64) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for &v in values {
        if out
            .last()
            .is_none_or(|&l| (v - l).abs() > tol * v.abs().max(1.0))
        {
            if out.len() == k {
                break;
            }
            out.push(v);
        }
    }
    out
}

/// Largest space solved densely instead of by Lanczos: there a dense solve is cheap, exact
/// for every level (including degenerate ones) and needs no convergence test.
pub const DENSE_MAX: usize = 400;

/// Solves a small space given as `x -> H x` densely, returning the same result type as
/// Lanczos (`iterations = 0`). For real amplitudes the ground-state vector is made real by
/// removing the global phase of its largest component.
pub fn solve_small<S: Scalar>(
    dim: usize,
    apply: impl Fn(&[S], &mut [S]),
    levels: usize,
    want_vector: bool,
) -> LanczosResult<S> {
    let mut h = DMatrix::zeros(dim, dim);
    let mut e = vec![S::zero(); dim];
    let mut y = vec![S::zero(); dim];
    for col in 0..dim {
        e[col] = S::from_re(1.0);
        apply(&e, &mut y);
        for row in 0..dim {
            h[(row, col)] = y[row].to_c64();
        }
        e[col] = S::zero();
    }
    let (vals, vec) = ground_state(h);
    let energies = distinct(&vals, levels.max(1), 1e-12);
    let vector = want_vector.then(|| {
        let big = vec
            .iter()
            .copied()
            .max_by(|a, b| a.norm().total_cmp(&b.norm()))
            .unwrap_or(Complex64::new(1.0, 0.0));
        let phase = big.conj() / big.norm();
        let v: Vec<S> = vec.iter().map(|c| S::from_c64(c * phase)).collect();
        let n = v.iter().map(|x| x.abs2()).sum::<f64>().sqrt();
        v.into_iter().map(|x| x.scale(1.0 / n)).collect()
    });
    LanczosResult {
        residuals: vec![0.0; energies.len()],
        energies,
        iterations: 0,
        converged: true,
        vector,
    }
}
