//! The RG masked diffusion as an exact sampler of the Ising model (estimators.md, classical).
//!
//! **Training without data.** The model `q` (the VMC's [`MaskedDiffusion`] over `d = 2` local
//! states, state 0 = spin up, 1 = spin down) minimises the variational free energy
//! `F = E_q[beta E(s) + log q(s)] >= -log Z` by the score-function gradient
//! `grad F = E_q[(f(s) - mean f) grad log q(s)]`, `f = beta E + log q` held fixed (the mean is
//! the baseline; `E_q[grad log q] = 0`), i.e. one backward pass through
//! `mean((f - mean f) log q)`. Annealing: `beta_t` rises linearly from `anneal_start * beta`
//! to `beta` over the first `anneal_iters` iterations.
//!
//! **Z2 symmetry** ([`Z2`]). The Ising model at `h = 0` is symmetric under the global flip
//! `s -> -s`, and at and below `beta_c` its two magnetised sectors carry equal weight; a
//! proposal that drew one sector more than the other would make the exact chain slow to move
//! between them. `Z2::Mixture`: `q_sym(s) = (q(s) + q(-s)) / 2`, drawn as `s ~ q` and a flip
//! of every spin with probability 1/2; its log-probability
//! `log q_sym = logsumexp(log q(s), log q(-s)) - ln 2` takes two passes of the network (one
//! comes from the draw). `Z2::Pinned`: the model's first revealed site `x0` is pinned up
//! ([`ModelConfig::pin_first`]), so `q` is a distribution over the configurations with
//! `s_x0 = +1`, and the proposal `q_pin(s) = q(s_x0 s) / 2` (flip `s` when `s_x0 = -1`) is
//! drawn as `s ~ q` and a flip with probability 1/2: flip-symmetric, exactly normalised,
//! and one pass of the network per evaluation. But the pinned model must still learn both
//! orientations of the rest relative to `x0`, and the reverse-KL training drops the rarer
//! one, the configurations with `x0` against the magnetisation (4x4 at `beta_c`, 40
//! iterations: 7-12% of the Boltzmann mass underweighted by more than `e^3`, exact
//! importance-weight ESS below 0.001 against 0.36 for the mixture); its chain stays exact
//! through the local sweeps, but its importance weights are heavy-tailed. Both are what training and the exactness
//! machinery use, so neither magnetisation sector is lost; at `h != 0` both stay exact (the
//! weights carry the asymmetry).
//!
//! **Last step by heat bath** ([`LastStep`]). The schedule's last step reveals sites that are
//! not coupled to each other (the `rg` schedule's: one checkerboard sublattice, half the
//! sites), so given all other sites they are independent under `exp(-beta E)`, each with
//! its heat-bath conditional `p(s_x | rest) = exp(beta s_x H_x) / (2 cosh(beta H_x))`,
//! `H_x = J sum_{y~x} s_y + h` (an exact decimation). `LastStep::HeatBath` draws them so:
//! the network models only the other sites, `q(s) = q_net(s_rest) prod_x p(s_x | rest)`, a
//! proposal and its `log q` cost the network evaluations of half the sites, and the
//! importance weight `exp(-beta E) / q = exp(-beta E_rest) prod_x 2 cosh(beta H_x) / q_net`
//! no longer depends on the heat-bath spins (it is the weight of the decimated model), so
//! the network learns, and the chain samples, the exact marginal of the coarser sites.
//!
//! **Exactness.** Importance weights `log w = -beta E(s) - log q(s)` (`q` the proposal) give the effective
//! sample size `ESS = (sum w)^2 / (B sum w^2)` and `log Z = log mean w` with a delta-method
//! error; an independence Metropolis-Hastings chain accepts a proposal `s'` with
//! `min(1, w(s') / w(s))`, exact for any model, however poorly trained (only slower).
//!
//! **Data parallel** ([`crate::parallel`]): a training batch is split into `chunks` chunks
//! with their own generators; ranks draw and differentiate their chunks, gather every
//! sample's `beta E + log q` for the baseline, and sum per-chunk gradients in chunk order, as
//! the VMC does, so training does not depend on the number of ranks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::ising::IsingChain;
use super::observables::{Estimate, Recorder};
use super::spins::SpinRows;
use super::theory::{ising_energy, Neighbours};
use crate::error::{Error, Result};
use crate::lattice::Lattice;
use crate::model::{Frozen, MaskedDiffusion, ModelConfig};
use crate::parallel::{self, chunk_rng, Chunks, Communicator};
use crate::rg::Schedule;
use crate::vmc::adam::Adam;

