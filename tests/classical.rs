//! Classical samplers against exact numbers: the Ising model by enumeration (4x4) and by the
//! transfer matrix (8x8 at beta_c), free phi^4 against its exact propagator (per mode and the
//! zero-momentum two-point function G(r)), and the
//! Schwinger-Dyson identity on an interacting phi^4 ensemble. Fixed seeds; tolerances are
//! about 4 computed standard deviations, so a wrong chain fails.

use std::sync::atomic::AtomicBool;

use rgdiff::field::exact::{
    ising_enumerate, ising_kaufman, ising_magnetization_moments, ising_transfer_matrix, IsingExact,
};
use rgdiff::field::{
    analyse, run_chain, Analysis, ChainConfig, ChainResult, Configs, Method, Theory,
};
use rgdiff::lattice::{Boundary, Lattice};

const BETA_C: f64 = 0.440_686_793_509_771_5;

fn chain(
    lat: &Lattice,
    theory: Theory,
    method: Method,
    samples: usize,
    every: usize,
) -> ChainResult {
    let cfg = ChainConfig {
        method,
        samples,
        thermalise: 500,
        sweeps_per_sample: every,
        seed: 7,
    };
    run_chain(lat, &theory, &cfg, &mut |_| {}, &AtomicBool::new(false)).unwrap()
}

#[track_caller]
fn within(a: &Analysis, name: &str, want: f64, sigmas: f64) {
    let e = a.estimates[name];
    assert!(
        e.error > 0.0 && e.pull(want) < sigmas,
        "{name}: {} +- {} vs exact {want} ({:.1} sigma)",
        e.mean,
        e.error,
        e.pull(want)
    );
}

/// Chi-square of the (bond sum, M) histogram of `spins` against the exact distribution, bins
/// with fewer than 5 expected counts merged; returns (chi2, degrees of freedom).
pub fn chi_square(ex: &IsingExact, lat: &Lattice, spins: &[i8]) -> (f64, usize) {
    let n = lat.n_sites();
    let samples = spins.len() / n;
    let mut observed = vec![0usize; ex.histogram.len()];
    for s in spins.chunks(n) {
        let b: i64 = lat.bonds().iter().map(|&(i, j)| (s[i] * s[j]) as i64).sum();
        let m: i64 = s.iter().map(|&v| v as i64).sum();
        let k = ex
            .histogram
            .iter()
            .position(|c| c.0 == b && c.1 == m)
            .expect("every sampled class is possible");
        observed[k] += 1;
    }
    let (mut chi2, mut bins) = (0.0, 0);
    let (mut rest_o, mut rest_e) = (0.0, 0.0);
    for (k, c) in ex.histogram.iter().enumerate() {
        let e = c.2 * samples as f64;
        if e < 5.0 {
            rest_o += observed[k] as f64;
            rest_e += e;
        } else {
            chi2 += (observed[k] as f64 - e).powi(2) / e;
            bins += 1;
        }
    }
    if rest_e > 0.0 {
        chi2 += (rest_o - rest_e).powi(2) / rest_e;
        bins += 1;
    }
    (chi2, bins - 1)
}

#[track_caller]
fn chi_square_ok(chi2: f64, dof: usize) {
    // Mean dof, standard deviation sqrt(2 dof): 4 standard deviations.
    let limit = dof as f64 + 4.0 * (2.0 * dof as f64).sqrt();
    assert!(
        chi2 < limit,
        "chi2 = {chi2:.1} for {dof} dof (limit {limit:.1})"
    );
}

#[test]
fn ising_4x4_metropolis_and_wolff_are_exact() {
    let lat = Lattice::square(4, 4, Boundary::Periodic);
    let theory = Theory::Ising {
        beta: BETA_C,
        j: 1.0,
        h: 0.0,
    };
    let ex = ising_enumerate(&lat, BETA_C, 1.0, 0.0);
    // Thinned so that consecutive samples are nearly independent for the chi-square.
    for (method, every) in [(Method::Metropolis, 4), (Method::Wolff, 2)] {
        let r = chain(&lat, theory, method, 20_000, every);
        let a = analyse(&r.recorder);
        assert!(a.tau_int.mean < 1.5, "{method:?}: tau_int {:?}", a.tau_int);
        within(&a, "energy_density", ex.energy_density, 4.0);
        within(&a, "abs_magnetization", ex.abs_magnetization, 4.0);
        within(&a, "binder", ex.binder, 4.0);
        within(&a, "susceptibility", ex.susceptibility, 4.0);
        let Configs::Spins(s) = &r.configs else {
            panic!()
        };
        let (chi2, dof) = chi_square(&ex, &lat, &s.to_i8());
        chi_square_ok(chi2, dof);
    }
}

#[test]
fn ising_with_a_field_and_antiferromagnetic_coupling() {
    // Wolff with h != 0 (accept/reject of cluster flips) and J < 0 on a 4x4 torus.
    let lat = Lattice::square(4, 4, Boundary::Periodic);
    for (beta, j, h) in [(0.3, 1.0, 0.2), (0.5, -1.0, 0.0)] {
        let ex = ising_enumerate(&lat, beta, j, h);
        for method in [Method::Metropolis, Method::Wolff] {
            let r = chain(&lat, Theory::Ising { beta, j, h }, method, 10_000, 2);
            let a = analyse(&r.recorder);
            within(&a, "energy_density", ex.energy_density, 4.0);
            within(&a, "m2_density", ex.m2_density, 4.0);
        }
    }
}

