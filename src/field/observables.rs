//! Observables of classical fields with error bars (conventions.md, classical part).
//!
//! Per configuration ([`Recorder::record`]): the magnetisation `M = sum_x phi_x`, the energy
//! (Ising `E`) or action (phi^4 `S`), `F = |phi~(k_min)|^2` with
//! `phi~(k) = N^{-1/2} sum_x e^{-i k x} phi_x` and `k_min = 2 pi / L_x` along x (averaged with
//! the y direction on an `L x L` square), and the zero-momentum row products
//! `C(r) = (1/N) sum_x P_x P_{x+r}` of the row sums `P_x = sum_y phi_{x,y}` (a chain has
//! `P_x = phi_x`).
//!
//! From a series of configurations ([`analyse`]):
//! - `abs_magnetization` `<|M|>/N`, `magnetization` `<M>/N`;
//! - `susceptibility` `chi = (<M^2> - <|M|>^2)/N` (finite-volume convention: `<|M|>`
//!   because `<M> = 0` exactly by symmetry);
//! - `binder` `U4 = 1 - <M^4>/(3 <M^2>^2)`;
//! - `energy_density` `<E>/N` (Ising) or `<S>/N` (phi^4);
//! - the connected zero-momentum two-point function
//!   `G(r) = <C(r)> - <M>^2/(L_x N)`, whose sum over `r` is `(<M^2> - <M>^2)/N`;
//! - the second-moment correlation length `xi_2 = sqrt(chi_0/F - 1) / (2 sin(pi/L_x))`,
//!   `chi_0 = <M^2>/N`, `F = <|phi~(k_min)|^2>`;
//! - `tau_int` of `|M|` and of the energy, by Sokal's automatic window.
//!
//! Means of single series carry `sqrt(2 tau_int var / n)` errors; functions of several means
//! (susceptibility, Binder, G, xi) carry jackknife errors over blocks much longer than
//! `tau_int`.
//!
//! Several independent chains ([`analyse_chains`], e.g. one per MPI rank) are analysed as one
//! pooled series whose autocorrelations are taken within chains only
//! ([`stats::tau_int_chains`]); jackknife blocks of the concatenation may straddle a chain
//! boundary, which is harmless (it only joins two independent stretches).

use std::collections::BTreeMap;
use std::f64::consts::PI;

use serde::Serialize;

use crate::lattice::Lattice;
use crate::stats;

/// A Monte Carlo estimate as written to `observables.json`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub error: f64,
}

impl Estimate {
    pub fn new(mean: f64, error: f64) -> Self {
        Estimate { mean, error }
    }

    /// `|mean - want| / error` (in standard deviations).
    pub fn pull(&self, want: f64) -> f64 {
        (self.mean - want).abs() / self.error.max(1e-300)
    }
}

/// The two-point function `G(r)`, `r = 0 .. L_x - 1`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TwoPoint {
    pub r: Vec<usize>,
    pub mean: Vec<f64>,
    pub error: Vec<f64>,
}

/// Everything [`analyse`] estimates.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// Named estimates (`abs_magnetization`, `susceptibility`, ...).
    pub estimates: BTreeMap<String, Estimate>,
    pub two_point: TwoPoint,
    /// `tau_int` of `|M|` (the slowest of the recorded series for these chains).
    pub tau_int: Estimate,
    pub tau_int_energy: Estimate,
    pub samples: usize,
}

/// Per-configuration measurements of a series of configurations.
pub struct Recorder {
    lx: usize,
    ly: usize,
    square: bool,
    pub m: Vec<f64>,
    pub energy: Vec<f64>,
    pub f_kmin: Vec<f64>,
    /// `(1/V) sum_x phi_x dS/dphi_x` (phi^4 only).
    pub schwinger_dyson: Vec<f64>,
    corr: Vec<f64>,
    /// Scratch: the row sums `P_x` (over `y`), their integer copy for spins, and the line
    /// sums over `x` at each `y`.
    rows: Vec<f64>,
    int_rows: Vec<i64>,
    lines: Vec<f64>,
    cos_x: Vec<f64>,
    sin_x: Vec<f64>,
    cos_y: Vec<f64>,
    sin_y: Vec<f64>,
}

