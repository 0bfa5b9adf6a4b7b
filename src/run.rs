//! Run directories for the variational solver: the resolved configuration, a per-iteration
//! trace, atomic checkpoints, resumption and the final summary.
//!
//! ```text
//! DIR/config.json        everything needed to rebuild the run (problem file, scheme, model, VMC)
//! DIR/trace.csv          one row per iteration
//! DIR/checkpoint/        model.safetensors, adam.safetensors, state.json (last good state),
//!                        sr_direction.safetensors (the SR momentum's last direction, if any)
//! DIR/summary.json       final energy with error, exact energy and relative error when known
//! ```
//! With several MPI ranks ([`crate::parallel`]) only rank 0 writes the directory; every rank
//! reads it on `--resume` (a file system shared by the ranks, as on clusters), and the ranks
//! check at the start that they hold the same parameters.
//!
//! A checkpoint is written into `checkpoint.tmp/` and then swapped in by renames, so an
//! interrupted write never leaves a half-written checkpoint; `summary.json` and the trace are
//! written to a temporary file and renamed.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exact::{self, ExactOptions};
use crate::model::{MaskedDiffusion, ModelConfig, SymmetryGroup};
use crate::operator::Hamiltonian;
use crate::parallel::{self, Communicator};
use crate::rg::Schedule;
use crate::spec;
use crate::vmc::{IterationStats, Vmc, VmcConfig};

/// Everything that defines a ground-state run (saved as `config.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    pub problem: String,
    pub scheme: String,
    pub model: ModelConfig,
    pub vmc: VmcConfig,
    pub device: String,
    /// Samples of the final energy estimate.
    pub eval_samples: usize,
    /// Iterations between checkpoints.
    pub checkpoint_every: usize,
    /// Compute the exact energy by diagonalization even when it is expensive.
    pub exact: bool,
    /// Group the amplitudes are averaged over for the final estimate only (the network is
    /// trained without it): a symmetrization after training, see [`crate::model::symmetry`].
    #[serde(default)]
    pub final_symmetry: Option<String>,
}

/// The final result of a run (`summary.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub status: String,
    pub problem: String,
    pub scheme: String,
    pub iterations: usize,
    pub energy: f64,
    pub energy_error: f64,
    pub variance: f64,
    pub v_score: f64,
    pub exact_energy: Option<f64>,
    pub relative_error: Option<f64>,
    pub seconds: f64,
    pub samples_per_second: f64,
    pub seconds_per_iteration: f64,
    pub n_params: usize,
    pub device: String,
    /// MPI ranks of the last invocation (1 without MPI).
    #[serde(default = "one")]
    pub ranks: usize,
    /// Mean seconds per iteration spent in MPI collectives (0 for one process).
    #[serde(default)]
    pub comm_seconds_per_iteration: f64,
    /// The part of `comm_seconds_per_iteration` spent waiting for the slowest rank (the rest
    /// moved data).
    #[serde(default)]
    pub wait_seconds_per_iteration: f64,
    /// The group the final state's amplitudes are averaged over (`--symmetry`, or
    /// `--final-symmetry`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetry: Option<String>,
    /// With `--final-symmetry`: the trained network's own energy and its error (the same
    /// number of samples), before the symmetrization that `energy` includes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_energy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_energy_error: Option<f64>,
    /// `p` of the most probable of the final samples (near 1: the state is nearly one
    /// configuration; see [`crate::vmc::concentration`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_max: Option<f64>,
    /// What the numbers above should be read with (a collapse onto one configuration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Summary {
    /// True when the final state has collapsed onto one configuration.
    pub fn collapsed(&self) -> bool {
        self.warnings
            .iter()
            .any(|w| w.starts_with(crate::vmc::concentration::COLLAPSED))
    }
}

fn one() -> usize {
    1
}

fn mean_or_zero(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    iter: usize,
    adam_t: u64,
    seconds: f64,
}

/// An I/O error naming `path`.
/// The checkpoint file of the SR momentum's last direction ([`Vmc::sr_direction`]).
const SR_DIRECTION_FILE: &str = "sr_direction.safetensors";

/// Reads the SR direction written by [`Run::checkpoint`].
fn load_sr_direction(path: &Path, device: &Device) -> Result<candle_core::Tensor> {
    let map = candle_core::safetensors::load(path, device).map_err(|e| io_err(path, e))?;
    map.get("direction")
        .cloned()
        .ok_or_else(|| io_err(path, "`direction` missing"))
}

