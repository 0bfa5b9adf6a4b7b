//! `rgdiff sample`: one sampling run in its directory.
//!
//! ```text
//! DIR/config.json        the resolved configuration (problem file, method, model, training, seed)
//! DIR/trace.csv          (method model) one row per training iteration
//! DIR/checkpoint/        (method model) model.safetensors, adam.safetensors, state.json
//! DIR/samples.npy        the measured configurations: int8 spins (+1/-1) or float64 fields,
//!                        shape (samples, Ly, Lx) on a square, (samples, N) on a chain
//! DIR/observables.json   estimates as {"mean": .., "error": ..} (see [`SampleReport`])
//! ```
//! Files are written through a temporary file and a rename; checkpoints through
//! [`crate::run::write_checkpoint`]. `--resume DIR` continues the training of a model run
//! from its checkpoint and then samples; a Markov-chain run is redone from its seed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::chain::{run_chain, ChainConfig, Configs, Method};
use super::exact::{ising_enumerate, ising_kaufman, ising_transfer_matrix};
use super::flow::{FlowConfig, FlowModel, FlowReport, FlowStats, FlowTrain, Sampler};
use super::observables::{analyse, Estimate, TwoPoint};
use super::theory::Theory;
use super::variational::{IsingModel, TrainConfig, TrainStats};
use crate::error::{Error, Result};
use crate::lattice::{Lattice, Shape};
use crate::model::ModelConfig;
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
    /// Options of the flow and diffusion methods (phi^4).
    #[serde(default)]
    pub flow: FlowConfig,
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
    /// Flow and diffusion methods: integration error, RG two-point functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowReport>,
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
    let problem = validate(cfg)?;
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
    let lattice = &problem.lattice;
    let mut report = match cfg.method {
        Method::Model => match run_model(cfg, &problem, dir, resume, stop_after, stop, monitor)? {
            Outcome::Done(r) => *r,
            paused => return Ok(paused),
        },
        Method::Flow | Method::Diffusion => {
            match run_flow(cfg, &problem, dir, resume, stop_after, stop, monitor)? {
                Outcome::Done(r) => *r,
                paused => return Ok(paused),
            }
        }
        _ => {
            let chain_cfg = ChainConfig {
                method: cfg.method,
                samples: cfg.samples,
                thermalise: cfg.thermalise,
                sweeps_per_sample: cfg.sweeps_per_sample,
                seed: cfg.seed,
            };
            let total = cfg.samples;
            let r = run_chain(
                lattice,
                &problem.theory,
                &chain_cfg,
                &mut |k| {
                    if k % 64 == 0 || k == total {
                        monitor.sampling(k, total)
                    }
                },
                stop,
            )?;
            if r.recorder.len() < 4 {
                return Err(Error::Input(
                    "interrupted before 4 samples were measured; nothing to report".into(),
                ));
            }
            write_samples(dir, lattice, &r.configs)?;
            let mut rep = report_from(
                &problem,
                cfg,
                &analyse(&r.recorder),
                r.acceptance,
                r.seconds,
            );
            rep.status = if r.complete {
                "finished"
            } else {
                "interrupted"
            }
            .into();
            rep.step_size = r.step;
            rep.leapfrog_steps = r.leapfrog_steps;
            rep
        }
    };
    report.exact = exact_values(lattice, &problem.theory);
    let json = serde_json::to_vec_pretty(&report).expect("report serialises");
    write_atomic(&dir.join("observables.json"), &json)?;
    Ok(Outcome::Done(Box::new(report)))
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
        estimates: a.estimates.clone(),
        tau_int: a.tau_int,
        tau_int_energy: a.tau_int_energy,
        acceptance,
        ess: None,
        log_z: None,
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
        flow: None,
    }
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
        Configs::Spins(s) => super::npy::write_i8(&path, &shape(s.len()), s),
        Configs::Field(f) => super::npy::write_f64(&path, &shape(f.len()), f),
    }
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
            let (lz, e, m2) = ising_transfer_matrix(lx, beta, j);
            out.insert("log_z".into(), lz);
            out.insert("energy_density".into(), e);
            out.insert("m2_density".into(), m2);
        } else {
            let (lz, e) = ising_kaufman(lx, beta, j);
            out.insert("log_z".into(), lz);
            out.insert("energy_density".into(), e);
        }
    }
    out
}