impl Recorder {
    pub fn new(lattice: &Lattice) -> Self {
        let [lx, ly] = lattice.extent();
        let phase = |l: usize| -> (Vec<f64>, Vec<f64>) {
            (0..l)
                .map(|x| {
                    let a = 2.0 * PI * x as f64 / l as f64;
                    (a.cos(), a.sin())
                })
                .unzip()
        };
        let (cos_x, sin_x) = phase(lx);
        let (cos_y, sin_y) = phase(ly);
        Recorder {
            lx,
            ly,
            square: ly > 1 && lx == ly,
            m: Vec::new(),
            energy: Vec::new(),
            f_kmin: Vec::new(),
            schwinger_dyson: Vec::new(),
            corr: Vec::new(),
            rows: vec![0.0; lx],
            int_rows: vec![0; lx],
            lines: vec![0.0; ly],
            cos_x,
            sin_x,
            cos_y,
            sin_y,
        }
    }

    /// Room for `n` more configurations, so that the series do not grow (and copy) while a
    /// chain of known length records.
    pub fn reserve(&mut self, n: usize) {
        self.m.reserve(n);
        self.energy.reserve(n);
        self.f_kmin.reserve(n);
        self.corr.reserve(n * self.lx);
    }

    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// The recorded series as one flat vector (for sending to another process):
    /// `[len, has_sd, m.., energy.., f_kmin.., schwinger_dyson.., corr..]`.
    pub fn pack(&self) -> Vec<f64> {
        let mut v = vec![
            self.len() as f64,
            (!self.schwinger_dyson.is_empty()) as u8 as f64,
        ];
        v.extend(&self.m);
        v.extend(&self.energy);
        v.extend(&self.f_kmin);
        v.extend(&self.schwinger_dyson);
        v.extend(&self.corr);
        v
    }

    /// Appends series packed by [`Recorder::pack`] (of the same lattice) after this one's;
    /// returns the number of values consumed from `v`.
    pub fn extend_packed(&mut self, v: &[f64]) -> usize {
        let len = v[0] as usize;
        let sd = if v[1] != 0.0 { len } else { 0 };
        let mut at = 2;
        let mut take = |k: usize| {
            let s = &v[at..at + k];
            at += k;
            s
        };
        self.m.extend(take(len));
        self.energy.extend(take(len));
        self.f_kmin.extend(take(len));
        self.schwinger_dyson.extend(take(sd));
        self.corr.extend(take(len * self.lx));
        at
    }

    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// Appends configuration `i` of `src` (a recorder of the same lattice): what a chain
    /// records when it accepts a proposal that `src` recorded.
    pub fn push_copy(&mut self, src: &Recorder, i: usize) {
        self.m.push(src.m[i]);
        self.energy.push(src.energy[i]);
        self.f_kmin.push(src.f_kmin[i]);
        if !src.schwinger_dyson.is_empty() {
            self.schwinger_dyson.push(src.schwinger_dyson[i]);
        }
        let lx = self.lx;
        self.corr.extend_from_slice(&src.corr[i * lx..(i + 1) * lx]);
    }

    /// Appends the last configuration again: what a chain records when it stays.
    pub fn repeat_last(&mut self) {
        let i = self.len() - 1;
        self.m.push(self.m[i]);
        self.energy.push(self.energy[i]);
        self.f_kmin.push(self.f_kmin[i]);
        if self.schwinger_dyson.len() > i {
            self.schwinger_dyson.push(self.schwinger_dyson[i]);
        }
        let lx = self.lx;
        self.corr.extend_from_within(i * lx..(i + 1) * lx);
    }

    /// Records one configuration `phi` (row-major, site `x + L_x y`) with its energy.
    pub fn record<T: Copy + Into<f64>>(&mut self, phi: &[T], energy: f64) {
        let (lx, ly) = (self.lx, self.ly);
        self.rows.fill(0.0);
        self.lines.fill(0.0);
        for y in 0..ly {
            let mut line = 0.0;
            for x in 0..lx {
                let v: f64 = phi[x + lx * y].into();
                self.rows[x] += v;
                line += v;
            }
            self.lines[y] = line;
        }
        for r in 0..lx {
            let c = circular_product(&self.rows, r);
            self.corr.push(c / (lx * ly) as f64);
        }
        self.finish(energy);
    }

