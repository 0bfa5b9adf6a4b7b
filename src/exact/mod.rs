//! Exact diagonalization: matrix-free Lanczos in symmetry sectors, with a dense solver for
//! cross-checks, memory estimates made before anything large is allocated, and ground-state
//! expectation values.
//!
//! Spin-1/2 Hamiltonians run on packed `u64` states in the full space, a fixed-`Sz` sector, or
//! a momentum / spin-flip-parity sector (see [`basis`]); oscillator Hamiltonians run in the
//! full truncated Fock space. Amplitudes are `f64` whenever the Hamiltonian and the sector's
//! characters are real and `Complex64` otherwise.

pub mod basis;
pub mod cached;
pub mod closed_form;
pub mod dense;
pub mod lanczos;
pub mod sector;

use crate::operator::local_ops::Mat;
use num_complex::Complex64;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::hilbert::Hilbert;
use crate::lattice::Lattice;
use crate::operator::{
    Connections, Hamiltonian, LocalOp, LocalOperator, Model, Operator, PauliSum, Term,
};
use crate::scalar::Scalar;
use basis::{matvec, real_characters, FullBasis, SpinBasis, SymmetricBasis, SzBasis};
use cached::SectorMatrix;
use lanczos::{dot, lanczos, LanczosOptions};
pub use sector::{Sector, Symmetries};

/// Which sector to diagonalize in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SectorChoice {
    /// Find the sector holding the ground state (see [`solve`]).
    Auto,
    Fixed(Sector),
}

/// Settings of an exact solve.
#[derive(Clone, Debug)]
pub struct ExactOptions {
    pub sector: SectorChoice,
    /// Number of distinct lowest levels (2 or more gives the gap).
    pub levels: usize,
    /// Relative tolerance of the energies.
    pub tol: f64,
    /// Seed of the Lanczos start vector.
    pub seed: u64,
    /// Memory the solver may use, in bytes (default: the system's available memory).
    pub memory_limit: Option<u64>,
    /// Print a progress line on stderr for runs longer than a second.
    pub progress: bool,
}

impl Default for ExactOptions {
    fn default() -> Self {
        ExactOptions {
            sector: SectorChoice::Auto,
            levels: 1,
            tol: 1e-10,
            seed: 1,
            memory_limit: None,
            progress: false,
        }
    }
}

/// One sector looked at by the automatic search, with its (roughly converged) lowest energy.
#[derive(Clone, Debug, Serialize)]
pub struct ScannedSector {
    pub sector: String,
    pub dimension: u64,
    pub energy: f64,
    /// True when the sector was only converged roughly (80 Lanczos steps) to compare it.
    pub rough: bool,
}

impl ScannedSector {
    fn of(sector: &Sector, lattice: &Lattice, run: &SectorRun, rough: bool) -> Self {
        ScannedSector {
            sector: sector.label(lattice),
            dimension: run.dimension,
            energy: run.levels[0],
            rough,
        }
    }
}

/// The result of an exact solve.
#[derive(Clone, Debug, Serialize)]
pub struct ExactResult {
    pub energy: f64,
    pub energy_per_site: f64,
    /// Lowest distinct levels in the sector, ascending.
    pub levels: Vec<f64>,
    /// `levels[1] - levels[0]` when two or more levels were asked for.
    pub gap: Option<f64>,
    pub dimension: u64,
    pub sector: String,
    pub n_sites: usize,
    /// `lanczos`, or `dense` for spaces of at most [`dense::DENSE_MAX`] states.
    pub solver: String,
    /// Lanczos steps (0 for the dense solver).
    pub iterations: usize,
    pub converged: bool,
    pub seconds: f64,
    /// Estimated peak memory of the solve, bytes.
    pub memory_bytes: u64,
    /// Ground-state expectation values: `m2_uniform`, `m2_staggered`, `zz_nn`, `xx_nn` (defined
    /// at `SpinObservables` in this module).
    pub observables: BTreeMap<String, f64>,
    /// Sectors compared by the automatic search (empty when the sector was given).
    pub scanned: Vec<ScannedSector>,
    /// Wall time of each phase in seconds: `basis`, `matrix` (stored sector matrix),
    /// `solve` (Lanczos or dense), `observables`.
    pub timings: BTreeMap<String, f64>,
}

