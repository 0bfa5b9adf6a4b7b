//! Helpers shared by the integration tests: closed-form reference values and tolerances.

#![allow(dead_code)]

use std::f64::consts::PI;

/// Ground-state energy of the periodic TFIM chain `H = -J sum Z_i Z_{i+1} - h sum X_i` of even
/// length `n` (free fermions, even-parity sector with antiperiodic fermions):
/// `E0 = -2 sum_{m=1}^{n/2} sqrt(J^2 + h^2 - 2 J h cos((2m - 1) pi / n))`.
pub fn tfim_chain_e0(n: usize, j: f64, h: f64) -> f64 {
    assert!(n.is_multiple_of(2), "the formula holds for even n");
    -2.0 * (1..=n / 2)
        .map(|m| {
            let k = (2 * m - 1) as f64 * PI / n as f64;
            (j * j + h * h - 2.0 * j * h * k.cos()).sqrt()
        })
        .sum::<f64>()
}

/// Ground-state energy of the harmonic lattice `sum_x [pi^2/2 + m2 phi^2/2] + 1/2 sum_<xy>
/// (phi_x - phi_y)^2` on a periodic chain of `n` sites: `1/2 sum_k w_k`,
/// `w_k^2 = m2 + 4 sin^2(k/2)`, `k = 2 pi m / n`.
pub fn harmonic_chain_e0(n: usize, m2: f64) -> f64 {
    0.5 * (0..n)
        .map(|m| {
            let k = 2.0 * PI * m as f64 / n as f64;
            (m2 + 4.0 * (k / 2.0).sin().powi(2)).sqrt()
        })
        .sum::<f64>()
}

/// Relative difference `|a - b| / max(|b|, 1e-300)`.
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

/// Asserts `|got - want| <= tol * |want|`.
#[track_caller]
pub fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        rel(got, want) <= tol,
        "{what}: got {got:.15}, want {want:.15} (relative error {:.3e} > {tol:.1e})",
        rel(got, want)
    );
}