    /// [`Self::record`] for spins `+-1`, with the same results bit for bit: the row sums
    /// and their products are integers, summed exactly in `i64` (vectorised) instead of
    /// in `f64` chains of dependent additions (a fifth of a table proposal's cost at
    /// L = 16 before).
    pub fn record_spins(&mut self, spins: &[i8], energy: f64) {
        let (lx, ly) = (self.lx, self.ly);
        self.int_rows.fill(0);
        for (y, line) in spins.chunks_exact(lx).take(ly).enumerate() {
            let mut sum = 0i64;
            for (p, &v) in self.int_rows.iter_mut().zip(line) {
                *p += i64::from(v);
                sum += i64::from(v);
            }
            self.lines[y] = sum as f64;
        }
        for (r, &p) in self.rows.iter_mut().zip(&self.int_rows) {
            *r = p as f64;
        }
        let p = &self.int_rows;
        for r in 0..lx {
            let c = circular_product(p, r);
            self.corr.push(c as f64 / (lx * ly) as f64);
        }
        self.finish(energy);
    }

    /// `M`, `F` and the energy of the configuration whose row sums (`rows`, over `y` at
    /// each `x`) and line sums (`lines`, over `x` at each `y`) were just written.
    fn finish(&mut self, energy: f64) {
        let n = (self.lx * self.ly) as f64;
        let (mut cy, mut sy) = (0.0, 0.0);
        for ((&l, c), s) in self.lines.iter().zip(&self.cos_y).zip(&self.sin_y) {
            cy += c * l;
            sy += s * l;
        }
        let m: f64 = self.rows.iter().sum();
        let (mut cx, mut sx) = (0.0, 0.0);
        for ((&p, c), s) in self.rows.iter().zip(&self.cos_x).zip(&self.sin_x) {
            cx += c * p;
            sx += s * p;
        }
        let mut f = (cx * cx + sx * sx) / n;
        if self.square {
            f = 0.5 * (f + (cy * cy + sy * sy) / n);
        }
        self.m.push(m);
        self.energy.push(energy);
        self.f_kmin.push(f);
    }
}

/// `sum_x p[x] p[(x + r) mod L]`, `L = p.len()`, without the division of `mod`.
fn circular_product<T: Copy + std::ops::Mul<Output = T> + std::iter::Sum>(p: &[T], r: usize) -> T {
    let (head, tail) = p.split_at(r);
    p[..p.len() - r]
        .iter()
        .zip(tail)
        .chain(p[p.len() - r..].iter().zip(head))
        .map(|(&a, &b)| a * b)
        .sum()
}

/// Number of jackknife blocks.
const BLOCKS: usize = 50;

/// Estimates every observable of the recorded series (at least 4 configurations).
pub fn analyse(rec: &Recorder) -> Analysis {
    analyse_chains(rec, &[rec.len()])
}

/// [`analyse`] for independent chains recorded one after the other (lengths `lens`):
/// autocorrelation times and the errors of means take pairs within chains only.
pub fn analyse_chains(rec: &Recorder, lens: &[usize]) -> Analysis {
    let correlated = |x: &[f64]| {
        let s = stats::correlated_chains(x, lens);
        Estimate::new(s.mean, s.error)
    };
    let jk = |series: &[&[f64]], f: &dyn Fn(&[f64]) -> f64| {
        let (v, e) = stats::jackknife(series, BLOCKS, f);
        Estimate::new(v, e)
    };
    let (estimates, two_point) = estimate_all(rec, &correlated, &jk);
    let abs_m: Vec<f64> = rec.m.iter().map(|m| m.abs()).collect();
    let tau = |x: &[f64]| {
        let (t, w) = stats::tau_int_chains(x, lens);
        Estimate::new(t, stats::tau_int_error(t, w, x.len()))
    };
    Analysis {
        tau_int: tau(&abs_m),
        tau_int_energy: tau(&rec.energy),
        estimates,
        two_point,
        samples: rec.len(),
    }
}