/// Available memory in bytes (`MemAvailable` of /proc/meminfo; 8 GiB if unknown).
pub fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(8 << 30)
}

/// Total size of the sectors up to which the automatic search solves every sector fully
/// (twice this) and merges their levels.
const AUTO_FULL_MAX: f64 = (1u64 << 20) as f64;

/// Finds the lowest levels of `model` on `lattice`.
///
/// With [`SectorChoice::Auto`], spin models are split by the symmetries they have: every `Sz`
/// sector of an `Sz`-conserving model (only `Sz >= 0` when it is also spin-flip symmetric),
/// or both spin-flip parities, or the full space. When the sectors hold at most `2^21` states
/// together, each is solved fully and their levels are merged, so the levels and the gap are
/// those of the whole spectrum (and nearly degenerate levels of different symmetry, such as
/// the tunnelling doublet of an ordered phase, are resolved exactly). Above that, each sector
/// is converged roughly (80 steps) and the lowest is then converged fully (levels and gap are
/// then within that sector). When even one sector does not fit in memory,
/// translation-invariant models switch to momentum (and parity) sectors at the smallest
/// `|Sz|`, which holds the ground state of antiferromagnets; pass a sector for anything else.
pub fn solve(lattice: &Lattice, model: &Model, opts: &ExactOptions) -> Result<ExactResult> {
    let t0 = Instant::now();
    let h = model.hamiltonian(lattice);
    let available = opts.memory_limit.unwrap_or_else(available_memory);
    let mut result = match &h {
        Hamiltonian::Pauli(p) => solve_spin(p, lattice, opts, available)?,
        Hamiltonian::Local(l) => {
            if let SectorChoice::Fixed(s) = opts.sector {
                if !s.is_full() {
                    return Err(Error::Input(
                        "symmetry sectors are implemented for spin-1/2 models only; use --sector full".into(),
                    ));
                }
            }
            solve_local(
                l,
                lattice,
                model.site_bases(lattice).as_deref(),
                opts,
                available,
            )?
        }
    };
    result.seconds = t0.elapsed().as_secs_f64();
    Ok(result)
}

/// What one Lanczos run in one sector produced.
struct SectorRun {
    levels: Vec<f64>,
    dimension: u64,
    iterations: usize,
    converged: bool,
    memory: u64,
    observables: BTreeMap<String, f64>,
    timings: BTreeMap<String, f64>,
}

