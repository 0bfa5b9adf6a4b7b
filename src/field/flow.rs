//! phi^4 sampling with the RG-flow score model ([`ScoreNet`]) of a Gaussian RG scheme
//! (`carosso` | `polchinski`), made exact by independence Metropolis-Hastings and importance
//! weights (estimators.md, classical part).
//!
//! Two samplers from one network:
//! - `flow`: the probability-flow ODE from the exact IR prior `pi_T` to `t = 0`, RK4 with a
//!   fixed number of steps, carrying `log q(phi_0) = log pi_T(phi_T) + int_0^T div v dt`.
//!   The weight is `w = exp(-S(phi_0)) / q(phi_0)`; the only inexactness is the integration
//!   error of `log q`, measured by halving the step (`ode_logq_error`).
//! - `diffusion`: the reverse SDE on the grid `0 = t_0 < .. < t_n = T` with Gaussian reverse
//!   kernels `q(x_j | x_{j+1}) = N((x_{j+1} + beta_j^2 s(x_{j+1}, t_{j+1})) / alpha_j,
//!   Sigma_j beta_j^2 / Sigma_{j+1})` per Hartley mode (`alpha_j, beta_j^2`: the exact forward
//!   kernel from `t_j` to `t_{j+1}`; `Sigma`: the reference Gaussian's variances) and path weights
//!   `w = exp(-S(x_0)) prod_j k(x_{j+1} | x_j) / (pi_T(x_n) prod_j q(x_j | x_{j+1}))`, computed
//!   in `f64` on the host: unbiased for any parameters, with no density needed. With the exact
//!   Gaussian score the reverse kernels are the exact posteriors and `w` is constant.
//!
//! Training (`objective`): `kl`, the variational free energy `F = mean[S(phi_0) + log q(phi_0)]
//! >= -log Z` through the ODE (pathwise gradient; input derivatives as explicit tensor ops,
//! autograd for the parameters only); `dsm`, RG-path denoising score matching
//! `mean_t mean_p (b_t s~_t(phi_t) + xi)^2` on data configurations flowed with the exact
//! kernels, `phi~_t = a_t phi~_0 + b_t xi`; or `both` (their sum).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Tensor};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::observables::{Estimate, Recorder};
use super::theory::{phi4_action, Neighbours};
use crate::error::{Error, Result};
use crate::lattice::Lattice;
use crate::model::{ScoreConfig, ScoreNet};
use crate::rg::gaussian::hartree_mass;
use crate::rg::{GaussianOptions, GaussianScheme};
use crate::vmc::adam::Adam;

/// Training objective of the flow model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    Kl,
    Dsm,
    Both,
}

impl Objective {
    pub fn parse(s: &str) -> Result<Objective> {
        match s {
            "kl" => Ok(Objective::Kl),
            "dsm" => Ok(Objective::Dsm),
            "both" => Ok(Objective::Both),
            _ => Err(Error::Input(format!(
                "unknown --objective `{s}`; expected kl, dsm or both"
            ))),
        }
    }
}

/// Options of the flow / diffusion methods (part of `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowConfig {
    /// `m0^2` of the scheme.
    pub m0sq: f64,
    /// `Omega` (carosso).
    pub omega: f64,
    /// `m^2` of the polchinski reference propagator (default: the reference mass).
    pub rg_m2: Option<f64>,
    /// Final RG time `T`.
    pub t_max: f64,
    /// Reference mass `mu^2` of the known Gaussian part (default: the Hartree mass).
    pub ref_m2: Option<f64>,
    pub channels: usize,
    pub time_basis: usize,
    /// RK4 steps of the ODE / steps of the reverse SDE.
    pub steps: usize,
    pub objective: Objective,
    /// `.npy` file of configurations (e.g. `samples.npy` of an HMC run) for `dsm`.
    pub data: Option<String>,
    /// A run directory whose trained model initialises this one.
    #[serde(default)]
    pub init_from: Option<String>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            m0sq: 1.0,
            omega: 1.0,
            rg_m2: None,
            t_max: 3.0,
            ref_m2: None,
            channels: 6,
            time_basis: 4,
            steps: 16,
            objective: Objective::Kl,
            data: None,
            init_from: None,
        }
    }
}

impl FlowConfig {
    /// The reference mass: `ref_m2`, or the Hartree mass of the theory.
    pub fn reference_mass(&self, lattice: &Lattice, m2: f64, lambda: f64) -> f64 {
        self.ref_m2
            .unwrap_or_else(|| hartree_mass(&lattice.p_hat_squared(), m2, lambda))
    }