/// Largest number of (configuration, step, site) rows of one teacher-forced pass when
/// evaluating proposals.
const ROWS_PER_PASS: usize = 1 << 20;

/// Settings of the variational training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Samples per iteration.
    pub samples: usize,
    pub iters: usize,
    /// Adam learning rate (cosine decay to a tenth).
    pub lr: f64,
    /// Iterations over which beta rises to its value (0: no annealing).
    pub anneal_iters: usize,
    /// Starting fraction of beta when annealing.
    pub anneal_start: f64,
    /// How the proposal is made flip-symmetric ([`Z2`]); read as `symmetric = true|false`
    /// (mixture or none) from the configuration of runs made before the pinned form.
    #[serde(alias = "symmetric", deserialize_with = "Z2::deserialize_or_bool")]
    pub z2: Z2,
    /// How the last step's sites are drawn ([`LastStep`]; runs made before it: the model).
    #[serde(default)]
    pub last_step: LastStep,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            samples: 256,
            iters: 100,
            lr: 1e-2,
            anneal_iters: 0,
            anneal_start: 0.3,
            z2: Z2::Mixture,
            last_step: LastStep::HeatBath,
            seed: 1,
        }
    }
}

impl TrainConfig {
    /// The inverse temperature of iteration `t`: rising linearly from `anneal_start * beta`
    /// to `beta` over the first `anneal_iters` iterations.
    pub fn beta_at(&self, t: usize, beta: f64) -> f64 {
        if self.anneal_iters == 0 {
            return beta;
        }
        let x = (t as f64 / self.anneal_iters as f64).min(1.0);
        beta * (self.anneal_start + (1.0 - self.anneal_start) * x)
    }

    /// The learning rate of iteration `t`: cosine decay from `lr` to `lr / 10`.
    pub fn lr_at(&self, t: usize) -> f64 {
        let x = (t as f64 / self.iters.max(1) as f64).min(1.0);
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * x).cos()))
    }
}

/// How the model's proposal respects the spin-flip symmetry (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Z2 {
    /// `q` itself.
    None,
    /// `(q(s) + q(-s)) / 2`: two network passes per evaluation.
    Mixture,
    /// `q(s_x0 s) / 2` with the first revealed site `x0` of `q` pinned up: one pass.
    Pinned,
}

impl Z2 {
    pub fn parse(s: &str) -> Result<Z2> {
        match s {
            "none" => Ok(Z2::None),
            "mixture" => Ok(Z2::Mixture),
            "pinned" => Ok(Z2::Pinned),
            _ => Err(Error::Input(format!(
                "--z2 {s}: expected pinned, mixture or none"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Z2::None => "none",
            Z2::Mixture => "mixture",
            Z2::Pinned => "pinned",
        }
    }

    /// A [`Z2`], or the `symmetric` flag of older configurations (`true`: mixture).
    fn deserialize_or_bool<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Z2, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Flag(bool),
            Mode(Z2),
        }
        Ok(match Either::deserialize(d)? {
            Either::Flag(true) => Z2::Mixture,
            Either::Flag(false) => Z2::None,
            Either::Mode(z) => z,
        })
    }
}

/// Who draws the sites of the schedule's last step (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LastStep {
    /// The network, like every other step.
    #[default]
    Model,
    /// Their exact heat-bath conditional given the other sites; the network models the rest.
    HeatBath,
}

