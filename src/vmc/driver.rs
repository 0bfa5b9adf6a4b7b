//! One VMC iteration: exact samples, local energies, energy statistics, and a parameter
//! update by Adam or by stochastic reconfiguration in sample space (minSR).
//!
//! With `log psi = log p / 2 + i theta` and `e_b = E_loc(s_b) - E`, the energy gradient
//! `grad E = 2 Re mean_b[conj(e_b) O_b]`, `O = d log psi / d params`, is the gradient of the
//! surrogate `L = (1/B) sum_b [Re(e_b) log p_b + 2 Im(e_b) theta_b]` with `e_b` held fixed, so
//! one backward pass gives it. Annealing minimises `E - T S` with the exact entropy
//! `S = -mean log p` of the samples; its score-function gradient adds
//! `T (log p_b - mean log p)` to `Re(e_b)`. `T` falls linearly from `T0` to 0 over the first
//! `anneal_iters` iterations.
//!
//! minSR: `Obar = (O - mean O)/sqrt(B)`, `ebar = e / sqrt(B)` (stacked as real and imaginary
//! parts for real parameters), `dtheta = Obar^T (Obar Obar^T + eps I)^-1 ebar`, applied as
//! `theta -= lr dtheta`. Per-sample gradients come from one batched backward pass
//! ([`MaskedDiffusion::log_prob_jacobian`]).
//!
//! minSR with momentum (SPRING, Goldshlager, Abrahamsen and Lin, J. Comput. Phys. 2024):
//! `phi_k = argmin |Obar phi - ebar|^2 + eps |phi - mu phi_{k-1}|^2`, i.e.
//! `phi_k = mu phi_{k-1} + Obar^T (Obar Obar^T + eps I)^-1 (ebar - mu Obar phi_{k-1})`, applied
//! as `theta -= lr phi_k`. `mu = 0` is minSR. The previous direction carries the information
//! of earlier batches that one batch of `B` samples (fewer than parameters) cannot hold, which
//! lowers the noise floor of the energy at a given learning rate.
//!
//! Tempered training samples (`temper = beta < 1`): the samples come from the proposal `q`
//! whose conditionals are `p`'s to the power `beta`, renormalised
//! ([`MaskedDiffusion::sample_tempered`]), and every estimate takes the self-normalised
//! importance weights `w = p / q` (mean 1): `E = mean(w E_loc)`, the surrogate weights `wa`,
//! `wp` times `w`, and minSR rows `sqrt(w_b) (O_b - mean_w O)`, `ebar_b = sqrt(w_b) e_b`.
//!
//! **Data parallel** ([`crate::parallel`]): the batch is split into `chunks` chunks, each
//! drawn from its own generator; a rank samples, measures and differentiates its chunks; all
//! ranks gather the per-sample local energies and `log p`, the per-chunk gradients (Adam) or
//! the Jacobian rows (minSR) in chunk order, so every rank computes the same statistics and
//! applies the same update whatever the number of ranks. On the CPU a rank's chunks run in
//! parallel on the rayon pool (see [`crate::parallel::share_threads`]); as each has its own
//! generator, nothing depends on the threads either.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use num_complex::Complex64;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Instant;

use std::sync::Arc;

use super::adam::Adam;
use super::concentration;
use super::local_energy::local_energies;
use super::minsr::{cholesky_solve, SrRows};
use crate::error::{Error, Result};
use crate::model::unique::Unique;
use crate::model::MaskedDiffusion;
use crate::operator::Operator;
use crate::parallel::{self, chunk_rng, Chunks, Communicator};

/// Iterations between the checks that every rank holds the same parameters.
pub const CHECKSUM_EVERY: usize = 10;

fn one() -> usize {
    1
}

fn one_f64() -> f64 {
    1.0
}

/// The optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Adam,
    Sr,
}

impl Optimizer {
    /// `adam` or `sr` (the `--optimizer` values).
    pub fn parse(s: &str) -> Result<Optimizer> {
        match s {
            "adam" => Ok(Optimizer::Adam),
            "sr" => Ok(Optimizer::Sr),
            o => Err(Error::Input(format!(
                "--optimizer {o}: expected adam or sr"
            ))),
        }
    }
}