    /// Builds the scheme and an initial network (parameters from `seed`).
    pub fn build(
        &self,
        scheme: &str,
        lattice: &Lattice,
        (m2, lambda): (f64, f64),
        seed: u64,
        device: &candle_core::Device,
    ) -> Result<ScoreNet> {
        if self.steps == 0 {
            return Err(Error::Input("--steps must be at least 1".into()));
        }
        let mu2 = self.reference_mass(lattice, m2, lambda);
        let opts = GaussianOptions {
            m0sq: self.m0sq,
            omega: self.omega,
            m2: self.rg_m2.unwrap_or(mu2),
            t_max: self.t_max,
        };
        let sch = GaussianScheme::new(scheme, opts, lattice)?;
        let cfg = ScoreConfig {
            channels: self.channels,
            time_basis: self.time_basis,
            ref_m2: mu2,
            omega_max: 3.0,
        };
        let mut rng = crate::vmc::Vmc::rng_for(seed ^ 0xF10F_F10F, 0);
        ScoreNet::new(lattice, sch, cfg, DType::F32, device, &mut rng)
    }
}

/// Settings of the training loop.
#[derive(Clone, Debug)]
pub struct FlowTrain {
    pub samples: usize,
    pub iters: usize,
    pub lr: f64,
    pub seed: u64,
}

/// One training iteration (a row of `trace.csv`).
#[derive(Clone, Debug, Serialize)]
pub struct FlowStats {
    pub iter: usize,
    pub loss: f64,
    /// `mean(S + log q)` (kl, both), else NaN.
    pub free_energy: f64,
    pub free_energy_error: f64,
    /// ESS fraction of the iteration's ODE samples (kl, both), else NaN.
    pub ess: f64,
    /// Denoising score-matching loss (dsm, both), else NaN.
    pub dsm: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// The trainer of a flow model on one phi^4 theory.
pub struct FlowModel {
    pub net: ScoreNet,
    pub adam: Adam,
    pub iter: usize,
    pub train: FlowTrain,
    pub objective: Objective,
    pub steps: usize,
    m2: f64,
    lambda: f64,
    /// Data in Hartley coordinates, rows of `V`.
    data_tilde: Vec<f64>,
}

impl FlowModel {
    pub fn new(
        net: ScoreNet,
        (m2, lambda): (f64, f64),
        objective: Objective,
        steps: usize,
        data: Option<&[f64]>,
        train: FlowTrain,
    ) -> Result<Self> {
        let adam = Adam::new(&net.params())?;
        let data_tilde = match data {
            Some(d) => net.hartley_host(d)?,
            None => Vec::new(),
        };
        if objective != Objective::Kl && data_tilde.is_empty() {
            return Err(Error::Input(
                "--objective dsm and both need configurations: give --data FILE.npy (for example \
                 the samples.npy of an HMC run)"
                    .into(),
            ));
        }
        Ok(FlowModel {
            net,
            adam,
            iter: 0,
            train,
            objective,
            steps,
            m2,
            lambda,
            data_tilde,
        })
    }