pub fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        file: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// Writes a checkpoint of the run in `dir`: `write` fills `DIR/checkpoint.tmp/`, which is
/// then swapped in for `DIR/checkpoint/` by renames (the old one is kept as
/// `checkpoint.old/` until the new one is in place), so an interruption never leaves a
/// half-written checkpoint.
pub fn write_checkpoint(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    write(&tmp)?;
    let cur = dir.join("checkpoint");
    let old = dir.join("checkpoint.old");
    let _ = fs::remove_dir_all(&old);
    if cur.exists() {
        fs::rename(&cur, &old).map_err(|e| io_err(&cur, e))?;
    }
    fs::rename(&tmp, &cur).map_err(|e| io_err(&cur, e))?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

/// The checkpoint directory to resume from: `DIR/checkpoint/`, or `DIR/checkpoint.old/` when
/// an interruption fell between the two renames of [`write_checkpoint`].
pub fn checkpoint_to_read(dir: &Path) -> PathBuf {
    let ck = dir.join("checkpoint");
    if !ck.exists() && dir.join("checkpoint.old").exists() {
        dir.join("checkpoint.old")
    } else {
        ck
    }
}

/// Parses `cpu`, `cuda` or `cuda:i`.
pub fn device(name: &str) -> Result<Device> {
    let cuda = |i: usize| {
        Device::new_cuda(i).map_err(|e| {
            Error::Input(format!(
                "--device {name}: {e} (build with `--features cuda` on a machine with CUDA)"
            ))
        })
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        _ => match name.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => cuda(i),
            None => Err(Error::Input(format!(
                "--device {name}: expected cpu, cuda or cuda:N"
            ))),
        },
    }
}

const TRACE_HEADER: &str =
    "iter,energy,energy_error,variance,v_score,entropy,temperature,lr,seconds,relative_error,comm_seconds,wait_seconds,ess\n";

/// Columns of the trace before `ess` was added (rows of older runs, padded when resumed).
const OLD_TRACE_COLUMNS: usize = 12;

fn trace_row(s: &IterationStats, exact: Option<f64>) -> String {
    let rel = exact.map_or(String::new(), |e| format!("{:e}", (s.energy - e) / e.abs()));
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        s.iter,
        s.energy,
        s.error,
        s.variance,
        s.v_score,
        s.entropy,
        s.temperature,
        s.lr,
        s.seconds,
        rel,
        s.comm_seconds,
        s.wait_seconds,
        s.ess
    )
}

/// A ground-state run in its directory.
pub struct Run<'a> {
    pub dir: PathBuf,
    pub cfg: RunConfig,
    pub vmc: Vmc<'a>,
    pub exact_energy: Option<f64>,
    seconds_before: f64,
    /// Rank 0 writes the run directory; the others only compute.
    root: bool,
}

/// Observer of a run's progress (the CLI's progress bar).
pub trait Monitor {
    fn iteration(&mut self, _stats: &IterationStats, _exact: Option<f64>) {}
    fn message(&mut self, _text: &str) {}
}

impl Monitor for () {}

/// Builds the model, the Hamiltonian and the exact reference of a configuration, after checking
/// its VMC options ([`VmcConfig::validate`](crate::vmc::VmcConfig::validate)).
pub fn prepare(
    cfg: &RunConfig,
) -> Result<(spec::Problem, Hamiltonian, Option<f64>, MaskedDiffusion)> {
    cfg.vmc.validate()?;
    let problem = spec::load(Path::new(&cfg.problem))?;
    let lattice = &problem.lattice;
    let hilbert = problem.model.hilbert(lattice);
    let h = problem.model.hamiltonian(lattice);
    // ED when asked for, or when it is cheap (at most 2^20 states).
    let exact_energy = if cfg.exact || hilbert.log2_dim() <= 20.0 {
        Some(exact::solve(lattice, &problem.model, &ExactOptions::default())?.energy)
    } else {
        None
    };
    if cfg.model.sz.is_some()
        && matches!(&h, Hamiltonian::Local(_))
        && hilbert.local == crate::hilbert::LocalSpace::Spin
    {
        return Err(Error::Input(format!(
            "--sz: {} has {} spins; the S^z restriction needs the Pauli form of at most {} spins",
            cfg.problem,
            hilbert.n_sites,
            crate::operator::MAX_PAULI_SITES
        )));
    }
    if cfg.model.sz.is_some() && !matches!(&h, Hamiltonian::Pauli(p) if p.conserves_sz()) {
        return Err(Error::Input(format!(
            "--sz: the Hamiltonian of {} does not conserve S^z, so its ground state has no fixed S^z",
            cfg.problem
        )));
    }
    if let Some(spec) = &cfg.final_symmetry {
        // Checked now rather than after the training.
        SymmetryGroup::parse(spec, lattice, hilbert.local_dim(), cfg.model.sz)?;
    }
    if cfg.model.symmetry.is_some() && cfg.vmc.temper != 1.0 {
        return Err(Error::Input(format!(
            "--temper {} with --symmetry: a symmetrized model draws exact samples only",
            cfg.vmc.temper
        )));
    }
    let schedule = Schedule::parse(&cfg.scheme, lattice)?;
    let dev = device(&cfg.device)?;
    let model = MaskedDiffusion::new(
        lattice,
        hilbert.local_dim(),
        schedule,
        cfg.model.clone(),
        &dev,
        DType::F32,
        cfg.vmc.seed,
    )?;
    Ok((problem, h, exact_energy, model))
}