/// Settings of a VMC run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmcConfig {
    /// Samples per iteration.
    pub samples: usize,
    /// Iterations.
    pub iters: usize,
    /// Initial learning rate; it decays by a cosine to `lr / 10` at the last iteration.
    pub lr: f64,
    pub optimizer: Optimizer,
    /// Diagonal shift of the SR matrix.
    pub diag_shift: f64,
    /// Initial annealing temperature (0: no annealing).
    pub anneal_t0: f64,
    /// Iterations over which the temperature falls to 0.
    pub anneal_iters: usize,
    pub seed: u64,
    /// Chunks the batch is split into, each with its own generator ([`parallel::chunk_rng`]);
    /// results depend on it and not on the number of MPI ranks (at least one chunk per rank).
    /// 1 is the single stream of the one-process runs before MPI support.
    #[serde(default = "one")]
    pub chunks: usize,
    /// Momentum `mu` of the SR update (SPRING; 0: plain minSR).
    #[serde(default)]
    pub momentum: f64,
    /// Exponent `beta` of the tempered proposal the training samples are drawn from
    /// ([`MaskedDiffusion::sample_tempered`]; 1: exact samples of `p`). Below 1 every estimate
    /// of an iteration takes the importance weights `p / q`.
    #[serde(default = "one_f64")]
    pub temper: f64,
    /// Trust radius of an SR step (0: none): a step that would move the state farther than
    /// this, in the Fubini-Study distance estimated from the batch ([`Vmc::min_sr_step`]), is
    /// scaled down to it (the iteration's `lr` then records the rate applied). Early minSR
    /// steps from a random network can move the state by 2 to 4 (a different state); capped,
    /// they cannot throw it onto a single configuration.
    #[serde(default)]
    pub max_step: f64,
}

impl VmcConfig {
    /// Checks the ranges of the options and the combinations that would be silently ignored;
    /// the errors name the command-line options. Run on new and resumed runs alike (a
    /// resumed run's `config.json` may have been edited).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(m));
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!(
                "--momentum {}: expected 0 <= MU < 1",
                self.momentum
            ));
        }
        if !(self.temper > 0.0 && self.temper <= 1.0) {
            return bad(format!("--temper {}: expected 0 < BETA <= 1", self.temper));
        }
        if !(self.max_step >= 0.0 && self.max_step.is_finite()) {
            return bad(format!(
                "--max-step {}: expected a distance D >= 0 (0: no limit)",
                self.max_step
            ));
        }
        if self.max_step != 0.0 && self.optimizer != Optimizer::Sr {
            return bad("--max-step applies to --optimizer sr".into());
        }
        if self.momentum != 0.0 && self.optimizer != Optimizer::Sr {
            return bad("--momentum applies to --optimizer sr (Adam has its own moments)".into());
        }
        Ok(())
    }
}

impl Default for VmcConfig {
    fn default() -> Self {
        VmcConfig {
            samples: 1024,
            iters: 300,
            lr: 1e-2,
            optimizer: Optimizer::Adam,
            diag_shift: 1e-3,
            anneal_t0: 0.0,
            anneal_iters: 0,
            seed: 1,
            chunks: 1,
            momentum: 0.0,
            temper: 1.0,
            max_step: 0.0,
        }
    }
}

/// What one iteration measured (the energy of the samples it drew, before its update).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IterationStats {
    pub iter: usize,
    pub energy: f64,
    /// Imaginary part of the mean local energy (zero within errors for a good sample).
    pub energy_imag: f64,
    pub error: f64,
    pub variance: f64,
    /// `N Var(E_loc) / E^2`.
    pub v_score: f64,
    /// `-mean log p` of the samples.
    pub entropy: f64,
    pub temperature: f64,
    pub lr: f64,
    pub seconds: f64,
    pub samples_per_second: f64,
    /// Seconds of this iteration spent in MPI collectives (0 for one process).
    #[serde(default)]
    pub comm_seconds: f64,
    /// The part of `comm_seconds` spent waiting for the slowest rank.
    #[serde(default)]
    pub wait_seconds: f64,
    /// Effective sample size of the importance weights, `(sum w)^2 / sum w^2` (the batch size
    /// for exact samples).
    #[serde(default)]
    pub ess: f64,
    /// `p` of the most probable sample (exact, from the model): near 1 when the state has
    /// concentrated on one configuration.
    #[serde(default)]
    pub p_max: f64,
    /// The warning of [`concentration::collapse_warning`] when the state has collapsed onto
    /// one configuration (checked on this rank's samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse: Option<String>,
}

/// Importance weights `w_b = p(s_b) / q(s_b)` from `log p - log q`, normalised to mean 1 (the
/// self-normalised estimator: `E_p[f] ~ mean_b(w_b f_b)`), and their effective sample size
/// `(sum w)^2 / sum w^2`.
pub fn importance_weights(log_w: &[f64]) -> (Vec<f64>, f64) {
    let max = log_w.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v));
    let raw: Vec<f64> = log_w.iter().map(|&l| (l - max).exp()).collect();
    let mean = raw.iter().sum::<f64>() / raw.len() as f64;
    let w: Vec<f64> = raw.iter().map(|v| v / mean).collect();
    let ess = w.len() as f64 / (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64);
    (w, ess)
}