    /// Learning rate at iteration `t`: cosine decay from `lr` to `lr / 10`.
    pub fn lr_at(&self, t: usize) -> f64 {
        let x = t as f64 / self.train.iters.max(1) as f64;
        self.train.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * x.min(1.0)).cos()))
    }

    /// The reverse-KL loss `mean(S + log q)` of `b` ODE samples and their `log w`.
    fn kl_loss(&self, b: usize, rng: &mut impl Rng) -> Result<(Tensor, Vec<f64>)> {
        let net = &self.net;
        let (tilde, lp) = net.prior_sample(b, rng);
        let v = net.n_sites();
        let tt = Tensor::from_vec(tilde, (b, v), net.device())?.to_dtype(net.dtype())?;
        let lpt = Tensor::from_vec(lp, b, net.device())?.to_dtype(net.dtype())?;
        let (phi0, lq, _) = net.integrate(&net.hartley(&tt)?, &lpt, None, self.steps)?;
        let f = (net.phi4_action(&phi0, self.m2, self.lambda)? + lq)?;
        let log_w: Vec<f64> = f.neg()?.to_dtype(DType::F64)?.to_vec1()?;
        Ok((f.mean_all()?, log_w))
    }

    /// The denoising score-matching loss on `b` data rows at random RG times.
    fn dsm_loss(&self, b: usize, rng: &mut impl Rng) -> Result<Tensor> {
        let net = &self.net;
        let v = net.n_sites();
        let rows = self.data_tilde.len() / v;
        let sch = &net.scheme;
        let mut x = Vec::with_capacity(b * v);
        let mut bt = Vec::with_capacity(b * v);
        let mut xi = Vec::with_capacity(b * v);
        let mut ts = Vec::with_capacity(b);
        for _ in 0..b {
            let r = rng.random_range(0..rows);
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            // t = T u^2 as on the ODE grid, u uniform in (0, 1].
            let u: f64 = 1.0 - rng.random::<f64>();
            let t = sch.t_max() * u * u;
            ts.push(t);
            for p in 0..v {
                let e: f64 = rng.sample(StandardNormal);
                let bb = sch.b2(t, p).sqrt();
                x.push(sch.a(t, p) * sign * self.data_tilde[r * v + p] + bb * e);
                bt.push(bb);
                xi.push(e);
            }
        }
        let dev = net.device();
        let tens = |d: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(d, (b, v), dev)?.to_dtype(net.dtype())?)
        };
        let s = net.score_tilde(&tens(x)?, &ts)?;
        let r = ((s * tens(bt)?)? + tens(xi)?)?;
        Ok((r.sqr()?.sum_all()? / (b * v) as f64)?)
    }

    /// One Adam step on the objective; the generator of iteration `k` is derived from
    /// `(seed, k)`, so a resumed run continues bit for bit.
    pub fn train_step(&mut self) -> Result<FlowStats> {
        let t0 = Instant::now();
        let mut rng = crate::vmc::Vmc::rng_for(self.train.seed, self.iter);
        let b = self.train.samples;
        let mut loss: Option<Tensor> = None;
        let (mut fe, mut fe_err, mut ess, mut dsm) = (f64::NAN, f64::NAN, f64::NAN, f64::NAN);
        if self.objective != Objective::Dsm {
            let (l, log_w) = self.kl_loss(b, &mut rng)?;
            let f: Vec<f64> = log_w.iter().map(|x| -x).collect();
            let s = crate::stats::independent(&f);
            fe = s.mean;
            fe_err = s.error;
            ess = crate::stats::ess_fraction(&log_w);
            loss = Some(l);
        }
        if self.objective != Objective::Kl {
            let l = self.dsm_loss(b, &mut rng)?;
            dsm = l.to_dtype(DType::F64)?.to_scalar()?;
            loss = Some(match loss {
                Some(k) => (k + l)?,
                None => l,
            });
        }
        let loss = loss.expect("an objective");
        let lv: f64 = loss.to_dtype(DType::F64)?.to_scalar()?;
        if !lv.is_finite() {
            return Err(Error::Input(format!(
                "training diverged at iteration {} (loss {lv}); lower --lr or raise --steps",
                self.iter
            )));
        }
        let grads = loss.backward()?;
        let lr = self.lr_at(self.iter);
        self.adam.step(&self.net.params(), &grads, lr)?;
        self.iter += 1;
        Ok(FlowStats {
            iter: self.iter,
            loss: lv,
            free_energy: fe,
            free_energy_error: fe_err,
            ess,
            dsm,
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }
}

/// Which exact sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// Probability-flow ODE with its log density.
    Ode,
    /// Reverse SDE with path weights.
    Sde,
}

/// Proposals of one sampler: real-space rows and `log q_eff`, such that the importance weight
/// is `w = exp(-S(phi) - log q_eff)` (for the SDE, `log q_eff = log pi_T + sum log q -
/// sum log k` of the whole path).
pub fn propose(
    net: &ScoreNet,
    sampler: Sampler,
    b: usize,
    steps: usize,
    rng: &mut impl Rng,
) -> Result<(Vec<f64>, Vec<f64>)> {
    match sampler {
        Sampler::Ode => {
            let (phi, lq, _) = net.sample_ode(b, steps, false, rng)?;
            Ok((phi, lq))
        }
        Sampler::Sde => sde_paths(net, b, steps, rng),
    }
}

