//! The `rgdiff` command line: parses arguments, calls the library, prints results.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::sync::Arc;

use rgdiff::parallel::Communicator;

use rgdiff::exact::{self, ExactOptions, Sector, SectorChoice};
use rgdiff::report;
use rgdiff::spec;

/// Tensor code allocates and frees many large buffers per iteration; glibc's allocator maps
/// and unmaps each one (page faults and TLB shootdowns took half the time of a VMC run),
/// mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 2's `mi_option_t` (mimalloc.h; libmimalloc-sys does not
/// name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory mapped instead of returning it to the kernel after 10 ms: a VMC
/// iteration frees and reallocates the same large tensor buffers, and the kernel zeroing
/// fresh pages for them was a fifth of the run time. Peak memory is unchanged.
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[derive(Parser)]
#[command(
    name = "rgdiff",
    version,
    about = "Renormalizing diffusion models for lattice ground states and field sampling, with exact solvers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exact ground state (and low levels) of a Hamiltonian file by Lanczos.
    Exact {
        /// Hamiltonian file (TOML), e.g. hamiltonians/heisenberg_chain_16.toml
        file: PathBuf,
        /// Symmetry sector: auto, full, or e.g. sz=0 | sz=1/2 | sz=0,k=8,p=+1 | kx=0,ky=0
        #[arg(long, default_value = "auto")]
        sector: String,
        /// Number of distinct lowest levels to converge (2 or more reports the gap).
        #[arg(long, default_value_t = 1)]
        levels: usize,
        /// Relative convergence tolerance of the energies.
        #[arg(long, default_value_t = 1e-10)]
        tol: f64,
        /// Seed of the Lanczos start vector.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Memory limit in GiB (default: the available memory).
        #[arg(long)]
        memory: Option<f64>,
        /// Print one JSON object on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Variational ground state with the RG diffusion wavefunction (VMC).
    GroundState(Box<GroundStateArgs>),
    /// Benchmark VMC against exact energies: tables (CSV, Markdown, JSON) and plots (PNG, SVG).
    Bench(Box<BenchArgs>),
    /// Sample a classical lattice theory (Ising, phi^4) with the RG masked diffusion
    /// (exact by Metropolis-Hastings) or a Markov-chain baseline.
    Sample(Box<SampleArgs>),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Hamiltonian files (TOML); or use --suite.
    files: Vec<PathBuf>,
    /// quick (TFIM and Heisenberg chains of 16, about 5 min on 2 cores) | standard (every
    /// shipped quantum Hamiltonian) | scaling (chains of 8 to 64 sites, squares 4x4 to 8x8)
    /// | tiny (chains of 6, seconds)
    #[arg(long)]
    suite: Option<String>,
    /// Schedules to run, comma-separated: rg, rg-colors=K, autoregressive; a suffix +causal
    /// takes the step-causal network (e.g. autoregressive+causal)
    #[arg(long, default_value = "rg,autoregressive")]
    schemes: String,
    /// Wall-clock seconds per VMC run (default: quick 60, standard 120, scaling 60, tiny 20,
    /// files 60).
    #[arg(long)]
    budget: Option<f64>,
    /// Most iterations per run (the budget usually stops earlier).
    #[arg(long, default_value_t = 300)]
    iters: usize,
    /// Samples per iteration.
    #[arg(long, default_value_t = 1024)]
    samples: usize,
    /// Initial learning rate of Adam (cosine decay to a tenth).
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    /// cpu | cuda | cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seed of parameters and samples.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Chunks of each batch, each with its own random stream, run in parallel on the CPU
    /// (as ground-state --chunks: 2 uses two cores far better than 1). Results depend on it.
    #[arg(long, default_value_t = 1)]
    chunks: usize,
    /// Output directory (default runs/bench-SUITE, or runs/bench for files).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace run directories of an earlier bench in the output directory.
    #[arg(long)]
    overwrite: bool,
    /// Only redraw the plots of the bench in this directory (from its bench.json and traces).
    #[arg(long)]
    replot: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SampleArgs {
    /// Theory file (TOML, kind = "ising" or "phi4-classical"); not needed with --resume.
    file: Option<PathBuf>,
    /// model | flow | diffusion | metropolis | wolff | hmc (default: model for Ising, hmc for
    /// phi^4)
    #[arg(long)]
    method: Option<String>,
    /// RG scheme: rg | rg-colors=K | autoregressive (model, default rg); carosso | polchinski
    /// (flow, diffusion, default carosso)
    #[arg(long)]
    scheme: Option<String>,
    /// Flow/diffusion: m0^2 of the Gaussian scheme (zero-mode regulator).
    #[arg(long, default_value_t = 1.0)]
    m0sq: f64,
    /// Flow/diffusion: Omega of the carosso scheme.
    #[arg(long, default_value_t = 1.0)]
    omega: f64,
    /// Flow/diffusion: m^2 of the polchinski reference propagator (default: --ref-m2).
    #[arg(long)]
    rg_m2: Option<f64>,
    /// Flow/diffusion: final RG time T (the IR end; default 3 for carosso, 1 for polchinski,
    /// whose UV modes keep contracting at rate (p^2 + m0^2)/2, a stiff ODE for large T).
    #[arg(long)]
    t_max: Option<f64>,
    /// Flow/diffusion: mass of the known Gaussian part (default: the Hartree mass).
    #[arg(long)]
    ref_m2: Option<f64>,
    /// Flow/diffusion: feature channels (the linear one plus sines).
    #[arg(long, default_value_t = 6)]
    channels: usize,
    /// Flow/diffusion: Chebyshev polynomials in t per kernel value.
    #[arg(long, default_value_t = 4)]
    time_basis: usize,
    /// Flow/diffusion: RK4 steps of the ODE, steps of the reverse SDE.
    #[arg(long, default_value_t = 16)]
    steps: usize,
    /// Flow/diffusion training objective: kl | dsm | both (default: kl; dsm with --data).
    #[arg(long)]
    objective: Option<String>,
    /// Flow/diffusion: start from the trained model of this run directory (same lattice and
    /// network options), e.g. to sample a flow-trained model with --method diffusion.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Flow/diffusion: float64 .npy configurations (e.g. samples.npy of an HMC run) for
    /// denoising score matching.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training iterations of the model (default 100, 2000 with --network table; with
    /// --resume: the new total).
    #[arg(long)]
    train_iters: Option<usize>,
    /// Samples per training iteration (default 128; 512 with --network table).
    #[arg(long)]
    train_samples: Option<usize>,
    /// Adam learning rate of the training (cosine decay to a tenth; default 1e-2 for model,
    /// 5e-2 for --network table, 3e-3 for flow and diffusion, where 1e-2 can throw the ODE
    /// into a stiff, diverging regime).
    #[arg(long)]
    lr: Option<f64>,
    /// Training iterations over which beta rises from --anneal-start x beta (default: half
    /// of the training; 0: none).
    #[arg(long)]
    anneal: Option<usize>,
    /// Starting fraction of beta when annealing.
    #[arg(long, default_value_t = 0.3)]
    anneal_start: f64,
    /// How the model's proposal respects the spin flip: mixture ((q(s) + q(-s))/2: two
    /// network passes per proposal), pinned (the first revealed site pinned up, the draw
    /// flipped with probability 1/2: one pass, but its training underweights the states with
    /// that site against the magnetisation, so its weights are heavy-tailed) or none (q
    /// itself).
    #[arg(long, default_value = "mixture")]
    z2: String,
    /// The same as --z2 none.
    #[arg(long)]
    no_symmetry: bool,
    /// Who draws the sites of the schedule's last step: heat-bath (their exact conditionals
    /// given the other sites, which the last step never couples to each other; the network
    /// models the rest) or model.
    #[arg(long, default_value = "heat-bath")]
    last_step: String,
    /// Hidden channels of the network.
    #[arg(long, default_value_t = 8)]
    width: usize,
    /// Convolution layers. On Ising up to 16x16, 1 runs twice the proposals per second of 2
    /// and can be as good a proposal (16x16 at beta_c, seed 1: 10,800 against 6,100
    /// independent samples per second), but it is less dependable over seeds (tau_int 2.1 to
    /// 5.0 against 1.7 to 2.4); at 32x32 it is worse.
    #[arg(long, default_value_t = 2)]
    depth: usize,
    /// Convolution kernel size (odd).
    #[arg(long, default_value_t = 3)]
    kernel: usize,
    /// causal (step-causal convolutions: every conditional from one pass) | masked (one
    /// network pass per step) | table (Ising: each conditional a lookup table over the
    /// nearest sites revealed before it, no network; see --table-context)
    #[arg(long, default_value = "causal")]
    network: String,
    /// --network table: context sites of each conditional (the table has 2^C entries).
    #[arg(long, default_value_t = 12)]
    table_context: usize,
    /// --network table: colours each rg step is split into (1, 2 or 4): sites of one colour
    /// are drawn independently given the earlier ones; 2 splits a level's cell centres by a
    /// checkerboard of cells and its edge midpoints by orientation, 4 splits each again.
    #[arg(long, default_value_t = 2)]
    table_colours: usize,
    /// Spacing of the convolution taps: levels (2^level at a site of RG level `level`: each
    /// conditional reads the coarse lattice of its level, the sites the rg schedule reveals
    /// before it) | layers (2^l in layer l) | none
    #[arg(long, default_value = "levels")]
    dilation: String,
    /// Measurements (Markov chains) or model proposals of the MH chain.
    #[arg(long, default_value_t = 10000)]
    samples: usize,
    /// Updates before measuring (Markov chains; HMC and local steps are tuned here).
    #[arg(long, default_value_t = 1000)]
    thermalise: usize,
    /// Updates between measurements (Markov chains).
    #[arg(long, default_value_t = 1)]
    sweeps_per_sample: usize,
    /// Model proposals per network call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Model chain: one single-spin Metropolis sweep after every M independence-MH steps
    /// (0: pure independence MH). Keeps the chain exploring where the model is poor, and
    /// moves it off states of rare heavy weight (16x16: tau_int 1.8 with M = 2, 3.8 with 10).
    #[arg(long, default_value_t = 2)]
    local_every: usize,
    /// cpu | cuda | cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seed of everything random (a CPU run is reproduced bit for bit).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run directory (default runs/NAME-METHOD-sSEED).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory (model training resumes from its checkpoint).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Training iterations between checkpoints.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Stop training after this many iterations of this invocation, with a checkpoint (for
    /// batch queues); continue later with --resume.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Print observables.json on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Independent chains sharing --samples, also the chunks of each training batch
    /// (default: the number of MPI ranks). Results depend on it, not on the ranks.
    #[arg(long)]
    chains: Option<usize>,
}

#[derive(clap::Args)]
struct GroundStateArgs {
    /// Hamiltonian file (TOML); not needed with --resume.
    file: Option<PathBuf>,
    /// Reverse-process schedule: rg | rg-colors=K | autoregressive
    #[arg(long, default_value = "rg")]
    scheme: String,
    /// VMC iterations (with --resume: the new total).
    #[arg(long)]
    iters: Option<usize>,
    /// Samples per iteration.
    #[arg(long, default_value_t = 1024)]
    samples: usize,
    /// Initial learning rate, cosine decay to a tenth (default: 1e-2 for adam, 5e-2 for sr).
    #[arg(long)]
    lr: Option<f64>,
    /// adam | sr (minSR, stochastic reconfiguration in sample space)
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Diagonal shift of the SR matrix.
    #[arg(long, default_value_t = 1e-3)]
    diag_shift: f64,
    /// Momentum of the SR update, 0 <= MU < 1 (SPRING; 0: plain minSR). --optimizer sr only.
    #[arg(long, default_value_t = 0.0)]
    momentum: f64,
    /// Trust radius of an SR step: a step that would move the state by more than D (the
    /// Fubini-Study distance sqrt(Var_b[delta log psi_b]) estimated from the batch) is scaled
    /// down to D, and the trace's lr records the rate applied (0: no limit). --optimizer sr only.
    #[arg(long, default_value_t = 0.0)]
    max_step: f64,
    /// Draw the training samples from the model's conditionals raised to the power BETA,
    /// 0 < BETA <= 1, with importance weights p/q on every estimate (1: exact samples of p).
    /// Broadens a sharply peaked distribution whose rare configurations carry the energy.
    #[arg(long, default_value_t = 1.0)]
    temper: f64,
    /// Initial temperature of the E - T S annealing (0: none).
    #[arg(long, default_value_t = 0.0)]
    anneal: f64,
    /// Iterations over which the temperature falls to zero (default: a third of the run).
    #[arg(long)]
    anneal_iters: Option<usize>,
    /// Hidden channels of the network.
    #[arg(long, default_value_t = 16)]
    width: usize,
    /// Convolution layers.
    #[arg(long, default_value_t = 3)]
    depth: usize,
    /// Convolution kernel size (odd).
    #[arg(long, default_value_t = 5)]
    kernel: usize,
    /// masked (one network pass per step) | causal (step-causal convolutions: every
    /// conditional from one pass, much cheaper gradients with --scheme autoregressive)
    #[arg(long, default_value = "masked")]
    network: String,
    /// Spacing of the convolution taps: none | layers (2^l in layer l) | levels (2^level at
    /// a site of RG level `level`, the coarse lattice the rg schedule reveals before it)
    #[arg(long, default_value = "none")]
    dilation: String,
    /// Phase of the wavefunction: auto (chosen from the model: none for stoquastic ones,
    /// marshall for bipartite antiferromagnets, marshall+learned for J1-J2, learned
    /// otherwise) | none | marshall | learned | marshall+learned
    #[arg(long, default_value = "auto")]
    phase: String,
    /// Restrict the wavefunction to total S^z (spin 1/2, --scheme autoregressive, a
    /// Hamiltonian that conserves S^z), e.g. --sz 0 for an antiferromagnet's singlet.
    #[arg(long, allow_negative_numbers = true)]
    sz: Option<f64>,
    /// Average the amplitudes over a symmetry group, in training and the final estimate:
    /// none, or a comma-separated product of translation, point (rotations and reflections)
    /// and flip (global spin flip). Exact sampling is kept; each evaluation costs |G|.
    #[arg(long)]
    symmetry: Option<String>,
    /// The same for the final estimate only (the network trains without it: a
    /// symmetrization after training); summary.json then also gives the trained energy.
    #[arg(long)]
    final_symmetry: Option<String>,
    /// cpu | cuda | cuda:N
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seed of parameters and samples (a CPU run is reproduced bit for bit).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run directory (default runs/NAME-SCHEME-sSEED).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Compute the exact energy by diagonalization even when it is expensive.
    #[arg(long)]
    exact: bool,
    /// Iterations between checkpoints.
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Samples of the final energy estimate (default 4 x samples).
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Stop after this many iterations of this invocation, with a checkpoint (for batch
    /// queues); continue later with --resume.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Chunks of the batch, each with its own random stream (default: the number of MPI
    /// ranks). A rank's chunks run in parallel on the CPU: --chunks 2 uses two cores far
    /// better than one chunk. Results depend on it, not on the ranks or threads: keep it to
    /// reproduce a run on another number of ranks.
    #[arg(long)]
    chunks: Option<usize>,
}

fn main() -> ExitCode {
    keep_freed_memory();
    let comm = match rgdiff::parallel::world() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rgdiff: error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    return ExitCode::SUCCESS;
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return ExitCode::from(2);
                }
                _ => {}
            }
            // One line, like every other error: clap's first line without its own prefix.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("rgdiff: error: {first} (see rgdiff --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli, comm.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if comm.size() > 1 => {
            // The other ranks may be waiting in a collective: end them all.
            eprintln!("rgdiff: error (rank {}): {e}", comm.rank());
            comm.abort(2)
        }
        Err(e) => {
            eprintln!("rgdiff: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, comm: Arc<dyn Communicator>) -> rgdiff::Result<()> {
    if comm.size() > 1 && matches!(cli.command, Command::Exact { .. } | Command::Bench(_)) {
        return Err(rgdiff::Error::Input(
            "only ground-state and sample run on several MPI ranks; start exact and bench without mpirun".into(),
        ));
    }
    match cli.command {
        Command::Exact {
            file,
            sector,
            levels,
            tol,
            seed,
            memory,
            json,
        } => {
            let problem = spec::load(&file)?;
            if levels == 0 {
                return Err(rgdiff::Error::Input("--levels must be at least 1".into()));
            }
            if !(tol > 0.0 && tol < 1e-2) {
                return Err(rgdiff::Error::Input("--tol must lie in (0, 0.01)".into()));
            }
            let sector = match sector.as_str() {
                "auto" => SectorChoice::Auto,
                s => SectorChoice::Fixed(Sector::parse(s, &problem.lattice)?),
            };
            let opts = ExactOptions {
                sector,
                levels,
                tol,
                seed,
                memory_limit: memory.map(|g| (g * (1u64 << 30) as f64) as u64),
                progress: !json,
            };
            let result = exact::solve(&problem.lattice, &problem.model, &opts)?;
            if json {
                println!("{}", report::exact_json(&problem, &result));
            } else {
                print!("{}", report::exact_text(&problem, &result));
            }
            Ok(())
        }
        Command::GroundState(args) => ground_state(*args, comm),
        Command::Bench(args) => bench(*args),
        Command::Sample(args) => sample(*args, comm),
    }
}

fn bench(a: BenchArgs) -> rgdiff::Result<()> {
    use rgdiff::bench::{self, BenchOptions, Suite};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    if let Some(dir) = &a.replot {
        let report = bench::replot(dir)?;
        println!(
            "redrew the plots of {} runs in {}",
            report.records.len(),
            dir.display()
        );
        return Ok(());
    }
    let opts = BenchOptions {
        files: a.files,
        suite: a.suite.as_deref().map(Suite::parse).transpose()?,
        schemes: a
            .schemes
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        budget: a.budget,
        max_iters: a.iters,
        samples: a.samples,
        lr: a.lr,
        device: a.device,
        seed: a.seed,
        chunks: a.chunks,
        out: a.out,
        overwrite: a.overwrite,
        progress: true,
    };
    if opts.device == "cpu" {
        rgdiff::parallel::share_threads(opts.chunks);
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let interrupt = interrupt.clone();
        let _ = ctrlc::set_handler(move || interrupt.store(true, Ordering::SeqCst));
    }
    // The command as typed, with the program's path shortened to its name.
    let command = std::iter::once("rgdiff".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let report = bench::run(&opts, &interrupt, &command)?;
    println!();
    print!("{}", bench::output::markdown(&report));
    println!("outputs in {}", report.out);
    Ok(())
}

fn sample(a: SampleArgs, comm: Arc<dyn Communicator>) -> rgdiff::Result<()> {
    // The default network is small: one thread is faster than two for its matrix products
    // (measured on 8x8: 0.43 s against 0.8 s per training iteration), unless the user says
    // otherwise. candle reads RAYON_NUM_THREADS itself; it is set here, before any thread
    // exists.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    use rgdiff::field::flow::{FlowConfig, Objective};
    use rgdiff::field::sample::{self, SampleConfig};
    use rgdiff::field::table::TableConfig;
    use rgdiff::field::variational::{LastStep, TrainConfig, Z2};
    use rgdiff::field::{Method, Theory};
    use rgdiff::model::{Dilation, ModelConfig, Network, Phase};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let (cfg, dir) = match &a.resume {
        Some(dir) => {
            let mut cfg = sample::read_config(dir)?;
            if let Some(n) = a.train_iters {
                cfg.train.iters = n;
            }
            if let Some(c) = a.chains.filter(|&c| c != cfg.chains) {
                return Err(rgdiff::Error::Input(format!(
                    "--chains {c}: the run in {} was started with {} chains, which it keeps",
                    dir.display(),
                    cfg.chains
                )));
            }
            (cfg, dir.clone())
        }
        None => {
            let file = a.file.clone().ok_or_else(|| {
                rgdiff::Error::Input("give a theory file (or --resume DIR)".into())
            })?;
            let problem = spec::load_classical(&file)?;
            let method = match &a.method {
                Some(m) => Method::parse(m)?,
                None => match problem.theory {
                    Theory::Ising { .. } => Method::Model,
                    Theory::Phi4 { .. } => Method::Hmc,
                },
            };
            let table = (a.network == "table").then_some(TableConfig {
                context: a.table_context,
                colours: a.table_colours,
            });
            let train_iters = a
                .train_iters
                .unwrap_or(if table.is_some() { 2000 } else { 100 });
            let z2 = if a.no_symmetry {
                Z2::None
            } else {
                Z2::parse(&a.z2)?
            };
            if table.is_some() && (z2 == Z2::Pinned || a.last_step != "heat-bath") {
                return Err(rgdiff::Error::Input(
                    "--network table: its tables are flip-symmetric by construction (odd at \
                     h = 0) and its last step is always the heat bath; --z2 pinned and \
                     --last-step model apply to the networks"
                        .into(),
                ));
            }
            let cfg = SampleConfig {
                problem: file.display().to_string(),
                method,
                samples: a.samples,
                thermalise: a.thermalise,
                sweeps_per_sample: a.sweeps_per_sample.max(1),
                seed: a.seed,
                device: a.device.clone(),
                scheme: a.scheme.clone().unwrap_or_else(|| {
                    if matches!(method, Method::Flow | Method::Diffusion) {
                        "carosso".into()
                    } else {
                        "rg".into()
                    }
                }),
                model: ModelConfig {
                    width: a.width,
                    depth: a.depth,
                    kernel: a.kernel,
                    phase: Phase::None,
                    sz: None,
                    network: if table.is_some() {
                        Network::default()
                    } else {
                        Network::parse(&a.network)?
                    },
                    symmetry: None,
                    dilation: Dilation::parse(&a.dilation)?,
                    pin_first: z2 == Z2::Pinned,
                },
                train: TrainConfig {
                    samples: a
                        .train_samples
                        .unwrap_or(if table.is_some() { 512 } else { 128 })
                        .max(2),
                    iters: train_iters,
                    lr: a.lr.unwrap_or(if table.is_some() {
                        5e-2
                    } else if matches!(method, Method::Flow | Method::Diffusion) {
                        3e-3
                    } else {
                        1e-2
                    }),
                    anneal_iters: a.anneal.unwrap_or(train_iters / 2),
                    anneal_start: a.anneal_start,
                    z2,
                    last_step: LastStep::parse(&a.last_step)?,
                    seed: a.seed,
                },
                batch: a.batch.max(1),
                local_every: a.local_every,
                checkpoint_every: a.checkpoint_every.max(1),
                chains: a.chains.unwrap_or(comm.size()),
                flow: FlowConfig {
                    m0sq: a.m0sq,
                    omega: a.omega,
                    rg_m2: a.rg_m2,
                    t_max: a
                        .t_max
                        .unwrap_or(if a.scheme.as_deref() == Some("polchinski") {
                            1.0
                        } else {
                            3.0
                        }),
                    ref_m2: a.ref_m2,
                    channels: a.channels,
                    time_basis: a.time_basis,
                    steps: a.steps,
                    objective: match &a.objective {
                        Some(o) => Objective::parse(o)?,
                        None if a.data.is_some() => Objective::Dsm,
                        None => Objective::Kl,
                    },
                    data: a.data.as_ref().map(|d| d.display().to_string()),
                    init_from: a.init_from.as_ref().map(|d| d.display().to_string()),
                },
                table,
            };
            let dir = a
                .out
                .clone()
                .unwrap_or_else(|| sample::default_dir(&cfg.problem, method, a.seed));
            (cfg, dir)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    sample::validate(&cfg)?;
    if comm.rank() != 0 {
        // Only rank 0 shows progress and prints the results.
        sample::run_with(
            comm,
            &cfg,
            &dir,
            a.resume.is_some(),
            a.stop_after,
            &stop,
            &mut (),
        )?;
        return Ok(());
    }
    if !a.json {
        let spread = if cfg.chains > 1 || comm.size() > 1 {
            format!(" in {} chains on {} MPI ranks", cfg.chains, comm.size())
        } else {
            String::new()
        };
        eprintln!(
            "rgdiff sample: {} with {}{}, {} samples{spread}, run directory {}",
            cfg.problem,
            cfg.method.name(),
            if let (Method::Model, Some(t)) = (cfg.method, cfg.table) {
                format!(
                    " (lookup tables, context {}, {} colours; last step heat-bath)",
                    t.context, t.colours
                )
            } else if cfg.method == Method::Model {
                format!(
                    " ({} network, dilation {}, width {}, depth {}, kernel {}; z2 {}, last \
                     step {})",
                    cfg.model.network.name(),
                    cfg.model.dilation.name(),
                    cfg.model.width,
                    cfg.model.depth,
                    cfg.model.kernel,
                    cfg.train.z2.name(),
                    cfg.train.last_step.name()
                )
            } else {
                String::new()
            },
            cfg.samples,
            dir.display()
        );
    }
    let mut bars = report::SampleProgress::new(a.json);
    let result = sample::run_with(
        comm,
        &cfg,
        &dir,
        a.resume.is_some(),
        a.stop_after,
        &stop,
        &mut bars,
    );
    bars.finish();
    let rep = match result? {
        sample::Outcome::Done(rep) => rep,
        sample::Outcome::Paused { iter } => {
            eprintln!(
                "training stopped at iteration {iter}; checkpoint written, continue with --resume {}",
                dir.display()
            );
            return Ok(());
        }
    };
    if a.json {
        for w in &rep.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "{}",
            serde_json::to_string(&rep).expect("report serialises")
        );
    } else {
        print!("{}", report::sample_text(&rep, &dir));
    }
    Ok(())
}

fn ground_state(a: GroundStateArgs, comm: Arc<dyn Communicator>) -> rgdiff::Result<()> {
    use rgdiff::model::{Dilation, ModelConfig, Network, Phase};
    use rgdiff::run::{self, Run, RunConfig};
    use rgdiff::vmc::{driver::Optimizer, VmcConfig};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let cfg = match &a.resume {
        Some(dir) => {
            let mut cfg = Run::read_config(dir)?;
            if let Some(n) = a.iters {
                cfg.vmc.iters = n;
            }
            // Options of the final estimate only: a finished run can be re-evaluated, e.g.
            // symmetrized after training.
            if let Some(g) = &a.final_symmetry {
                cfg.final_symmetry = Some(g.clone()).filter(|g| g != "none");
            }
            if let Some(e) = a.eval_samples {
                cfg.eval_samples = e.max(2);
            }
            if let Some(c) = a.chunks.filter(|&c| c != cfg.vmc.chunks) {
                return Err(rgdiff::Error::Input(format!(
                    "--chunks {c}: the run in {} was started with {} chunks, which it keeps",
                    dir.display(),
                    cfg.vmc.chunks
                )));
            }
            cfg
        }
        None => {
            let file = a.file.clone().ok_or_else(|| {
                rgdiff::Error::Input("give a Hamiltonian file (or --resume DIR)".into())
            })?;
            // Ranges and combinations are checked by the library (`VmcConfig::validate`).
            let optimizer = Optimizer::parse(&a.optimizer)?;
            let iters = a.iters.unwrap_or(300);
            RunConfig {
                problem: file.display().to_string(),
                scheme: a.scheme.clone(),
                model: ModelConfig {
                    width: a.width,
                    depth: a.depth,
                    kernel: a.kernel,
                    phase: if a.phase == "auto" {
                        let problem = rgdiff::spec::load(&file)?;
                        Phase::default_for(&problem.model, &problem.lattice)
                    } else {
                        Phase::parse(&a.phase)?
                    },
                    sz: a.sz,
                    network: Network::parse(&a.network)?,
                    symmetry: a.symmetry.clone().filter(|g| g != "none"),
                    dilation: Dilation::parse(&a.dilation)?,
                    pin_first: false,
                },
                vmc: VmcConfig {
                    samples: a.samples.max(2),
                    iters,
                    lr: a.lr.unwrap_or(if optimizer == Optimizer::Sr {
                        5e-2
                    } else {
                        1e-2
                    }),
                    optimizer,
                    diag_shift: a.diag_shift,
                    anneal_t0: a.anneal,
                    anneal_iters: a.anneal_iters.unwrap_or(iters / 3),
                    seed: a.seed,
                    chunks: a.chunks.unwrap_or(comm.size()),
                    momentum: a.momentum,
                    temper: a.temper,
                    max_step: a.max_step,
                },
                device: a.device.clone(),
                eval_samples: a.eval_samples.unwrap_or(4 * a.samples).max(2),
                checkpoint_every: a.checkpoint_every.max(1),
                exact: a.exact,
                final_symmetry: a.final_symmetry.clone().filter(|g| g != "none"),
            }
        }
    };
    // One GPU per rank with --device cuda; the configuration keeps what was asked.
    let mut on_rank = cfg.clone();
    on_rank.device = rgdiff::parallel::rank_device(&cfg.device, comm.as_ref());
    if on_rank.device == "cpu" {
        let mine = rgdiff::parallel::Chunks::new(
            cfg.vmc.samples,
            cfg.vmc.chunks,
            comm.size(),
            "--chunks",
        )?
        .of_rank(comm.rank(), comm.size())
        .len();
        rgdiff::parallel::share_threads(mine);
    }
    let (problem, h, exact_energy, model) = run::prepare(&on_rank)?;
    let root = comm.rank() == 0;
    let mut run = match &a.resume {
        Some(dir) => Run::resume_with(comm.clone(), dir, cfg, &h, model, exact_energy)?,
        None => {
            let dir = a.out.clone().unwrap_or_else(|| {
                PathBuf::from(format!(
                    "runs/{}-{}-s{}",
                    problem.name,
                    cfg.scheme.replace('=', ""),
                    cfg.vmc.seed
                ))
            });
            Run::create_with(comm.clone(), &dir, cfg, &h, model, exact_energy)?
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let ranks = if comm.size() > 1 {
        format!(
            ", {} MPI ranks x {} chunks",
            comm.size(),
            run.cfg.vmc.chunks
        )
    } else {
        String::new()
    };
    if !root {
        // Only rank 0 shows progress and prints the summary.
        run.run(&stop, a.stop_after, &mut ())?;
        return Ok(());
    }
    eprintln!(
        "rgdiff ground-state: {} ({}), scheme {} ({} steps), {} network{}, phase {}, {} parameters, {} samples x {} iterations{ranks}, run directory {}",
        problem.path,
        report::lattice_label(&problem),
        run.cfg.scheme,
        run.vmc.model.schedule().n_steps(),
        run.cfg.model.network.name(),
        match run.cfg.model.dilation {
            Dilation::None => String::new(),
            d => format!(" (dilation {})", d.name()),
        },
        run.cfg.model.phase.name(),
        run.vmc.model.n_params(),
        run.cfg.vmc.samples,
        run.cfg.vmc.iters,
        run.dir.display()
    );
    if let Some(note) = run.vmc.model.receptive_field_note() {
        eprintln!("note: {note}");
    }
    let mut bar = report::VmcProgress::new(run.cfg.vmc.iters, run.vmc.iter);
    let result = run.run(&stop, a.stop_after, &mut bar);
    bar.finish();
    let summary = result?;
    print!("{}", report::summary_text(&summary, &run.dir));
    Ok(())
}