/// [`energy_stats`] of importance-weighted samples (weights of mean 1): `E = mean(w e)`, the
/// variance of `E_loc` under `p`, `mean(w |e - E|^2)`, and the delta-method error of the
/// self-normalised mean, `sqrt(sum w^2 |e - E|^2) / B`.
pub fn weighted_energy_stats(
    eloc: &[Complex64],
    w: &[f64],
    n_sites: usize,
) -> (f64, f64, f64, f64, f64) {
    let b = eloc.len() as f64;
    let mean = eloc.iter().zip(w).map(|(e, w)| e * w).sum::<Complex64>() / b;
    let dev = |(e, w): (&Complex64, &f64)| (e - mean).norm_sqr() * w;
    let var = eloc.iter().zip(w).map(dev).sum::<f64>() / b;
    let error = eloc
        .iter()
        .zip(w)
        .map(|(e, w)| (e - mean).norm_sqr() * w * w)
        .sum::<f64>()
        .sqrt()
        / b;
    let v_score = n_sites as f64 * var / (mean.re * mean.re).max(1e-300);
    (mean.re, mean.im, error, var, v_score)
}

/// Energy statistics of a batch of local energies (independent samples).
pub fn energy_stats(eloc: &[Complex64], n_sites: usize) -> (f64, f64, f64, f64, f64) {
    let b = eloc.len() as f64;
    let mean = eloc.iter().sum::<Complex64>() / b;
    let var = eloc.iter().map(|e| (e - mean).norm_sqr()).sum::<f64>() / (b - 1.0).max(1.0);
    let error = (var / b).sqrt();
    let v_score = n_sites as f64 * var / (mean.re * mean.re).max(1e-300);
    (mean.re, mean.im, error, var, v_score)
}

/// The sum of per-chunk gradients of `model`'s parameters over every chunk of every rank
/// (`local`: this rank's chunks, in order), taken in chunk order in `f64` on every rank, so
/// that it does not depend on how chunks are spread over ranks. A parameter keeps no gradient
/// only if no chunk gave it one (as a single backward pass would).
pub fn reduce_chunk_grads(
    comm: &dyn Communicator,
    model: &MaskedDiffusion,
    local: &[GradStore],
) -> Result<GradStore> {
    let params = model.params();
    let sizes: Vec<usize> = params.iter().map(|(_, p)| p.elem_count()).collect();
    let n_params: usize = sizes.iter().sum();
    // Per chunk: a presence flag per parameter, then the flattened gradient.
    let mut flat: Vec<f32> = Vec::with_capacity(local.len() * (params.len() + n_params));
    for g in local {
        let mut values = Vec::with_capacity(n_params);
        for ((_, p), &len) in params.iter().zip(&sizes) {
            match g.get(p.as_tensor()) {
                Some(t) => {
                    flat.push(1.0);
                    values.extend(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
                }
                None => {
                    flat.push(0.0);
                    values.extend(std::iter::repeat_n(0.0, len));
                }
            }
        }
        flat.extend(values);
    }
    let all = parallel::all_gather_f32(comm, &flat).concat();
    let stride = params.len() + n_params;
    let mut present = vec![false; params.len()];
    let mut sum = vec![0f64; n_params];
    for chunk in all.chunks_exact(stride) {
        for (k, &f) in chunk[..params.len()].iter().enumerate() {
            present[k] |= f != 0.0;
        }
        for (acc, &g) in sum.iter_mut().zip(&chunk[params.len()..]) {
            *acc += g as f64;
        }
    }
    let mut grads = GradStore::default();
    let mut offset = 0;
    for (k, ((_, p), &len)) in params.iter().zip(&sizes).enumerate() {
        if present[k] {
            let v: Vec<f32> = sum[offset..offset + len]
                .iter()
                .map(|&x| x as f32)
                .collect();
            let g = Tensor::from_vec(v, p.dims(), model.device())?.to_dtype(p.dtype())?;
            grads.insert(p.as_tensor(), g);
        }
        offset += len;
    }
    Ok(grads)
}

/// Samples drawn for one iteration with what was measured on them.
#[derive(Clone, Debug)]
pub struct Drawn {
    /// `B x N` local states, row-major (this rank's chunks only, in [`Vmc::sample_batch`]).
    pub configs: Vec<u8>,
    /// `log p` of every sample.
    pub log_p: Vec<f64>,
    /// `log q` of every sample under the distribution it was drawn from (`log p` when exact).
    pub log_q: Vec<f64>,
    /// Local energy of every sample.
    pub eloc: Vec<Complex64>,
}

/// A VMC optimisation of one model against one Hamiltonian.
pub struct Vmc<'a> {
    pub model: MaskedDiffusion,
    pub op: &'a dyn Operator,
    pub cfg: VmcConfig,
    pub adam: Adam,
    /// Iterations completed.
    pub iter: usize,
    /// The processes sharing the batch ([`parallel::SingleProcess`] unless set by
    /// [`Vmc::with_comm`]).
    pub comm: Arc<dyn Communicator>,
    /// The last SR direction `phi_{k-1}` (`f64`, flattened parameters), kept for the momentum
    /// of SPRING; `None` before the first SR step or without momentum.
    pub sr_direction: Option<Tensor>,
}