/// Reverse-SDE paths (see the module documentation): `(x_0 rows, log q_eff)`.
pub fn sde_paths(
    net: &ScoreNet,
    b: usize,
    steps: usize,
    rng: &mut impl Rng,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let v = net.n_sites();
    let sch = &net.scheme;
    let grid = net.grid(steps);
    let ln2pi = (2.0 * std::f64::consts::PI).ln();
    let (mut x, mut lq) = net.prior_sample(b, rng);
    let sig = |t: f64, p: usize| sch.variance(t, p, net.sigma0[p]);
    for j in (0..steps).rev() {
        let (tj, tj1) = (grid[j], grid[j + 1]);
        let xt = Tensor::from_vec(x.clone(), (b, v), net.device())?.to_dtype(net.dtype())?;
        let s: Vec<f64> = net
            .score_tilde(&xt, &[tj1])?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let coef: Vec<(f64, f64, f64)> = (0..v)
            .map(|p| {
                let (al, be2) = sch.transition(tj, tj1, p);
                let var = sig(tj, p) * be2 / sig(tj1, p);
                (al, be2, var)
            })
            .collect();
        for (row, (xr, sr)) in lq.iter_mut().zip(x.chunks_mut(v).zip(s.chunks(v))) {
            for p in 0..v {
                let (al, be2, var) = coef[p];
                let mean = (xr[p] + be2 * sr[p]) / al;
                let e: f64 = rng.sample(StandardNormal);
                let new = mean + var.sqrt() * e;
                // - log k(x_{j+1} | x_j) + log q(x_j | x_{j+1})
                let d = xr[p] - al * new;
                *row += -0.5 * e * e - 0.5 * (ln2pi + var.ln())
                    + 0.5 * d * d / be2
                    + 0.5 * (ln2pi + be2.ln());
                xr[p] = new;
            }
        }
    }
    Ok((net.hartley_host(&x)?, lq))
}

/// An independence Metropolis-Hastings chain with model proposals.
pub struct FlowMh {
    pub recorder: Recorder,
    /// Every proposal's observables, in the order of `log_w` (for
    /// [`crate::field::observables::analyse_weighted`]).
    pub proposals: Recorder,
    /// Chain states, one row per proposal.
    pub chain: Vec<f64>,
    /// `log w = -S - log q_eff` of every proposal.
    pub log_w: Vec<f64>,
    pub acceptance: Estimate,
    pub seconds: f64,
    pub complete: bool,
}

/// Runs `proposals` independence-MH steps with proposals drawn `batch` at a time: accept `x'`
/// with `min(1, w(x') / w(x))`.
#[allow(clippy::too_many_arguments)]
pub fn metropolis_hastings(
    net: &ScoreNet,
    sampler: Sampler,
    lattice: &Lattice,
    (m2, lambda): (f64, f64),
    proposals: usize,
    batch: usize,
    steps: usize,
    rng: &mut impl Rng,
    progress: &mut dyn FnMut(usize),
    stop: &AtomicBool,
) -> Result<FlowMh> {
    let v = net.n_sites();
    let nb = Neighbours::new(lattice);
    let t0 = Instant::now();
    let mut rec = Recorder::new(lattice);
    let mut drawn = Recorder::new(lattice);
    let mut chain = Vec::with_capacity(proposals * v);
    let mut log_w = Vec::with_capacity(proposals);
    let mut acc = Vec::with_capacity(proposals);
    let mut cur: Vec<f64> = Vec::new();
    let mut cur_lw = f64::NEG_INFINITY;
    let mut complete = true;
    while log_w.len() < proposals {
        if stop.load(Ordering::SeqCst) {
            complete = false;
            break;
        }
        let b = batch.min(proposals - log_w.len());
        let (phi, lq) = propose(net, sampler, b, steps, rng)?;
        for (row, &q) in phi.chunks(v).zip(&lq) {
            let s = phi4_action(&nb, m2, lambda, row);
            let lw = -s - q;
            log_w.push(lw);
            drawn.record(row, s);
            let u: f64 = rng.random();
            let ok = cur.is_empty() || u.ln() < lw - cur_lw;
            if ok {
                cur.clear();
                cur.extend_from_slice(row);
                cur_lw = lw;
                rec.push_copy(&drawn, drawn.len() - 1);
            } else {
                rec.repeat_last();
            }
            acc.push(if ok { 1.0 } else { 0.0 });
            chain.extend_from_slice(&cur);
        }
        progress(log_w.len());
    }
    let acceptance = if acc.len() >= 2 {
        let s = crate::stats::correlated(&acc);
        Estimate::new(s.mean, s.error)
    } else {
        Estimate::new(0.0, 0.0)
    };
    Ok(FlowMh {
        recorder: rec,
        proposals: drawn,
        chain,
        log_w,
        acceptance,
        seconds: t0.elapsed().as_secs_f64(),
        complete,
    })
}

/// The two-point function `G_t(r)` along x at one RG time: the model's marginal (ODE from `T`
/// to `t`) against the exactly flowed target samples (`a_t^2 P_0(p) + b_t^2` per mode, `P_0`
/// from the MH chain), errors from 10 blocks.
#[derive(Clone, Debug, Serialize)]
pub struct RgTwoPoint {
    pub t: f64,
    pub model: Vec<f64>,
    pub model_error: Vec<f64>,
    pub data: Vec<f64>,
    pub data_error: Vec<f64>,
}

