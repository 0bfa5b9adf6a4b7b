//! Gaussian RG schemes for real fields (rg-schemes.md, section 2): `carosso` and
//! `polchinski`.
//!
//! On a periodic `L_x x L_y` lattice (or chain) with unitary Fourier modes
//! `phi^(p) = V^{-1/2} sum_x e^{-i p x} phi_x`, `p_mu = 2 pi n_mu / L_mu`, lattice momentum
//! `p_hat^2 = sum_mu 4 sin^2(p_mu / 2)` and `w(p) = p_hat^2 + m0^2`, each scheme is a linear
//! Gaussian kernel per mode,
//!
//! ```text
//! phi^_t(p) = a_t(p) phi^_0(p) + b_t(p) xi(p),    xi(-p) = conj(xi(p)), <|xi|^2> = 1
//! carosso:     a_t = e^{-w t},  b_t^2 = Omega (1 - e^{-2 w t}) / (2 w)          (g_t^2 = Omega)
//! polchinski:  a_t = K_t = e^{-w t},  b_t^2 = K_t (1 - K_t) / (p_hat^2 + m^2)  (g_t^2 = w K_t G)
//! ```
//!
//! Both have the forward drift `d log a_t / dt = -w` and the noise strength
//! `g_t^2 = d(b_t^2)/dt - 2 (d log a_t/dt) b_t^2`. Both are Markov: the kernel from `s` to
//! `t > s` has `alpha = a_t / a_s`, `beta^2 = b_t^2 - alpha^2 b_s^2`.
//!
//! A Gaussian *reference* field with per-mode variance `Sigma_0(p) = 1 / (2 (p_hat^2 + mu^2))`
//! (the free field of the phi^4 action `S = sum [(d phi)^2 + mu^2 phi^2]`, weight `exp(-S)`)
//! stays Gaussian under the flow with `Sigma_t = a_t^2 Sigma_0 + b_t^2`; its marginal at the
//! final RG time `T` is the exact IR prior of the generative models, and its score
//! `-phi^/Sigma_t` the known Gaussian part of their scores.
//!
//! Modes are stored in the site order: mode `n = n_x + L_x n_y` has momentum
//! `(2 pi n_x / L_x, 2 pi n_y / L_y)`, as in [`Lattice::momenta`]. The real orthonormal basis
//! used inside models is the Hartley basis `H[p, x] = cas(p . x) / sqrt(V)`,
//! `cas = cos + sin`: symmetric, `H H = 1`, and it diagonalises every circulant with an even
//! kernel with the same eigenvalues as the Fourier basis.

use std::f64::consts::PI;

use rand::Rng;
use rand_distr::StandardNormal;
use rustfft::num_complex::Complex64;
use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lattice::{Boundary, Lattice};

/// Which Gaussian scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GaussianKind {
    Carosso,
    Polchinski,
}

/// The options of a Gaussian scheme.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaussianOptions {
    /// `m0^2 > 0`: regulates the zero mode (both schemes).
    pub m0sq: f64,
    /// `Omega > 0`: noise strength of the stochastic heat equation (carosso).
    pub omega: f64,
    /// `m^2 > 0`: mass of the reference propagator `G = 1/(p_hat^2 + m^2)` (polchinski).
    pub m2: f64,
    /// Final RG time `T` (the IR end).
    pub t_max: f64,
}

impl Default for GaussianOptions {
    fn default() -> Self {
        GaussianOptions {
            m0sq: 1.0,
            omega: 1.0,
            m2: 1.0,
            t_max: 3.0,
        }
    }
}

/// A Gaussian RG scheme on one periodic lattice.
#[derive(Clone, Debug)]
pub struct GaussianScheme {
    pub kind: GaussianKind,
    pub opts: GaussianOptions,
    extent: [usize; 2],
    /// `p_hat^2` per mode.
    p2: Vec<f64>,
}

