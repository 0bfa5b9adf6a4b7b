//! `rgdiff sample`: one sampling run in its directory.
//!
//! ```text
//! DIR/config.json        the resolved configuration (problem file, method, model, training, seed)
//! DIR/trace.csv          (method model) one row per training iteration
//! DIR/checkpoint/        (method model) model.safetensors, adam.safetensors, state.json
//! DIR/samples.npy        the measured configurations: int8 spins (+1/-1) or float64 fields,
//!                        shape (samples, Ly, Lx) on a square, (samples, N) on a chain
//! DIR/log_weights.npy    (model, flow, diffusion) float64 log importance weights
//!                        -S(x) - log q(x) of every proposal, in chain order
//! DIR/observables.json   estimates as {"mean": .., "error": ..} (see [`SampleReport`])
//! ```
//! Files are written through a temporary file and a rename; checkpoints through
//! [`crate::run::write_checkpoint`]. `--resume DIR` continues the training of a model run
//! from its checkpoint and then samples; a Markov-chain run is redone from its seed.
//!
//! **Several chains, several processes** ([`crate::parallel`]): `chains` independent chains
//! (Markov chains, or model-proposal MH chains) share the `samples`; chain `c` draws from a
//! generator of `(seed, c)` only, ranks run contiguous ranges of chains, and every rank
//! gathers all chains in chain order and analyses them with autocorrelations taken within
//! chains ([`analyse_chains`]). The model's training batches are split into `chains` chunks
//! the same way. So results depend on `chains`, not on the number of ranks, and one chain is
//! the single-chain run. Only rank 0 writes the run directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::RngCore;

use serde::{Deserialize, Serialize};

use super::chain::{run_chain, ChainConfig, Configs, Method};
use super::exact::{
    ising_enumerate, ising_kaufman, ising_magnetization_moments, ising_transfer_matrix,
};
use super::flow::{FlowConfig, FlowModel, FlowReport, FlowStats, FlowTrain, Sampler};
use super::observables::{
    analyse, analyse_chains, analyse_weighted, Estimate, Recorder, Reweighted, TwoPoint,
};
use super::spins::SpinRows;
use super::table::{TableConfig, TableModel};
use super::theory::Theory;
use super::variational::{IsingModel, MhResult, TrainConfig, TrainStats};
use crate::error::{Error, Result};
use crate::lattice::{Lattice, Shape};
use crate::model::ModelConfig;
use crate::parallel::{self, chunk_rng, Chunks, Communicator};
use crate::rg::Schedule;
use crate::run::{checkpoint_to_read, io_err, write_atomic, write_checkpoint};
use crate::spec::{self, ClassicalProblem};
use crate::stats;

/// Everything that defines a sampling run (saved as `config.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleConfig {
    pub problem: String,
    pub method: Method,
    /// Measurements (Markov chains) or proposals of the MH chain (model).
    pub samples: usize,
    /// Updates before measuring (Markov chains).
    pub thermalise: usize,
    /// Updates between measurements (Markov chains).
    pub sweeps_per_sample: usize,
    pub seed: u64,
    pub device: String,
    /// Model method only.
    pub scheme: String,
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Proposals drawn per network call when sampling the model.
    pub batch: usize,
    /// A single-spin Metropolis sweep after every this many MH steps of the model chain
    /// (0: pure independence Metropolis-Hastings).
    #[serde(default)]
    pub local_every: usize,
    /// Training iterations between checkpoints.
    pub checkpoint_every: usize,
    /// Independent chains sharing `samples` (and chunks of each training batch); results
    /// depend on it, not on the number of MPI ranks (at least one chain per rank).
    #[serde(default = "one")]
    pub chains: usize,
    /// Options of the flow and diffusion methods (phi^4).
    #[serde(default)]
    pub flow: FlowConfig,
    /// Model method with `--network table`: lookup-table conditionals
    /// ([`super::table`]) instead of the network of `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableConfig>,
}

fn one() -> usize {
    1
}

/// The content of `observables.json` (and of `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct SampleReport {
    pub problem: String,
    pub theory: Theory,
    pub lattice: [usize; 2],
    pub method: Method,
    pub status: String,
    pub samples: usize,
    /// Independent chains the samples come from.
    pub chains: usize,
    #[serde(flatten)]
    pub estimates: BTreeMap<String, Estimate>,
    /// `tau_int` of `|M|`, in measurements.
    pub tau_int: Estimate,
    pub tau_int_energy: Estimate,
    /// Acceptance of the chain's moves (MH proposals for the model).
    pub acceptance: Estimate,
    /// ESS fraction of the importance weights (model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ess: Option<Estimate>,
    /// `log Z` from the importance weights (model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_z: Option<Estimate>,
    /// `KL(q || p)` of the proposal from the Boltzmann distribution, in nats, from the
    /// importance weights ([`stats::kl_from_weights`]; model, flow and diffusion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_divergence: Option<Estimate>,
    /// Pareto shape of the importance weights' tail ([`stats::pareto_k`], model): above
    /// [`stats::pareto_k_threshold`] (0.7 for `S >= 2,154`) ESS, `log Z` and the chain's
    /// error bars are unreliable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pareto_k: Option<f64>,
    /// Variational bound `mean(beta E + log q) >= -log Z` at the end of training (model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_energy_bound: Option<Estimate>,
    pub two_point: TwoPoint,
    pub sampling_seconds: f64,
    pub samples_per_second: f64,
    /// `samples_per_second / (2 tau_int)`.
    pub independent_samples_per_second: f64,
    pub training_seconds: f64,
    pub training_iterations: usize,
    /// Tuned HMC step size or local Metropolis step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_size: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leapfrog_steps: Option<usize>,
    /// Exact values where they are cheap (Ising: enumeration up to 20 sites; on periodic
    /// `L x L` squares at h = 0 the transfer matrix up to 8x8 and Kaufman's formula beyond).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub exact: BTreeMap<String, f64>,
    /// Diagnostics a user must read before trusting the numbers (see [`chain_warnings`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Flow and diffusion methods: integration error, RG two-point functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowReport>,
    /// Model proposals (masked diffusion, lookup tables, flows): the same observables by
    /// self-normalised importance sampling of all proposals instead of the chain
    /// ([`analyse_weighted`]), with their effective sample counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reweighted: Option<Reweighted>,
}

/// Observer of a sampling run (the CLI's progress bars).
pub trait SampleMonitor {
    fn training(&mut self, _stats: &TrainStats, _total: usize) {}
    fn flow_training(&mut self, _stats: &FlowStats, _total: usize) {}
    fn sampling(&mut self, _done: usize, _total: usize) {}
    fn message(&mut self, _text: &str) {}
}

impl SampleMonitor for () {}

#[derive(Serialize, Deserialize)]
struct State {
    iter: usize,
    adam_t: u64,
    seconds: f64,
}

const TRACE_HEADER: &str = "iter,free_energy,free_energy_error,beta,entropy,ess,lr,seconds\n";

/// Reads the configuration of the run in `dir`.
pub fn read_config(dir: &Path) -> Result<SampleConfig> {
    let path = dir.join("config.json");
    let text = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| io_err(&path, format!("not a sample run: {e}")))
}