fn solve_spin(
    p: &PauliSum,
    lattice: &Lattice,
    opts: &ExactOptions,
    available: u64,
) -> Result<ExactResult> {
    let n = lattice.n_sites();
    let sym = Symmetries::of(p, lattice);
    let real = p.is_real();
    let fits = |s: &Sector| memory_needed(s, lattice, real) <= available;
    let lopts = LanczosOptions {
        levels: opts.levels,
        tol: opts.tol,
        max_iter: 3000,
        seed: opts.seed,
        max_stored: 0, // decided in `run_basis` from what is left after the basis
        want_vector: true,
    };
    let solve_in = |s: &Sector, lo: &LanczosOptions, progress: bool| {
        run_spin_sector(p, lattice, s, lo, available, progress)
    };
    let candidates = match opts.sector {
        SectorChoice::Fixed(s) => {
            s.check(&sym, lattice)?;
            let run = solve_in(&s, &lopts, opts.progress)?;
            return Ok(finish(run, n, s.label(lattice), vec![]));
        }
        SectorChoice::Auto => auto_candidates(&sym, lattice, &fits),
    };
    if candidates.len() == 1 {
        let run = solve_in(&candidates[0], &lopts, opts.progress)?;
        return Ok(finish(run, n, candidates[0].label(lattice), vec![]));
    }
    let total: f64 = candidates
        .iter()
        .map(|s| s.estimated_dimension(lattice))
        .sum();
    let mut scanned = Vec::new();
    if total <= AUTO_FULL_MAX * 2.0 {
        // Small enough to solve every sector fully: the levels (and the gap) are those of the
        // whole spectrum, merged across sectors.
        let mut runs = Vec::new();
        for s in &candidates {
            let run = solve_in(s, &lopts, false)?;
            scanned.push(ScannedSector::of(s, lattice, &run, false));
            runs.push(run);
        }
        let best = lowest(&scanned);
        let mut all: Vec<f64> = runs.iter().flat_map(|r| r.levels.clone()).collect();
        all.sort_by(f64::total_cmp);
        let mut run = runs.swap_remove(best);
        run.levels = dense::distinct(&all, opts.levels.max(1), 1e-10);
        run.converged = runs.iter().all(|r| r.converged) && run.converged;
        return Ok(finish(run, n, candidates[best].label(lattice), scanned));
    }
    // Large: converge every sector roughly, then the lowest one fully.
    let quick = LanczosOptions {
        levels: 1,
        tol: 1e-7,
        max_iter: 80,
        want_vector: false,
        ..lopts.clone()
    };
    for s in &candidates {
        let run = solve_in(s, &quick, false)?;
        scanned.push(ScannedSector::of(s, lattice, &run, true));
    }
    let sector = candidates[lowest(&scanned)];
    let run = solve_in(&sector, &lopts, opts.progress)?;
    Ok(finish(run, n, sector.label(lattice), scanned))
}

/// Index of the sector with the lowest energy.
fn lowest(scanned: &[ScannedSector]) -> usize {
    (0..scanned.len())
        .min_by(|&a, &b| scanned[a].energy.total_cmp(&scanned[b].energy))
        .unwrap()
}

/// The sectors the automatic search compares: every `Sz` sector of a `U(1)` model (`Sz >= 0`
/// when it is also flip symmetric), both parities of a flip-symmetric model, the full space
/// otherwise; when these do not fit in memory, momentum (and parity) sectors at the smallest
/// `|Sz|`.
fn auto_candidates(
    sym: &Symmetries,
    lattice: &Lattice,
    fits: &dyn Fn(&Sector) -> bool,
) -> Vec<Sector> {
    let n = lattice.n_sites();
    let mut candidates: Vec<Sector> = if sym.u1 {
        let top = if sym.flip { n / 2 } else { n };
        (0..=top)
            .map(|nd| Sector {
                n_down: Some(nd),
                ..Sector::default()
            })
            .collect()
    } else if sym.flip {
        [1, -1]
            .map(|p| Sector {
                parity: Some(p),
                ..Sector::default()
            })
            .to_vec()
    } else {
        vec![Sector::full()]
    };
    if !candidates.iter().all(fits) && sym.translation {
        let nd = sym.u1.then_some(n / 2);
        let parity = sym.flip && nd.is_none_or(|nd| 2 * nd == n);
        candidates = momentum_sectors(lattice, nd, parity);
    }
    candidates
}

fn finish(run: SectorRun, n: usize, sector: String, scanned: Vec<ScannedSector>) -> ExactResult {
    ExactResult {
        energy: run.levels[0],
        energy_per_site: run.levels[0] / n as f64,
        gap: (run.levels.len() > 1).then(|| run.levels[1] - run.levels[0]),
        levels: run.levels,
        dimension: run.dimension,
        sector,
        n_sites: n,
        solver: if run.iterations == 0 {
            "dense"
        } else {
            "lanczos"
        }
        .to_string(),
        iterations: run.iterations,
        converged: run.converged,
        seconds: 0.0,
        memory_bytes: run.memory,
        observables: run.observables,
        scanned,
        timings: run.timings,
    }
}

/// Every momentum sector (times both parities when `flip`) at fixed `n_down`.
fn momentum_sectors(lattice: &Lattice, n_down: Option<usize>, flip: bool) -> Vec<Sector> {
    let [lx, ly] = lattice.extent();
    let mut out = Vec::new();
    for ny in 0..ly {
        for nx in 0..lx {
            for parity in if flip {
                vec![Some(1), Some(-1)]
            } else {
                vec![None]
            } {
                out.push(Sector {
                    n_down,
                    momentum: Some([nx, ny]),
                    parity,
                });
            }
        }
    }
    out
}