impl<'a> Vmc<'a> {
    pub fn new(model: MaskedDiffusion, op: &'a dyn Operator, cfg: VmcConfig) -> Result<Self> {
        let adam = Adam::new(model.params())?;
        Ok(Vmc {
            model,
            op,
            cfg,
            adam,
            iter: 0,
            comm: parallel::single(),
            sr_direction: None,
        })
    }

    /// Shares the batch with the processes of `comm`.
    pub fn with_comm(mut self, comm: Arc<dyn Communicator>) -> Result<Self> {
        Chunks::new(self.cfg.samples, self.cfg.chunks, comm.size(), "--chunks")?;
        self.comm = comm;
        Ok(self)
    }

    /// Checksum of the parameters' bits (equal on every rank while they apply the same
    /// updates).
    pub fn params_checksum(&self) -> Result<u64> {
        let mut all = Vec::new();
        for (_, p) in self.model.params() {
            all.extend(
                p.as_tensor()
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(parallel::checksum_f32(&all))
    }

    /// Errors when the parameters differ between ranks (see [`CHECKSUM_EVERY`]).
    pub fn check_ranks_agree(&self) -> Result<()> {
        parallel::check_same(
            self.comm.as_ref(),
            self.params_checksum()?,
            &format!("the parameters after {} iterations", self.iter),
        )
    }

    /// The generator of iteration `iter`: a function of the seed and the iteration only, so a
    /// resumed run draws exactly the samples the uninterrupted one would.
    pub fn rng_for(seed: u64, iter: usize) -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (iter as u64).wrapping_add(1),
        )
    }