/// Checks that `cfg` can run: the theory file reads, the method applies to it, and there
/// are enough samples.
pub fn validate(cfg: &SampleConfig) -> Result<ClassicalProblem> {
    let problem = spec::load_classical(Path::new(&cfg.problem))?;
    cfg.method.check(&problem.theory)?;
    if cfg.samples < 4 {
        return Err(Error::Input("--samples must be at least 4".into()));
    }
    if cfg.method == Method::Model {
        Schedule::parse(&cfg.scheme, &problem.lattice)?;
    }
    if let (Method::Model, Some(table), Theory::Ising { beta, j, h }) =
        (cfg.method, cfg.table, problem.theory)
    {
        if cfg.scheme != "rg" {
            return Err(Error::Input(format!(
                "--network table follows the rg schedule; --scheme {} applies to the networks",
                cfg.scheme
            )));
        }
        super::table::IsingTable::new(&problem.lattice, (beta, j, h), table)?;
    }
    if matches!(cfg.method, Method::Flow | Method::Diffusion) {
        let Theory::Phi4 { m2, lambda } = problem.theory else {
            unreachable!("checked by Method::check")
        };
        cfg.flow.build(
            &cfg.scheme,
            &problem.lattice,
            (m2, lambda),
            cfg.seed,
            &candle_core::Device::Cpu,
        )?;
        match &cfg.flow.data {
            Some(d) => {
                read_data(Path::new(d), &problem.lattice)?;
            }
            None if cfg.flow.objective != super::flow::Objective::Kl => {
                return Err(Error::Input(
                    "--objective dsm and both need configurations: give --data FILE.npy (for \
                     example the samples.npy of an HMC run)"
                        .into(),
                ))
            }
            None => {}
        }
    }
    Ok(problem)
}

/// How a sampling run ended.
pub enum Outcome {
    /// Sampled; the report is also in `observables.json`.
    Done(Box<SampleReport>),
    /// Training stopped (Ctrl-C or `stop_after`) at this iteration with a checkpoint written;
    /// continue with `--resume`.
    Paused { iter: usize },
}

/// Runs (or, with `resume`, continues) the sampling run `cfg` in `dir`, writing every file
/// of the run directory. `stop_after` limits the training iterations of this invocation
/// (for batch queues): the run then pauses with a checkpoint, as if interrupted.
pub fn run(
    cfg: &SampleConfig,
    dir: &Path,
    resume: bool,
    stop_after: Option<usize>,
    stop: &AtomicBool,
    monitor: &mut dyn SampleMonitor,
) -> Result<Outcome> {
    run_with(
        parallel::single(),
        cfg,
        dir,
        resume,
        stop_after,
        stop,
        monitor,
    )
}

/// [`run`] shared by the ranks of `comm`: each runs its chains (and chunks of the training
/// batches); rank 0 writes the run directory; every rank returns the same outcome.
pub fn run_with(
    comm: Arc<dyn Communicator>,
    cfg: &SampleConfig,
    dir: &Path,
    resume: bool,
    stop_after: Option<usize>,
    stop: &AtomicBool,
    monitor: &mut dyn SampleMonitor,
) -> Result<Outcome> {
    let problem = validate(cfg)?;
    let chains = Chunks::new(cfg.samples, cfg.chains, comm.size(), "--chains")?;
    let root = comm.rank() == 0;
    if root {
        if !resume && dir.join("config.json").exists() {
            return Err(Error::Input(format!(
                "{} already holds a run; continue it with --resume {0} or choose another --out",
                dir.display()
            )));
        }
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        if !resume {
            let json = serde_json::to_vec_pretty(cfg).expect("config serialises");
            write_atomic(&dir.join("config.json"), &json)?;
        }
    }
    let lattice = &problem.lattice;
    let mut report = match cfg.method {
        Method::Model => {
            match run_model(
                &comm, cfg, &problem, &chains, dir, resume, stop_after, stop, monitor,
            )? {
                Outcome::Done(r) => *r,
                paused => return Ok(paused),
            }
        }
        Method::Flow | Method::Diffusion => {
            if comm.size() > 1 || cfg.chains != 1 {
                return Err(Error::Input(format!(
                    "--method {} runs one chain on one process (found {} processes, --chains {}); \
                     run it without mpirun and without --chains",
                    cfg.method.name(),
                    comm.size(),
                    cfg.chains
                )));
            }
            match run_flow(cfg, &problem, dir, resume, stop_after, stop, monitor)? {
                Outcome::Done(r) => *r,
                paused => return Ok(paused),
            }
        }
        _ => {
            let mine = chains.of_rank(comm.rank(), comm.size());
            let total = chains.items_of_rank(comm.rank(), comm.size()).len();
            let mut parts = Vec::new();
            let mut done = 0;
            for c in mine {
                let chain_cfg = ChainConfig {
                    method: cfg.method,
                    samples: chains.range(c).len(),
                    thermalise: cfg.thermalise,
                    sweeps_per_sample: cfg.sweeps_per_sample,
                    seed: chain_seed(cfg.seed, c),
                };
                let r = run_chain(
                    lattice,
                    &problem.theory,
                    &chain_cfg,
                    &mut |k| {
                        let k = done + k;
                        if k % 64 == 0 || k == total {
                            monitor.sampling(k, total)
                        }
                    },
                    stop,
                )?;
                done += r.recorder.len();
                parts.push(ChainPart {
                    recorder: r.recorder,
                    proposals: None,
                    configs: r.configs,
                    log_w: Vec::new(),
                    alignment: Vec::new(),
                    acceptance: r.acceptance,
                    seconds: r.seconds,
                    complete: r.complete,
                    step: r.step,
                    leapfrog_steps: r.leapfrog_steps,
                });
            }
            let m = merge_chains(comm.as_ref(), lattice, &chains, parts);
            if m.recorder.len() < 4 {
                return Err(Error::Input(
                    "interrupted before 4 samples were measured; nothing to report".into(),
                ));
            }
            if root {
                write_samples(dir, lattice, &m.configs)?;
            }
            let mut rep = report_from(
                &problem,
                cfg,
                &analyse_chains(&m.recorder, &m.lens),
                m.acceptance,
                m.seconds,
            );
            rep.status = if m.complete {
                "finished"
            } else {
                "interrupted"
            }
            .into();
            rep.step_size = m.step;
            rep.leapfrog_steps = m.leapfrog_steps;
            rep
        }
    };
    report.exact = exact_values(lattice, &problem.theory);
    if root {
        let json = serde_json::to_vec_pretty(&report).expect("report serialises");
        write_atomic(&dir.join("observables.json"), &json)?;
    }
    Ok(Outcome::Done(Box::new(report)))
}

/// The seed of Markov chain `c`: the run's seed for chain 0 (so one chain is the
/// single-chain run), an unrelated one from `(seed, c)` otherwise.
pub fn chain_seed(seed: u64, c: usize) -> u64 {
    if c == 0 {
        seed
    } else {
        chunk_rng(seed, usize::MAX, c).next_u64()
    }
}