impl GaussianScheme {
    /// The scheme `name` (`carosso` | `polchinski`) on `lattice` (periodic), with `opts`
    /// checked.
    pub fn new(name: &str, opts: GaussianOptions, lattice: &Lattice) -> Result<Self> {
        let kind = match name {
            "carosso" => GaussianKind::Carosso,
            "polchinski" => GaussianKind::Polchinski,
            _ => {
                return Err(Error::Input(format!(
                    "unknown Gaussian RG scheme `{name}`; expected carosso or polchinski"
                )))
            }
        };
        if lattice.boundary() != Boundary::Periodic {
            return Err(Error::Input(
                "the Gaussian RG schemes need a periodic lattice (boundary = \"periodic\")".into(),
            ));
        }
        let pos = |v: f64, what: &str| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::Input(format!(
                    "scheme {name}: {what} must be a finite number > 0 (got {v})"
                )))
            }
        };
        pos(opts.m0sq, "m0^2 (--m0sq)")?;
        pos(opts.t_max, "the final RG time (--t-max)")?;
        match kind {
            GaussianKind::Carosso => pos(opts.omega, "Omega (--omega)")?,
            GaussianKind::Polchinski => pos(opts.m2, "m^2 (--rg-m2)")?,
        }
        Ok(GaussianScheme {
            kind,
            opts,
            extent: lattice.extent(),
            p2: lattice.p_hat_squared(),
        })
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            GaussianKind::Carosso => "carosso",
            GaussianKind::Polchinski => "polchinski",
        }
    }

    pub fn n_modes(&self) -> usize {
        self.p2.len()
    }

    pub fn extent(&self) -> [usize; 2] {
        self.extent
    }

    /// `p_hat^2` per mode.
    pub fn p_hat_squared(&self) -> &[f64] {
        &self.p2
    }

    pub fn t_max(&self) -> f64 {
        self.opts.t_max
    }

    /// `w(p) = p_hat^2 + m0^2`.
    pub fn w(&self, p: usize) -> f64 {
        self.p2[p] + self.opts.m0sq
    }

    /// `a_t(p) = e^{-w t}` (both schemes).
    pub fn a(&self, t: f64, p: usize) -> f64 {
        (-self.w(p) * t).exp()
    }

    /// `b_t(p)^2`.
    pub fn b2(&self, t: f64, p: usize) -> f64 {
        let w = self.w(p);
        match self.kind {
            // Omega (1 - e^{-2wt}) / (2w), written with exp_m1 for small w t.
            GaussianKind::Carosso => -self.opts.omega * (-2.0 * w * t).exp_m1() / (2.0 * w),
            GaussianKind::Polchinski => {
                let k = (-w * t).exp();
                k * -(-w * t).exp_m1() / (self.p2[p] + self.opts.m2)
            }
        }
    }

    /// Forward drift `f_t(p) = d log a_t / dt = -w(p)`.
    pub fn drift(&self, _t: f64, p: usize) -> f64 {
        -self.w(p)
    }

    /// `g_t(p)^2 = d b_t^2/dt - 2 f_t b_t^2`: `Omega` (carosso), `w K_t / (p_hat^2 + m^2)`
    /// (polchinski).
    pub fn g2(&self, t: f64, p: usize) -> f64 {
        match self.kind {
            GaussianKind::Carosso => self.opts.omega,
            GaussianKind::Polchinski => self.w(p) * self.a(t, p) / (self.p2[p] + self.opts.m2),
        }
    }

    /// Variance at `t` of a field whose per-mode variance at `t = 0` is `sigma0`:
    /// `a_t^2 sigma0 + b_t^2`.
    pub fn variance(&self, t: f64, p: usize, sigma0: f64) -> f64 {
        let a = self.a(t, p);
        a * a * sigma0 + self.b2(t, p)
    }

    /// The Markov kernel from `s` to `t > s` of mode `p`: `(alpha, beta^2)` with
    /// `phi^_t = alpha phi^_s + beta xi`.
    pub fn transition(&self, s: f64, t: f64, p: usize) -> (f64, f64) {
        let alpha = (-self.w(p) * (t - s)).exp();
        let beta2 = (self.b2(t, p) - alpha * alpha * self.b2(s, p)).max(0.0);
        (alpha, beta2)
    }

    /// Conditional score `-(phi^_t - a_t phi^_0) / b_t^2` of mode `p` (for denoising score
    /// matching).
    pub fn conditional_score(&self, t: f64, p: usize, phi_t: f64, phi_0: f64) -> f64 {
        -(phi_t - self.a(t, p) * phi_0) / self.b2(t, p)
    }

    /// Flows a batch of real configurations (rows of `V` values, site order) from RG time 0
    /// to `t` in one shot: `phi_t = F^-1[a_t F phi_0 + b_t F eta]` with real white noise
    /// `eta` (whose unitary transform is the Hermitian unit noise `xi`). Host FFTs.
    pub fn flow(&self, phi0: &[f64], t: f64, rng: &mut impl Rng) -> Vec<f64> {
        let v = self.n_modes();
        let mut out = vec![0.0; phi0.len()];
        let a: Vec<f64> = (0..v).map(|p| self.a(t, p)).collect();
        let b: Vec<f64> = (0..v).map(|p| self.b2(t, p).sqrt()).collect();
        let mut fft = Fft2::new(self.extent);
        let mut z = vec![Complex64::new(0.0, 0.0); v];
        let mut e = vec![Complex64::new(0.0, 0.0); v];
        for (row, dst) in phi0.chunks(v).zip(out.chunks_mut(v)) {
            for (zi, &x) in z.iter_mut().zip(row) {
                *zi = Complex64::new(x, 0.0);
            }
            for ei in e.iter_mut() {
                *ei = Complex64::new(rng.sample(StandardNormal), 0.0);
            }
            fft.forward(&mut z);
            fft.forward(&mut e);
            for p in 0..v {
                z[p] = z[p] * a[p] + e[p] * b[p];
            }
            fft.inverse(&mut z);
            for (d, zi) in dst.iter_mut().zip(&z) {
                *d = zi.re;
            }
        }
        out
    }

    /// Per-mode power `<|phi^(p)|^2>` of a batch of configurations (host FFT).
    pub fn power(&self, phi: &[f64]) -> Vec<f64> {
        let v = self.n_modes();
        let mut fft = Fft2::new(self.extent);
        let mut z = vec![Complex64::new(0.0, 0.0); v];
        let mut acc = vec![0.0; v];
        let rows = phi.len() / v;
        for row in phi.chunks(v) {
            for (zi, &x) in z.iter_mut().zip(row) {
                *zi = Complex64::new(x, 0.0);
            }
            fft.forward(&mut z);
            for (a, zi) in acc.iter_mut().zip(&z) {
                *a += zi.norm_sqr();
            }
        }
        acc.iter_mut().for_each(|a| *a /= rows.max(1) as f64);
        acc
    }

    /// The two-point function along x, `G(r) = (1/V) sum_x <phi_x phi_{x + r e_x}>
    /// = (1/V) sum_p cos(p_x r) P(p)`, of a per-mode power `P`, `r = 0 .. L_x - 1`.
    pub fn two_point_from_power(&self, power: &[f64]) -> Vec<f64> {
        let [lx, _] = self.extent;
        let v = self.n_modes() as f64;
        (0..lx)
            .map(|r| {
                power
                    .iter()
                    .enumerate()
                    .map(|(p, &pw)| (2.0 * PI * (p % lx) as f64 * r as f64 / lx as f64).cos() * pw)
                    .sum::<f64>()
                    / v
            })
            .collect()
    }
}

