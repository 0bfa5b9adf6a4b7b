//! The RG-flow score network for real fields (models.md, section B).
//!
//! On a periodic lattice of `V` sites, with a Gaussian RG scheme ([`GaussianScheme`]: per-mode
//! drift `f_t(p) = -w(p)`, noise `g_t(p)^2`) and a Gaussian reference field of per-mode
//! variance `Sigma_0(p) = 1 / (2 (p_hat^2 + mu^2))`, flowed to `Sigma_t = a_t^2 Sigma_0 + b_t^2`,
//! the score at RG time `t` is
//!
//! ```text
//! s_x(phi, t) = -(Sigma_t^-1 phi)_x + sum_c sum_y W_c(x - y; t) F_c(phi_y)
//! F_0(phi) = phi,   F_c(phi) = sin(omega_c phi)  (c = 1 .. C-1, omega_c learned)
//! W_c(r; t) = sum_k theta[c, o(r), k] T_k(2 t / T - 1)
//! ```
//!
//! with `o(r)` the orbit of the displacement `r` under the lattice's point group (the
//! reflections `r_mu -> -r_mu`, and on an `L x L` square the exchange of the axes) and `T_k` the
//! Chebyshev polynomials: a translation- and lattice-symmetry-equivariant convolution over the
//! whole lattice, smooth in `t`, odd in `phi` (so the model is Z2 symmetric). With
//! `theta = 0` it is the exact score of the flowed reference Gaussian.
//!
//! Every circulant here has an even kernel, so it is diagonal in the real Hartley basis `H`
//! (see [`crate::rg::gaussian`]): the kernel `W_c` acts as the multiplier
//! `w_c(p; t) = sum_r W_c(r; t) cos(p . r)`, transforms are matmuls with `H`. The
//! probability-flow velocity `v = f phi - g^2 s / 2` is then, per Hartley mode,
//!
//! ```text
//! v~(p) = l_t(p) phi~(p) + sum_c u_c(p; t) F~_c(p),   l_t = f_t + g_t^2 / (2 Sigma_t),
//! u_c = -g_t^2 w_c / 2
//! ```
//!
//! and its input derivatives have closed forms (`U_c(0) = (1/V) sum_p u_c(p)`, the diagonal of
//! the circulant `U_c`):
//!
//! ```text
//! div v          = sum_p l_t(p) + sum_c U_c(0) sum_x F_c'(phi_x)
//! (J_v^T y)_x    = (H l_t H y)_x + sum_c F_c'(phi_x) (H u_c H y)_x
//! (grad div v)_x = sum_c U_c(0) F_c''(phi_x)
//! ```
//!
//! all explicit tensor operations, so autograd is only ever asked for parameter gradients
//! (candle has no second-order autodiff).

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lattice::Lattice;
use crate::rg::gaussian::{free_variance, hartley_matrix, GaussianScheme};

/// Architecture of a [`ScoreNet`] (saved beside its parameters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreConfig {
    /// Feature channels `C` (the linear channel plus `C - 1` sines), at least 1.
    pub channels: usize,
    /// Chebyshev polynomials in `t` per kernel value, at least 1.
    pub time_basis: usize,
    /// Reference mass `mu^2 > 0` of the known Gaussian part.
    pub ref_m2: f64,
    /// Largest initial sine frequency (the `omega_c` start evenly spaced up to it).
    pub omega_max: f64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            channels: 6,
            time_basis: 4,
            ref_m2: 1.0,
            omega_max: 3.0,
        }
    }
}

/// Per-time coefficients of the velocity, as tensors.
struct TimeCoeffs {
    /// `l_t(p)`, `[1, V]`.
    lin: Tensor,
    /// `sum_p l_t(p)`.
    lin_sum: f64,
    /// `-g_t^2 / 2`, `[1, 1, V]`.
    neg_half_g2: Tensor,
    /// `1 / Sigma_t`, `[1, V]`.
    inv_sigma: Tensor,
}

/// The score network `s(phi, t)`; see the module documentation.
pub struct ScoreNet {
    pub cfg: ScoreConfig,
    pub scheme: GaussianScheme,
    /// Reference variance `Sigma_0(p)`.
    pub sigma0: Vec<f64>,
    v: usize,
    n_orb: usize,
    device: Device,
    dtype: DType,
    /// Hartley matrix `[V, V]`.
    hart: Tensor,
    /// `sum_{r in o} cos(p . r)`, `[O, V]`.
    cos_orb: Tensor,
    /// `theta`, `[C, O, K]`.
    theta: Var,
    /// `omega_c`, `[1, C - 1, 1]` (absent when `C = 1`).
    omega: Option<Var>,
}