/// Bytes a Lanczos run in `sector` needs at least: the basis (and its construction) plus four
/// vectors (three for the recurrence, one for the ground state).
pub fn memory_needed(sector: &Sector, lattice: &Lattice, real_h: bool) -> u64 {
    let dim = sector.estimated_dimension(lattice);
    let size = if real_h && real_characters(lattice, sector.momentum) {
        8.0
    } else {
        16.0
    };
    let n = lattice.n_sites();
    let basis = if sector.momentum.is_some() || sector.parity.is_some() {
        // (state, norm) pairs while building, then reps + norms, plus the bucket table.
        40.0 * dim + 4.0 * 2f64.powi(n.min(22) as i32)
    } else if sector.n_down.is_some() {
        8.0 * dim + 12.0 * 2f64.powi(n.div_ceil(2) as i32)
    } else {
        0.0
    };
    let vectors = 4.0 * dim * size;
    (basis + vectors) as u64
}

fn run_spin_sector(
    p: &PauliSum,
    lattice: &Lattice,
    sector: &Sector,
    lopts: &LanczosOptions,
    available: u64,
    progress: bool,
) -> Result<SectorRun> {
    let need = memory_needed(sector, lattice, p.is_real());
    if need > available {
        return Err(Error::memory(
            format!(
                "exact diagonalization in sector {} (about {:.3e} states)",
                sector.label(lattice),
                sector.estimated_dimension(lattice)
            ),
            need,
            available,
        ));
    }
    let real = p.is_real() && real_characters(lattice, sector.momentum);
    let n = lattice.n_sites();
    let obs = SpinObservables::new(lattice);
    let t0 = Instant::now();
    macro_rules! go {
        ($basis:expr) => {{
            let b = $basis;
            let t_basis = t0.elapsed().as_secs_f64();
            let mut run = if real {
                run_basis::<f64, _>(p, &b, &obs, lopts, available - need, progress)
            } else {
                run_basis::<Complex64, _>(p, &b, &obs, lopts, available - need, progress)
            };
            run.timings.insert("basis".into(), t_basis);
            run
        }};
    }
    Ok(if sector.momentum.is_some() || sector.parity.is_some() {
        go!(SymmetricBasis::new(
            lattice,
            sector.momentum,
            sector.parity,
            sector.n_down
        ))
    } else if let Some(nd) = sector.n_down {
        go!(SzBasis::new(n, nd))
    } else {
        go!(FullBasis::new(n))
    })
}

/// The spin observables of the ground state:
/// - `m2_uniform = <(sum_i Z_i)^2> / N^2`,
/// - `m2_staggered = <(sum_i (-1)^(x+y) Z_i)^2> / N^2` (bipartite lattices),
/// - `zz_nn = <Z_i Z_j>` and `xx_nn = <X_i X_j>` averaged over nearest-neighbour bonds
///   (Pauli matrices; for spin operators divide by 4).
struct SpinObservables {
    n: usize,
    sublattice_a: Option<u64>,
    bonds: Vec<(usize, usize)>,
    xx: PauliSum,
}

impl SpinObservables {
    fn new(lattice: &Lattice) -> Self {
        let n = lattice.n_sites();
        let sublattice_a = lattice.is_bipartite().then(|| {
            (0..n)
                .filter(|&i| lattice.sublattice_sign(i) > 0)
                .fold(0u64, |a, i| a | 1 << i)
        });
        let bonds = lattice.bonds().to_vec();
        let nb = bonds.len().max(1) as f64;
        let terms: Vec<Term> = bonds
            .iter()
            .map(|&(i, j)| Term::new(1.0 / nb, &[(i, LocalOp::X), (j, LocalOp::X)]))
            .collect();
        let xx =
            match Hamiltonian::compile(Hilbert::new(n, crate::hilbert::LocalSpace::Spin), &terms) {
                Hamiltonian::Pauli(p) => p,
                Hamiltonian::Local(_) => unreachable!(),
            };
        SpinObservables {
            n,
            sublattice_a,
            bonds,
            xx,
        }
    }

