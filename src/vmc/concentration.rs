//! Detecting a wavefunction that has collapsed onto one configuration.
//!
//! An autoregressive `p` can concentrate on a single configuration `s0`: J1-J2 trained with
//! Adam from the default start falls onto the Néel state. Then (nearly) every sample is `s0`,
//! the sampled variance of `E_loc` is zero to rounding and the V-score reads like that of an
//! eigenstate, although `|s0>` is not one. The variance has not gone; the samples miss it. With
//! `psi(s') << psi(s0)` for the configurations `s'` one move away,
//! `E_loc(s') ~ H[s', s0] psi(s0) / psi(s')` is huge exactly where `p(s')` is tiny, and
//! `p(s') |E_loc(s') - E|^2 ~ |H[s', s0]|^2 p(s0)` stays finite: the variance of the
//! configuration `|s0>` itself, which no sample sees.
//!
//! The check enumerates that neighbourhood exactly. With `S = {s0} + {s' : H[s', s0] != 0}`
//! and `psi` normalised,
//!
//! `V_S = sum_{s in S} p(s) |E_loc(s) - E|^2  <=  sum_s p(s) |E_loc(s) - E|^2 = Var(H) + |<H> - E|^2`,
//!
//! a lower bound on the state's true variance (every term is non-negative; `E` is the sampled
//! energy, whose own error is the second term). A correct state that is nearly one
//! configuration (a weakly perturbed product state) has `E_loc` nearly constant on `S`, so
//! `V_S` is small there too; a collapsed one has `V_S` many times the sampled variance.

use num_complex::Complex64;

use crate::error::Result;
use crate::model::MaskedDiffusion;
use crate::operator::{Connections, Operator};
use crate::vmc::local_energy::local_energies;

/// `p` of the most probable sampled configuration above which [`neighbourhood_variance`] is
/// worth computing.
pub const CONCENTRATED: f64 = 0.99;

/// How a collapse warning starts ([`collapse_warning`]; `Summary::collapsed` looks for it).
pub const COLLAPSED: &str = "collapsed";

/// The variance seen by the samples is this many times below the exact neighbourhood's
/// lower bound in a collapse.
pub const MISSED_FACTOR: f64 = 10.0;

/// The most probable of a batch of samples: its index and `p` (from `log p`).
pub fn most_probable(log_p: &[f64]) -> Option<(usize, f64)> {
    log_p
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, &l)| (i, l.exp()))
}

/// `V_S` of the module documentation for the configuration `s0` and the energy `energy`, and
/// the size of `S`. Configurations outside the model's support (`p = 0`, e.g. outside an
/// `S^z` sector) contribute nothing.
pub fn neighbourhood_variance(
    model: &MaskedDiffusion,
    op: &dyn Operator,
    s0: &[u8],
    energy: f64,
) -> Result<(f64, usize)> {
    let n = s0.len();
    let mut c = Connections::new();
    op.connected(s0, &mut c);
    c.merge_duplicates();
    let mut set = s0.to_vec();
    set.extend_from_slice(&c.configs);
    let log_psi = model.log_psi(&set)?;
    let eloc = local_energies(op, &set, n, &log_psi, &|cfg, _| model.log_psi(cfg))?;
    let e = Complex64::new(energy, 0.0);
    let v = log_psi
        .iter()
        .zip(&eloc)
        .filter(|(l, _)| l.re.is_finite())
        .map(|(l, el)| {
            let p = (2.0 * l.re).exp();
            if p == 0.0 {
                0.0
            } else {
                p * (el - e).norm_sqr()
            }
        })
        .sum();
    Ok((v, set.len() / n))
}

/// The warning of a collapsed state, or `None`: the most probable sample has `p_max >=`
/// [`CONCENTRATED`] and the exact neighbourhood bound `v_s` exceeds the sampled `variance`
/// [`MISSED_FACTOR`] times (and is not rounding: above `1e-12 E^2`).
pub fn collapse_warning(
    p_max: f64,
    v_s: f64,
    size: usize,
    variance: f64,
    energy: f64,
) -> Option<String> {
    let floor = 1e-12 * energy * energy;
    (p_max >= CONCENTRATED && v_s > MISSED_FACTOR * variance && v_s > floor).then(|| {
        format!(
            "{COLLAPSED}: the state puts p = {p_max:.6} on one configuration; the samples' variance \
             ({variance:.3e}) misses that of its {} neighbours, which alone contribute {v_s:.3e} \
             (exact, by enumeration), so the energy is that of one configuration and the small \
             variance and V-score do not mean convergence. Try --optimizer sr with --temper 0.25 \
             (training samples from a broadened p, so the neighbours are seen), --anneal T0 (an \
             entropy bonus that keeps p spread), a phase option (--phase), or the settings in the \
             README's accuracy table",
            size - 1
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_needs_concentration_and_missed_variance() {
        // Concentrated, the neighbourhood's variance far above the sampled one: collapse.
        assert!(collapse_warning(0.9999, 8.0, 65, 1e-27, -4.0).is_some());
        // Spread out: no claim, whatever the numbers.
        assert!(collapse_warning(0.5, 8.0, 65, 1e-27, -4.0).is_none());
        // Concentrated but the samples see the variance: a nearly classical state.
        assert!(collapse_warning(0.999, 0.01, 17, 0.005, -20.0).is_none());
        // Both variances at rounding level.
        assert!(collapse_warning(0.999, 1e-20, 17, 0.0, -20.0).is_none());
        assert_eq!(
            most_probable(&[-3.0, -0.001, f64::NEG_INFINITY]).unwrap().0,
            1
        );
        assert!(most_probable(&[]).is_none());
    }
}