/// What the flow and diffusion methods add to the report.
#[derive(Clone, Debug, Serialize)]
pub struct FlowReport {
    pub scheme: String,
    pub reference_m2: f64,
    pub parameters: usize,
    pub steps: usize,
    /// RMS of `log q(n steps) - log q(2n steps)` over 64 ODE draws (the integration error).
    pub ode_logq_error: f64,
    /// Largest `|phi(n) - phi(2n)|` over those draws.
    pub ode_phi_error: f64,
    pub rg_two_point: Vec<RgTwoPoint>,
}

fn blocked_two_point(
    sch: &GaussianScheme,
    rows: &[f64],
    t: f64,
    blocks: usize,
) -> (Vec<f64>, Vec<f64>) {
    let v = sch.n_modes();
    let n = rows.len() / v;
    let per = (n / blocks).max(1);
    let mut gs: Vec<Vec<f64>> = Vec::new();
    for blk in rows.chunks(per * v) {
        if blk.len() < per * v {
            break;
        }
        let pw: Vec<f64> = sch
            .power(blk)
            .iter()
            .enumerate()
            .map(|(p, &x)| sch.a(t, p).powi(2) * x + sch.b2(t, p))
            .collect();
        gs.push(sch.two_point_from_power(&pw));
    }
    let nb = gs.len() as f64;
    let lx = gs[0].len();
    let mean: Vec<f64> = (0..lx)
        .map(|r| gs.iter().map(|g| g[r]).sum::<f64>() / nb)
        .collect();
    let err: Vec<f64> = (0..lx)
        .map(|r| {
            let var =
                gs.iter().map(|g| (g[r] - mean[r]).powi(2)).sum::<f64>() / (nb - 1.0).max(1.0);
            (var / nb).sqrt()
        })
        .collect();
    (mean, err)
}

/// The flow-specific report: integration error by step halving and the RG two-point
/// functions at `t = 0, T/16, T/4, T` (grid points `0, n/4, n/2, n`).
pub fn flow_report(
    net: &ScoreNet,
    steps: usize,
    chain: &[f64],
    rng: &mut impl Rng,
) -> Result<FlowReport> {
    let v = net.n_sites();
    let (tilde, lp) = net.prior_sample(64, rng);
    let (p1, l1, _) = net.flow_prior(&tilde, &lp, steps, false)?;
    let (p2, l2, _) = net.flow_prior(&tilde, &lp, 2 * steps, false)?;
    let rms = (l1
        .iter()
        .zip(&l2)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / l1.len() as f64)
        .sqrt();
    let pmax = p1
        .iter()
        .zip(&p2)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    // Model marginals: 10 blocks of 50 draws, snapshots on the grid.
    let grid = net.grid(steps);
    let ks = [0, steps / 4, steps / 2, steps];
    let mut snaps: Vec<Vec<f64>> = vec![Vec::new(); ks.len()];
    for _ in 0..10 {
        let (tilde, lp) = net.prior_sample(50, rng);
        let tt = Tensor::from_vec(tilde, (50, v), net.device())?.to_dtype(net.dtype())?;
        drop(lp);
        let mut phi = net.hartley(&tt)?;
        // Integrate segment by segment with the same steps as the full ODE.
        let mut k_at = steps;
        for (i, &k) in ks.iter().enumerate().rev() {
            if k < k_at {
                phi = integrate_segment(net, &phi, k, k_at, steps)?;
                k_at = k;
            }
            snaps[i].extend(phi.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?);
        }
    }
    let sch = &net.scheme;
    let mut out = Vec::new();
    for (i, &k) in ks.iter().enumerate() {
        let t = grid[k];
        let (model, model_error) = blocked_two_point(sch, &snaps[i], 0.0, 10);
        let (data, data_error) = blocked_two_point(sch, chain, t, 10);
        out.push(RgTwoPoint {
            t,
            model,
            model_error,
            data,
            data_error,
        });
    }
    Ok(FlowReport {
        scheme: sch.name().into(),
        reference_m2: net.cfg.ref_m2,
        parameters: net.n_params(),
        steps,
        ode_logq_error: rms,
        ode_phi_error: pmax,
        rg_two_point: out,
    })
}

/// The field alone from grid point `k1` down to `k0 < k1` (as in the full ODE).
fn integrate_segment(
    net: &ScoreNet,
    phi: &Tensor,
    k0: usize,
    k1: usize,
    n: usize,
) -> Result<Tensor> {
    let lp = Tensor::zeros(phi.dim(0)?, net.dtype(), net.device())?;
    Ok(net.integrate_range(phi, &lp, None, n, k1, k0)?.0)
}