impl<'a> Run<'a> {
    /// Starts a new run in `dir` (which must not hold a run yet).
    pub fn create(
        dir: &Path,
        cfg: RunConfig,
        h: &'a Hamiltonian,
        model: MaskedDiffusion,
        exact_energy: Option<f64>,
    ) -> Result<Self> {
        Self::create_with(parallel::single(), dir, cfg, h, model, exact_energy)
    }

    /// [`Run::create`] shared by the ranks of `comm` (rank 0 writes the directory).
    pub fn create_with(
        comm: Arc<dyn Communicator>,
        dir: &Path,
        cfg: RunConfig,
        h: &'a Hamiltonian,
        model: MaskedDiffusion,
        exact_energy: Option<f64>,
    ) -> Result<Self> {
        let root = comm.rank() == 0;
        let vmc = Vmc::new(model, h.as_operator(), cfg.vmc.clone())?.with_comm(comm)?;
        if !root {
            return Ok(Run {
                dir: dir.to_path_buf(),
                cfg,
                vmc,
                exact_energy,
                seconds_before: 0.0,
                root,
            });
        }
        if dir.join("config.json").exists() {
            return Err(Error::Input(format!(
                "{} already holds a run; continue it with --resume {0} or choose another --out",
                dir.display()
            )));
        }
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let json = serde_json::to_vec_pretty(&cfg).expect("config serialises");
        write_atomic(&dir.join("config.json"), &json)?;
        write_atomic(&dir.join("trace.csv"), TRACE_HEADER.as_bytes())?;
        Ok(Run {
            dir: dir.to_path_buf(),
            cfg,
            vmc,
            exact_energy,
            seconds_before: 0.0,
            root,
        })
    }