/// Per-mode variance `1 / (2 (p_hat^2 + mu^2))` of the free field of mass `mu^2 > 0` in this
/// action's normalisation.
pub fn free_variance(p2: &[f64], mu2: f64) -> Vec<f64> {
    p2.iter().map(|&q| 0.5 / (q + mu2)).collect()
}

/// Self-consistent Gaussian (Hartree) mass of phi^4 with `S = sum [(d phi)^2 + m2 phi^2 +
/// lambda phi^4]`: `mu^2 = m2 + 6 lambda <phi^2>`, `<phi^2> = (1/V) sum_p 1 / (2 (p_hat^2 +
/// mu^2))`, solved by bisection on `mu^2 > 0` (the stationary point of the Gaussian
/// variational free energy). A default reference mass for the known Gaussian part.
pub fn hartree_mass(p2: &[f64], m2: f64, lambda: f64) -> f64 {
    let v = p2.len() as f64;
    let f = |mu2: f64| {
        let phi2: f64 = p2.iter().map(|&q| 0.5 / (q + mu2)).sum::<f64>() / v;
        mu2 - m2 - 6.0 * lambda * phi2
    };
    if lambda == 0.0 {
        return m2;
    }
    // f is increasing; f(0+) < 0 when the zero mode diverges.
    let (mut lo, mut hi) = (1e-9, 1.0);
    while f(hi) < 0.0 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if f(mid) < 0.0 {
            lo = mid
        } else {
            hi = mid
        }
    }
    0.5 * (lo + hi)
}

