//! Matrix-free Lanczos for the lowest eigenvalues of a Hermitian operator.
//!
//! Plain three-term recurrence `beta_j v_{j+1} = H v_j - alpha_j v_j - beta_{j-1} v_{j-1}`
//! without reorthogonalisation; only three vectors are needed. Loss of orthogonality shows up
//! as "ghost" copies of converged Ritz values, which are merged: the levels reported are the
//! lowest *distinct* eigenvalues (a single Krylov space sees one vector per degenerate
//! eigenspace, so multiplicities are not resolved). A Ritz value `theta_i` is accepted when it
//! has stopped moving (`|delta theta| <= tol max(1, |theta|) / 10` between checks) and its residual
//! `||H y - theta y|| = beta_m |s_{m,i}|` is below `tol^(3/4) max(1, |theta|)`. The residual
//! bounds the distance to the nearest eigenvalue rigorously, so two levels closer than that
//! bound cannot be mistaken for one converged level (a stagnating Ritz value between two
//! nearly degenerate levels has a residual of the order of their splitting).
//!
//! The ground-state vector `sum_j s_{j,0} v_j` is formed either from stored Krylov vectors or
//! by running the same recurrence a second time. All reductions are done in fixed-size blocks
//! summed in a fixed order, so a run is bit-for-bit reproducible for a given seed and the
//! second pass regenerates exactly the same vectors.

use nalgebra::{DMatrix, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::scalar::Scalar;

const BLOCK: usize = 1 << 14;

/// Settings of a Lanczos run.
#[derive(Clone, Debug)]
pub struct LanczosOptions {
    /// How many distinct lowest levels to converge.
    pub levels: usize,
    /// Relative convergence tolerance of the eigenvalues.
    pub tol: f64,
    /// Most Lanczos steps.
    pub max_iter: usize,
    /// Seed of the random start vector.
    pub seed: u64,
    /// Most Krylov vectors to keep for the ground-state vector (one pass); a run that needs
    /// more drops them and recomputes the vectors in a second pass. 0: always recompute.
    pub max_stored: usize,
    /// Return the ground-state vector.
    pub want_vector: bool,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        LanczosOptions {
            levels: 1,
            tol: 1e-10,
            max_iter: 1000,
            seed: 1,
            max_stored: 0,
            want_vector: true,
        }
    }
}

/// Outcome of a Lanczos run.
#[derive(Clone, Debug)]
pub struct LanczosResult<S> {
    /// Lowest distinct eigenvalues found, ascending.
    pub energies: Vec<f64>,
    /// Residual norms of the corresponding Ritz vectors.
    pub residuals: Vec<f64>,
    /// Lanczos steps taken (matrix-vector products, not counting a second pass).
    pub iterations: usize,
    pub converged: bool,
    /// Normalised ground-state vector, if asked for.
    pub vector: Option<Vec<S>>,
}

/// Deterministic `<a, b> = sum conj(a_i) b_i`.
pub fn dot<S: Scalar>(a: &[S], b: &[S]) -> S {
    let parts: Vec<S> = a
        .par_chunks(BLOCK)
        .zip(b.par_chunks(BLOCK))
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .fold(S::zero(), |acc, (&u, &v)| acc + u.conj() * v)
        })
        .collect();
    parts.into_iter().fold(S::zero(), |acc, v| acc + v)
}

fn norm<S: Scalar>(a: &[S]) -> f64 {
    let parts: Vec<f64> = a
        .par_chunks(BLOCK)
        .map(|x| x.iter().map(|v| v.abs2()).sum::<f64>())
        .collect();
    parts.into_iter().sum::<f64>().sqrt()
}

fn scale<S: Scalar>(a: &mut [S], f: f64) {
    a.par_iter_mut().for_each(|v| *v = v.scale(f));
}

/// A random unit vector from `seed`.
pub fn random_vector<S: Scalar>(dim: usize, seed: u64) -> Vec<S> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut v: Vec<S> = (0..dim)
        .map(|_| {
            let re: f64 = rng.random_range(-1.0..1.0);
            if S::IS_COMPLEX {
                let im: f64 = rng.random_range(-1.0..1.0);
                S::from_c64(num_complex::Complex64::new(re, im))
            } else {
                S::from_re(re)
            }
        })
        .collect();
    let n = norm(&v);
    scale(&mut v, 1.0 / n);
    v
}

