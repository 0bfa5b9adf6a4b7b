//! The single-site eigenbasis of the phi^4 oscillator (`basis = "local"` in a `phi4` file).
//!
//! The on-site part of the phi^4 Hamiltonian at a site of coordination `z`,
//! `h = pi^2/2 + (m2 + z)/2 phi^2 + lambda phi^4` (the coupling's `phi_x^2` terms included),
//! is diagonalised in the truncated Fock basis of frequency `omega`. Its eigenvectors `u_k`
//! (levels ascending) span the same `d`-level space, so `H' = U^dag H U` on every site has
//! exactly the spectrum of the Fock-basis `H`; each eigenvector's sign is fixed so that
//! `<u_k|phi|u_{k+1}> > 0`.
//!
//! Why: in the Fock basis `lambda phi^4` has positive off-diagonal elements (`a^4`, ...), so the
//! ground state has negative amplitudes and no positive wavefunction reaches it: on
//! `phi4_chain_4.toml`, `|psi_0|` is 1.2e-3 above E0 and the best non-negative vector (projected
//! gradient descent of the Rayleigh quotient) 3.1e-4 above. In the local eigenbasis the on-site
//! part is diagonal and the only off-diagonal term is the coupling `-phi_x phi_y`, with
//! elements `-<j|phi|k><l|phi|m>`; with the sign convention above `phi`'s elements are
//! non-negative except for small ones near the cutoff, and the ground state is positive up to
//! those: `|psi_0|` is 1e-14 above E0 on `phi4_chain_4_local.toml` (negative weight 1e-19).

use nalgebra::DMatrix;
use num_complex::Complex64;

use super::local_ops::{product_on_site, LocalOp, Mat};

/// `U` (columns: the eigenvectors of `h`, levels ascending, signs fixed as above) as a
/// complex matrix, and the levels.
pub fn phi4_site_basis(m2_site: f64, lambda: f64, d: usize, omega: f64) -> (Mat, Vec<f64>) {
    let re = |ops: &[LocalOp]| {
        let m = product_on_site(ops, false, d, omega);
        DMatrix::from_fn(d, d, |i, j| m.get(i, j).re)
    };
    let h = re(&[LocalOp::Pi, LocalOp::Pi]) * 0.5
        + re(&[LocalOp::Phi, LocalOp::Phi]) * (0.5 * m2_site)
        + re(&[LocalOp::Phi; 4]) * lambda;
    let phi = re(&[LocalOp::Phi]);
    // Symmetrise against rounding in the products.
    let h = (&h + h.transpose()) * 0.5;
    let eig = h.symmetric_eigen();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[a].total_cmp(&eig.eigenvalues[b]));
    let mut u = DMatrix::<f64>::zeros(d, d);
    for (k, &c) in order.iter().enumerate() {
        u.set_column(k, &eig.eigenvectors.column(c));
    }
    // Ground level with a positive vacuum component, then <u_k|phi|u_{k+1}> > 0.
    if u[(0, 0)] < 0.0 {
        u.column_mut(0).neg_mut();
    }
    for k in 1..d {
        let v = (u.column(k - 1).transpose() * &phi * u.column(k))[(0, 0)];
        if v < 0.0 {
            u.column_mut(k).neg_mut();
        }
    }
    let mut out = Mat::zeros(d);
    for i in 0..d {
        for j in 0..d {
            out.set(i, j, Complex64::new(u[(i, j)], 0.0));
        }
    }
    let levels = order.iter().map(|&c| eig.eigenvalues[c]).collect();
    (out, levels)
}

/// `U^dag M U`: a site matrix in the basis of `U`'s columns.
pub fn in_basis(m: &Mat, u: &Mat) -> Mat {
    let mut udag = Mat::zeros(u.n);
    for i in 0..u.n {
        for j in 0..u.n {
            udag.set(i, j, u.get(j, i).conj());
        }
    }
    udag.matmul(&m.matmul(u))
}