/// An estimator of a function `f` of the expectations of several per-configuration
/// series (`f` receives them in the order given).
type FunctionOfMeans<'a> = &'a dyn Fn(&[&[f64]], &dyn Fn(&[f64]) -> f64) -> Estimate;

/// Every observable of the module doc from the recorded series, with `mean` estimating
/// the expectation of one per-configuration series and `jk` functions of several.
fn estimate_all(
    rec: &Recorder,
    mean: &dyn Fn(&[f64]) -> Estimate,
    jk: FunctionOfMeans,
) -> (BTreeMap<String, Estimate>, TwoPoint) {
    let n_sites = (rec.lx * rec.ly) as f64;
    let abs_m: Vec<f64> = rec.m.iter().map(|m| m.abs()).collect();
    let m2: Vec<f64> = rec.m.iter().map(|m| m * m).collect();
    let m4: Vec<f64> = m2.iter().map(|m| m * m).collect();
    let mut est = BTreeMap::new();
    let per_site = |e: Estimate| Estimate::new(e.mean / n_sites, e.error / n_sites);
    est.insert("abs_magnetization".into(), per_site(mean(&abs_m)));
    est.insert("magnetization".into(), per_site(mean(&rec.m)));
    est.insert("energy_density".into(), per_site(mean(&rec.energy)));
    est.insert("m2_density".into(), per_site(mean(&m2)));
    est.insert(
        "susceptibility".into(),
        jk(&[&m2, &abs_m], &|m| (m[0] - m[1] * m[1]) / n_sites),
    );
    est.insert(
        "binder".into(),
        jk(&[&m4, &m2], &|m| 1.0 - m[0] / (3.0 * m[1] * m[1])),
    );
    let sin = (PI / rec.lx as f64).sin();
    est.insert(
        "correlation_length".into(),
        jk(&[&m2, &rec.f_kmin], &|m| {
            let chi0 = m[0] / n_sites;
            (chi0 / m[1] - 1.0).max(0.0).sqrt() / (2.0 * sin)
        }),
    );
    if !rec.schwinger_dyson.is_empty() {
        est.insert("schwinger_dyson".into(), mean(&rec.schwinger_dyson));
    }
    let lx = rec.lx;
    let mut g = TwoPoint {
        r: (0..lx).collect(),
        mean: Vec::with_capacity(lx),
        error: Vec::with_capacity(lx),
    };
    for r in 0..lx {
        let c: Vec<f64> = rec.corr.iter().skip(r).step_by(lx).copied().collect();
        let e = jk(&[&c, &rec.m], &|m| {
            m[0] - m[1] * m[1] / (lx as f64 * n_sites)
        });
        g.mean.push(e.mean);
        g.error.push(e.error);
    }
    (est, g)
}

/// The observables of [`analyse`] estimated by importance sampling instead of a chain.
#[derive(Clone, Debug, Serialize)]
pub struct Reweighted {
    /// The same names as [`Analysis::estimates`].
    #[serde(flatten)]
    pub estimates: BTreeMap<String, Estimate>,
    pub two_point: TwoPoint,
    /// Effective independent samples of `|M|` and of the energy, [`effective_samples`].
    pub effective_samples: BTreeMap<String, f64>,
    /// Proposals reweighted.
    pub samples: usize,
    /// The fewer effective samples of `|M|` and the energy per second of sampling.
    pub independent_samples_per_second: f64,
}