    /// Learning rate at iteration `t`: cosine decay from `lr` to `lr / 10`.
    pub fn lr_at(&self, t: usize) -> f64 {
        let x = t as f64 / self.cfg.iters.max(1) as f64;
        self.cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * x.min(1.0)).cos()))
    }

    fn temperature_at(&self, t: usize) -> f64 {
        if self.cfg.anneal_iters == 0 {
            return 0.0;
        }
        self.cfg.anneal_t0 * (1.0 - t as f64 / self.cfg.anneal_iters as f64).max(0.0)
    }

    /// Draws `b` samples with the generator of `iter` and returns them with their local
    /// energies and `log p`.
    pub fn sample_energies(
        &self,
        b: usize,
        iter: usize,
    ) -> Result<(Vec<u8>, Vec<f64>, Vec<Complex64>)> {
        let d = self.energies_from(b, &mut Self::rng_for(self.cfg.seed, iter), 1.0)?;
        Ok((d.configs, d.log_p, d.eloc))
    }

    /// `b` samples of the proposal tempered by `beta` (exact for 1) drawn with `rng`, their
    /// `log p`, `log q` and local energies (the connected configurations' `log psi` reusing
    /// the samples' recorded conditionals).
    fn energies_from(&self, b: usize, rng: &mut Xoshiro256PlusPlus, beta: f64) -> Result<Drawn> {
        let sampled = self.model.sample_tempered(b, beta, rng)?;
        let lpsi = self.model.log_psi_with(&sampled.configs, &sampled.log_p)?;
        let model = &self.model;
        let eloc = local_energies(
            self.op,
            &sampled.configs,
            model.n_sites(),
            &lpsi,
            &|c, parents| model.log_psi_connected(&sampled, c, parents),
        )?;
        Ok(Drawn {
            configs: sampled.configs,
            log_p: sampled.log_p,
            log_q: sampled.log_q,
            eloc,
        })
    }

    /// `f` of each of this rank's chunks of `chunks`, in chunk order: in parallel over the
    /// rayon pool for a CPU model, one after another on a GPU (one device, one stream). A
    /// chunk is its own generator's samples, so nothing depends on how the chunks are spread
    /// over threads; on 2 cores two chunks on two threads, each with single-threaded tensor
    /// operations (`rgdiff ground-state` sets them so), were 1.2 to 1.5 times faster than one
    /// chunk with candle's own threads (see the README).
    fn per_chunk<T: Send>(
        &self,
        chunks: &Chunks,
        f: impl Fn(usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let comm = self.comm.as_ref();
        let mine = chunks.of_rank(comm.rank(), comm.size());
        if self.model.device().is_cpu() && mine.len() > 1 {
            mine.into_par_iter().map(&f).collect()
        } else {
            mine.map(f).collect()
        }
    }

    /// Samples, `log p` and local energies of chunk `c` of `chunks` of iteration `iter`.
    fn chunk_energies(&self, chunks: &Chunks, c: usize, iter: usize, beta: f64) -> Result<Drawn> {
        let b = chunks.range(c).len();
        self.energies_from(b, &mut chunk_rng(self.cfg.seed, iter, c), beta)
    }

    /// Draws `b` samples of iteration `iter` in the run's chunks, shared among the ranks:
    /// returns this rank's samples (its chunks, in order) and every sample's `log p` and
    /// local energy (all chunks in order, the same on every rank).
    pub fn sample_energies_parallel(
        &self,
        b: usize,
        iter: usize,
    ) -> Result<(Vec<u8>, Vec<f64>, Vec<Complex64>)> {
        let d = self.sample_batch(b, iter, 1.0)?;
        Ok((d.configs, d.log_p, d.eloc))
    }

    /// [`Vmc::sample_energies_parallel`] from the proposal tempered by `beta`: also every
    /// sample's `log q`.
    pub fn sample_batch(&self, b: usize, iter: usize, beta: f64) -> Result<Drawn> {
        let comm = self.comm.as_ref();
        let chunks = Chunks::new(b, self.cfg.chunks, comm.size(), "--chunks")?;
        let mut s = Vec::new();
        let mut local = Vec::new();
        let drawn = self.per_chunk(&chunks, |c| self.chunk_energies(&chunks, c, iter, beta))?;
        for d in drawn {
            s.extend(d.configs);
            for ((l, q), e) in d.log_p.iter().zip(&d.log_q).zip(&d.eloc) {
                local.extend([*l, *q, e.re, e.im]);
            }
        }
        let all = parallel::gather_chunks(comm, local);
        let logp = all.chunks_exact(4).map(|v| v[0]).collect();
        let logq = all.chunks_exact(4).map(|v| v[1]).collect();
        let eloc = all
            .chunks_exact(4)
            .map(|v| Complex64::new(v[2], v[3]))
            .collect();
        Ok(Drawn {
            configs: s,
            log_p: logp,
            log_q: logq,
            eloc,
        })
    }

    /// One iteration: sample, measure, update. Refuses to update on a non-finite energy.
    pub fn step(&mut self) -> Result<IterationStats> {
        let t0 = Instant::now();
        let comm0 = self.comm.comm_seconds();
        let wait0 = self.comm.wait_seconds();
        let t = self.iter;
        let b = self.cfg.samples;
        let n = self.model.n_sites();
        let beta = self.cfg.temper;
        let Drawn {
            configs: s,
            log_p: logp,
            log_q: logq,
            eloc,
        } = self.sample_batch(b, t, beta)?;
        let mine = Chunks::new(b, self.cfg.chunks, self.comm.size(), "--chunks")?
            .items_of_rank(self.comm.rank(), self.comm.size());
        // Importance weights p / q of tempered samples (None for exact samples).
        let weights = (beta != 1.0).then(|| {
            let lw: Vec<f64> = logp.iter().zip(&logq).map(|(p, q)| p - q).collect();
            importance_weights(&lw)
        });
        let (energy, energy_imag, error, variance, v_score) = match &weights {
            Some((w, _)) => weighted_energy_stats(&eloc, w, n),
            None => energy_stats(&eloc, n),
        };
        let ess = weights.as_ref().map_or(b as f64, |(_, e)| *e);
        let w: Vec<f64> = weights.map_or_else(|| vec![1.0; b], |(w, _)| w);
        if !energy.is_finite() || !variance.is_finite() {
            return Err(Error::Diverged(format!(
                "the energy diverged (E = {energy}, variance = {variance}) at iteration {t}"
            )));
        }
        let entropy = -logp.iter().zip(&w).map(|(l, w)| l * w).sum::<f64>() / b as f64;
        let (p_max, collapse) = self.collapse_check(&s, &logp, energy, variance)?;
        let temp = self.temperature_at(t);
        let mean_lp = -entropy;
        // Weights of log p (real part) and theta (imaginary part) in the surrogate, times the
        // importance weights: E_p[f] = E_q[w f].
        let wa: Vec<f64> = (0..b)
            .map(|i| w[i] * ((eloc[i].re - energy) + temp * (logp[i] - mean_lp)))
            .collect();
        let wp: Vec<f64> = (0..b).map(|i| w[i] * (eloc[i].im - energy_imag)).collect();
        let lr = self.lr_at(t);
        let lr = match self.cfg.optimizer {
            Optimizer::Adam => {
                let grads = self.parallel_gradient(&s, &wa, &wp, mine.start)?;
                self.adam.step(self.model.params(), &grads, lr)?;
                lr
            }
            Optimizer::Sr => {
                let w = (beta != 1.0).then_some(&w[..]);
                self.sr_update(&s, &wa, &wp, lr, w)?
            }
        };
        self.iter += 1;
        if self.comm.size() > 1 && self.iter.is_multiple_of(CHECKSUM_EVERY) {
            self.check_ranks_agree()?;
        }
        let seconds = t0.elapsed().as_secs_f64();
        Ok(IterationStats {
            iter: t,
            energy,
            energy_imag,
            error,
            variance,
            v_score,
            entropy,
            temperature: temp,
            lr,
            seconds,
            samples_per_second: b as f64 / seconds,
            comm_seconds: self.comm.comm_seconds() - comm0,
            wait_seconds: self.comm.wait_seconds() - wait0,
            ess,
            p_max,
            collapse,
        })
    }

    /// `p` of the most probable sample of a batch (`log_p` of the whole batch) and, when it
    /// is at least [`concentration::CONCENTRATED`], the collapse warning from the exact
    /// neighbourhood of this rank's most probable sample (`s`: this rank's samples, its
    /// chunks of the batch).
    pub fn collapse_check(
        &self,
        s: &[u8],
        log_p: &[f64],
        energy: f64,
        variance: f64,
    ) -> Result<(f64, Option<String>)> {
        let p_max = concentration::most_probable(log_p).map_or(0.0, |m| m.1);
        if p_max < concentration::CONCENTRATED || s.is_empty() {
            return Ok((p_max, None));
        }
        let ranks = self.comm.size();
        let mine = Chunks::new(log_p.len(), self.cfg.chunks, ranks, "--chunks")?
            .items_of_rank(self.comm.rank(), ranks);
        let Some((i, _)) = concentration::most_probable(&log_p[mine]) else {
            return Ok((p_max, None));
        };
        let n = self.model.n_sites();
        let (v_s, size) = concentration::neighbourhood_variance(
            &self.model,
            self.op,
            &s[i * n..(i + 1) * n],
            energy,
        )?;
        Ok((
            p_max,
            concentration::collapse_warning(p_max, v_s, size, variance, energy),
        ))
    }

    /// Gradient of the surrogate `(1/B) sum_b [wa_b log p_b + 2 wp_b theta_b]`, accumulated
    /// over blocks of samples ([`MaskedDiffusion::samples_per_pass`]) so that the memory of
    /// the backward pass stays bounded.
    pub fn surrogate_gradient(&self, s: &[u8], wa: &[f64], wp: &[f64]) -> Result<GradStore> {
        self.surrogate_gradient_part(s, wa, wp, wa.len())
    }

    /// The terms of [`Vmc::surrogate_gradient`] from the samples `s` (weights `wa`, `wp`) of
    /// a batch of `b` samples in all. Each distinct configuration is differentiated once.
    pub fn surrogate_gradient_part(
        &self,
        s: &[u8],
        wa: &[f64],
        wp: &[f64],
        b: usize,
    ) -> Result<GradStore> {
        let n = self.model.n_sites();
        // A repeated sample enters once, with the sum of its weights.
        let distinct = Unique::new(s, n);
        if !distinct.all_distinct() {
            let (mut sa, mut sp) = (vec![0.0; distinct.len()], vec![0.0; distinct.len()]);
            for (i, &u) in distinct.of_row.iter().enumerate() {
                sa[u] += wa[i];
                sp[u] += wp[i];
            }
            return self.surrogate_gradient_part(&distinct.configs(s, n), &sa, &sp, b);
        }
        let per = self.model.samples_per_pass();
        let dev = self.model.device().clone();
        let mut total: Option<GradStore> = None;
        for (c, sc) in s.chunks(per * n).enumerate() {
            let range = c * per..c * per + sc.len() / n;
            let lp = self.model.log_prob(sc)?;
            let dt = lp.dtype();
            let wa_t =
                Tensor::from_vec(wa[range.clone()].to_vec(), range.len(), &dev)?.to_dtype(dt)?;
            let mut loss = ((lp * wa_t)?.sum_all()? / b as f64)?;
            if let Some(th) = self.model.learned_phase(sc)? {
                let wp_t = Tensor::from_vec(wp[range.clone()].to_vec(), range.len(), &dev)?
                    .to_dtype(dt)?;
                loss = (loss + ((th * wp_t)?.sum_all()? * (2.0 / b as f64))?)?;
            }
            let grads = loss.backward()?;
            total = Some(match total {
                None => grads,
                Some(mut acc) => {
                    for (_, p) in self.model.params() {
                        let t = p.as_tensor();
                        if let Some(g) = grads.get(t) {
                            let sum = match acc.remove(t) {
                                Some(a) => (a + g)?,
                                None => g.clone(),
                            };
                            acc.insert(t, sum);
                        }
                    }
                    acc
                }
            });
        }
        Ok(total.expect("at least one sample"))
    }

    /// The surrogate gradient of the whole batch: each rank differentiates its chunks (its
    /// samples `s`, which start at sample `first` of the batch; `wa`, `wp` cover the batch),
    /// and [`reduce_chunk_grads`] sums the per-chunk gradients of all ranks in chunk order.
    fn parallel_gradient(
        &self,
        s: &[u8],
        wa: &[f64],
        wp: &[f64],
        first: usize,
    ) -> Result<GradStore> {
        let comm = self.comm.as_ref();
        let b = wa.len();
        let n = self.model.n_sites();
        let chunks = Chunks::new(b, self.cfg.chunks, comm.size(), "--chunks")?;
        let per_chunk = self.per_chunk(&chunks, |c| {
            let r = chunks.range(c);
            let sc = &s[(r.start - first) * n..(r.end - first) * n];
            self.surrogate_gradient_part(sc, &wa[r.clone()], &wp[r], b)
        })?;
        reduce_chunk_grads(comm, &self.model, &per_chunk)
    }

    /// Rows of a per-sample matrix for the samples `keep` (indices into the whole batch,
    /// ascending; `all` holds every sample's configuration), in batch order, on every rank:
    /// each rank computes, chunk by chunk with `rows_of`, the rows of the kept samples of its
    /// chunks (`cols` columns), and the ranks gather them in chunk order.
    fn gather_rows(
        &self,
        all: &[u8],
        keep: &[usize],
        chunks: &Chunks,
        cols: usize,
        rows_of: impl Fn(&[u8]) -> Result<Tensor> + Sync,
    ) -> Result<Tensor> {
        let comm = self.comm.as_ref();
        let n = self.model.n_sites();
        let dev = self.model.device();
        let mut blocks: Vec<Tensor> = self
            .per_chunk(chunks, |c| {
                let r = chunks.range(c);
                let lo = keep.partition_point(|&i| i < r.start);
                let hi = keep.partition_point(|&i| i < r.end);
                if lo == hi {
                    return Ok(None);
                }
                let sc: Vec<u8> = keep[lo..hi]
                    .iter()
                    .flat_map(|&i| all[i * n..(i + 1) * n].iter().copied())
                    .collect();
                Ok(Some(rows_of(&sc)?))
            })?
            .into_iter()
            .flatten()
            .collect();
        let local = match blocks.len() {
            0 => Tensor::zeros((0, cols), self.model.dtype(), dev)?,
            1 => blocks.pop().expect("one block"),
            _ => Tensor::cat(&blocks, 0)?,
        };
        if comm.size() == 1 {
            return Ok(local);
        }
        let dtype = local.dtype();
        let flat: Vec<f32> = local.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let gathered = parallel::all_gather_f32(comm, &flat).concat();
        let rows = gathered.len() / cols.max(1);
        Ok(Tensor::from_vec(gathered, (rows, cols), dev)?.to_dtype(dtype)?)
    }

    /// The minSR direction `dtheta` (the step is `-lr dtheta`) from the per-sample Jacobians
    /// (one batched backward pass each), for this rank's samples `s` and the whole batch's
    /// weights `wa`, `wp` (see [`Vmc::surrogate_gradient`]) and importance weights. The
    /// centred Jacobian is built on the host for a CPU model ([`SrRows::centred`]), on the
    /// device otherwise; its Gram matrix, the Cholesky solve
    /// and `Obar^T x` are [`SrRows`] products (faer on the host for a CPU model, the Gram
    /// matrix on the device otherwise). With momentum (SPRING) the previous direction enters.
    ///
    /// With several ranks the configurations are gathered, each rank computes the Jacobian
    /// rows of its chunks, the rows of all chunks are gathered in chunk order, and every
    /// rank solves the same system.
    ///
    /// With importance weights `w` (mean 1; tempered samples) the rows are
    /// `sqrt(w_b) (O_b - sum_b w_b O_b / B) / sqrt(B)` and `ebar_b = sqrt(w_b) e_b / sqrt(B)`
    /// (`wa`, `wp` already carry one factor `w_b`), the weighted least-squares form of minSR.
    ///
    /// Repeated samples give identical rows, and the system shrinks to one row per distinct
    /// configuration `u` without changing the update: with `r_u = sum_{b in u} w_b`, the row
    /// `sqrt(r_u) (O_u - mean) / sqrt(B)` and `ebar_u = sum_{b in u} wa_b / sqrt(r_u B)` give
    /// the same `Obar^T Obar` and `Obar^T ebar`, hence the same
    /// `dtheta = (Obar^T Obar + eps)^-1 Obar^T ebar = Obar^T (Obar Obar^T + eps)^-1 ebar`
    /// (the diagonal shift acts in parameter space either way). Only the distinct
    /// configurations' Jacobian rows are computed, and the Gram matrix is `U x U` instead of
    /// `B x B` (`U` distinct of `B`; a concentrated state repeats most of its samples).
    pub fn min_sr_direction(
        &self,
        s: &[u8],
        wa: &[f64],
        wp: &[f64],
        weights: Option<&[f64]>,
    ) -> Result<Tensor> {
        Ok(self.min_sr_step(s, wa, wp, weights)?.0)
    }

    /// [`Vmc::min_sr_direction`] `dtheta` and the length of a unit step along it in the
    /// Fubini-Study metric of the state, estimated from the batch:
    /// `|Obar dtheta| = sqrt(sum_b w_b |delta log psi_b - mean_w delta log psi|^2 / B)` with
    /// `delta log psi_b = O_b dtheta` (first order). A step `-lr dtheta` moves the state by
    /// `lr |Obar dtheta|`; `--max-step` bounds that distance.
    pub fn min_sr_step(
        &self,
        s: &[u8],
        wa: &[f64],
        wp: &[f64],
        weights: Option<&[f64]>,
    ) -> Result<(Tensor, f64)> {
        let b = wa.len();
        let n = self.model.n_sites();
        let comm = self.comm.as_ref();
        let chunks = Chunks::new(b, self.cfg.chunks, comm.size(), "--chunks")?;
        let sq = (b as f64).sqrt();
        let dev = self.model.device().clone();
        // Every sample's configuration (all ranks'), and the distinct ones of the batch.
        let all: Vec<u8> = if comm.size() == 1 {
            s.to_vec()
        } else {
            let mut a = comm.all_gather_bytes(s).concat();
            a.truncate(b * n);
            a
        };
        debug_assert_eq!(all.len(), b * n, "every sample of the batch gathered");
        let u = Unique::new(&all, n);
        // r_u = sum of the weights of the samples of u; ebar summed over each u.
        let rows_u = u.len();
        let mut r = vec![0.0; rows_u];
        let (mut sa, mut sp) = (vec![0.0; rows_u], vec![0.0; rows_u]);
        for i in 0..b {
            let k = u.of_row[i];
            r[k] += weights.map_or(1.0, |w| w[i]);
            sa[k] += wa[i];
            sp[k] += wp[i];
        }
        let model = &self.model;
        let p = model.n_params();
        let learned = model.config().phase.is_learned();
        let cols = if learned { 2 * p } else { p };
        // Both Jacobians side by side (one call: a symmetrized model shares their work).
        let both = self.gather_rows(&all, &u.first, &chunks, cols, |sc| {
            match model.jacobians(sc)? {
                (jl, Some(jt)) => Ok(Tensor::cat(&[jl, jt], 1)?),
                (jl, None) => Ok(jl),
            }
        })?;
        // Obar: each block centred over the samples and scaled by 1/sqrt(B);
        // Re O = (1/2) d log p, Im O = d theta. In f64: the Gram matrix of a Jacobian with
        // large entries (learned phases) lost positive definiteness to f32 rounding at a
        // small diagonal shift.
        let scales: &[f64] = if learned { &[0.5, 1.0] } else { &[0.5] };
        let o = SrRows::centred(&both, scales, &r, b)?;
        let rows = o.rows()?;
        // ebar: Re(e) pairs with Re O since wa multiplies log p; Im(e) with Im O. The factor
        // conventions only rescale the step (absorbed by lr). A weight that underflowed to 0
        // leaves a zero row.
        let mut e = vec![0.0; rows];
        for k in 0..rows_u {
            let f = if r[k] > 0.0 {
                1.0 / (r[k].sqrt() * sq)
            } else {
                0.0
            };
            e[k] = sa[k] * f;
            if rows > rows_u {
                e[rows_u + k] = sp[k] * f;
            }
        }
        let mu = self.cfg.momentum;
        let prev = self.sr_direction.as_ref().filter(|_| mu != 0.0);
        if let Some(prev) = prev {
            // SPRING: solve for the change of direction, ebar - mu Obar phi_{k-1}.
            for (ei, v) in e.iter_mut().zip(o.times(prev)?) {
                *ei -= mu * v;
            }
        }
        let g = o.gram_lower()?;
        let x = cholesky_solve(g, self.cfg.diag_shift, &e)?;
        let mut dtheta = o.transpose_times(&x, &dev)?;
        if let Some(prev) = prev {
            dtheta = (dtheta + (prev * mu)?)?;
        }
        // Length of a unit step in the metric of the state: |Obar dtheta|.
        let length = o.times(&dtheta)?.iter().map(|v| v * v).sum::<f64>().sqrt();
        Ok((dtheta, length))
    }

    /// Applies the minSR step [`Vmc::min_sr_direction`] with learning rate `lr`, shortened to
    /// the trust radius `max_step` when the state would move farther (see
    /// [`VmcConfig::max_step`]), and keeps the direction for the next step's momentum.
    /// Returns the learning rate applied.
    fn sr_update(
        &mut self,
        s: &[u8],
        wa: &[f64],
        wp: &[f64],
        lr: f64,
        weights: Option<&[f64]>,
    ) -> Result<f64> {
        let (dtheta, length) = self.min_sr_step(s, wa, wp, weights)?;
        let max = self.cfg.max_step;
        let lr = if max > 0.0 && lr * length > max {
            max / length
        } else {
            lr
        };
        if self.cfg.momentum != 0.0 {
            self.sr_direction = Some(dtheta.clone());
        }
        let mut offset = 0;
        for (_, p) in self.model.params() {
            let len = p.elem_count();
            let upd = dtheta
                .narrow(0, offset, len)?
                .reshape(p.dims())?
                .to_dtype(p.dtype())?;
            p.set(&(p.as_tensor() - (upd * lr)?)?)?;
            offset += len;
        }
        Ok(lr)
    }
}