/// A unitary 2D FFT on the host (rows, then columns), site order `x + L_x y`.
struct Fft2 {
    lx: usize,
    ly: usize,
    fx: std::sync::Arc<dyn rustfft::Fft<f64>>,
    fy: std::sync::Arc<dyn rustfft::Fft<f64>>,
    ix: std::sync::Arc<dyn rustfft::Fft<f64>>,
    iy: std::sync::Arc<dyn rustfft::Fft<f64>>,
    col: Vec<Complex64>,
}

impl Fft2 {
    fn new([lx, ly]: [usize; 2]) -> Self {
        let mut pl = FftPlanner::new();
        Fft2 {
            lx,
            ly,
            fx: pl.plan_fft_forward(lx),
            fy: pl.plan_fft_forward(ly),
            ix: pl.plan_fft_inverse(lx),
            iy: pl.plan_fft_inverse(ly),
            col: vec![Complex64::new(0.0, 0.0); ly],
        }
    }

    fn run(&mut self, z: &mut [Complex64], inverse: bool) {
        let (fx, fy) = if inverse {
            (self.ix.clone(), self.iy.clone())
        } else {
            (self.fx.clone(), self.fy.clone())
        };
        for row in z.chunks_mut(self.lx) {
            fx.process(row);
        }
        if self.ly > 1 {
            for x in 0..self.lx {
                for y in 0..self.ly {
                    self.col[y] = z[x + self.lx * y];
                }
                fy.process(&mut self.col);
                for y in 0..self.ly {
                    z[x + self.lx * y] = self.col[y];
                }
            }
        }
        let s = 1.0 / ((self.lx * self.ly) as f64).sqrt();
        z.iter_mut().for_each(|v| *v *= s);
    }

    fn forward(&mut self, z: &mut [Complex64]) {
        self.run(z, false)
    }

    fn inverse(&mut self, z: &mut [Complex64]) {
        self.run(z, true)
    }
}