/// The observables of independent draws of a proposal `q`, recorded in `rec`, under the
/// target `p = exp(-S) / Z`, from the draws' log importance weights `log_w = -S - log q`
/// (`S = beta E` for the Ising model; any constant offset): self-normalised importance sampling,
/// `<O>_p = sum_i w_i O_i / sum_i w_i`, for every observable of [`analyse`]. Every estimate,
/// means included, is a function of the means of `w` and of `w O` for some series `O`, and
/// carries a jackknife error over `BLOCKS` blocks (the draws are independent, so any block
/// length is valid; the ratio's bias, O(1/n), is removed to first order). Exact for any `q`
/// that proposes every configuration (as `n -> infinity`), like the independence
/// Metropolis-Hastings chain fed by the same draws, and better: it keeps the rejected
/// proposals, so its effective sample count is the importance weights' (about the ESS,
/// [`effective_samples`]), while a chain's is `n / (2 tau_int)`.
/// `seconds` (the sampling time) turns the effective samples into a rate.
pub fn analyse_weighted(rec: &Recorder, log_w: &[f64], seconds: f64) -> Reweighted {
    assert_eq!(rec.len(), log_w.len(), "one weight per recorded draw");
    let w = stats::relative_weights(log_w).1;
    let weighted = |x: &[f64]| -> Vec<f64> { w.iter().zip(x).map(|(w, x)| w * x).collect() };
    // f of the weighted means: the jackknife of f(mean(w x_1) / mean(w), ...).
    let jk = |series: &[&[f64]], f: &dyn Fn(&[f64]) -> f64| {
        let wx: Vec<Vec<f64>> = series.iter().map(|x| weighted(x)).collect();
        let mut all: Vec<&[f64]> = vec![&w];
        all.extend(wx.iter().map(Vec::as_slice));
        let (v, e) = stats::jackknife(&all, BLOCKS, |m| {
            let ratios: Vec<f64> = m[1..].iter().map(|x| x / m[0]).collect();
            f(&ratios)
        });
        Estimate::new(v, e)
    };
    let mean = |x: &[f64]| jk(&[x], &|m| m[0]);
    let (estimates, two_point) = estimate_all(rec, &mean, &jk);
    let abs_m: Vec<f64> = rec.m.iter().map(|m| m.abs()).collect();
    let n_abs = effective_samples(&w, &abs_m);
    let n_e = effective_samples(&w, &rec.energy);
    Reweighted {
        estimates,
        two_point,
        effective_samples: BTreeMap::from([
            ("abs_magnetization".into(), n_abs),
            ("energy_density".into(), n_e),
        ]),
        samples: rec.len(),
        independent_samples_per_second: n_abs.min(n_e) / seconds.max(1e-12),
    }
}