impl LastStep {
    pub fn parse(s: &str) -> Result<LastStep> {
        match s {
            "model" => Ok(LastStep::Model),
            "heat-bath" => Ok(LastStep::HeatBath),
            _ => Err(Error::Input(format!(
                "--last-step {s}: expected heat-bath or model"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LastStep::Model => "model",
            LastStep::HeatBath => "heat-bath",
        }
    }
}

/// The heat-bath conditionals of one spin at inverse temperature `beta` for every value of
/// its neighbour sum `sigma = sum_{y~x} s_y`: with `a = 2 beta (J sigma + h)`,
/// `p(up) = 1 / (1 + e^-a)`, `log p(up) = -softplus(-a)`, `log p(down) = -softplus(a)`.
/// A heat-bath site then costs a table lookup instead of three transcendental functions;
/// the entries are the same floating-point expressions as the direct evaluation, so the
/// draws do not change.
struct HeatBathTable {
    /// Largest `|sigma|`: the lattice's largest coordination number.
    z: i32,
    /// Entries for `sigma = -z ..= z`.
    entries: Vec<HeatBathEntry>,
}

struct HeatBathEntry {
    /// `1 + e^-a`: a uniform `u` gives up when `u (1 + e^-a) < 1`.
    one_plus_exp: f64,
    log_up: f64,
    log_down: f64,
}

impl HeatBathTable {
    fn new(beta: f64, j: f64, h: f64, z: usize) -> Self {
        let z = z as i32;
        let entries = (-z..=z)
            .map(|sigma| {
                let a = 2.0 * beta * (j * f64::from(sigma) + h);
                HeatBathEntry {
                    one_plus_exp: 1.0 + (-a).exp(),
                    log_up: -softplus(-a),
                    log_down: -softplus(a),
                }
            })
            .collect();
        HeatBathTable { z, entries }
    }

    /// The entry of neighbour sum `sigma` (`|sigma| <= z`).
    fn at(&self, sigma: i32) -> &HeatBathEntry {
        &self.entries[(sigma + self.z) as usize]
    }
}

/// `log((q(s) + q(-s)) / 2)` from `log q(s)` and `log q(-s)` (max-shifted).
fn log_mixture(a: f64, f: f64) -> f64 {
    let m = a.max(f);
    m + ((a - m).exp() + (f - m).exp()).ln() - std::f64::consts::LN_2
}

/// `log(1 + e^z)`, stable for large `|z|`.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// One training iteration's measurements (a row of `trace.csv`).
#[derive(Clone, Debug, Serialize)]
pub struct TrainStats {
    pub iter: usize,
    /// `mean(beta_t E + log q)` of the iteration's samples (an upper bound on `-log Z` at
    /// `beta_t`).
    pub free_energy: f64,
    pub free_energy_error: f64,
    pub beta: f64,
    /// `-mean log q`.
    pub entropy: f64,
    /// ESS fraction of the iteration's samples at `beta_t`.
    pub ess: f64,
    pub lr: f64,
    pub seconds: f64,
}

/// `mean(f)` of a training batch, `f = beta_t E + log q`, with its standard error; an error
/// when it is not finite (the training diverged).
pub(crate) fn free_energy(t: usize, f: &[f64]) -> Result<crate::stats::Stats> {
    let fs = crate::stats::independent(f);
    if !fs.mean.is_finite() {
        return Err(Error::Diverged(format!(
            "the free energy is not finite at training iteration {t}"
        )));
    }
    Ok(fs)
}

impl TrainStats {
    /// The numbers of training iteration `iter` from its samples' `f = beta_t E + log q`
    /// and `log q`, at `beta_t` and learning rate `lr`, started at `t0`.
    pub(crate) fn of_batch(
        iter: usize,
        (f, lq): (&[f64], &[f64]),
        beta_t: f64,
        lr: f64,
        t0: Instant,
    ) -> TrainStats {
        let fs = crate::stats::independent(f);
        let log_w: Vec<f64> = f.iter().map(|v| -v).collect();
        TrainStats {
            iter,
            free_energy: fs.mean,
            free_energy_error: fs.error,
            beta: beta_t,
            entropy: -lq.iter().sum::<f64>() / lq.len() as f64,
            ess: crate::stats::ess_fraction(&log_w),
            lr,
            seconds: t0.elapsed().as_secs_f64(),
        }
    }
}

/// Trains and samples the masked diffusion for one Ising model.
pub struct IsingModel {
    pub model: MaskedDiffusion,
    pub adam: Adam,
    pub cfg: TrainConfig,
    /// Training iterations completed.
    pub iter: usize,
    /// Processes sharing each training batch, and the chunks it is split into (1 and one
    /// chunk unless set by [`IsingModel::with_comm`]).
    pub comm: Arc<dyn Communicator>,
    pub chunks: usize,
    nb: Neighbours,
    beta: f64,
    j: f64,
    h: f64,
}

/// An independence Metropolis-Hastings chain with model proposals.
pub struct MhResult {
    pub recorder: Recorder,
    /// Every proposal's observables, in the order of `log_w` (for
    /// [`crate::field::observables::analyse_weighted`]).
    pub proposals: Recorder,
    /// Chain states, one row per proposal.
    pub spins: SpinRows,
    /// `log w` of every proposal (importance weights).
    pub log_w: Vec<f64>,
    /// For a pinned model ([`Z2::Pinned`]), `s_x0 sign(M)` of every proposal
    /// ([`crate::field::sample::alignment`]; empty otherwise): its importance-weighted mean
    /// against the chain's shows whether the weights see the configurations whose pinned
    /// site points against the magnetisation ([`crate::field::sample::pinned_warning`]).
    pub alignment: Vec<f64>,
    pub acceptance: Estimate,
    pub seconds: f64,
    pub complete: bool,
}

impl IsingModel {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        lattice: &Lattice,
        (beta, j, h): (f64, f64, f64),
        schedule: Schedule,
        model_cfg: ModelConfig,
        device: &Device,
        cfg: TrainConfig,
    ) -> Result<Self> {
        let nb = Neighbours::new(lattice);
        let schedule = match cfg.last_step {
            LastStep::Model => schedule,
            LastStep::HeatBath => {
                let name = schedule.name().to_string();
                let modelled = schedule.without_last_step().ok_or_else(|| {
                    Error::Input(format!(
                        "--last-step heat-bath: the {name} schedule has a single step; \
                         use --last-step model"
                    ))
                })?;
                let last = modelled.unrevealed();
                let mut in_last = vec![false; lattice.n_sites()];
                last.iter().for_each(|&x| in_last[x] = true);
                if let Some((x, y)) = last.iter().find_map(|&x| {
                    nb.of(x)
                        .iter()
                        .find(|&&y| in_last[y as usize])
                        .map(|&y| (x, y))
                }) {
                    return Err(Error::Input(format!(
                        "--last-step heat-bath: the last step of the {name} schedule reveals \
                         the coupled sites {x} and {y} together, so its heat baths are not \
                         independent; use --last-step model (or an even-sized periodic lattice)"
                    )));
                }
                modelled
            }
        };
        // The pinned proposal pins the model's first site; the others leave it free.
        let model_cfg = ModelConfig {
            pin_first: cfg.z2 == Z2::Pinned,
            ..model_cfg
        };
        let model = MaskedDiffusion::new(
            lattice,
            2,
            schedule,
            model_cfg,
            device,
            DType::F32,
            cfg.seed,
        )?;
        let adam = Adam::new(model.params())?;
        Ok(IsingModel {
            model,
            adam,
            cfg,
            iter: 0,
            comm: parallel::single(),
            chunks: 1,
            nb,
            beta,
            j,
            h,
        })
    }

    /// Shares training batches with the ranks of `comm`, split into `chunks` chunks.
    pub fn with_comm(mut self, comm: Arc<dyn Communicator>, chunks: usize) -> Result<Self> {
        Chunks::new(self.cfg.samples.max(2), chunks, comm.size(), "--chains")?;
        self.comm = comm;
        self.chunks = chunks;
        Ok(self)
    }

    /// `beta E(s)` of model states (0 = up, 1 = down) at inverse temperature `beta`.
    fn energies(&self, s: &[u8], spins: &mut Vec<i8>) -> Vec<f64> {
        let n = self.model.n_sites();
        spins.clear();
        spins.extend(s.iter().map(|&v| 1 - 2 * v as i8));
        spins
            .chunks(n)
            .map(|c| ising_energy(&self.nb, self.j, self.h, c))
            .collect()
    }

    /// The sites drawn by their heat bath ([`LastStep::HeatBath`]): those the network's
    /// schedule leaves unrevealed (none with [`LastStep::Model`]).
    fn heat_bath_sites(&self) -> &[usize] {
        self.model.schedule().unrevealed()
    }

    /// Draws the heat-bath sites ([`LastStep::HeatBath`]) of every configuration of `s`
    /// (model states) from their conditionals at `beta` given the other sites, in place
    /// (uniforms in configuration, then site order); returns their `sum_x log p(s_x | rest)`
    /// per configuration (zeros without heat-bath sites).
    fn heat_bath_draw(&self, s: &mut [u8], beta: f64, rng: &mut impl Rng) -> Vec<f64> {
        let n = self.model.n_sites();
        let table = HeatBathTable::new(beta, self.j, self.h, self.nb.max_degree());
        s.chunks_mut(n)
            .map(|row| {
                let mut lp = 0.0;
                for &x in self.heat_bath_sites() {
                    let e = table.at(self.spin_sum(row, x));
                    let up = rng.random::<f64>() * e.one_plus_exp < 1.0;
                    row[x] = u8::from(!up);
                    lp += if up { e.log_up } else { e.log_down };
                }
                lp
            })
            .collect()
    }

    /// `sum_x log p(s_x | rest)` over the heat-bath sites at `beta`, per configuration of `s`.
    fn heat_bath_log(&self, s: &[u8], beta: f64) -> Vec<f64> {
        let n = self.model.n_sites();
        let table = HeatBathTable::new(beta, self.j, self.h, self.nb.max_degree());
        s.chunks(n)
            .map(|row| {
                self.heat_bath_sites()
                    .iter()
                    .map(|&x| {
                        let e = table.at(self.spin_sum(row, x));
                        if row[x] == 0 {
                            e.log_up
                        } else {
                            e.log_down
                        }
                    })
                    .sum()
            })
            .collect()
    }

    /// `sum_{y~x} s_y` (spins +-1) of a configuration of model states (0 is up).
    fn spin_sum(&self, row: &[u8], x: usize) -> i32 {
        self.nb
            .of(x)
            .iter()
            .map(|&y| 1 - 2 * i32::from(row[y as usize]))
            .sum()
    }

    /// `log q` of configurations `s` without the flip symmetry: the network's (frozen) `log
    /// q_net` of the modelled sites plus the heat baths' at `beta`.
    fn log_q_plain(&self, net: &Frozen, s: &[u8], beta: f64) -> Result<Vec<f64>> {
        let mut lq = net.log_prob_values(s)?;
        if !self.heat_bath_sites().is_empty() {
            for (l, hb) in lq.iter_mut().zip(self.heat_bath_log(s, beta)) {
                *l += hb;
            }
        }
        Ok(lq)
    }

    /// The differentiable [`Self::log_q_plain`].
    fn log_q_plain_tensor(&self, s: &[u8], beta: f64) -> Result<Tensor> {
        let lp = self.model.log_prob(s)?;
        if self.heat_bath_sites().is_empty() {
            return Ok(lp);
        }
        let hb = self.heat_bath_log(s, beta);
        let len = hb.len();
        let hb = Tensor::from_vec(hb, len, self.model.device())?.to_dtype(lp.dtype())?;
        Ok((lp + hb)?)
    }

    /// Draws `b` proposals: `(states, log q)` of the flip-symmetric proposal ([`Z2`]).
    /// `log q(s)` of a drawn `s` comes from sampling, so the mixture costs one more pass for
    /// `log q(-s)`, the pinned form none.
    pub fn propose(&self, b: usize, rng: &mut impl Rng) -> Result<(Vec<u8>, Vec<f64>)> {
        self.propose_with(&self.model.frozen()?, b, rng)
    }

    /// [`Self::propose`] with the network frozen once for many calls.
    pub fn propose_with(
        &self,
        net: &Frozen,
        b: usize,
        rng: &mut impl Rng,
    ) -> Result<(Vec<u8>, Vec<f64>)> {
        let (mut s, mut logq) = net.sample(b, rng)?;
        let hb = self.heat_bath_draw(&mut s, self.beta, rng);
        logq.iter_mut().zip(hb).for_each(|(l, hb)| *l += hb);
        let lq = match self.cfg.z2 {
            Z2::None => return Ok((s, logq)),
            Z2::Pinned => logq.iter().map(|l| l - std::f64::consts::LN_2).collect(),
            Z2::Mixture => {
                let n = self.model.n_sites();
                let flipped: Vec<u8> = s.iter().map(|v| v ^ 1).collect();
                // Teacher forcing evaluates every step for every configuration: bound the
                // rows (configurations x steps x sites) of one pass to keep memory flat in
                // the batch size.
                let per = (ROWS_PER_PASS / (n * self.model.schedule().n_steps())).max(1);
                let mut other: Vec<f64> = Vec::with_capacity(b);
                for chunk in flipped.chunks(per * n) {
                    other.extend(self.log_q_plain(net, chunk, self.beta)?);
                }
                logq.iter()
                    .zip(&other)
                    .map(|(&a, &f)| log_mixture(a, f))
                    .collect()
            }
        };
        // The proposal is flip-symmetric: flip each draw with probability 1/2.
        self.flip_half(&mut s, rng);
        Ok((s, lq))
    }

    /// Flips every spin of each configuration with probability 1/2.
    fn flip_half(&self, s: &mut [u8], rng: &mut impl Rng) {
        for row in s.chunks_mut(self.model.n_sites()) {
            if rng.random::<bool>() {
                row.iter_mut().for_each(|v| *v ^= 1);
            }
        }
    }

    /// The configurations of the pinned model that give `q_pin(s)`: `s` flipped where
    /// the pinned site is down.
    fn gauge_fixed(&self, s: &[u8]) -> Vec<u8> {
        let n = self.model.n_sites();
        let x0 = self.model.pinned_site().expect("Z2::Pinned pins the model");
        let mut fixed = s.to_vec();
        for row in fixed.chunks_mut(n) {
            if row[x0] == 1 {
                row.iter_mut().for_each(|v| *v ^= 1);
            }
        }
        fixed
    }

    /// The values of [`Self::log_q`] (no gradient; see [`MaskedDiffusion::log_prob_values`]).
    pub fn log_q_values(&self, s: &[u8]) -> Result<Vec<f64>> {
        self.log_q_values_with(&self.model.frozen()?, s)
    }

    /// [`Self::log_q_values`] with the network frozen once for many calls.
    pub fn log_q_values_with(&self, net: &Frozen, s: &[u8]) -> Result<Vec<f64>> {
        let beta = self.beta;
        match self.cfg.z2 {
            Z2::None => self.log_q_plain(net, s, beta),
            Z2::Pinned => Ok(self
                .log_q_plain(net, &self.gauge_fixed(s), beta)?
                .into_iter()
                .map(|l| l - std::f64::consts::LN_2)
                .collect()),
            Z2::Mixture => {
                let mut flipped: Vec<u8> = s.iter().map(|v| v ^ 1).collect();
                flipped.splice(0..0, s.iter().copied());
                let lp = self.log_q_plain(net, &flipped, beta)?;
                let (a, f) = lp.split_at(lp.len() / 2);
                Ok(a.iter().zip(f).map(|(&a, &f)| log_mixture(a, f)).collect())
            }
        }
    }

    /// Differentiable `log q` of the flip-symmetric proposal ([`Z2`]) for a batch.
    pub fn log_q(&self, s: &[u8]) -> Result<Tensor> {
        self.log_q_at(s, self.beta)
    }

    /// [`Self::log_q`] with the heat baths at `beta` (the annealed `beta_t` in training).
    fn log_q_at(&self, s: &[u8], beta: f64) -> Result<Tensor> {
        let n = self.model.n_sites();
        match self.cfg.z2 {
            Z2::None => self.log_q_plain_tensor(s, beta),
            Z2::Pinned => Ok(self
                .log_q_plain_tensor(&self.gauge_fixed(s), beta)?
                .affine(1.0, -std::f64::consts::LN_2)?),
            Z2::Mixture => {
                let b = s.len() / n;
                let mut both = s.to_vec();
                both.extend(s.iter().map(|v| v ^ 1));
                let lp = self.log_q_plain_tensor(&both, beta)?;
                let a = lp.narrow(0, 0, b)?;
                let f = lp.narrow(0, b, b)?;
                let m = a.maximum(&f)?;
                let lse = (((&a - &m)?.exp()? + (&f - &m)?.exp()?)?.log()? + m)?;
                Ok((lse - std::f64::consts::LN_2)?)
            }
        }
    }

    /// One training iteration with the generators of `(seed, iter, chunk)` (so a resumed run
    /// draws what the uninterrupted one would, on any number of ranks).
    pub fn train_step(&mut self) -> Result<TrainStats> {
        let t0 = Instant::now();
        let t = self.iter;
        let b = self.cfg.samples.max(2);
        let comm = self.comm.clone();
        let chunks = Chunks::new(b, self.chunks, comm.size(), "--chains")?;
        let beta_t = self.cfg.beta_at(t, self.beta);
        let mut spins = Vec::new();
        // Per chunk of this rank: the differentiable log q, and (f, log q) per sample.
        let mut mine = Vec::new();
        let mut local = Vec::new();
        for c in chunks.of_rank(comm.rank(), comm.size()) {
            let mut rng = chunk_rng(self.cfg.seed, t, c);
            // Draw from the symmetric proposal without its log q (the differentiable pass
            // below computes it).
            let (mut s, _) = self.model.sample(chunks.range(c).len(), &mut rng)?;
            self.heat_bath_draw(&mut s, beta_t, &mut rng);
            if self.cfg.z2 != Z2::None {
                self.flip_half(&mut s, &mut rng);
            }
            let e = self.energies(&s, &mut spins);
            let lq_t = self.log_q_at(&s, beta_t)?;
            let lq: Vec<f64> = lq_t.to_dtype(DType::F64)?.to_vec1()?;
            for (e, l) in e.iter().zip(&lq) {
                local.extend([beta_t * e + l, *l]);
            }
            mine.push((c, lq_t));
        }
        let all = parallel::gather_chunks(comm.as_ref(), local);
        let f: Vec<f64> = all.chunks_exact(2).map(|v| v[0]).collect();
        let lq: Vec<f64> = all.chunks_exact(2).map(|v| v[1]).collect();
        let fs = free_energy(t, &f)?;
        let mut grads = Vec::with_capacity(mine.len());
        for (c, lq_t) in mine {
            let cw: Vec<f32> = f[chunks.range(c)]
                .iter()
                .map(|v| ((v - fs.mean) / b as f64) as f32)
                .collect();
            let len = cw.len();
            let cw = Tensor::from_vec(cw, len, self.model.device())?.to_dtype(lq_t.dtype())?;
            grads.push((lq_t * cw)?.sum_all()?.backward()?);
        }
        let grads = crate::vmc::driver::reduce_chunk_grads(comm.as_ref(), &self.model, &grads)?;
        let lr = self.cfg.lr_at(t);
        self.adam.step(self.model.params(), &grads, lr)?;
        self.iter += 1;
        Ok(TrainStats::of_batch(t, (&f, &lq), beta_t, lr, t0))
    }

    /// Runs an independence MH chain of `proposals` model proposals drawn in batches of
    /// `batch` with the generator `rng`; records every chain state. With `local_every = m > 0`
    /// every `m`-th step is followed by one single-spin Metropolis sweep of the current state
    /// (and one evaluation of its `log q`): both kernels leave `exp(-beta E)` invariant, so
    /// the composed chain is exact too, and the local sweeps reach configurations the model
    /// (almost) never proposes, which a pure independence chain can only reach in principle.
    #[allow(clippy::too_many_arguments)]
    pub fn metropolis_hastings(
        &self,
        lattice: &Lattice,
        proposals: usize,
        batch: usize,
        local_every: usize,
        rng: &mut impl Rng,
        progress: &mut dyn FnMut(usize),
        stop: &AtomicBool,
    ) -> Result<MhResult> {
        // The parameters stay fixed during the chain: lay out the network once.
        let net = self.model.frozen()?;
        let setup = ChainSetup {
            lattice,
            nb: &self.nb,
            beta: self.beta,
            j: self.j,
            h: self.h,
            pinned: self.model.pinned_site(),
        };
        independence_chain(
            &setup,
            (proposals, batch, local_every),
            rng,
            &mut |b, rng| {
                let (states, log_q) = self.propose_with(&net, b, rng)?;
                Ok(Drawn {
                    states,
                    log_q,
                    energy: None,
                })
            },
            &mut |state| Ok(self.log_q_values_with(&net, state)?[0]),
            progress,
            stop,
        )
    }
}

/// The model and lattice of an [`independence_chain`].
pub struct ChainSetup<'a> {
    pub lattice: &'a Lattice,
    pub nb: &'a Neighbours,
    pub beta: f64,
    pub j: f64,
    pub h: f64,
    /// The pinned site of a [`Z2::Pinned`] model (its alignment is recorded).
    pub pinned: Option<usize>,
}

/// A batch of proposals: states (`0` up, `1` down, one row of `N` per configuration), their
/// `log q`, and their energies where the proposal has them at no cost (else the chain
/// computes them).
pub struct Drawn {
    pub states: Vec<u8>,
    pub log_q: Vec<f64>,
    pub energy: Option<Vec<f64>>,
}

/// The draws of a proposal: `b` configurations.
pub type Propose<'a, R> = dyn FnMut(usize, &mut R) -> Result<Drawn> + 'a;

/// An independence Metropolis-Hastings chain of `proposals` proposals drawn in batches of
/// `batch` by `propose`, with a single-spin Metropolis sweep after every `local_every`
/// steps (0: none) and `log_q` of the state it leaves (see
/// [`IsingModel::metropolis_hastings`]); records every chain state.
pub fn independence_chain<R: Rng>(
    setup: &ChainSetup,
    (proposals, batch, local_every): (usize, usize, usize),
    rng: &mut R,
    propose: &mut Propose<R>,
    log_q: &mut dyn FnMut(&[u8]) -> Result<f64>,
    progress: &mut dyn FnMut(usize),
    stop: &AtomicBool,
) -> Result<MhResult> {
    let ChainSetup {
        lattice,
        nb,
        beta,
        j,
        h,
        pinned,
    } = *setup;
    let n = lattice.n_sites();
    let t0 = Instant::now();
    let mut rec = Recorder::new(lattice);
    rec.reserve(proposals);
    let mut drawn = Recorder::new(lattice);
    drawn.reserve(proposals);
    let mut chain = SpinRows::with_capacity(n, proposals);
    let mut log_w = Vec::with_capacity(proposals);
    let mut alignment = Vec::with_capacity(if pinned.is_some() { proposals } else { 0 });
    let mut accepted = Vec::with_capacity(proposals);
    let mut cur: Vec<i8> = Vec::new();
    let mut cur_lw = f64::NEG_INFINITY;
    let mut spins = Vec::new();
    let mut complete = true;
    let mut local = IsingChain::new(nb.clone(), beta, j, h);
    let mut state_u8 = vec![0u8; n];
    while log_w.len() < proposals {
        if stop.load(Ordering::SeqCst) {
            complete = false;
            break;
        }
        let b = batch.min(proposals - log_w.len());
        let Drawn {
            states,
            log_q: lq,
            energy,
        } = propose(b, rng)?;
        spins.clear();
        spins.extend(states.iter().map(|&v| 1 - 2 * v as i8));
        let e: Vec<f64> =
            energy.unwrap_or_else(|| spins.chunks(n).map(|c| ising_energy(nb, j, h, c)).collect());
        if let Some(x0) = pinned {
            alignment.extend(spins.chunks(n).map(|c| super::sample::alignment(c, x0)));
        }
        for i in 0..b {
            let lw = -beta * e[i] - lq[i];
            log_w.push(lw);
            drawn.record_spins(&spins[i * n..(i + 1) * n], e[i]);
            let u: f64 = rng.random();
            let acc = cur.is_empty() || u.ln() < lw - cur_lw;
            if acc {
                cur.clear();
                cur.extend_from_slice(&spins[i * n..(i + 1) * n]);
                cur_lw = lw;
            }
            accepted.push(if acc { 1.0 } else { 0.0 });
            if local_every > 0 && log_w.len().is_multiple_of(local_every) {
                local.spins.copy_from_slice(&cur);
                local.metropolis_sweep(rng);
                cur.copy_from_slice(&local.spins);
                let cur_e = local.energy();
                for (u, &v) in state_u8.iter_mut().zip(&cur) {
                    *u = u8::from(v < 0);
                }
                cur_lw = -beta * cur_e - log_q(&state_u8)?;
                rec.record_spins(&cur, cur_e);
                chain.push(&cur);
            } else if acc {
                rec.push_copy(&drawn, drawn.len() - 1);
                chain.push(&cur);
            } else {
                rec.repeat_last();
                chain.repeat_last();
            }
        }
        progress(log_w.len());
    }
    let acceptance = if accepted.len() >= 2 {
        let s = crate::stats::correlated(&accepted);
        Estimate::new(s.mean, s.error)
    } else {
        Estimate::new(0.0, 0.0)
    };
    Ok(MhResult {
        recorder: rec,
        proposals: drawn,
        spins: chain,
        log_w,
        alignment,
        acceptance,
        seconds: t0.elapsed().as_secs_f64(),
        complete,
    })
}
