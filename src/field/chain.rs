//! Running a Markov-chain baseline: thermalisation (with step-size tuning for phi^4), then
//! `samples` measurements separated by `sweeps_per_sample` updates, all from one seeded
//! generator so a run is reproduced bit for bit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::ising::IsingChain;
use super::observables::{Estimate, Recorder};
use super::phi4::{Phi4Chain, Phi4Update};
use super::spins::SpinRows;
use super::theory::{Neighbours, Theory};
use crate::error::{Error, Result};
use crate::lattice::Lattice;

/// How configurations are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Single-site Metropolis (Ising spin flips, phi^4 local moves).
    Metropolis,
    /// Wolff clusters (Ising), embedded-Ising Wolff plus a local sweep (phi^4).
    Wolff,
    /// Hybrid Monte Carlo (phi^4).
    Hmc,
    /// The RG masked diffusion with independence Metropolis-Hastings (Ising).
    Model,
    /// The RG-flow score model's probability-flow ODE with independence MH (phi^4).
    Flow,
    /// The RG-flow score model's reverse SDE with path weights and MH on paths (phi^4).
    Diffusion,
}

impl Method {
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "metropolis" => Ok(Method::Metropolis),
            "wolff" => Ok(Method::Wolff),
            "hmc" => Ok(Method::Hmc),
            "model" => Ok(Method::Model),
            "flow" => Ok(Method::Flow),
            "diffusion" => Ok(Method::Diffusion),
            _ => Err(Error::Input(format!(
                "unknown method `{s}`; expected model, flow, diffusion, metropolis, wolff or hmc"
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Method::Metropolis => "metropolis",
            Method::Wolff => "wolff",
            Method::Hmc => "hmc",
            Method::Model => "model",
            Method::Flow => "flow",
            Method::Diffusion => "diffusion",
        }
    }

    /// Refuses a method that does not apply to `theory`.
    pub fn check(&self, theory: &Theory) -> Result<()> {
        match (self, theory) {
            (Method::Hmc, Theory::Ising { .. }) => Err(Error::Input(
                "--method hmc needs a continuous field (kind = \"phi4-classical\"); for the Ising \
                 model use model, metropolis or wolff"
                    .into(),
            )),
            (Method::Model, Theory::Phi4 { .. }) => Err(Error::Input(
                "--method model samples discrete spins (kind = \"ising\"); for phi4-classical use \
                 flow, diffusion, hmc, metropolis or wolff"
                    .into(),
            )),
            (Method::Flow | Method::Diffusion, Theory::Ising { .. }) => Err(Error::Input(format!(
                "--method {} samples real fields (kind = \"phi4-classical\"); for the Ising model \
                 use model, metropolis or wolff",
                self.name()
            ))),
            _ => Ok(()),
        }
    }
}

/// Settings of a Markov-chain run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainConfig {
    pub method: Method,
    /// Measurements.
    pub samples: usize,
    /// Updates before the first measurement (tuning happens here).
    pub thermalise: usize,
    /// Updates between measurements.
    pub sweeps_per_sample: usize,
    pub seed: u64,
}

/// The stored configurations.
pub enum Configs {
    Spins(SpinRows),
    Field(Vec<f64>),
}

/// What a chain produced.
pub struct ChainResult {
    pub recorder: Recorder,
    pub configs: Configs,
    pub acceptance: Estimate,
    /// Seconds spent measuring (after thermalisation).
    pub seconds: f64,
    /// Tuned step (HMC `eps` or local `delta`), for the record.
    pub step: Option<f64>,
    pub leapfrog_steps: Option<usize>,
    /// False if stopped early (the samples so far are kept).
    pub complete: bool,
}