    /// Reads the configuration of the run in `dir`.
    pub fn read_config(dir: &Path) -> Result<RunConfig> {
        let path = dir.join("config.json");
        let text = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| io_err(&path, format!("not a run configuration: {e}")))
    }

    /// Continues the run in `dir` from its last checkpoint (the trace is cut back to it).
    pub fn resume(
        dir: &Path,
        cfg: RunConfig,
        h: &'a Hamiltonian,
        model: MaskedDiffusion,
        exact_energy: Option<f64>,
    ) -> Result<Self> {
        Self::resume_with(parallel::single(), dir, cfg, h, model, exact_energy)
    }

    /// [`Run::resume`] shared by the ranks of `comm`: every rank reads the checkpoint, rank 0
    /// rewrites the trace. Any number of ranks can resume a run (the chunks are in its
    /// configuration).
    pub fn resume_with(
        comm: Arc<dyn Communicator>,
        dir: &Path,
        cfg: RunConfig,
        h: &'a Hamiltonian,
        model: MaskedDiffusion,
        exact_energy: Option<f64>,
    ) -> Result<Self> {
        let root = comm.rank() == 0;
        let ck = checkpoint_to_read(dir);
        let mut vmc = Vmc::new(model, h.as_operator(), cfg.vmc.clone())?.with_comm(comm)?;
        let state_path = ck.join("state.json");
        let (iter, seconds) = if state_path.exists() {
            let text = fs::read_to_string(&state_path).map_err(|e| io_err(&state_path, e))?;
            let st: State = serde_json::from_str(&text).map_err(|e| io_err(&state_path, e))?;
            vmc.model.load(&ck.join("model.safetensors"))?;
            vmc.adam
                .load(vmc.model.params(), &ck.join("adam.safetensors"))?;
            vmc.adam.t = st.adam_t;
            vmc.iter = st.iter;
            let dir_path = ck.join(SR_DIRECTION_FILE);
            if dir_path.exists() {
                vmc.sr_direction = Some(load_sr_direction(&dir_path, vmc.model.device())?);
            }
            (st.iter, st.seconds)
        } else {
            (0, 0.0)
        };
        if !root {
            return Ok(Run {
                dir: dir.to_path_buf(),
                cfg,
                vmc,
                exact_energy,
                seconds_before: seconds,
                root,
            });
        }
        // The configuration as continued (--iters, --final-symmetry, --eval-samples may change).
        let json = serde_json::to_vec_pretty(&cfg).expect("config serialises");
        write_atomic(&dir.join("config.json"), &json)?;
        // Keep the trace rows before the checkpoint.
        let trace = dir.join("trace.csv");
        let text = fs::read_to_string(&trace).unwrap_or_else(|_| TRACE_HEADER.to_string());
        let mut kept = String::from(TRACE_HEADER);
        for line in text.lines().skip(1) {
            if line
                .split(',')
                .next()
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|i| i < iter)
            {
                kept.push_str(line);
                if line.split(',').count() == OLD_TRACE_COLUMNS {
                    kept.push(',');
                }
                kept.push('\n');
            }
        }
        write_atomic(&trace, kept.as_bytes())?;
        Ok(Run {
            dir: dir.to_path_buf(),
            cfg,
            vmc,
            exact_energy,
            seconds_before: seconds,
            root,
        })
    }

    /// Writes the current state as the checkpoint (atomically; rank 0 only).
    pub fn checkpoint(&self, seconds: f64) -> Result<()> {
        if !self.root {
            return Ok(());
        }
        let st = State {
            iter: self.vmc.iter,
            adam_t: self.vmc.adam.t,
            seconds,
        };
        write_checkpoint(&self.dir, |tmp| {
            self.vmc.model.save(&tmp.join("model.safetensors"))?;
            self.vmc
                .adam
                .save(self.vmc.model.params(), &tmp.join("adam.safetensors"))?;
            if let Some(d) = &self.vmc.sr_direction {
                let path = tmp.join(SR_DIRECTION_FILE);
                let map = HashMap::from([("direction".to_string(), d.clone())]);
                candle_core::safetensors::save(&map, &path).map_err(|e| io_err(&path, e))?;
            }
            write_atomic(
                &tmp.join("state.json"),
                &serde_json::to_vec(&st).expect("state"),
            )
        })
    }

    /// Runs the remaining iterations, checkpointing as configured; stops early (with a valid
    /// checkpoint) when `stop` is set, and on a non-finite energy keeps the last good
    /// checkpoint and reports it. Writes `summary.json`.
    ///
    /// `max_this_run` limits the iterations of this invocation (for batch queues with time
    /// limits): the run then stops with a checkpoint, as if interrupted.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        max_this_run: Option<usize>,
        monitor: &mut dyn Monitor,
    ) -> Result<Summary> {
        let t0 = Instant::now();
        let start = self.vmc.iter;
        let trace_path = self.dir.join("trace.csv");
        let mut trace = if self.root {
            Some(
                fs::OpenOptions::new()
                    .append(true)
                    .open(&trace_path)
                    .map_err(|e| io_err(&trace_path, e))?,
            )
        } else {
            None
        };
        if self.vmc.comm.size() > 1 {
            self.vmc.check_ranks_agree()?;
        }
        let mut status = "finished";
        let mut collapse_reported = false;
        let mut sps = Vec::new();
        let mut comm_seconds = Vec::new();
        let mut wait_seconds = Vec::new();
        while self.vmc.iter < self.cfg.vmc.iters {
            if parallel::any(self.vmc.comm.as_ref(), stop.load(Ordering::SeqCst))
                || max_this_run.is_some_and(|m| self.vmc.iter - start >= m)
            {
                status = "interrupted";
                break;
            }
            parallel::test_fault(self.vmc.comm.as_ref(), self.vmc.iter);
            let stats = match self.vmc.step() {
                Ok(s) => s,
                Err(Error::Diverged(e)) => {
                    let last = self.last_checkpoint_iter();
                    self.write_summary("diverged", None, (&[], &[]), t0)?;
                    return Err(Error::Diverged(format!(
                        "{e}; the last good checkpoint (iteration {last}) is kept in {}",
                        self.dir.join("checkpoint").display()
                    )));
                }
                Err(e) => return Err(e),
            };
            if let Some(trace) = trace.as_mut() {
                trace
                    .write_all(trace_row(&stats, self.exact_energy).as_bytes())
                    .map_err(|e| io_err(&trace_path, e))?;
            }
            sps.push(stats.samples_per_second);
            comm_seconds.push(stats.comm_seconds);
            wait_seconds.push(stats.wait_seconds);
            monitor.iteration(&stats, self.exact_energy);
            if let (Some(w), false) = (&stats.collapse, collapse_reported) {
                monitor.message(&format!("warning: iteration {}: {w}", stats.iter));
                collapse_reported = true;
            }
            if self
                .vmc
                .iter
                .is_multiple_of(self.cfg.checkpoint_every.max(1))
            {
                self.checkpoint(self.seconds_before + t0.elapsed().as_secs_f64())?;
            }
        }
        self.checkpoint(self.seconds_before + t0.elapsed().as_secs_f64())?;
        if status == "interrupted" {
            monitor.message(&format!(
                "stopped at iteration {}; checkpoint written, continue with --resume {}",
                self.vmc.iter,
                self.dir.display()
            ));
        }
        let summary = self.write_summary(status, Some(&sps), (&comm_seconds, &wait_seconds), t0)?;
        Ok(summary)
    }

    fn last_checkpoint_iter(&self) -> usize {
        fs::read_to_string(self.dir.join("checkpoint").join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<State>(&t).ok())
            .map_or(0, |s| s.iter)
    }

    /// Final estimate from `eval_samples` fresh samples and `summary.json` (written by rank
    /// 0; every rank returns the same summary).
    fn write_summary(
        &mut self,
        status: &str,
        sps: Option<&[f64]>,
        (comm_seconds, wait_seconds): (&[f64], &[f64]),
        t0: Instant,
    ) -> Result<Summary> {
        let b = self.cfg.eval_samples.max(2);
        let n = self.vmc.model.n_sites();
        let mut trained = None;
        let (mut p_max, mut warnings) = (None, Vec::new());
        let (energy, error, variance, v_score) = if status == "diverged" {
            (f64::NAN, f64::NAN, f64::NAN, f64::NAN)
        } else {
            if let Some(spec) = &self.cfg.final_symmetry {
                let (_, _, eloc) = self.vmc.sample_energies_parallel(b, usize::MAX / 2)?;
                let (e, _, err, _, _) = crate::vmc::driver::energy_stats(&eloc, n);
                trained = Some((e, err));
                let problem = spec::load(Path::new(&self.cfg.problem))?;
                let d = problem.model.hilbert(&problem.lattice).local_dim();
                let group = SymmetryGroup::parse(spec, &problem.lattice, d, self.cfg.model.sz)?;
                self.vmc.model.set_symmetry(group);
            }
            let (s, log_p, eloc) = self.vmc.sample_energies_parallel(b, usize::MAX / 2)?;
            let (e, _, err, var, vs) = crate::vmc::driver::energy_stats(&eloc, n);
            let (p, collapse) = self.vmc.collapse_check(&s, &log_p, e, var)?;
            p_max = Some(p);
            warnings.extend(collapse);
            (e, err, var, vs)
        };
        let seconds = self.seconds_before + t0.elapsed().as_secs_f64();
        let sps = sps.unwrap_or(&[]);
        let mean_sps = if sps.is_empty() {
            // No iteration in this invocation (a finished run re-evaluated with --resume):
            // the throughput of the iterations that made the run, from its last summary.
            fs::read_to_string(self.dir.join("summary.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Summary>(&t).ok())
                .map_or(0.0, |s| s.samples_per_second)
        } else {
            sps.len() as f64 / sps.iter().map(|s| 1.0 / s).sum::<f64>()
        };
        let summary = Summary {
            status: status.to_string(),
            problem: self.cfg.problem.clone(),
            scheme: self.cfg.scheme.clone(),
            iterations: self.vmc.iter,
            energy,
            energy_error: error,
            variance,
            v_score,
            exact_energy: self.exact_energy,
            relative_error: self.exact_energy.map(|x| (energy - x) / x.abs()),
            seconds,
            samples_per_second: mean_sps,
            seconds_per_iteration: if mean_sps > 0.0 {
                self.cfg.vmc.samples as f64 / mean_sps
            } else {
                0.0
            },
            n_params: self.vmc.model.n_params(),
            device: self.cfg.device.clone(),
            ranks: self.vmc.comm.size(),
            comm_seconds_per_iteration: mean_or_zero(comm_seconds),
            wait_seconds_per_iteration: mean_or_zero(wait_seconds),
            symmetry: self.vmc.model.symmetry().map(|g| g.name().to_string()),
            trained_energy: trained.map(|t| t.0),
            trained_energy_error: trained.map(|t| t.1),
            p_max,
            warnings,
        };
        if !self.root {
            return Ok(summary);
        }
        let json = serde_json::to_vec_pretty(&summary).expect("summary serialises");
        write_atomic(&self.dir.join("summary.json"), &json)?;
        Ok(summary)
    }
}