    /// Diagonal observables of one basis state (all invariant under translations and flips,
    /// so a representative stands for its whole orbit).
    fn diagonal(&self, s: u64) -> [f64; 3] {
        let n = self.n as f64;
        let m = n - 2.0 * s.count_ones() as f64;
        let stag = self.sublattice_a.map(|a| {
            let na = a.count_ones() as f64;
            let ma = na - 2.0 * (s & a).count_ones() as f64;
            let mb = (n - na) - 2.0 * (s & !a).count_ones() as f64;
            ma - mb
        });
        let zz: f64 = self
            .bonds
            .iter()
            .map(|&(i, j)| {
                if (s >> i ^ s >> j) & 1 == 0 {
                    1.0
                } else {
                    -1.0
                }
            })
            .sum::<f64>()
            / self.bonds.len().max(1) as f64;
        [
            m * m / (n * n),
            stag.map_or(f64::NAN, |v| v * v / (n * n)),
            zz,
        ]
    }
}

fn run_basis<S: Scalar, B: SpinBasis>(
    p: &PauliSum,
    basis: &B,
    obs: &SpinObservables,
    lopts: &LanczosOptions,
    available: u64,
    progress: bool,
) -> SectorRun {
    let dim = basis.dim();
    // Symmetric sectors: store the matrix when it fits comfortably (see `cached`).
    let cache_bytes = SectorMatrix::<S>::bytes_bound(dim, p.n_groups());
    let mut timings = BTreeMap::new();
    let t0 = Instant::now();
    let cached = (B::SYMMETRIC && lopts.want_vector && cache_bytes < available / 2)
        .then(|| SectorMatrix::<S>::build(p, basis));
    if cached.is_some() {
        timings.insert("matrix".to_string(), t0.elapsed().as_secs_f64());
    }
    let extra = cached.as_ref().map_or(0, |m| m.bytes());
    let vector_bytes = (dim * std::mem::size_of::<S>()) as u64;
    let lopts = &LanczosOptions {
        max_stored: (available.saturating_sub(extra) / 2 / vector_bytes).min(3000) as usize,
        ..lopts.clone()
    };
    let apply = |x: &[S], y: &mut [S]| match &cached {
        Some(m) => m.apply(x, y),
        None => matvec(p, basis, x, y),
    };
    let t0 = Instant::now();
    let res = eigensolve(dim, apply, lopts, progress);
    timings.insert("solve".to_string(), t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    let mut observables = BTreeMap::new();
    if let Some(psi) = &res.vector {
        let diag = block_sum::<3>(dim, |i| {
            let w = psi[i].abs2();
            obs.diagonal(basis.state(i)).map(|d| w * d)
        });
        observables.insert("m2_uniform".to_string(), diag[0]);
        if obs.sublattice_a.is_some() {
            observables.insert("m2_staggered".to_string(), diag[1]);
        }
        observables.insert("zz_nn".to_string(), diag[2]);
        let mut y = vec![S::zero(); dim];
        matvec(&obs.xx, basis, psi, &mut y);
        observables.insert("xx_nn".to_string(), dot(psi, &y).to_c64().re);
        timings.insert("observables".to_string(), t0.elapsed().as_secs_f64());
    }
    SectorRun {
        levels: res.energies,
        dimension: dim as u64,
        iterations: res.iterations,
        converged: res.converged,
        memory: {
            let vectors = 4 + if res.iterations <= lopts.max_stored {
                res.iterations
            } else {
                0
            };
            basis.bytes() + extra + (vectors * dim * std::mem::size_of::<S>()) as u64
        },
        observables,
        timings,
    }
}

/// The lowest levels of `x -> H x`: densely for at most [`dense::DENSE_MAX`] states,
/// otherwise by Lanczos with a progress line.
fn eigensolve<S: Scalar>(
    dim: usize,
    apply: impl Fn(&[S], &mut [S]) + Sync,
    lopts: &LanczosOptions,
    progress: bool,
) -> lanczos::LanczosResult<S> {
    if dim <= dense::DENSE_MAX {
        dense::solve_small(dim, apply, lopts.levels, lopts.want_vector)
    } else {
        let mut bar = Progress::new(progress, dim);
        let res = lanczos(dim, apply, lopts, |it, e| bar.update(it, e));
        bar.done();
        res
    }
}

/// `sum_i f(i)` for `i < n`, in parallel over fixed blocks added in a fixed order, so the
/// result does not depend on the thread count or scheduling.
fn block_sum<const K: usize>(n: usize, f: impl Fn(usize) -> [f64; K] + Sync) -> [f64; K] {
    const BLOCK: usize = 1 << 14;
    let parts: Vec<[f64; K]> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut acc = [0.0; K];
            for i in b * BLOCK..((b + 1) * BLOCK).min(n) {
                let v = f(i);
                for k in 0..K {
                    acc[k] += v[k];
                }
            }
            acc
        })
        .collect();
    parts.into_iter().fold([0.0; K], |mut acc, v| {
        for k in 0..K {
            acc[k] += v[k];
        }
        acc
    })
}