/// Effective independent samples of the self-normalised importance-sampling mean of `x`
/// with weights `w`: `Var_p(x) / sigma^2`, the number of independent draws of `p` that
/// would give its error `sigma`. With `mu = sum w x / W`, `W = sum w`:
/// `Var_p(x) = sum w (x - mu)^2 / W` and the delta-method `sigma^2 = sum w^2 (x - mu)^2 / W^2`,
/// so `n_eff = W sum w (x - mu)^2 / sum w^2 (x - mu)^2`: `n` for equal weights, the Kish
/// ESS `W^2 / sum w^2` when `(x - mu)^2` does not depend on `w`, and the number a chain's
/// `n / (2 tau_int)` is compared with.
pub fn effective_samples(w: &[f64], x: &[f64]) -> f64 {
    let total: f64 = w.iter().sum();
    let mu = w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() / total;
    let (mut a, mut b) = (0.0, 0.0);
    for (w, x) in w.iter().zip(x) {
        let d2 = (x - mu) * (x - mu);
        a += w * d2;
        b += w * w * d2;
    }
    if b > 0.0 {
        total * a / b
    } else {
        w.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::Boundary;

    #[test]
    fn recorder_of_a_plane_wave() {
        let lat = Lattice::square(4, 4, Boundary::Periodic);
        let mut rec = Recorder::new(&lat);
        // phi = cos(2 pi x / 4): M = 0, |phi~(k_min)|^2 = N/4 along x and 0 along y.
        let phi: Vec<f64> = (0..16)
            .map(|i| (2.0 * PI * (i % 4) as f64 / 4.0).cos())
            .collect();
        rec.record(&phi, 0.0);
        assert!(rec.m[0].abs() < 1e-12);
        assert!((rec.f_kmin[0] - 0.5 * 16.0 / 4.0).abs() < 1e-12);
        // Rows sums P = 4 cos: C(0) = 16 * 2 / 16 = 2, C(1) = 0, C(2) = -2.
        assert!((rec.corr[0] - 2.0).abs() < 1e-12);
        assert!(rec.corr[1].abs() < 1e-12);
        assert!((rec.corr[2] + 2.0).abs() < 1e-12);
        let spins: Vec<i8> = vec![1; 16];
        rec.record(&spins, -32.0);
        assert_eq!(rec.m[1], 16.0);
    }

    /// `n_eff` is `n` for equal weights and Kish's `(sum w)^2 / sum w^2` when the
    /// observable is independent of the weights (every pair of weight 1 or 3 and value
    /// `0..7` equally often): 2800^2 / 7000 = 1120 of 1400.
    #[test]
    fn effective_samples_of_weighted_draws() {
        let x: Vec<f64> = (0..1400).map(|i| (i % 7) as f64).collect();
        assert_eq!(effective_samples(&[1.0; 1400], &x), 1400.0);
        let w: Vec<f64> = (0..1400).map(|i| [1.0, 3.0][i % 2]).collect();
        assert!((effective_samples(&w, &x) - 1120.0).abs() < 1e-9);
        // One draw carrying nearly all the weight: about one effective sample.
        let mut w = vec![1e-9; 1400];
        w[3] = 1.0;
        w[4] = 1.0;
        assert!(effective_samples(&w, &x) < 2.01);
    }

    /// Uniform draws of 4x4 configurations reweighted to the Boltzmann distribution at
    /// `beta = 0.15` (importance-weight ESS about a half) give the enumerated energy and
    /// `<|M|>`, and the energy's errors match the spread of its estimates over independent
    /// repetitions.
    #[test]
    fn reweighted_uniform_draws_are_exact() {
        use crate::field::exact::ising_enumerate;
        use crate::field::theory::{ising_energy, Neighbours};
        use crate::lattice::Boundary;
        use rand::{Rng, SeedableRng};
        let lat = Lattice::square(4, 4, Boundary::Periodic);
        let beta = 0.15;
        let ex = ising_enumerate(&lat, beta, 1.0, 0.0);
        let nb = Neighbours::new(&lat);
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
        let mut pulls = Vec::new();
        for _ in 0..20 {
            let mut rec = Recorder::new(&lat);
            let mut log_w = Vec::new();
            for _ in 0..4000 {
                let s: Vec<i8> = (0..16)
                    .map(|_| if rng.random::<bool>() { 1 } else { -1 })
                    .collect();
                let e = ising_energy(&nb, 1.0, 0.0, &s);
                rec.record_spins(&s, e);
                // log q = -16 log 2, a constant that drops out.
                log_w.push(-beta * e);
            }
            let rw = analyse_weighted(&rec, &log_w, 1.0);
            assert!(rw.effective_samples["energy_density"] < 4000.0);
            let e = rw.estimates["energy_density"];
            pulls.push((e.mean - ex.energy_density) / e.error);
            let m = rw.estimates["abs_magnetization"];
            assert!(
                m.pull(ex.abs_magnetization) < 4.0,
                "{m:?} vs {}",
                ex.abs_magnetization
            );
        }
        // The errors are honest: the pulls have unit spread.
        let rms = (pulls.iter().map(|p| p * p).sum::<f64>() / pulls.len() as f64).sqrt();
        assert!((0.6..1.5).contains(&rms), "rms pull {rms:.2}: {pulls:?}");
    }

    /// The integer path for spins records what the generic one does, bit for bit.
    #[test]
    fn spins_recorded_as_fields() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
        for lat in [
            Lattice::square(6, 6, Boundary::Periodic),
            Lattice::square(8, 4, Boundary::Open),
            Lattice::chain(10, Boundary::Periodic),
        ] {
            let (mut a, mut b) = (Recorder::new(&lat), Recorder::new(&lat));
            for _ in 0..20 {
                let s: Vec<i8> = (0..lat.n_sites())
                    .map(|_| if rng.random::<bool>() { 1 } else { -1 })
                    .collect();
                a.record(&s, 1.5);
                b.record_spins(&s, 1.5);
            }
            assert_eq!(a.pack(), b.pack());
        }
    }
}
