//! Closed-form ground-state energies that serve as references beyond the reach of exact
//! diagonalization (and as independent checks within it).

use std::f64::consts::PI;

use crate::lattice::{Boundary, Lattice, Shape};
use crate::operator::Model;

/// Ground-state energy of the periodic TFIM chain `H = -J sum Z_i Z_{i+1} - h sum X_i` of even
/// length `n` (Jordan-Wigner free fermions; the ground state lies in the even spin-flip parity
/// sector, where the fermions are antiperiodic):
/// `E0 = -2 sum_{m=1}^{n/2} sqrt(J^2 + h^2 - 2 |J h| cos((2m - 1) pi / n))`.
///
/// `None` for odd `n`, where the formula does not hold. The signs of `J` and `h` do not change
/// the spectrum on an even ring (a sublattice rotation maps `J -> -J`, a global one `h -> -h`).
pub fn tfim_chain_e0(n: usize, j: f64, h: f64) -> Option<f64> {
    if n == 0 || !n.is_multiple_of(2) {
        return None;
    }
    let jh = (j * h).abs();
    Some(
        -2.0 * (1..=n / 2)
            .map(|m| {
                let k = (2 * m - 1) as f64 * PI / n as f64;
                (j * j + h * h - 2.0 * jh * k.cos()).sqrt()
            })
            .sum::<f64>(),
    )
}

/// Ground-state energy of the harmonic lattice `sum_x [pi^2/2 + m2 phi^2/2] + 1/2 sum_<xy>
/// (phi_x - phi_y)^2` on a periodic chain of `n` sites (normal modes): `1/2 sum_k w_k`,
/// `w_k^2 = m2 + 4 sin^2(k/2)`, `k = 2 pi m / n`. This is the limit of an infinite Fock
/// cutoff; a truncated `phi4` model at `lambda = 0` approaches it from above.
pub fn harmonic_chain_e0(n: usize, m2: f64) -> f64 {
    0.5 * (0..n)
        .map(|m| {
            let k = 2.0 * PI * m as f64 / n as f64;
            (m2 + 4.0 * (k / 2.0).sin().powi(2)).sqrt()
        })
        .sum::<f64>()
}

/// The exact ground-state energy of `model` on `lattice` when a closed form covers it: today
/// the periodic TFIM chain of even length without longitudinal field. (The harmonic chain is
/// not used here: the truncated Fock space of a `phi4` file differs from it by the cutoff.)
pub fn ground_energy(lattice: &Lattice, model: &Model) -> Option<f64> {
    match (lattice.shape(), lattice.boundary(), model) {
        (Shape::Chain, Boundary::Periodic, Model::Tfim { j, h, g }) if *g == 0.0 => {
            tfim_chain_e0(lattice.n_sites(), *j, *h)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfim_chain_limits() {
        // h = 0: classical ferromagnet, E0 = -J N.
        assert!((tfim_chain_e0(8, 1.0, 0.0).unwrap() + 8.0).abs() < 1e-12);
        // J = 0: free spins in the field, E0 = -h N.
        assert!((tfim_chain_e0(8, 0.0, 2.0).unwrap() + 16.0).abs() < 1e-12);
        // Signs do not matter on an even ring; odd rings are not covered.
        assert_eq!(tfim_chain_e0(10, -1.0, 0.7), tfim_chain_e0(10, 1.0, 0.7));
        assert_eq!(tfim_chain_e0(7, 1.0, 1.0), None);
        // The shipped file's reference value.
        assert!((tfim_chain_e0(16, 1.0, 1.0).unwrap() + 20.404594474757).abs() < 1e-11);
    }

    #[test]
    fn harmonic_chain_massless_zero_mode() {
        // m2 = 0 on 2 sites: modes w = 0 and 2.
        assert!((harmonic_chain_e0(2, 0.0) - 1.0).abs() < 1e-12);
    }
}