/// What one chain produced (Markov chain or model-proposal MH chain).
struct ChainPart {
    recorder: Recorder,
    /// Every model proposal's observables (model chains), in the order of `log_w`.
    proposals: Option<Recorder>,
    configs: Configs,
    /// Importance weights of the proposals (model chains).
    log_w: Vec<f64>,
    /// A pinned model's `s_x0 sign(M)` of every proposal (see [`pinned_warning`]; else empty).
    alignment: Vec<f64>,
    acceptance: Estimate,
    seconds: f64,
    complete: bool,
    step: Option<f64>,
    leapfrog_steps: Option<usize>,
}

/// All chains of all ranks, in chain order.
struct Merged {
    recorder: Recorder,
    /// The chains' [`ChainPart::proposals`], in chain order (empty for Markov chains).
    proposals: Recorder,
    /// Length of every chain.
    lens: Vec<usize>,
    configs: Configs,
    log_w: Vec<f64>,
    /// The proposals' [`ChainPart::alignment`], in chain order.
    alignment: Vec<f64>,
    /// Length-weighted mean of the chains' acceptances, with their errors combined as
    /// independent.
    acceptance: Estimate,
    /// Wall time: the slowest rank's sum over its chains.
    seconds: f64,
    complete: bool,
    /// Chain 0's tuned step.
    step: Option<f64>,
    leapfrog_steps: Option<usize>,
}

/// A chain's packed spin words ([`SpinRows::words`]) as `f64`s for the gather: two a word,
/// its low and high 32 bits (integers `f64` holds exactly), a quarter byte a spin.
fn words_as_f64(words: &[u64]) -> impl Iterator<Item = f64> + '_ {
    words
        .iter()
        .flat_map(|&w| [(w & 0xFFFF_FFFF) as f64, (w >> 32) as f64])
}

/// The words [`words_as_f64`] sent.
fn words_from_f64(v: &[f64]) -> Vec<u64> {
    v.chunks_exact(2)
        .map(|p| p[0] as u64 | (p[1] as u64) << 32)
        .collect()
}

/// Gathers every rank's chains (`parts`: this rank's, in chain order) onto every rank.
fn merge_chains(
    comm: &dyn Communicator,
    lattice: &Lattice,
    chains: &Chunks,
    parts: Vec<ChainPart>,
) -> Merged {
    // Per chain: [recorder.., acceptance mean, error, seconds, complete, step, leapfrog,
    // field?, configs len, configs.., log_w len, log_w.., alignment len, alignment..,
    // proposals?, proposals..]; NaN for a missing step.
    let mut local = Vec::new();
    for p in &parts {
        local.extend(p.recorder.pack());
        local.extend([
            p.acceptance.mean,
            p.acceptance.error,
            p.seconds,
            f64::from(u8::from(p.complete)),
            p.step.unwrap_or(f64::NAN),
            p.leapfrog_steps.map_or(f64::NAN, |n| n as f64),
        ]);
        match &p.configs {
            Configs::Spins(s) => {
                local.extend([0.0, s.words().len() as f64]);
                local.extend(words_as_f64(s.words()));
            }
            Configs::Field(f) => {
                local.extend([1.0, f.len() as f64]);
                local.extend(f);
            }
        }
        local.push(p.log_w.len() as f64);
        local.extend(&p.log_w);
        local.push(p.alignment.len() as f64);
        local.extend(&p.alignment);
        local.push(f64::from(u8::from(p.proposals.is_some())));
        if let Some(r) = &p.proposals {
            local.extend(r.pack());
        }
    }
    let all = parallel::gather_chunks(comm, local);
    let mut recorder = Recorder::new(lattice);
    let mut proposals = Recorder::new(lattice);
    let mut lens = Vec::with_capacity(chains.n);
    let mut spins = SpinRows::with_capacity(lattice.n_sites(), 0);
    let mut field: Vec<f64> = Vec::new();
    let mut is_field = false;
    let mut log_w = Vec::new();
    let mut alignment = Vec::new();
    let mut acc = Vec::with_capacity(chains.n);
    let mut seconds = vec![0.0; comm.size()];
    let (mut complete, mut step, mut leapfrog_steps) = (true, None, None);
    let mut at = 0;
    for c in 0..chains.n {
        let before = recorder.len();
        at += recorder.extend_packed(&all[at..]);
        lens.push(recorder.len() - before);
        let h = &all[at..at + 8];
        acc.push((lens[c], Estimate::new(h[0], h[1])));
        let owner = (0..comm.size())
            .find(|&r| chains.of_rank(r, comm.size()).contains(&c))
            .expect("every chain has a rank");
        seconds[owner] += h[2];
        complete &= h[3] != 0.0;
        if c == 0 {
            step = (!h[4].is_nan()).then_some(h[4]);
            leapfrog_steps = (!h[5].is_nan()).then_some(h[5] as usize);
        }
        is_field = h[6] != 0.0;
        let len = h[7] as usize;
        at += 8;
        if is_field {
            field.extend(&all[at..at + len]);
            at += len;
        } else {
            let words = words_from_f64(&all[at..at + 2 * len]);
            spins.append(&SpinRows::from_words(lattice.n_sites(), words));
            at += 2 * len;
        }
        let lw = all[at] as usize;
        log_w.extend(&all[at + 1..at + 1 + lw]);
        at += 1 + lw;
        let la = all[at] as usize;
        alignment.extend(&all[at + 1..at + 1 + la]);
        at += 1 + la;
        let has_proposals = all[at] != 0.0;
        at += 1;
        if has_proposals {
            at += proposals.extend_packed(&all[at..]);
        }
    }
    let acceptance = if acc.len() == 1 {
        acc[0].1
    } else {
        let total: usize = acc.iter().map(|(n, _)| n).sum::<usize>().max(1);
        let w = |n: usize| n as f64 / total as f64;
        Estimate::new(
            acc.iter().map(|(n, e)| w(*n) * e.mean).sum(),
            acc.iter()
                .map(|(n, e)| (w(*n) * e.error).powi(2))
                .sum::<f64>()
                .sqrt(),
        )
    };
    Merged {
        recorder,
        proposals,
        lens,
        configs: if is_field {
            Configs::Field(field)
        } else {
            Configs::Spins(spins)
        },
        log_w,
        alignment,
        acceptance,
        seconds: seconds.iter().copied().fold(0.0, f64::max),
        complete,
        step,
        leapfrog_steps,
    }
}