/// `y = H x` for an operator on the full truncated space (mixed-radix index), parallel over
/// rows, with per-thread configuration and connection buffers.
pub fn local_matvec<S: Scalar>(op: &LocalOperator, x: &[S], y: &mut [S]) {
    let hilbert = op.hilbert();
    const CHUNK: usize = 1 << 10;
    y.par_chunks_mut(CHUNK).enumerate().for_each_init(
        || (vec![0u8; hilbert.n_sites], Connections::new()),
        |(s, conn), (c, ys)| {
            for (k, yi) in ys.iter_mut().enumerate() {
                let i = c * CHUNK + k;
                hilbert.config_of(i as u64, s);
                op.connected(s, conn);
                let mut acc = S::from_c64(conn.diag) * x[i];
                for m in 0..conn.len() {
                    let j = hilbert.index_of(conn.config(m)) as usize;
                    acc += S::from_c64(conn.values[m]).conj() * x[j];
                }
                *yi = acc;
            }
        },
    );
}

fn solve_local(
    op: &LocalOperator,
    lattice: &Lattice,
    bases: Option<&[Mat]>,
    opts: &ExactOptions,
    available: u64,
) -> Result<ExactResult> {
    let hilbert = op.hilbert();
    let n = hilbert.n_sites;
    let dim = match hilbert.dim() {
        Some(d) if d < (1u64 << 40) => d,
        _ => {
            return Err(Error::memory(
                format!(
                    "exact diagonalization of {} states",
                    2f64.powf(hilbert.log2_dim())
                ),
                u64::MAX,
                available,
            ))
        }
    };
    let size = if op.is_real() { 8 } else { 16 };
    let need = 5 * dim * size;
    if need > available {
        return Err(Error::memory(
            format!("exact diagonalization of {dim} states"),
            need,
            available,
        ));
    }
    let lopts = LanczosOptions {
        levels: opts.levels,
        tol: opts.tol,
        max_iter: 3000,
        seed: opts.seed,
        max_stored: ((available - need) / 2 / (dim * size)).min(3000) as usize,
        want_vector: true,
    };
    let obs_ops = oscillator_observables(lattice, hilbert, bases);
    let run = if op.is_real() {
        run_local::<f64>(op, hilbert, &obs_ops, &lopts, dim as usize, opts.progress)
    } else {
        run_local::<Complex64>(op, hilbert, &obs_ops, &lopts, dim as usize, opts.progress)
    };
    Ok(finish(
        SectorRun {
            memory: need,
            ..run
        },
        n,
        "full".into(),
        vec![],
    ))
}