/// One Lanczos step: from `v` (current) and `prev` (previous, scaled by `beta_prev`), computes
/// `w = H v - alpha v - beta_prev prev`, returns `(alpha, ||w||)`. `w` is left unnormalised.
fn step<S: Scalar>(
    apply: &(impl Fn(&[S], &mut [S]) + Sync),
    v: &[S],
    prev: &[S],
    beta_prev: f64,
    w: &mut [S],
) -> (f64, f64) {
    apply(v, w);
    let alpha = dot(v, w).to_c64().re;
    let parts: Vec<f64> = w
        .par_chunks_mut(BLOCK)
        .zip(v.par_chunks(BLOCK))
        .zip(prev.par_chunks(BLOCK))
        .map(|((wc, vc), pc)| {
            let mut acc = 0.0;
            for ((wi, &vi), &pi) in wc.iter_mut().zip(vc).zip(pc) {
                *wi = *wi - vi.scale(alpha) - pi.scale(beta_prev);
                acc += wi.abs2();
            }
            acc
        })
        .collect();
    (alpha, parts.into_iter().sum::<f64>().sqrt())
}

/// Eigen-decomposition of the tridiagonal matrix with diagonal `a` and off-diagonal `b`;
/// eigenvalues ascending with their eigenvectors as columns.
fn ritz(a: &[f64], b: &[f64]) -> (Vec<f64>, DMatrix<f64>) {
    let m = a.len();
    let t = DMatrix::from_fn(m, m, |i, j| {
        if i == j {
            a[i]
        } else if i + 1 == j {
            b[i]
        } else if j + 1 == i {
            b[j]
        } else {
            0.0
        }
    });
    let eig = SymmetricEigen::new(t);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[i].total_cmp(&eig.eigenvalues[j]));
    let vals = order.iter().map(|&i| eig.eigenvalues[i]).collect();
    let vecs = DMatrix::from_fn(m, m, |r, c| eig.eigenvectors[(r, order[c])]);
    (vals, vecs)
}

/// Lowest distinct Ritz values with residuals, and the column index of each.
fn distinct_levels(
    vals: &[f64],
    vecs: &DMatrix<f64>,
    beta_last: f64,
    k: usize,
) -> Vec<(f64, f64, usize)> {
    let m = vals.len();
    let mut out: Vec<(f64, f64, usize)> = Vec::new();
    for (c, &v) in vals.iter().enumerate() {
        let res = beta_last * vecs[(m - 1, c)].abs();
        match out.last_mut() {
            Some(last) if (v - last.0).abs() <= 1e-8 * v.abs().max(1.0) => {
                // A ghost copy (or the same level): keep the better-converged one.
                if res < last.1 {
                    *last = (v, res, c);
                }
            }
            _ => {
                if out.len() == k {
                    break;
                }
                out.push((v, res, c));
            }
        }
    }
    out
}