fn report_from(
    problem: &ClassicalProblem,
    cfg: &SampleConfig,
    a: &super::observables::Analysis,
    acceptance: Estimate,
    seconds: f64,
) -> SampleReport {
    let sps = a.samples as f64 / seconds.max(1e-12);
    SampleReport {
        problem: problem.path.clone(),
        theory: problem.theory,
        lattice: problem.lattice.extent(),
        method: cfg.method,
        status: "finished".into(),
        samples: a.samples,
        chains: cfg.chains,
        estimates: a.estimates.clone(),
        tau_int: a.tau_int,
        tau_int_energy: a.tau_int_energy,
        acceptance,
        ess: None,
        log_z: None,
        pareto_k: None,
        kl_divergence: None,
        free_energy_bound: None,
        two_point: a.two_point.clone(),
        sampling_seconds: seconds,
        samples_per_second: sps,
        independent_samples_per_second: stats::independent_per_second(
            a.samples,
            a.tau_int.mean.max(a.tau_int_energy.mean),
            seconds,
        ),
        training_seconds: 0.0,
        training_iterations: 0,
        step_size: None,
        leapfrog_steps: None,
        exact: BTreeMap::new(),
        warnings: few_independent_warning(a.samples, a.tau_int.mean.max(a.tau_int_energy.mean))
            .into_iter()
            .collect(),
        flow: None,
        reweighted: None,
    }
}

/// Fewest independent samples `n / (2 tau_int)` (the slower of `|M|` and the energy) whose
/// error bars a report vouches for.
const MIN_INDEPENDENT: f64 = 100.0;

/// A warning when a chain of `n` samples with autocorrelation time `tau` holds fewer than
/// `MIN_INDEPENDENT` (100) independent samples: its `tau_int` and with it every error bar
/// are then themselves uncertain by tens of percent (Sokal's error on `tau_int` grows as the
/// window approaches the run), and a slow mode the window has not seen makes them too small.
/// Seen on the 32x32 Ising model with a poor model proposal: `tau_int` 56 over 5,000 steps,
/// the energy 3.2 of its error bars off, while the model-chain warnings (accepted proposals,
/// ESS) were silent.
pub fn few_independent_warning(n: usize, tau: f64) -> Option<String> {
    let independent = n as f64 / (2.0 * tau.max(0.5));
    (independent < MIN_INDEPENDENT).then(|| {
        format!(
            "{n} samples with tau_int {tau:.1} hold about {independent:.0} independent ones \
             (fewer than {MIN_INDEPENDENT:.0}): tau_int and every error bar are themselves \
             uncertain and may be too small; draw more samples (--samples)"
        )
    })
}

fn write_samples(dir: &Path, lattice: &Lattice, configs: &Configs) -> Result<()> {
    let n = lattice.n_sites();
    let [lx, ly] = lattice.extent();
    let shape = |len: usize| -> Vec<usize> {
        match lattice.shape() {
            Shape::Square => vec![len / n, ly, lx],
            Shape::Chain => vec![len / n, n],
        }
    };
    let path = dir.join("samples.npy");
    match configs {
        Configs::Spins(s) => super::npy::write_i8(&path, &shape(s.len() * n), &s.to_i8()),
        Configs::Field(f) => super::npy::write_f64(&path, &shape(f.len()), f),
    }
}

/// `DIR/log_weights.npy`: the log importance weights `-S(x) - log q(x)` of every model
/// proposal (chain order), so that `log Z`, the ESS and [`stats::pareto_k`] can be recomputed
/// and other observables reweighted offline.
fn write_log_weights(dir: &Path, log_w: &[f64]) -> Result<()> {
    super::npy::write_f64(&dir.join("log_weights.npy"), &[log_w.len()], log_w)
}

fn exact_values(lattice: &Lattice, theory: &Theory) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Theory::Ising { beta, j, h } = *theory else {
        return out;
    };
    let [lx, ly] = lattice.extent();
    if lattice.n_sites() <= 20 {
        let ex = ising_enumerate(lattice, beta, j, h);
        out.insert("log_z".into(), ex.log_z);
        out.insert("energy_density".into(), ex.energy_density);
        out.insert("abs_magnetization".into(), ex.abs_magnetization);
        out.insert("susceptibility".into(), ex.susceptibility);
        out.insert("binder".into(), ex.binder);
        out.insert("m2_density".into(), ex.m2_density);
    } else if lattice.shape() == Shape::Square
        && lx == ly
        && h == 0.0
        && lattice.boundary() == crate::lattice::Boundary::Periodic
    {
        if lx <= 8 {
            let (lz, e, _) = ising_transfer_matrix(lx, beta, j);
            let (am, m2, chi, binder) = ising_magnetization_moments(lx, beta, j);
            out.insert("log_z".into(), lz);
            out.insert("energy_density".into(), e);
            out.insert("abs_magnetization".into(), am);
            out.insert("m2_density".into(), m2);
            out.insert("susceptibility".into(), chi);
            out.insert("binder".into(), binder);
        } else {
            let (lz, e) = ising_kaufman(lx, beta, j);
            out.insert("log_z".into(), lz);
            out.insert("energy_density".into(), e);
        }
    }
    out
}

/// What a model run trains and samples: the network ([`IsingModel`]) or the lookup tables
/// ([`TableModel`]).
enum Proposer {
    Net(Box<IsingModel>),
    Table(Box<TableModel>),
}

impl Proposer {
    fn iter(&self) -> usize {
        match self {
            Proposer::Net(m) => m.iter,
            Proposer::Table(t) => t.iter,
        }
    }

    fn train_step(&mut self) -> Result<TrainStats> {
        match self {
            Proposer::Net(m) => m.train_step(),
            Proposer::Table(t) => t.train_step(),
        }
    }

    fn state(&self, seconds: f64) -> State {
        let adam_t = match self {
            Proposer::Net(m) => m.adam.t,
            Proposer::Table(t) => t.adam_t(),
        };
        State {
            iter: self.iter(),
            adam_t,
            seconds,
        }
    }

    /// Writes the parameters and the optimiser's state into the checkpoint folder `dir`.
    fn save(&self, dir: &Path) -> Result<()> {
        match self {
            Proposer::Net(m) => {
                m.model.save(&dir.join("model.safetensors"))?;
                m.adam.save(m.model.params(), &dir.join("adam.safetensors"))
            }
            Proposer::Table(t) => t.save(dir),
        }
    }

    /// Reads what [`Self::save`] wrote, at the checkpoint's `st`.
    fn load(&mut self, dir: &Path, st: &State) -> Result<()> {
        match self {
            Proposer::Net(m) => {
                m.model.load(&dir.join("model.safetensors"))?;
                m.adam
                    .load(m.model.params(), &dir.join("adam.safetensors"))?;
                m.adam.t = st.adam_t;
                m.iter = st.iter;
                Ok(())
            }
            Proposer::Table(t) => t.load(dir, st.adam_t, st.iter),
        }
    }

    fn pinned_site(&self) -> Option<usize> {
        match self {
            Proposer::Net(m) => m.model.pinned_site(),
            Proposer::Table(_) => None,
        }
    }