/// Oscillator observables: `phi2 = <phi_x^2>` averaged over sites and `phiphi_nn =
/// <phi_x phi_y>` averaged over bonds (operators); `n_mean = <n_x>` and `top_level_weight =
/// <|d-1><d-1|_x>`, the mean occupation of the highest kept Fock level, which shows whether
/// the cutoff is large enough (diagonal, computed from the amplitudes). In a local basis
/// (`bases`, see [`crate::operator::site_basis`]) `phi` is transformed with it, and `n_mean`
/// and `top_level_weight` refer to the local levels.
fn oscillator_observables(
    lattice: &Lattice,
    hilbert: Hilbert,
    bases: Option<&[Mat]>,
) -> Vec<(String, LocalOperator)> {
    let compile = |terms: &[Term]| match bases {
        Some(u) => Hamiltonian::compile_in_basis(hilbert, terms, u),
        None => Hamiltonian::compile_local(hilbert, terms),
    };
    let n = lattice.n_sites();
    let sites: Vec<Term> = (0..n)
        .map(|x| Term::new(1.0 / n as f64, &[(x, LocalOp::Phi), (x, LocalOp::Phi)]))
        .collect();
    let nb = lattice.bonds().len().max(1) as f64;
    let bonds: Vec<Term> = lattice
        .bonds()
        .iter()
        .map(|&(a, b)| Term::new(1.0 / nb, &[(a, LocalOp::Phi), (b, LocalOp::Phi)]))
        .collect();
    let mut out = vec![("phi2".to_string(), compile(&sites))];
    if !bonds.is_empty() {
        out.push(("phiphi_nn".to_string(), compile(&bonds)));
    }
    out
}

fn run_local<S: Scalar>(
    op: &LocalOperator,
    hilbert: Hilbert,
    obs: &[(String, LocalOperator)],
    lopts: &LanczosOptions,
    dim: usize,
    progress: bool,
) -> SectorRun {
    let apply = |x: &[S], y: &mut [S]| local_matvec(op, x, y);
    let mut timings = BTreeMap::new();
    let t0 = Instant::now();
    let res = eigensolve(dim, apply, lopts, progress);
    timings.insert("solve".to_string(), t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    let mut observables = BTreeMap::new();
    if let Some(psi) = &res.vector {
        let mut y = vec![S::zero(); dim];
        for (name, o) in obs {
            local_matvec(o, psi, &mut y);
            observables.insert(name.clone(), dot(psi, &y).to_c64().re);
        }
        let d = hilbert.local_dim();
        let n = hilbert.n_sites as f64;
        let [occ, top] = block_sum::<2>(dim, |i| {
            let mut s = [0u8; 64];
            let s = &mut s[..hilbert.n_sites];
            hilbert.config_of(i as u64, s);
            let w = psi[i].abs2();
            let occ: f64 = s.iter().map(|&v| v as f64).sum();
            let top = s.iter().filter(|&&v| v as usize == d - 1).count() as f64;
            [w * occ / n, w * top / n]
        });
        observables.insert("n_mean".to_string(), occ);
        observables.insert("top_level_weight".to_string(), top);
        timings.insert("observables".to_string(), t0.elapsed().as_secs_f64());
    }
    SectorRun {
        levels: res.energies,
        dimension: dim as u64,
        iterations: res.iterations,
        converged: res.converged,
        memory: 0,
        observables,
        timings,
    }
}

/// A one-line progress report on stderr, shown only on a terminal and after a second.
struct Progress {
    on: bool,
    start: Instant,
    last: f64,
    shown: bool,
    dim: usize,
}

impl Progress {
    fn new(on: bool, dim: usize) -> Self {
        Progress {
            on: on && std::io::stderr().is_terminal(),
            start: Instant::now(),
            last: 0.0,
            shown: false,
            dim,
        }
    }

    fn update(&mut self, it: usize, e: f64) {
        if !self.on {
            return;
        }
        let t = self.start.elapsed().as_secs_f64();
        if t > 1.0 && t - self.last > 0.25 {
            self.last = t;
            self.shown = true;
            eprint!(
                "\r  lanczos: {} states, step {it:4}, E0 = {e:.12}, {t:6.1} s   ",
                self.dim
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn done(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}