/// Runs `cfg.method` (not [`Method::Model`]) on `theory`; `progress(k)` is called after the
/// `k`-th measurement and `stop` ends the run early.
pub fn run_chain(
    lattice: &Lattice,
    theory: &Theory,
    cfg: &ChainConfig,
    progress: &mut dyn FnMut(usize),
    stop: &AtomicBool,
) -> Result<ChainResult> {
    cfg.method.check(theory)?;
    let nb = Neighbours::new(lattice);
    let n = lattice.n_sites();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let mut rec = Recorder::new(lattice);
    rec.reserve(cfg.samples);
    let mut acc_series = Vec::with_capacity(cfg.samples);
    let every = cfg.sweeps_per_sample.max(1);
    let mut complete = true;
    match *theory {
        Theory::Ising { beta, j, h } => {
            let mut c = IsingChain::new(nb, beta, j, h);
            // Metropolis keeps the energy from its sweeps' changes of (B, M); after a Wolff
            // sweep they are recounted.
            let update = |c: &mut IsingChain,
                          rng: &mut Xoshiro256PlusPlus,
                          sums: &mut (i64, i64)| match cfg.method {
                Method::Wolff => {
                    c.wolff_sweep(rng);
                    *sums = c.bonds_and_magnetisation();
                }
                _ => {
                    let (db, dm) = c.metropolis_sweep(rng);
                    *sums = (sums.0 + db, sums.1 + dm);
                }
            };
            if cfg.method == Method::Wolff {
                c.calibrate_wolff(&mut rng, cfg.thermalise.max(100));
            }
            let mut sums = c.bonds_and_magnetisation();
            for _ in 0..cfg.thermalise {
                update(&mut c, &mut rng, &mut sums);
            }
            let mut spins = SpinRows::with_capacity(n, cfg.samples);
            let t0 = Instant::now();
            for k in 0..cfg.samples {
                if stop.load(Ordering::SeqCst) {
                    complete = false;
                    break;
                }
                c.reset_acceptance();
                for _ in 0..every {
                    update(&mut c, &mut rng, &mut sums);
                }
                acc_series.push(c.acceptance());
                debug_assert_eq!(c.energy_of(sums), c.energy());
                rec.record_spins(&c.spins, c.energy_of(sums));
                spins.push(&c.spins);
                progress(k + 1);
            }
            Ok(ChainResult {
                recorder: rec,
                configs: Configs::Spins(spins),
                acceptance: mean_of(&acc_series),
                seconds: t0.elapsed().as_secs_f64(),
                step: None,
                leapfrog_steps: None,
                complete,
            })
        }
        Theory::Phi4 { m2, lambda } => {
            let kind = match cfg.method {
                Method::Hmc => Phi4Update::Hmc,
                Method::Wolff => Phi4Update::Wolff,
                _ => Phi4Update::Metropolis,
            };
            let mut c = Phi4Chain::new(nb, m2, lambda);
            c.tune(kind, cfg.thermalise, &mut rng);
            let mut field = Vec::with_capacity(cfg.samples * n);
            let t0 = Instant::now();
            for k in 0..cfg.samples {
                if stop.load(Ordering::SeqCst) {
                    complete = false;
                    break;
                }
                c.reset_acceptance();
                for _ in 0..every {
                    match kind {
                        Phi4Update::Hmc => {
                            c.hmc_trajectory(&mut rng);
                        }
                        Phi4Update::Wolff => c.wolff_sweep(&mut rng),
                        Phi4Update::Metropolis => {
                            c.metropolis_sweep(&mut rng);
                        }
                    }
                }
                acc_series.push(c.acceptance());
                let s = c.action();
                rec.record(&c.phi, s);
                let sd = c.schwinger_dyson();
                rec.schwinger_dyson.push(sd);
                field.extend_from_slice(&c.phi);
                progress(k + 1);
            }
            let hmc = kind == Phi4Update::Hmc;
            Ok(ChainResult {
                recorder: rec,
                configs: Configs::Field(field),
                acceptance: mean_of(&acc_series),
                seconds: t0.elapsed().as_secs_f64(),
                step: Some(if hmc { c.eps } else { c.delta }),
                leapfrog_steps: hmc.then_some(c.n_leap),
                complete,
            })
        }
    }
}

fn mean_of(x: &[f64]) -> Estimate {
    if x.len() < 2 {
        return Estimate::new(x.first().copied().unwrap_or(0.0), 0.0);
    }
    let s = crate::stats::correlated(x);
    Estimate::new(s.mean, s.error)
}