fn run_model(
    cfg: &SampleConfig,
    problem: &ClassicalProblem,
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
    let device = crate::run::device(&cfg.device)?;
    let mut m = IsingModel::new(
        lattice,
        (beta, j, h),
        schedule,
        cfg.model.clone(),
        &device,
        cfg.train.clone(),
    )?;
    let trace_path = dir.join("trace.csv");
    let mut seconds_before = 0.0;
    if resume {
        let ck = checkpoint_to_read(dir);
        let state_path = ck.join("state.json");
        if state_path.exists() {
            let text = fs::read_to_string(&state_path).map_err(|e| io_err(&state_path, e))?;
            let st: State = serde_json::from_str(&text).map_err(|e| io_err(&state_path, e))?;
            m.model.load(&ck.join("model.safetensors"))?;
            m.adam
                .load(m.model.params(), &ck.join("adam.safetensors"))?;
            m.adam.t = st.adam_t;
            m.iter = st.iter;
            seconds_before = st.seconds;
        }
        // Keep the trace rows before the checkpoint.
        let text = fs::read_to_string(&trace_path).unwrap_or_else(|_| TRACE_HEADER.into());
        let mut kept = String::from(TRACE_HEADER);
        for line in text.lines().skip(1) {
            let it = line.split(',').next().and_then(|v| v.parse::<usize>().ok());
            if it.is_some_and(|i| i < m.iter) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        write_atomic(&trace_path, kept.as_bytes())?;
    } else {
        write_atomic(&trace_path, TRACE_HEADER.as_bytes())?;
    }
    let mut trace = fs::OpenOptions::new()
        .append(true)
        .open(&trace_path)
        .map_err(|e| io_err(&trace_path, e))?;
    let t0 = Instant::now();
    let checkpoint = |m: &IsingModel, seconds: f64| {
        let st = State {
            iter: m.iter,
            adam_t: m.adam.t,
            seconds,
        };
        write_checkpoint(dir, |tmp| {
            m.model.save(&tmp.join("model.safetensors"))?;
            m.adam
                .save(m.model.params(), &tmp.join("adam.safetensors"))?;
            write_atomic(
                &tmp.join("state.json"),
                &serde_json::to_vec(&st).expect("state"),
            )
        })
    };
    let mut last: Option<TrainStats> = None;
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
        if m.iter.is_multiple_of(cfg.checkpoint_every.max(1)) {
            checkpoint(&m, seconds_before + t0.elapsed().as_secs_f64())?;
        }
    }
    let training_seconds = seconds_before + t0.elapsed().as_secs_f64();
    checkpoint(&m, training_seconds)?;
    // Sampling draws from its own generator, distinct from every training iteration's.
    let mut rng = crate::vmc::Vmc::rng_for(cfg.seed ^ 0x5A5A_5A5A_5A5A_5A5A, usize::MAX / 2);
    let total = cfg.samples;
    let mh = m.metropolis_hastings(
        lattice,
        cfg.samples,
        cfg.batch.max(1),
        cfg.local_every,
        &mut rng,
        &mut |k| monitor.sampling(k, total),
        stop,
    )?;
    if mh.recorder.len() < 4 {
        return Err(Error::Input(
            "interrupted before 4 samples were drawn; nothing to report".into(),
        ));
    }
    write_samples(dir, lattice, &Configs::Spins(mh.spins.clone()))?;
    let a = analyse(&mh.recorder);
    let mut rep = report_from(problem, cfg, &a, mh.acceptance, mh.seconds);
    rep.status = if mh.complete {
        "finished"
    } else {
        "interrupted"
    }
    .into();
    let (ess, ess_err) = stats::ess_with_error(&mh.log_w, 50);
    rep.ess = Some(Estimate::new(ess, ess_err));
    let (lz, lz_err) = stats::log_mean_exp(&mh.log_w);
    rep.log_z = Some(Estimate::new(lz, lz_err));
    rep.free_energy_bound = last.map(|s| Estimate::new(s.free_energy, s.free_energy_error));
    rep.training_seconds = training_seconds;
    rep.training_iterations = m.iter;
    Ok(Outcome::Done(Box::new(rep)))
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
    let a = analyse(&mh.recorder);
    let mut rep = report_from(problem, cfg, &a, mh.acceptance, mh.seconds);
    rep.status = if mh.complete {
        "finished"
    } else {
        "interrupted"
    }
    .into();
    let (ess, ess_err) = stats::ess_with_error(&mh.log_w, 50);
    rep.ess = Some(Estimate::new(ess, ess_err));
    let (lz, lz_err) = stats::log_mean_exp(&mh.log_w);
    rep.log_z = Some(Estimate::new(lz, lz_err));
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
    Ok(Outcome::Done(Box::new(rep)))
}

/// The default run directory `runs/NAME-METHOD-sSEED`.
pub fn default_dir(problem: &str, method: Method, seed: u64) -> PathBuf {
    let name = Path::new(problem)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    PathBuf::from(format!("runs/{name}-{}-s{seed}", method.name()))
}