/// Runs Lanczos on the operator `apply: x -> H x` of dimension `dim`. `progress` is called
/// after each convergence check with the step count and the current lowest Ritz value.
pub fn lanczos<S: Scalar>(
    dim: usize,
    apply: impl Fn(&[S], &mut [S]) + Sync,
    opts: &LanczosOptions,
    mut progress: impl FnMut(usize, f64),
) -> LanczosResult<S> {
    assert!(dim > 0);
    let k = opts.levels.max(1);
    let max_iter = opts.max_iter.max(1);
    let mut v = random_vector::<S>(dim, opts.seed);
    let mut prev = vec![S::zero(); dim];
    let mut w = vec![S::zero(); dim];
    let mut stored: Vec<Vec<S>> = Vec::new();
    let mut overflow = opts.max_stored == 0;
    let (mut alphas, mut betas) = (Vec::new(), Vec::new());
    let mut last: Vec<f64> = Vec::new();
    let mut converged = false;
    let mut result_levels: Vec<(f64, f64, usize)> = Vec::new();
    let mut final_vecs = DMatrix::zeros(0, 0);
    let mut beta_prev = 0.0;
    for it in 0..max_iter {
        if opts.want_vector && !overflow {
            if stored.len() < opts.max_stored {
                stored.push(v.clone());
            } else {
                overflow = true;
                stored = Vec::new();
            }
        }
        let (alpha, beta) = step(&apply, &v, &prev, beta_prev, &mut w);
        alphas.push(alpha);
        let m = alphas.len();
        let scale_h = alphas.iter().fold(0.0f64, |a, &x| a.max(x.abs())).max(1.0);
        let breakdown = beta <= 1e-12 * scale_h;
        let check = m <= 30 || m % 3 == 0 || breakdown || it + 1 == max_iter;
        if check {
            let (vals, vecs) = ritz(&alphas, &betas);
            let levels = distinct_levels(&vals, &vecs, beta, k);
            progress(m, levels[0].0);
            let moved = last.len() != levels.len()
                || levels
                    .iter()
                    .zip(&last)
                    .any(|(l, &p)| (l.0 - p).abs() > 0.1 * opts.tol * l.0.abs().max(1.0));
            let small_res = levels
                .iter()
                .all(|l| l.1 <= opts.tol.powf(0.75) * l.0.abs().max(1.0));
            last = levels.iter().map(|l| l.0).collect();
            result_levels = levels;
            final_vecs = vecs;
            if breakdown || (levels_ok(&last, k, m) && !moved && small_res) {
                converged = true;
                break;
            }
        }
        betas.push(beta);
        // v_{j+1} = w / beta; rotate buffers: prev <- v, v <- w / beta.
        std::mem::swap(&mut prev, &mut v);
        std::mem::swap(&mut v, &mut w);
        scale(&mut v, 1.0 / beta);
        beta_prev = beta;
    }
    let iterations = alphas.len();
    let vector = if opts.want_vector {
        let col = result_levels[0].2;
        let coeffs: Vec<f64> = (0..iterations).map(|j| final_vecs[(j, col)]).collect();
        Some(ground_vector(dim, &apply, opts, &coeffs, &stored, &betas))
    } else {
        None
    };
    LanczosResult {
        energies: result_levels.iter().map(|l| l.0).collect(),
        residuals: result_levels.iter().map(|l| l.1).collect(),
        iterations,
        converged,
        vector,
    }
}

fn levels_ok(levels: &[f64], k: usize, m: usize) -> bool {
    levels.len() >= k.min(m)
}

/// `sum_j c_j v_j`, from stored vectors or by re-running the recurrence with the recorded
/// `beta`s (the `alpha`s are recomputed identically).
fn ground_vector<S: Scalar>(
    dim: usize,
    apply: &(impl Fn(&[S], &mut [S]) + Sync),
    opts: &LanczosOptions,
    coeffs: &[f64],
    stored: &[Vec<S>],
    betas: &[f64],
) -> Vec<S> {
    let mut psi = vec![S::zero(); dim];
    let add = |psi: &mut [S], v: &[S], c: f64| {
        psi.par_iter_mut()
            .zip(v.par_iter())
            .for_each(|(p, &x)| *p += x.scale(c));
    };
    if !stored.is_empty() {
        for (v, &c) in stored.iter().zip(coeffs) {
            add(&mut psi, v, c);
        }
    } else {
        let mut v = random_vector::<S>(dim, opts.seed);
        let mut prev = vec![S::zero(); dim];
        let mut w = vec![S::zero(); dim];
        let mut beta_prev = 0.0;
        for (j, &c) in coeffs.iter().enumerate() {
            add(&mut psi, &v, c);
            if j + 1 == coeffs.len() {
                break;
            }
            step(apply, &v, &prev, beta_prev, &mut w);
            let beta = betas[j];
            std::mem::swap(&mut prev, &mut v);
            std::mem::swap(&mut v, &mut w);
            scale(&mut v, 1.0 / beta);
            beta_prev = beta;
        }
    }
    let n = norm(&psi);
    scale(&mut psi, 1.0 / n);
    psi
}