/// The Hartley matrix `H[p, x] = cas(p . x) / sqrt(V)` (symmetric, orthogonal), row-major
/// `V x V`.
pub fn hartley_matrix(lattice: &Lattice) -> Vec<f64> {
    let k = lattice.momenta();
    let v = lattice.n_sites();
    let s = 1.0 / (v as f64).sqrt();
    let mut h = vec![0.0; v * v];
    for (p, kp) in k.iter().enumerate() {
        for x in 0..v {
            let (cx, cy) = lattice.coords(x);
            let a = kp[0] * cx as f64 + kp[1] * cy as f64;
            h[p * v + x] = (a.cos() + a.sin()) * s;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn drift_and_noise_are_the_derivatives_of_the_kernels() {
        let lat = Lattice::square(4, 6, Boundary::Periodic);
        for name in ["carosso", "polchinski"] {
            let opts = GaussianOptions {
                m0sq: 0.3,
                omega: 1.7,
                m2: 0.6,
                t_max: 2.0,
            };
            let s = GaussianScheme::new(name, opts, &lat).unwrap();
            for p in [0, 1, 7, 23] {
                for t in [0.05, 0.4, 1.3] {
                    let h = 1e-5;
                    let dla = ((s.a(t + h, p)).ln() - (s.a(t - h, p)).ln()) / (2.0 * h);
                    assert!((dla - s.drift(t, p)).abs() < 1e-6);
                    let db2 = (s.b2(t + h, p) - s.b2(t - h, p)) / (2.0 * h);
                    let g2 = db2 - 2.0 * s.drift(t, p) * s.b2(t, p);
                    assert!((g2 - s.g2(t, p)).abs() < 1e-6 * (1.0 + g2.abs()), "{name}");
                    // Markov: composing 0 -> t/2 -> t gives the kernel 0 -> t.
                    let (al, be) = s.transition(t / 2.0, t, p);
                    let b2 = al * al * s.b2(t / 2.0, p) + be;
                    assert!((b2 - s.b2(t, p)).abs() < 1e-12);
                    assert!((al * s.a(t / 2.0, p) - s.a(t, p)).abs() < 1e-12);
                }
            }
            assert_eq!(s.b2(0.0, 3), 0.0);
            assert_eq!(s.a(0.0, 3), 1.0);
        }
    }

    #[test]
    fn one_shot_flow_has_the_analytic_variance() {
        // A batch of free fields (mu^2 = 0.8) flowed to t: the per-mode power must be
        // a_t^2 / (2 (p^2 + mu^2)) + b_t^2, and the flow of zero fields has power b_t^2.
        let lat = Lattice::square(6, 4, Boundary::Periodic);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let v = lat.n_sites();
        let mu2 = 0.8;
        let sig = free_variance(&lat.p_hat_squared(), mu2);
        let h = hartley_matrix(&lat);
        let n = 40_000;
        let mut phi0 = vec![0.0; n * v];
        for row in phi0.chunks_mut(v) {
            let xi: Vec<f64> = (0..v)
                .map(|p| rng.sample::<f64, _>(StandardNormal) * sig[p].sqrt())
                .collect();
            for x in 0..v {
                row[x] = (0..v).map(|p| h[p * v + x] * xi[p]).sum();
            }
        }
        for name in ["carosso", "polchinski"] {
            let s = GaussianScheme::new(name, GaussianOptions::default(), &lat).unwrap();
            let p0 = s.power(&phi0);
            for p in 0..v {
                assert!((p0[p] / sig[p] - 1.0).abs() < 0.05, "t = 0, mode {p}");
            }
            for t in [0.1, 0.7] {
                let pw = s.power(&s.flow(&phi0, t, &mut rng));
                for p in 0..v {
                    let want = s.variance(t, p, sig[p]);
                    // Relative error of a variance from n samples: sqrt(2/n) = 0.7%.
                    assert!(
                        (pw[p] / want - 1.0).abs() < 0.05,
                        "{name} t {t} mode {p}: {} vs {want}",
                        pw[p]
                    );
                }
            }
        }
    }

    #[test]
    fn hartley_is_orthogonal_and_hartree_solves_its_equation() {
        let lat = Lattice::square(4, 3, Boundary::Periodic);
        let h = hartley_matrix(&lat);
        let v = 12;
        for i in 0..v {
            for j in 0..v {
                let d: f64 = (0..v).map(|k| h[i * v + k] * h[k * v + j]).sum();
                assert!((d - f64::from(u8::from(i == j))).abs() < 1e-12);
                assert!((h[i * v + j] - h[j * v + i]).abs() < 1e-12);
            }
        }
        let p2 = lat.p_hat_squared();
        let mu2 = hartree_mass(&p2, -4.0, 8.0);
        let phi2: f64 = p2.iter().map(|&q| 0.5 / (q + mu2)).sum::<f64>() / v as f64;
        assert!((mu2 - (-4.0 + 48.0 * phi2)).abs() < 1e-9);
        assert!(GaussianScheme::new("heat", GaussianOptions::default(), &lat).is_err());
        let bad = GaussianOptions {
            m0sq: 0.0,
            ..Default::default()
        };
        let e = GaussianScheme::new("carosso", bad, &lat).unwrap_err();
        assert!(e.to_string().contains("--m0sq"));
    }
}