#[test]
fn ising_8x8_at_beta_c_matches_the_transfer_matrix() {
    let lat = Lattice::square(8, 8, Boundary::Periodic);
    let (_, e, _) = ising_transfer_matrix(8, BETA_C, 1.0);
    let (am, m2, chi, binder) = ising_magnetization_moments(8, BETA_C, 1.0);
    let theory = Theory::Ising {
        beta: BETA_C,
        j: 1.0,
        h: 0.0,
    };
    for (method, samples) in [(Method::Wolff, 20_000), (Method::Metropolis, 40_000)] {
        let a = analyse(&chain(&lat, theory, method, samples, 1).recorder);
        within(&a, "energy_density", e, 4.0);
        within(&a, "m2_density", m2, 4.0);
        within(&a, "abs_magnetization", am, 4.0);
        within(&a, "susceptibility", chi, 4.0);
        within(&a, "binder", binder, 4.0);
    }
}

#[test]
fn ising_16x16_at_beta_c_matches_kaufman() {
    let lat = Lattice::square(16, 16, Boundary::Periodic);
    let (_, e) = ising_kaufman(16, BETA_C, 1.0);
    let theory = Theory::Ising {
        beta: BETA_C,
        j: 1.0,
        h: 0.0,
    };
    let a = analyse(&chain(&lat, theory, Method::Wolff, 10_000, 1).recorder);
    within(&a, "energy_density", e, 4.0);
}

#[test]
fn free_field_two_point_function_is_exact() {
    // lambda = 0: <|phi~(p)|^2> = 1 / (2 (p_hat^2 + m2)) per mode.
    let lat = Lattice::square(6, 6, Boundary::Periodic);
    let m2 = 0.5;
    let theory = Theory::Phi4 { m2, lambda: 0.0 };
    let p2 = lat.p_hat_squared();
    let n = lat.n_sites() as f64;
    let phi2_local: f64 = p2.iter().map(|p| 1.0 / (2.0 * (p + m2))).sum::<f64>() / n;
    let kmin = 4.0 * (std::f64::consts::PI / 6.0).sin().powi(2);
    for method in [Method::Hmc, Method::Metropolis] {
        let r = chain(&lat, theory, method, 20_000, 1);
        let a = analyse(&r.recorder);
        within(&a, "m2_density", 1.0 / (2.0 * m2), 4.0);
        // F = <|phi~(k_min)|^2>, and G(0) - G(1) etc. are checked through the local <phi^2>.
        let f = rgdiff::stats::correlated(&r.recorder.f_kmin);
        assert!(
            (f.mean - 1.0 / (2.0 * (kmin + m2))).abs() < 4.0 * f.error,
            "{method:?}: F = {} +- {}",
            f.mean,
            f.error
        );
        let Configs::Field(phi) = &r.configs else {
            panic!()
        };
        let per: Vec<f64> = phi
            .chunks(lat.n_sites())
            .map(|c| c.iter().map(|v| v * v).sum::<f64>() / n)
            .collect();
        let s = rgdiff::stats::correlated(&per);
        assert!(
            (s.mean - phi2_local).abs() < 4.0 * s.error,
            "{method:?}: <phi^2> = {} +- {} vs {phi2_local}",
            s.mean,
            s.error
        );
        // The zero-momentum two-point function: G(r) = (1/L_x) sum_{k_x} cos(k_x r) D(k_x, 0),
        // D(p) = 1 / (2 (p_hat^2 + m2)).
        for r in 0..6 {
            let want: f64 = (0..6)
                .map(|n| {
                    let k = 2.0 * std::f64::consts::PI * n as f64 / 6.0;
                    (k * r as f64).cos() / (2.0 * (4.0 * (k / 2.0).sin().powi(2) + m2))
                })
                .sum::<f64>()
                / 6.0;
            let (g, e) = (a.two_point.mean[r], a.two_point.error[r]);
            assert!(
                (g - want).abs() < 4.0 * e,
                "{method:?}: G({r}) = {g} +- {e} vs {want}"
            );
        }
        // Schwinger-Dyson holds for any action.
        within(&a, "schwinger_dyson", 1.0, 4.0);
    }
}

#[test]
fn schwinger_dyson_on_interacting_phi4() {
    let lat = Lattice::square(8, 8, Boundary::Periodic);
    let theory = Theory::Phi4 {
        m2: -4.0,
        lambda: 8.0,
    };
    let mut abs_m = Vec::new();
    for method in [Method::Hmc, Method::Wolff, Method::Metropolis] {
        let a = analyse(&chain(&lat, theory, method, 5_000, 1).recorder);
        within(&a, "schwinger_dyson", 1.0, 4.0);
        abs_m.push(a.estimates["abs_magnetization"]);
    }
    // The three chains agree with each other.
    for w in abs_m.windows(2) {
        let d = (w[0].mean - w[1].mean).abs();
        let e = (w[0].error.powi(2) + w[1].error.powi(2)).sqrt();
        assert!(d < 4.0 * e, "{abs_m:?}");
    }
}