    fn metropolis_hastings(
        &self,
        lattice: &Lattice,
        (proposals, batch, local_every): (usize, usize, usize),
        rng: &mut impl rand::Rng,
        progress: &mut dyn FnMut(usize),
        stop: &AtomicBool,
    ) -> Result<MhResult> {
        match self {
            Proposer::Net(m) => {
                m.metropolis_hastings(lattice, proposals, batch, local_every, rng, progress, stop)
            }
            Proposer::Table(t) => {
                t.metropolis_hastings(lattice, proposals, batch, local_every, rng, progress, stop)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_model(
    comm: &Arc<dyn Communicator>,
    cfg: &SampleConfig,
    problem: &ClassicalProblem,
    chains: &Chunks,
    dir: &Path,
    resume: bool,
    stop_after: Option<usize>,
    stop: &AtomicBool,
    monitor: &mut dyn SampleMonitor,
) -> Result<Outcome> {
    let Theory::Ising { beta, j, h } = problem.theory else {
        unreachable!("checked by Method::check")
    };
    let lattice = &problem.lattice;
    let schedule = Schedule::parse(&cfg.scheme, lattice)?;
    let device = crate::run::device(&parallel::rank_device(&cfg.device, comm.as_ref()))?;
    let root = comm.rank() == 0;
    let mut m = match cfg.table {
        Some(table) => {
            if comm.size() > 1 {
                return Err(Error::Input(
                    "--network table runs in one process (its training takes seconds); \
                     run it without mpirun"
                        .into(),
                ));
            }
            Proposer::Table(Box::new(TableModel::new(
                lattice,
                (beta, j, h),
                table,
                cfg.train.clone(),
            )?))
        }
        None => Proposer::Net(Box::new(
            IsingModel::new(
                lattice,
                (beta, j, h),
                schedule,
                cfg.model.clone(),
                &device,
                cfg.train.clone(),
            )?
            .with_comm(comm.clone(), cfg.chains)?,
        )),
    };
    let trace_path = dir.join("trace.csv");
    let mut seconds_before = 0.0;
    if resume {
        let ck = checkpoint_to_read(dir);
        let state_path = ck.join("state.json");
        if state_path.exists() {
            let text = fs::read_to_string(&state_path).map_err(|e| io_err(&state_path, e))?;
            let st: State = serde_json::from_str(&text).map_err(|e| io_err(&state_path, e))?;
            m.load(&ck, &st)?;
            seconds_before = st.seconds;
        }
    }
    // Only rank 0 writes the trace.
    if root && resume {
        // Keep the trace rows before the checkpoint.
        let text = fs::read_to_string(&trace_path).unwrap_or_else(|_| TRACE_HEADER.into());
        let mut kept = String::from(TRACE_HEADER);
        for line in text.lines().skip(1) {
            let it = line.split(',').next().and_then(|v| v.parse::<usize>().ok());
            if it.is_some_and(|i| i < m.iter()) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        write_atomic(&trace_path, kept.as_bytes())?;
    } else if root {
        write_atomic(&trace_path, TRACE_HEADER.as_bytes())?;
    }
    let mut trace = if root {
        Some(
            fs::OpenOptions::new()
                .append(true)
                .open(&trace_path)
                .map_err(|e| io_err(&trace_path, e))?,
        )
    } else {
        None
    };
    let t0 = Instant::now();
    let checkpoint = |m: &Proposer, seconds: f64| {
        if !root {
            return Ok(());
        }
        let st = m.state(seconds);
        write_checkpoint(dir, |tmp| {
            m.save(tmp)?;
            write_atomic(
                &tmp.join("state.json"),
                &serde_json::to_vec(&st).expect("state"),
            )
        })
    };
    let mut last: Option<TrainStats> = None;
    let start = m.iter();
    if comm.size() > 1 {
        check_params(&m, comm.as_ref())?;
    }
    while m.iter() < cfg.train.iters {
        if parallel::any(comm.as_ref(), stop.load(Ordering::SeqCst))
            || stop_after.is_some_and(|k| m.iter() - start >= k)
        {
            checkpoint(&m, seconds_before + t0.elapsed().as_secs_f64())?;
            return Ok(Outcome::Paused { iter: m.iter() });
        }
        parallel::test_fault(comm.as_ref(), m.iter());
        let s = m.train_step()?;
        if comm.size() > 1 && m.iter().is_multiple_of(crate::vmc::driver::CHECKSUM_EVERY) {
            check_params(&m, comm.as_ref())?;
        }
        let Some(trace) = trace.as_mut() else {
            monitor.training(&s, cfg.train.iters);
            last = Some(s);
            continue;
        };
        trace
            .write_all(
                format!(
                    "{},{},{},{},{},{},{},{}\n",
                    s.iter,
                    s.free_energy,
                    s.free_energy_error,
                    s.beta,
                    s.entropy,
                    s.ess,
                    s.lr,
                    s.seconds
                )
                .as_bytes(),
            )
            .map_err(|e| io_err(&trace_path, e))?;
        monitor.training(&s, cfg.train.iters);
        last = Some(s);
        if m.iter().is_multiple_of(cfg.checkpoint_every.max(1)) {
            checkpoint(&m, seconds_before + t0.elapsed().as_secs_f64())?;
        }
    }
    let training_seconds = seconds_before + t0.elapsed().as_secs_f64();
    checkpoint(&m, training_seconds)?;
    // Sampling draws from its own generators (one per chain), distinct from every training
    // iteration's; chain 0's is the historical single chain's.
    let total = chains.items_of_rank(comm.rank(), comm.size()).len();
    let mut parts = Vec::new();
    let mut done = 0;
    for c in chains.of_rank(comm.rank(), comm.size()) {
        let mut rng = chunk_rng(cfg.seed ^ 0x5A5A_5A5A_5A5A_5A5A, usize::MAX / 2, c);
        let mh = m.metropolis_hastings(
            lattice,
            (chains.range(c).len(), cfg.batch.max(1), cfg.local_every),
            &mut rng,
            &mut |k| monitor.sampling(done + k, total),
            stop,
        )?;
        done += mh.recorder.len();
        parts.push(ChainPart {
            recorder: mh.recorder,
            proposals: Some(mh.proposals),
            configs: Configs::Spins(mh.spins),
            log_w: mh.log_w,
            alignment: mh.alignment,
            acceptance: mh.acceptance,
            seconds: mh.seconds,
            complete: mh.complete,
            step: None,
            leapfrog_steps: None,
        });
    }
    let mh = merge_chains(comm.as_ref(), lattice, chains, parts);
    if mh.recorder.len() < 4 {
        return Err(Error::Input(
            "interrupted before 4 samples were drawn; nothing to report".into(),
        ));
    }
    if root {
        write_samples(dir, lattice, &mh.configs)?;
        write_log_weights(dir, &mh.log_w)?;
    }
    let a = analyse_chains(&mh.recorder, &mh.lens);
    let mut rep = independence_report(
        problem,
        cfg,
        (&a, &mh.proposals),
        (mh.acceptance, mh.seconds, mh.complete),
        &mh.log_w,
        cfg.local_every,
        "train longer, add local sweeps (--local-every 2), or compare with --method wolff / \
         metropolis",
    );
    if let (Some(x0), Configs::Spins(spins)) = (m.pinned_site(), &mh.configs) {
        let chain: Vec<f64> = spins.rows().map(|s| alignment(&s, x0)).collect();
        let warning = pinned_warning(&chain, &mh.lens, &mh.alignment, &mh.log_w, cfg.local_every);
        rep.warnings.splice(0..0, warning);
    }
    rep.free_energy_bound = last.map(|s| Estimate::new(s.free_energy, s.free_energy_error));
    rep.training_seconds = training_seconds;
    rep.training_iterations = m.iter();
    Ok(Outcome::Done(Box::new(rep)))
}

/// The report of an independence Metropolis-Hastings chain with model proposals (the masked
/// diffusion, or the RG flow): the chain's analysis, then what the importance weights
/// `log_w = -S(x) - log q(x)` of every proposal give (ESS, `log Z`, and with the proposals'
/// observables `proposals` the reweighted estimates) and the [`chain_warnings`]. `(acceptance, seconds, complete)` describe the chain.
fn independence_report(
    problem: &ClassicalProblem,
    cfg: &SampleConfig,
    (a, proposals): (&super::observables::Analysis, &Recorder),
    (acceptance, seconds, complete): (Estimate, f64, bool),
    log_w: &[f64],
    local_every: usize,
    advice: &str,
) -> SampleReport {
    let mut rep = report_from(problem, cfg, a, acceptance, seconds);
    rep.reweighted = Some(analyse_weighted(proposals, log_w, seconds));
    rep.status = if complete { "finished" } else { "interrupted" }.into();
    let (ess, ess_err) = stats::ess_with_error(log_w, 50);
    rep.ess = Some(Estimate::new(ess, ess_err));
    let (lz, lz_err) = stats::log_mean_exp(log_w);
    rep.log_z = Some(Estimate::new(lz, lz_err));
    let (kl, kl_err) = stats::kl_from_weights(log_w, 50);
    rep.kl_divergence = Some(Estimate::new(kl, kl_err));
    rep.pareto_k = stats::pareto_k(log_w);
    // The model chain's own warnings first, then report_from's.
    let general = std::mem::take(&mut rep.warnings);
    rep.warnings = chain_warnings(acceptance.mean, ess, log_w.len(), local_every, advice);
    rep.warnings
        .extend(pareto_warning(rep.pareto_k, log_w.len(), local_every));
    rep.warnings.extend(general);
    rep
}

/// Fewest accepted model proposals, or importance-weight effective samples, below which a
/// model chain's numbers are flagged.
const MIN_EFFECTIVE: f64 = 100.0;

/// Warnings for a chain driven by independence Metropolis-Hastings with model proposals.
///
/// Such a chain can fail silently: when the model proposes some important states rarely, the
/// chain sits in the states it proposes well, its `tau_int` looks small, and the averages are
/// wrong by many error bars (seen with a barely trained model at beta_c). The only symptoms are
/// few accepted proposals (`acceptance x proposals`) and a small importance-weight ESS
/// (`ess x proposals`); below `MIN_EFFECTIVE` (100) of either the report says so. With local sweeps
/// (`local_every > 0`) the chain stays exact and ergodic; a low acceptance then means the local
/// sweeps do the work and the model adds little, but a tiny ESS still means that heavy,
/// rarely proposed states can hold the chain longer than the run (32x32, 150 training
/// iterations, pinned: ESS 5 of 5,000, `tau_int` 18, `E/N` 4.4 error bars off), so the
/// report says the error bars may be too small.
///
/// `advice` says what to do about a pure chain (train longer, which baseline to compare with).
pub fn chain_warnings(
    acceptance: f64,
    ess_fraction: f64,
    proposals: usize,
    local_every: usize,
    advice: &str,
) -> Vec<String> {
    let accepted = acceptance * proposals as f64;
    let effective = ess_fraction * proposals as f64;
    if accepted >= MIN_EFFECTIVE && effective >= MIN_EFFECTIVE {
        return Vec::new();
    }
    let what = format!(
        "model proposals: {accepted:.0} of {proposals} accepted ({:.2}%), importance-weight ESS \
         {effective:.0} samples",
        100.0 * acceptance
    );
    if local_every == 0 {
        vec![format!(
            "{what}. A pure independence Metropolis-Hastings chain that rarely moves can stay in \
             the states the model proposes well while tau_int looks small, so these error bars \
             are not trustworthy: {advice}"
        )]
    } else if effective < MIN_EFFECTIVE {
        vec![format!(
            "{what}. The chain is exact through its local sweeps (one every {local_every} \
             proposals), but with so few importance-weight effective samples a rarely proposed \
             heavy state can hold it for longer than the run while tau_int looks small, so \
             these error bars may be too small (a 32x32 run with 5 effective samples gave E/N \
             4.4 error bars off): train longer, or compare with --method wolff"
        )]
    } else {
        vec![format!(
            "{what}. The chain stays exact through its local sweeps (one every {local_every} \
             proposals), but they do most of the work: the model adds little over --method \
             metropolis"
        )]
    }
}

/// A warning when the importance weights of a pinned proposal
/// ([`Z2::Pinned`](super::variational::Z2::Pinned)) miss the configurations whose pinned
/// site `x0` points against the magnetisation.
///
/// The pinned model is a distribution conditioned on `s_x0 = +1`, and its reverse-KL training
/// underweights the minority sector with `sign(M) = -s_x0` (see
/// [`Z2`](super::variational::Z2)); no importance-weight diagnostic sees a region the
/// proposals never reach (L = 16, `--depth 1`: `log Z` 12 error bars low with Pareto k 0.29).
/// A chain with local sweeps (`local_every > 0`) is exact and does reach it, so the chain's
/// mean of `a = s_x0 sign(M)` (`chain`, one value per measurement, chains of lengths `lens`)
/// and the importance-weighted mean of the proposals' `a` (`proposals`, log weights `log_w`)
/// must agree; more than 4 error bars apart, the weights (`log Z`, ESS, KL) are biased. A pure
/// independence chain moves only to proposed states, so both would share the bias: no check
/// then.
pub fn pinned_warning(
    chain: &[f64],
    lens: &[usize],
    proposals: &[f64],
    log_w: &[f64],
    local_every: usize,
) -> Option<String> {
    if local_every == 0 || chain.len() < 2 || proposals.len() != log_w.len() {
        return None;
    }
    let c = stats::correlated_chains(chain, lens);
    let (w, w_err) = stats::weighted_mean(log_w, proposals);
    let pull = (w - c.mean).abs() / (c.error.powi(2) + w_err.powi(2)).sqrt().max(1e-300);
    (pull > 4.0).then(|| {
        format!(
            "--z2 pinned: the alignment s_x0 sign(M) of the pinned site with the magnetisation \
             is {:.4} +- {:.4} in the chain (exact through its local sweeps) but {w:.4} +- \
             {w_err:.4} importance-weighted over the proposals ({pull:.1} error bars apart): \
             the proposal underweights the configurations whose pinned site is against the \
             magnetisation, so log Z, the ESS, KL(q || p) and the reweighted observables from \
             its weights are biased (the chain's observables are not); use --z2 mixture for \
             them",
            c.mean, c.error
        )
    })
}

/// `s_x0 sign(M)` of one configuration of `+-1` spins (0 at `M = 0`).
pub fn alignment(spins: &[i8], x0: usize) -> f64 {
    let m: i32 = spins.iter().map(|&s| i32::from(s)).sum();
    f64::from(i32::from(spins[x0]) * m.signum())
}

/// A warning when the importance weights of `s` proposals have a heavy right tail,
/// [`stats::pareto_k`] above [`stats::pareto_k_threshold`]: their mean (so `log Z`) is then
/// dominated by a few weights, its error bar and the ESS are estimated from weights whose tail
/// the run has barely sampled, and an independence chain can be held by one heavy state for
/// longer than its `tau_int` shows (an 8x8 chain held by one weight 380 times the mean gave
/// `E/N` 5.6 error bars off with ESS 0.12).
pub fn pareto_warning(pareto_k: Option<f64>, s: usize, local_every: usize) -> Option<String> {
    let k = pareto_k?;
    let limit = stats::pareto_k_threshold(s);
    (k > limit).then(|| {
        let chain = if local_every == 0 {
            "the chain can be held by one heavy state for longer than tau_int shows, so its \
             error bars are not trustworthy"
        } else {
            "the local sweeps keep the chain exact, but a heavy state can still hold it for \
             longer than tau_int shows, so its error bars may be too small"
        };
        format!(
            "the importance weights are heavy-tailed (Pareto k = {k:.2} above {limit:.2}): \
             log Z, its error bar and the ESS rest on a few proposals, and {chain}: train \
             longer, or check against another method"
        )
    })
}

/// Errors when the model's parameters differ between ranks (tables run in one process).
fn check_params(m: &Proposer, comm: &dyn Communicator) -> Result<()> {
    let Proposer::Net(m) = m else {
        return Ok(());
    };
    let mut all = Vec::new();
    for (_, p) in m.model.params() {
        all.extend(
            p.as_tensor()
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?,
        );
    }
    parallel::check_same(
        comm,
        parallel::checksum_f32(&all),
        &format!("the model parameters after {} training iterations", m.iter),
    )
}

/// Reads `--data`: a float64 `.npy` of configurations of `lattice` (shape `(S, Ly, Lx)` or
/// `(S, V)`), rows of `V` values.
pub fn read_data(path: &Path, lattice: &Lattice) -> Result<Vec<f64>> {
    let (shape, data) = super::npy::read_f64(path)?;
    let v = lattice.n_sites();
    let [lx, ly] = lattice.extent();
    let ok = match shape.as_slice() {
        [_, y, x] => *y == ly && *x == lx,
        [_, n] => *n == v,
        _ => false,
    };
    if !ok || shape[0] < 2 {
        return Err(Error::Io {
            file: path.display().to_string(),
            message: format!(
                "--data needs at least 2 configurations of shape ({ly}, {lx}) or ({v},), found an \
                 array of shape {shape:?}"
            ),
        });
    }
    Ok(data)
}

const FLOW_TRACE_HEADER: &str = "iter,loss,free_energy,free_energy_error,ess,dsm,lr,seconds\n";

fn run_flow(
    cfg: &SampleConfig,
    problem: &ClassicalProblem,
    dir: &Path,
    resume: bool,
    stop_after: Option<usize>,
    stop: &AtomicBool,
    monitor: &mut dyn SampleMonitor,
) -> Result<Outcome> {
    let Theory::Phi4 { m2, lambda } = problem.theory else {
        unreachable!("checked by Method::check")
    };
    let lattice = &problem.lattice;
    let device = crate::run::device(&cfg.device)?;
    let net = cfg
        .flow
        .build(&cfg.scheme, lattice, (m2, lambda), cfg.seed, &device)?;
    if let Some(src) = &cfg.flow.init_from {
        net.load(&checkpoint_to_read(Path::new(src)).join("model.safetensors"))?;
    }
    let data = match &cfg.flow.data {
        Some(d) => Some(read_data(Path::new(d), lattice)?),
        None => None,
    };
    let mut m = FlowModel::new(
        net,
        (m2, lambda),
        cfg.flow.objective,
        cfg.flow.steps,
        data.as_deref(),
        FlowTrain {
            samples: cfg.train.samples,
            iters: cfg.train.iters,
            lr: cfg.train.lr,
            seed: cfg.seed,
        },
    )?;
    let trace_path = dir.join("trace.csv");
    let mut seconds_before = 0.0;
    if resume {
        let ck = checkpoint_to_read(dir);
        let state_path = ck.join("state.json");
        if state_path.exists() {
            let text = fs::read_to_string(&state_path).map_err(|e| io_err(&state_path, e))?;
            let st: State = serde_json::from_str(&text).map_err(|e| io_err(&state_path, e))?;
            m.net.load(&ck.join("model.safetensors"))?;
            m.adam.load(&m.net.params(), &ck.join("adam.safetensors"))?;
            m.adam.t = st.adam_t;
            m.iter = st.iter;
            seconds_before = st.seconds;
        }
        let text = fs::read_to_string(&trace_path).unwrap_or_else(|_| FLOW_TRACE_HEADER.into());
        let mut kept = String::from(FLOW_TRACE_HEADER);
        for line in text.lines().skip(1) {
            let it = line.split(',').next().and_then(|v| v.parse::<usize>().ok());
            if it.is_some_and(|i| i <= m.iter) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        write_atomic(&trace_path, kept.as_bytes())?;
    } else {
        write_atomic(&trace_path, FLOW_TRACE_HEADER.as_bytes())?;
    }
    let mut trace = fs::OpenOptions::new()
        .append(true)
        .open(&trace_path)
        .map_err(|e| io_err(&trace_path, e))?;
    let t0 = Instant::now();
    let checkpoint = |m: &FlowModel, seconds: f64| {
        let st = State {
            iter: m.iter,
            adam_t: m.adam.t,
            seconds,
        };
        write_checkpoint(dir, |tmp| {
            m.net.save(&tmp.join("model.safetensors"))?;
            m.adam
                .save(&m.net.params(), &tmp.join("adam.safetensors"))?;
            write_atomic(
                &tmp.join("state.json"),
                &serde_json::to_vec(&st).expect("state"),
            )
        })
    };
    let mut last: Option<FlowStats> = None;
    let start = m.iter;
    while m.iter < cfg.train.iters {
        if stop.load(Ordering::SeqCst) || stop_after.is_some_and(|k| m.iter - start >= k) {
            checkpoint(&m, seconds_before + t0.elapsed().as_secs_f64())?;
            return Ok(Outcome::Paused { iter: m.iter });
        }
        let s = m.train_step()?;
        trace
            .write_all(
                format!(
                    "{},{},{},{},{},{},{},{}\n",
                    s.iter,
                    s.loss,
                    s.free_energy,
                    s.free_energy_error,
                    s.ess,
                    s.dsm,
                    s.lr,
                    s.seconds
                )
                .as_bytes(),
            )
            .map_err(|e| io_err(&trace_path, e))?;
        monitor.flow_training(&s, cfg.train.iters);
        last = Some(s);
        if m.iter.is_multiple_of(cfg.checkpoint_every.max(1)) {
            checkpoint(&m, seconds_before + t0.elapsed().as_secs_f64())?;
        }
    }
    let training_seconds = seconds_before + t0.elapsed().as_secs_f64();
    checkpoint(&m, training_seconds)?;
    // Sampling in f64 (log densities and path weights to full precision), from its own
    // generator.
    let net = m.net.to_dtype(candle_core::DType::F64)?;
    let sampler = if cfg.method == Method::Flow {
        Sampler::Ode
    } else {
        Sampler::Sde
    };
    let mut rng = crate::vmc::Vmc::rng_for(cfg.seed ^ 0x5A5A_5A5A_5A5A_5A5A, usize::MAX / 2);
    let total = cfg.samples;
    let mh = super::flow::metropolis_hastings(
        &net,
        sampler,
        lattice,
        (m2, lambda),
        cfg.samples,
        cfg.batch.max(1),
        cfg.flow.steps,
        &mut rng,
        &mut |k| monitor.sampling(k, total),
        stop,
    )?;
    if mh.recorder.len() < 4 {
        return Err(Error::Input(
            "interrupted before 4 samples were drawn; nothing to report".into(),
        ));
    }
    write_samples(dir, lattice, &Configs::Field(mh.chain.clone()))?;
    write_log_weights(dir, &mh.log_w)?;
    let a = analyse(&mh.recorder);
    let mut rep = independence_report(
        problem,
        cfg,
        (&a, &mh.proposals),
        (mh.acceptance, mh.seconds, mh.complete),
        &mh.log_w,
        0,
        "train longer, or compare with --method hmc",
    );
    rep.free_energy_bound = last
        .filter(|s| s.free_energy.is_finite())
        .map(|s| Estimate::new(s.free_energy, s.free_energy_error));
    rep.training_seconds = training_seconds;
    rep.training_iterations = m.iter;
    let mut rng = crate::vmc::Vmc::rng_for(cfg.seed ^ 0x2F2F_2F2F, usize::MAX / 3);
    rep.flow = Some(super::flow::flow_report(
        &net,
        cfg.flow.steps,
        &mh.chain,
        &mut rng,
    )?);
    if let Some(w) = rep
        .flow
        .as_ref()
        .and_then(|f| ode_warning(cfg.method, f.ode_logq_error, cfg.flow.steps))
    {
        rep.warnings.push(w);
    }
    Ok(Outcome::Done(Box::new(rep)))
}

/// Largest RMS integration error of the ODE's `log q` (nats, by step halving) below which the
/// flow's Metropolis-Hastings and importance weights are reported without a warning.
const MAX_ODE_LOGQ_ERROR: f64 = 0.05;

/// The ODE sampler's `log q` is the density of the exact flow, not of the RK4 map that made
/// the sample; MH and importance weights are exact only up to that difference, which step
/// halving estimates. Above `MAX_ODE_LOGQ_ERROR` (0.05) the report says so (the reverse SDE's path
/// weights have no such error).
pub fn ode_warning(method: Method, logq_error: f64, steps: usize) -> Option<String> {
    let accurate = logq_error.is_finite() && logq_error <= MAX_ODE_LOGQ_ERROR;
    (method == Method::Flow && !accurate).then(|| {
        format!(
            "the ODE's log q changes by {logq_error:.3} nats (RMS) when its {steps} steps are \
             halved: Metropolis-Hastings and importance weights are exact only up to that \
             integration error, so averages can be biased; raise --steps until it is below \
             {MAX_ODE_LOGQ_ERROR}, and compare with --method hmc"
        )
    })
}

/// The default run directory `runs/NAME-METHOD-sSEED`.
pub fn default_dir(problem: &str, method: Method, seed: u64) -> PathBuf {
    let name = Path::new(problem)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    PathBuf::from(format!("runs/{name}-{}-s{seed}", method.name()))
}

#[cfg(test)]
mod tests {
    use super::{chain_warnings, few_independent_warning, pareto_warning};

    #[test]
    fn packed_words_come_back() {
        let words = [0, 1, u64::MAX, 0x8000_0000_0000_0001, 0xDEAD_BEEF_0123_4567];
        let v: Vec<f64> = super::words_as_f64(&words).collect();
        assert_eq!(v.len(), 10);
        assert_eq!(super::words_from_f64(&v), words);
    }

    const ADVICE: &str = "add local sweeps (--local-every 10)";

    #[test]
    fn model_chains_that_rarely_move_are_flagged() {
        // 30% acceptance and 40% ESS over 10,000 proposals: nothing to say.
        assert!(chain_warnings(0.3, 0.4, 10_000, 0, ADVICE).is_empty());
        // 50 accepted proposals: flagged, and the advice depends on the local sweeps.
        let w = chain_warnings(0.005, 0.4, 10_000, 0, ADVICE);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("50 of 10000 accepted") && w[0].contains("--local-every"));
        let w = chain_warnings(0.005, 0.4, 10_000, 10, ADVICE);
        assert!(w[0].contains("local sweeps (one every 10"), "{w:?}");
        assert!(w[0].contains("adds little"), "{w:?}");
        // With local sweeps, a tiny importance-weight ESS says the error bars may be too small.
        let w = chain_warnings(0.09, 0.001, 5_000, 10, ADVICE);
        assert!(
            w[0].contains("5 samples") && w[0].contains("may be too small"),
            "{w:?}"
        );
        // A tiny ESS alone is flagged too.
        assert_eq!(chain_warnings(0.3, 0.005, 10_000, 0, ADVICE).len(), 1);
    }

    #[test]
    fn heavy_tailed_weights_are_flagged() {
        assert!(pareto_warning(None, 10_000, 0).is_none());
        assert!(pareto_warning(Some(0.69), 10_000, 0).is_none());
        let w = pareto_warning(Some(0.85), 10_000, 0).expect("flagged");
        assert!(
            w.contains("k = 0.85 above 0.70") && w.contains("not trustworthy"),
            "{w}"
        );
        let w = pareto_warning(Some(0.85), 10_000, 2).expect("flagged");
        assert!(w.contains("may be too small"), "{w}");
        // 100 weights: the threshold is 1 - 1/log10(100) = 0.5.
        assert!(pareto_warning(Some(0.55), 100, 0).is_some());
    }

    #[test]
    fn chains_with_few_independent_samples_are_flagged() {
        // 5,000 steps with tau_int 56: about 45 independent samples.
        let w = few_independent_warning(5000, 56.0).expect("flagged");
        assert!(
            w.contains("about 45 independent") && w.contains("--samples"),
            "{w}"
        );
        // 20,000 sweeps with tau_int 34.6 (Metropolis on 32x32): 289, fine.
        assert!(few_independent_warning(20_000, 34.6).is_none());
        assert!(few_independent_warning(200, 0.5).is_none());
        assert!(few_independent_warning(199, 1.0).is_some());
    }

    #[test]
    fn an_inaccurate_ode_density_is_flagged() {
        use super::{ode_warning, Method};
        assert!(ode_warning(Method::Flow, 0.01, 16).is_none());
        let w = ode_warning(Method::Flow, 3.5, 16).expect("flagged");
        assert!(w.contains("3.500 nats") && w.contains("--steps"), "{w}");
        assert!(ode_warning(Method::Flow, f64::NAN, 16).is_some());
        // Path weights of the reverse SDE do not depend on the ODE's accuracy.
        assert!(ode_warning(Method::Diffusion, 3.5, 16).is_none());
    }
}