/// Orbits of displacements under the lattice's reflections (and axis exchange on an `L x L`
/// square): the orbit index of every site `r` (as a displacement from site 0), and the count.
pub fn displacement_orbits(lattice: &Lattice) -> (Vec<usize>, usize) {
    let [lx, ly] = lattice.extent();
    let mut keys: Vec<(usize, usize)> = Vec::new();
    let mut idx = Vec::with_capacity(lattice.n_sites());
    for r in 0..lattice.n_sites() {
        let (x, y) = lattice.coords(r);
        let (mut a, mut b) = (x.min(lx - x), y.min(ly - y));
        if lx == ly && a > b {
            std::mem::swap(&mut a, &mut b);
        }
        let k = match keys.iter().position(|&q| q == (a, b)) {
            Some(k) => k,
            None => {
                keys.push((a, b));
                keys.len() - 1
            }
        };
        idx.push(k);
    }
    (idx, keys.len())
}

impl ScoreNet {
    /// A network for `scheme` on `lattice` with small random kernels (seeded) and evenly
    /// spaced sine frequencies.
    pub fn new(
        lattice: &Lattice,
        scheme: GaussianScheme,
        cfg: ScoreConfig,
        dtype: DType,
        device: &Device,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if cfg.channels == 0 || cfg.time_basis == 0 {
            return Err(Error::Input(
                "the score network needs at least one channel and one time basis function".into(),
            ));
        }
        if !(cfg.ref_m2.is_finite() && cfg.ref_m2 > 0.0) {
            return Err(Error::Input(format!(
                "reference mass --ref-m2 must be > 0 (got {})",
                cfg.ref_m2
            )));
        }
        let v = lattice.n_sites();
        let (orb, n_orb) = displacement_orbits(lattice);
        let k = lattice.momenta();
        let mut cos_orb = vec![0.0; n_orb * v];
        for (r, &o) in orb.iter().enumerate() {
            let (x, y) = lattice.coords(r);
            for (p, kp) in k.iter().enumerate() {
                cos_orb[o * v + p] += (kp[0] * x as f64 + kp[1] * y as f64).cos();
            }
        }
        let c = cfg.channels;
        let kb = cfg.time_basis;
        let theta: Vec<f64> = (0..c * n_orb * kb)
            .map(|_| 1e-3 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let theta =
            Var::from_tensor(&Tensor::from_vec(theta, (c, n_orb, kb), device)?.to_dtype(dtype)?)?;
        let omega = if c > 1 {
            let om: Vec<f64> = (1..c)
                .map(|i| cfg.omega_max * i as f64 / (c - 1) as f64)
                .collect();
            Some(Var::from_tensor(
                &Tensor::from_vec(om, (1, c - 1, 1), device)?.to_dtype(dtype)?,
            )?)
        } else {
            None
        };
        let sigma0 = free_variance(scheme.p_hat_squared(), cfg.ref_m2);
        Ok(ScoreNet {
            hart: Tensor::from_vec(hartley_matrix(lattice), (v, v), device)?.to_dtype(dtype)?,
            cos_orb: Tensor::from_vec(cos_orb, (n_orb, v), device)?.to_dtype(dtype)?,
            cfg,
            scheme,
            sigma0,
            v,
            n_orb,
            device: device.clone(),
            dtype,
            theta,
            omega,
        })
    }

    /// The same network with its parameters converted to `dtype` (new variables).
    pub fn to_dtype(&self, dtype: DType) -> Result<ScoreNet> {
        let conv = |t: &Tensor| t.to_dtype(dtype);
        Ok(ScoreNet {
            cfg: self.cfg.clone(),
            scheme: self.scheme.clone(),
            sigma0: self.sigma0.clone(),
            v: self.v,
            n_orb: self.n_orb,
            device: self.device.clone(),
            dtype,
            hart: conv(&self.hart)?,
            cos_orb: conv(&self.cos_orb)?,
            theta: Var::from_tensor(&conv(self.theta.as_tensor())?)?,
            omega: match &self.omega {
                Some(o) => Some(Var::from_tensor(&conv(o.as_tensor())?)?),
                None => None,
            },
        })
    }

    pub fn n_sites(&self) -> usize {
        self.v
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Named parameters, sorted by name.
    pub fn params(&self) -> Vec<(String, Var)> {
        let mut p = Vec::with_capacity(2);
        if let Some(o) = &self.omega {
            p.push(("omega".to_string(), o.clone()));
        }
        p.push(("theta".to_string(), self.theta.clone()));
        p
    }

    pub fn n_params(&self) -> usize {
        self.params().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Sets every kernel to zero: the score is then the exact score of the flowed reference
    /// Gaussian.
    pub fn zero_kernels(&self) -> Result<()> {
        self.theta.set(&self.theta.as_tensor().zeros_like()?)?;
        Ok(())
    }

    /// Saves the parameters (safetensors).
    pub fn save(&self, path: &Path) -> Result<()> {
        super::params::save(&self.params(), path)
    }

    /// Loads parameters saved by [`ScoreNet::save`] into this network (same configuration).
    pub fn load(&self, path: &Path) -> Result<()> {
        super::params::load(&self.params(), path, &self.device, self.dtype)
    }

    fn host(&self, x: Vec<f64>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_vec(x, shape, &self.device)?.to_dtype(self.dtype)?)
    }

    /// `x H` over the last axis (`H` is symmetric and its own inverse).
    pub fn hartley(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let rows = x.elem_count() / self.v;
        Ok(x.reshape((rows, self.v))?
            .matmul(&self.hart)?
            .reshape(dims)?)
    }

    /// Chebyshev polynomials `T_k(2 t / T - 1)`, `k < K`.
    fn basis(&self, t: f64) -> Vec<f64> {
        let x = (2.0 * t / self.scheme.t_max() - 1.0).clamp(-1.0, 1.0);
        let mut b = vec![1.0; self.cfg.time_basis];
        if b.len() > 1 {
            b[1] = x;
        }
        for k in 2..b.len() {
            b[k] = 2.0 * x * b[k - 1] - b[k - 2];
        }
        b
    }

    /// Kernel multipliers `w_c(p; t_i)`, `[nt, C, V]`.
    pub fn multipliers(&self, ts: &[f64]) -> Result<Tensor> {
        let (c, o, k) = (self.cfg.channels, self.n_orb, self.cfg.time_basis);
        let basis: Vec<f64> = ts.iter().flat_map(|&t| self.basis(t)).collect();
        let basis = self.host(basis, &[ts.len(), k])?;
        let w = basis.matmul(&self.theta.as_tensor().reshape((c * o, k))?.t()?)?; // [nt, C*O]
        let w = w.reshape((ts.len() * c, o))?.matmul(&self.cos_orb)?;
        Ok(w.reshape((ts.len(), c, self.v))?)
    }

    /// Features `F`, `F'`, `F''`, each `[B, C, V]`.
    pub fn features(&self, phi: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let x = phi.unsqueeze(1)?;
        let Some(om) = &self.omega else {
            return Ok((x.clone(), x.ones_like()?, x.zeros_like()?));
        };
        let om = om.as_tensor();
        let arg = x.broadcast_mul(om)?;
        let (s, c) = (arg.sin()?, arg.cos()?);
        let f = Tensor::cat(&[&x, &s], 1)?;
        let f1 = Tensor::cat(&[&x.ones_like()?, &c.broadcast_mul(om)?], 1)?;
        let f2 = Tensor::cat(&[&x.zeros_like()?, &s.broadcast_mul(&om.sqr()?)?.neg()?], 1)?;
        Ok((f, f1, f2))
    }

    fn coeffs(&self, t: f64) -> Result<TimeCoeffs> {
        let s = &self.scheme;
        let v = self.v;
        let mut lin = Vec::with_capacity(v);
        let mut g = Vec::with_capacity(v);
        let mut inv = Vec::with_capacity(v);
        for p in 0..v {
            let sig = s.variance(t, p, self.sigma0[p]);
            let g2 = s.g2(t, p);
            lin.push(s.drift(t, p) + 0.5 * g2 / sig);
            g.push(-0.5 * g2);
            inv.push(1.0 / sig);
        }
        Ok(TimeCoeffs {
            lin_sum: lin.iter().sum(),
            lin: self.host(lin, &[1, v])?,
            neg_half_g2: self.host(g, &[1, 1, v])?,
            inv_sigma: self.host(inv, &[1, v])?,
        })
    }

    /// The score in Hartley coordinates, `s~ = -phi~ / Sigma_t + sum_c w_c F~_c`, of fields
    /// given in Hartley coordinates `phi_tilde` `[B, V]`, one RG time per row (`ts.len() = B`)
    /// or one for all (`ts.len() = 1`).
    pub fn score_tilde(&self, phi_tilde: &Tensor, ts: &[f64]) -> Result<Tensor> {
        let phi = self.hartley(phi_tilde)?;
        let (f, _, _) = self.features(&phi)?;
        let ft = self.hartley(&f)?;
        let w = self.multipliers(ts)?;
        let learned = ft.broadcast_mul(&w)?.sum(1)?;
        let inv: Vec<f64> = ts
            .iter()
            .flat_map(|&t| {
                (0..self.v).map(move |p| 1.0 / self.scheme.variance(t, p, self.sigma0[p]))
            })
            .collect();
        let inv = self.host(inv, &[ts.len(), self.v])?;
        Ok((learned - phi_tilde.broadcast_mul(&inv)?)?)
    }

    /// The score `s(phi, t)` in real space, `[B, V]`.
    pub fn score(&self, phi: &Tensor, t: f64) -> Result<Tensor> {
        let c = self.coeffs(t)?;
        let (f, _, _) = self.features(phi)?;
        let w = self.multipliers(&[t])?;
        let st = (self.hartley(&f)?.broadcast_mul(&w)?.sum(1)?
            - self.hartley(phi)?.broadcast_mul(&c.inv_sigma)?)?;
        self.hartley(&st)
    }

    /// The probability-flow velocity `v(phi, t)` `[B, V]` and its divergence `[B]`.
    pub fn velocity(&self, phi: &Tensor, t: f64) -> Result<(Tensor, Tensor)> {
        let c = self.coeffs(t)?;
        let (f, f1, _) = self.features(phi)?;
        let u = self.multipliers(&[t])?.broadcast_mul(&c.neg_half_g2)?; // [1, C, V]
        let vt = (self.hartley(phi)?.broadcast_mul(&c.lin)?
            + self.hartley(&f)?.broadcast_mul(&u)?.sum(1)?)?;
        let v = self.hartley(&vt)?;
        let u0 = (u.sum(2)? / self.v as f64)?; // [1, C]
        let div = (f1.sum(2)?.broadcast_mul(&u0)?.sum(1)? + c.lin_sum)?;
        Ok((v, div))
    }

    /// `J_v^T y` and `grad_phi div v`, both `[B, V]`.
    pub fn vjp_and_grad_div(&self, phi: &Tensor, t: f64, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = self.coeffs(t)?;
        let (_, f1, f2) = self.features(phi)?;
        let u = self.multipliers(&[t])?.broadcast_mul(&c.neg_half_g2)?; // [1, C, V]
        let yt = self.hartley(y)?;
        let lin_part = self.hartley(&yt.broadcast_mul(&c.lin)?)?;
        let uy = self.hartley(&yt.unsqueeze(1)?.broadcast_mul(&u)?)?; // [B, C, V]
        let jt = (lin_part + (f1 * uy)?.sum(1)?)?;
        let u0 = (u.sum(2)? / self.v as f64)?.unsqueeze(2)?; // [1, C, 1]
        let gd = f2.broadcast_mul(&u0)?.sum(1)?;
        Ok((jt, gd))
    }

    /// Draws `b` fields from the exact IR prior `N(0, Sigma_T)` (per Hartley mode), with
    /// their log densities: rows in real space (`[b, V]`, host `f64`) and `log pi_T`.
    pub fn prior_sample(&self, b: usize, rng: &mut impl Rng) -> (Vec<f64>, Vec<f64>) {
        let v = self.v;
        let t = self.scheme.t_max();
        let sig: Vec<f64> = (0..v)
            .map(|p| self.scheme.variance(t, p, self.sigma0[p]))
            .collect();
        let norm: f64 = sig
            .iter()
            .map(|s| -0.5 * (2.0 * std::f64::consts::PI * s).ln())
            .sum();
        let mut tilde = vec![0.0; b * v];
        let mut logp = Vec::with_capacity(b);
        for row in tilde.chunks_mut(v) {
            let mut lp = norm;
            for (x, s) in row.iter_mut().zip(&sig) {
                let xi: f64 = rng.sample(StandardNormal);
                *x = xi * s.sqrt();
                lp -= 0.5 * xi * xi;
            }
            logp.push(lp);
        }
        (tilde, logp)
    }

    /// Hartley transform on the host (`f64`), row by row.
    pub fn hartley_host(&self, x: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::from_vec(x.to_vec(), (x.len() / self.v, self.v), &self.device)?
            .to_dtype(self.dtype)?;
        Ok(self
            .hartley(&t)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?)
    }

    /// The fixed RG-time grid `t_k = T (k / n)^2`, `k = 0 .. n` (fine steps near `t = 0`,
    /// where the UV modes move fastest).
    pub fn grid(&self, n: usize) -> Vec<f64> {
        let tm = self.scheme.t_max();
        (0..=n)
            .map(|k| tm * (k as f64 / n as f64).powi(2))
            .collect()
    }

    /// The nonlinear part of the velocity in Hartley coordinates,
    /// `N~(p) = sum_c u_c(p; t) F~_c(p)` `[B, V]`, and its divergence
    /// `div N = sum_c U_c(0) sum_x F_c'(phi_x)` `[B]`, for real-space fields `phi`.
    pub fn nonlinear(&self, phi: &Tensor, t: f64) -> Result<(Tensor, Tensor)> {
        let c = self.coeffs(t)?;
        let (f, f1, _) = self.features(phi)?;
        let u = self.multipliers(&[t])?.broadcast_mul(&c.neg_half_g2)?;
        let nt = self.hartley(&f)?.broadcast_mul(&u)?.sum(1)?;
        let u0 = (u.sum(2)? / self.v as f64)?;
        let div = f1.sum(2)?.broadcast_mul(&u0)?.sum(1)?;
        Ok((nt, div))
    }

    /// `J_N^T y` and `grad div N` (real space) of the nonlinear part alone.
    fn nonlinear_vjp(&self, phi: &Tensor, t: f64, y: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = self.coeffs(t)?;
        let (_, f1, f2) = self.features(phi)?;
        let u = self.multipliers(&[t])?.broadcast_mul(&c.neg_half_g2)?;
        let yt = self.hartley(y)?;
        let uy = self.hartley(&yt.unsqueeze(1)?.broadcast_mul(&u)?)?;
        let jt = (f1 * uy)?.sum(1)?;
        let u0 = (u.sum(2)? / self.v as f64)?.unsqueeze(2)?;
        let gd = f2.broadcast_mul(&u0)?.sum(1)?;
        Ok((jt, gd))
    }

    /// `sqrt(Sigma_t(p))` of the reference Gaussian, `[1, V]`.
    fn sqrt_sigma(&self, t: f64) -> Result<Tensor> {
        let s: Vec<f64> = (0..self.v)
            .map(|p| self.scheme.variance(t, p, self.sigma0[p]).sqrt())
            .collect();
        self.host(s, &[1, self.v])
    }

    fn half_log_det(&self, t: f64) -> f64 {
        (0..self.v)
            .map(|p| 0.5 * self.scheme.variance(t, p, self.sigma0[p]).ln())
            .sum()
    }

    /// Integrates the probability-flow ODE from grid point `k_from` down to `k_to < k_from`
    /// of [`ScoreNet::grid`] (`n` steps from `T` to 0), carrying `log p`
    /// (`d log p / dt = -div v`) and, when `score` is given, the model score
    /// (`d s / dt = -J_v^T s - grad div v`). Real-space fields in and out.
    ///
    /// The linear (Gaussian) part `l_t = (1/2) d ln Sigma_t / dt` of the velocity is integrated
    /// exactly by the change of variables `psi~ = phi~ / sqrt(Sigma_t)` (an integrating
    /// factor): RK4 then only sees the nonlinear part,
    /// `d psi~/dt = Sigma_t^{-1/2} N~`, `d log p_psi / dt = -div N`,
    /// `d s_psi / dt = -Sigma_t^{1/2} (J_N^T s + grad div N)` with `s_psi = Sigma_t^{1/2} s~`,
    /// and `log p = log p_psi - (1/2) sum_p ln Sigma_t(p)`. The free field is thereby exact to
    /// rounding, and the stiff UV rates of the Gaussian part never limit the step.
    /// Differentiable in the parameters.
    pub fn integrate_range(
        &self,
        phi: &Tensor,
        logp: &Tensor,
        score: Option<&Tensor>,
        n: usize,
        k_from: usize,
        k_to: usize,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let grid = self.grid(n);
        let t_start = grid[k_from];
        let sq = self.sqrt_sigma(t_start)?;
        let mut psi = self.hartley(phi)?.broadcast_div(&sq)?;
        let mut lp = (logp + self.half_log_det(t_start))?;
        let mut sc = match score {
            Some(s) => Some(self.hartley(s)?.broadcast_mul(&sq)?),
            None => None,
        };
        // Right-hand side in psi coordinates: (d psi, d log p_psi, d s_psi).
        let rhs = |psi: &Tensor,
                   s: Option<&Tensor>,
                   t: f64|
         -> Result<(Tensor, Tensor, Option<Tensor>)> {
            let sq = self.sqrt_sigma(t)?;
            let phi = self.hartley(&psi.broadcast_mul(&sq)?)?;
            let (nt, div) = self.nonlinear(&phi, t)?;
            let dpsi = nt.broadcast_div(&sq)?;
            let ds = match s {
                Some(s) => {
                    let s_real = self.hartley(&s.broadcast_div(&sq)?)?;
                    let (jt, gd) = self.nonlinear_vjp(&phi, t, &s_real)?;
                    Some(self.hartley(&(jt + gd)?)?.broadcast_mul(&sq)?.neg()?)
                }
                None => None,
            };
            Ok((dpsi, div.neg()?, ds))
        };
        let add = |x: &Tensor, d: &Tensor, c: f64| -> Result<Tensor> { Ok((x + (d * c)?)?) };
        let addo = |x: &Option<Tensor>, d: &Option<Tensor>, c: f64| -> Result<Option<Tensor>> {
            match (x, d) {
                (Some(x), Some(d)) => Ok(Some(add(x, d, c)?)),
                _ => Ok(None),
            }
        };
        for k in (k_to..k_from).rev() {
            let (t1, t0) = (grid[k + 1], grid[k]);
            let h = t0 - t1;
            let tm = t1 + 0.5 * h;
            let k1 = rhs(&psi, sc.as_ref(), t1)?;
            let p2 = add(&psi, &k1.0, 0.5 * h)?;
            let s2 = addo(&sc, &k1.2, 0.5 * h)?;
            let k2 = rhs(&p2, s2.as_ref(), tm)?;
            let p3 = add(&psi, &k2.0, 0.5 * h)?;
            let s3 = addo(&sc, &k2.2, 0.5 * h)?;
            let k3 = rhs(&p3, s3.as_ref(), tm)?;
            let p4 = add(&psi, &k3.0, h)?;
            let s4 = addo(&sc, &k3.2, h)?;
            let k4 = rhs(&p4, s4.as_ref(), t0)?;
            let comb = |a: &Tensor, b: &Tensor, c: &Tensor, d: &Tensor| -> Result<Tensor> {
                Ok(((a + ((b + c)? * 2.0)?)? + d)?.affine(h / 6.0, 0.0)?)
            };
            psi = (psi + comb(&k1.0, &k2.0, &k3.0, &k4.0)?)?;
            lp = (lp + comb(&k1.1, &k2.1, &k3.1, &k4.1)?)?;
            if let (Some(s), Some(a), Some(b), Some(c), Some(d)) = (&sc, &k1.2, &k2.2, &k3.2, &k4.2)
            {
                sc = Some((s + comb(a, b, c, d)?)?);
            }
        }
        let t_end = grid[k_to];
        let sq = self.sqrt_sigma(t_end)?;
        let phi = self.hartley(&psi.broadcast_mul(&sq)?)?;
        let lp = (lp - self.half_log_det(t_end))?;
        let sc = match sc {
            Some(s) => Some(self.hartley(&s.broadcast_div(&sq)?)?),
            None => None,
        };
        Ok((phi, lp, sc))
    }

    /// [`ScoreNet::integrate_range`] over the whole grid, from `T` to `0`.
    pub fn integrate(
        &self,
        phi_t: &Tensor,
        logp_t: &Tensor,
        score_t: Option<&Tensor>,
        n: usize,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        self.integrate_range(phi_t, logp_t, score_t, n, n, 0)
    }

    /// The score of the IR prior at `T` for prior draws given in Hartley coordinates:
    /// `-phi~ / Sigma_T` transformed to real space.
    pub fn prior_score(&self, tilde: &Tensor) -> Result<Tensor> {
        let c = self.coeffs(self.scheme.t_max())?;
        self.hartley(&tilde.broadcast_mul(&c.inv_sigma)?.neg()?)
    }

    /// Draws `b` fields by the probability-flow ODE with `n` RK4 steps: `(phi_0 [b, V] host,
    /// log q [b] host, score_0 if asked)`. The prior draws come from `rng`.
    #[allow(clippy::type_complexity)]
    pub fn sample_ode(
        &self,
        b: usize,
        n: usize,
        with_score: bool,
        rng: &mut impl Rng,
    ) -> Result<(Vec<f64>, Vec<f64>, Option<Vec<f64>>)> {
        let (tilde, lp) = self.prior_sample(b, rng);
        self.flow_prior(&tilde, &lp, n, with_score)
    }

    /// Integrates given prior draws (Hartley coordinates, with their `log pi_T`).
    #[allow(clippy::type_complexity)]
    pub fn flow_prior(
        &self,
        tilde: &[f64],
        lp: &[f64],
        n: usize,
        with_score: bool,
    ) -> Result<(Vec<f64>, Vec<f64>, Option<Vec<f64>>)> {
        let b = lp.len();
        let tt = self.host(tilde.to_vec(), &[b, self.v])?;
        let phi = self.hartley(&tt)?;
        let lpt = self.host(lp.to_vec(), &[b])?;
        let s = if with_score {
            Some(self.prior_score(&tt)?)
        } else {
            None
        };
        let (phi0, lq, s0) = self.integrate(&phi, &lpt, s.as_ref(), n)?;
        let v = |t: &Tensor| -> Result<Vec<f64>> {
            Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
        };
        Ok((
            v(&phi0)?,
            v(&lq)?,
            match s0 {
                Some(s) => Some(v(&s)?),
                None => None,
            },
        ))
    }

    /// The phi^4 action `S = sum_p p_hat^2 phi~_p^2 + sum_x (m2 phi^2 + lambda phi^4)` of real
    /// fields `[B, V]` as a tensor `[B]` (differentiable).
    pub fn phi4_action(&self, phi: &Tensor, m2: f64, lambda: f64) -> Result<Tensor> {
        let p2 = self.host(self.scheme.p_hat_squared().to_vec(), &[1, self.v])?;
        let kin = self
            .hartley(phi)?
            .sqr()?
            .broadcast_mul(&p2)?
            .sum(D::Minus1)?;
        let x2 = phi.sqr()?;
        let pot = ((&x2 * m2)? + (x2.sqr()? * lambda)?)?.sum(D::Minus1)?;
        Ok((kin + pot)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::Boundary;
    use crate::rg::GaussianOptions;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn net(name: &str, lat: &Lattice, seed: u64) -> ScoreNet {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let s = GaussianScheme::new(name, GaussianOptions::default(), lat).unwrap();
        let cfg = ScoreConfig {
            channels: 4,
            time_basis: 3,
            ref_m2: 0.7,
            omega_max: 2.0,
        };
        let n = ScoreNet::new(lat, s, cfg, DType::F64, &Device::Cpu, &mut rng).unwrap();
        // Kernels large enough that the nonlinear part matters.
        let th: Vec<f64> = (0..n.theta.elem_count())
            .map(|_| 0.3 * rng.sample::<f64, _>(StandardNormal))
            .collect();
        n.theta
            .set(&Tensor::from_vec(th, n.theta.dims(), &Device::Cpu).unwrap())
            .unwrap();
        n
    }

    fn vecs(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn closed_form_derivatives_match_finite_differences() {
        for (name, lat) in [
            ("carosso", Lattice::square(4, 4, Boundary::Periodic)),
            ("polchinski", Lattice::square(3, 4, Boundary::Periodic)),
        ] {
            let n = net(name, &lat, 3);
            let v = lat.n_sites();
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
            let phi0: Vec<f64> = (0..v).map(|_| rng.sample(StandardNormal)).collect();
            let y: Vec<f64> = (0..v).map(|_| rng.sample(StandardNormal)).collect();
            let t = 0.37;
            let dev = Device::Cpu;
            let tens = |x: &[f64]| Tensor::from_vec(x.to_vec(), (1, v), &dev).unwrap();
            let (vel, div) = n.velocity(&tens(&phi0), t).unwrap();
            let vel = vecs(&vel);
            let div = vecs(&div)[0];
            let (jt, gd) = n.vjp_and_grad_div(&tens(&phi0), t, &tens(&y)).unwrap();
            let (jt, gd) = (vecs(&jt), vecs(&gd));
            // The velocity is f phi - g^2 s / 2 per mode.
            let s = vecs(&n.score(&tens(&phi0), t).unwrap());
            let h = 1e-5;
            let mut div_fd = 0.0;
            for x in 0..v {
                let mut pp = phi0.clone();
                pp[x] += h;
                let mut pm = phi0.clone();
                pm[x] -= h;
                let (vp, dp) = n.velocity(&tens(&pp), t).unwrap();
                let (vm, dm) = n.velocity(&tens(&pm), t).unwrap();
                let (vp, vm) = (vecs(&vp), vecs(&vm));
                // Column x of J: dv/dphi_x.
                let col: Vec<f64> = (0..v).map(|i| (vp[i] - vm[i]) / (2.0 * h)).collect();
                div_fd += col[x];
                let jty: f64 = (0..v).map(|i| col[i] * y[i]).sum();
                assert!(
                    (jty - jt[x]).abs() < 1e-6,
                    "{name} J^T y at {x}: {jty} vs {}",
                    jt[x]
                );
                let gfd = (vecs(&dp)[0] - vecs(&dm)[0]) / (2.0 * h);
                assert!(
                    (gfd - gd[x]).abs() < 1e-6,
                    "{name} grad div at {x}: {gfd} vs {}",
                    gd[x]
                );
            }
            assert!((div_fd - div).abs() < 1e-6, "{name} div {div_fd} vs {div}");
            // v = f phi - g^2 s / 2 (checked in Hartley coordinates).
            let pt = vecs(&n.hartley(&tens(&phi0)).unwrap());
            let st = vecs(&n.hartley(&tens(&s)).unwrap());
            let vt = vecs(&n.hartley(&tens(&vel)).unwrap());
            for p in 0..v {
                let want = n.scheme.drift(t, p) * pt[p] - 0.5 * n.scheme.g2(t, p) * st[p];
                assert!((want - vt[p]).abs() < 1e-9);
            }
            // score_tilde agrees with score.
            let st2 = vecs(&n.score_tilde(&tens(&pt), &[t]).unwrap());
            for p in 0..v {
                assert!((st2[p] - st[p]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn equivariant_under_translations_and_reflections() {
        let lat = Lattice::square(4, 4, Boundary::Periodic);
        let n = net("carosso", &lat, 4);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let phi: Vec<f64> = (0..16).map(|_| rng.sample(StandardNormal)).collect();
        let s = vecs(
            &n.score(
                &Tensor::from_vec(phi.clone(), (1, 16), &Device::Cpu).unwrap(),
                0.5,
            )
            .unwrap(),
        );
        // Translation by (1, 2), the reflection x -> -x, the exchange of the axes.
        type Map = fn(usize, usize) -> (usize, usize);
        let maps: [Map; 3] = [
            |x, y| ((x + 1) % 4, (y + 2) % 4),
            |x, y| ((4 - x) % 4, y),
            |x, y| (y, x),
        ];
        for m in maps {
            let mut g = vec![0.0; 16];
            for (i, &p) in phi.iter().enumerate() {
                let (x, y) = lat.coords(i);
                let (a, b) = m(x, y);
                g[lat.index(a, b)] = p;
            }
            let sg = vecs(
                &n.score(&Tensor::from_vec(g, (1, 16), &Device::Cpu).unwrap(), 0.5)
                    .unwrap(),
            );
            for (i, &si) in s.iter().enumerate() {
                let (x, y) = lat.coords(i);
                let (a, b) = m(x, y);
                assert!((sg[lat.index(a, b)] - si).abs() < 1e-10);
            }
        }
    }
}
