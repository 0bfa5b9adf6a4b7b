//! The RG masked-diffusion denoiser (models.md, family A).
//!
//! Input at reverse step `k`, per site `x`: the one-hot local state `e_{s_x}` if `x` was
//! revealed before step `k` (else zeros) and a mask channel (1 if revealed), plus the lattice
//! averages of these channels (the revealed magnetisation, the only global input). The network is a
//! stack of periodic convolutions (circular padding, so exactly translation-equivariant on the
//! periodic lattice) with a learned embedding of the step added after the first layer, and a
//! pointwise head giving `d` logits per site (plus one phase channel for the learned phase).
//!
//! `log p(s) = sum_k sum_{x in step k} log softmax(f_k(s_<k))_x[s_x]`: all steps of a batch are
//! evaluated in one pass (teacher forcing, batch `B K`); sampling takes one pass of batch `B`
//! per step. With [`Network::Causal`] the convolutions are step-causal (a site reads only
//! sites of earlier steps), so one row per configuration gives every conditional and `log p`
//! is a pass of batch `B`; its draws evaluate each site once, at its step, from the hidden
//! states stored at earlier steps (the `stepwise` module): one pass in all. The wavefunction is `log psi = log p / 2 + i theta` with
//! `theta = 0` (`none`), `pi * #{down spins on sublattice A}` (`marshall`, Marshall's sign
//! rule for bipartite antiferromagnets) or `sum_x g(s)_x` from the phase channel evaluated on
//! the fully revealed configuration (`learned`; for the causal network the conditional phases
//! `sum_x phi_x(s_x | s_<step(x))` of the same pass).
//!
//! On a schedule that leaves sites unrevealed ([`Schedule::without_last_step`]) `p` is the
//! distribution of the revealed sites: draws leave the others at state 0, `log p` ignores them,
//! and no conditional reads them.
//!
//! Parameters are owned `Var`s with names sorted (`embed`, `head.*`, `layer{i}.*`), initialised
//! from a seeded generator (candle's CPU generator cannot be seeded), and saved as
//! safetensors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::dense_conv::{DenseConv, Gather};
use super::unique::Unique;
use crate::error::{Error, Result};
use crate::lattice::{Lattice, Shape};
use crate::operator::{Model, OscillatorBasis};
use crate::rg::Schedule;

use super::activation::FastTanh;
use super::symmetry::SymmetryGroup;

mod host;
pub use host::Frozen;
mod stepwise;
use stepwise::StepGather;

/// How the model carries the sign or phase of the wavefunction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Real positive `psi = sqrt(p)` (stoquastic Hamiltonians such as the TFIM).
    None,
    /// Marshall's sign `(-1)^{#down on sublattice A}` (bipartite antiferromagnets).
    Marshall,
    /// A learned phase head of the same network.
    Learned,
    /// Marshall's sign times a learned phase: `theta = pi #{down on A} + sum_x g(s)_x`, for
    /// frustrated antiferromagnets whose sign structure is close to Marshall's (J1-J2 below
    /// J2 ~ 0.5), so the phase head only learns the correction.
    #[serde(rename = "marshall+learned")]
    MarshallLearned,
}

impl Phase {
    pub fn parse(s: &str) -> Result<Phase> {
        match s {
            "none" => Ok(Phase::None),
            "marshall" => Ok(Phase::Marshall),
            "learned" => Ok(Phase::Learned),
            "marshall+learned" => Ok(Phase::MarshallLearned),
            _ => Err(Error::Input(format!(
                "unknown phase `{s}`; expected none, marshall, learned or marshall+learned"
            ))),
        }
    }

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Phase::None => "none",
            Phase::Marshall => "marshall",
            Phase::Learned => "learned",
            Phase::MarshallLearned => "marshall+learned",
        }
    }

    /// Whether the network carries a phase head.
    pub fn is_learned(self) -> bool {
        matches!(self, Phase::Learned | Phase::MarshallLearned)
    }

    /// Whether Marshall's sign is part of the phase.
    pub fn has_marshall(self) -> bool {
        matches!(self, Phase::Marshall | Phase::MarshallLearned)
    }

    /// The phase a model's ground state needs (`--phase auto`):
    /// - `none` where the Hamiltonian is stoquastic in the computational basis (off-diagonal
    ///   elements `<= 0`, so the ground state is positive): the TFIM with `h >= 0`,
    ///   ferromagnetic Heisenberg and XXZ (`J < 0`), phi^4 in the local basis (up to tiny
    ///   elements near the cutoff, see the README's conventions);
    /// - `marshall` for antiferromagnets (`J > 0`) on bipartite lattices, whose ground state
    ///   has Marshall's sign `(-1)^{#down on sublattice A}`;
    /// - `marshall+learned` for J1-J2 (`J1 > 0`) on bipartite lattices: Marshall's sign is
    ///   close but not exact once `J2 > 0`, the learned phase corrects it;
    /// - `learned` otherwise (phi^4 in the Fock basis, where `lambda phi^4` has positive
    ///   off-diagonal elements; frustrated lattices; term lists).
    pub fn default_for(model: &Model, lattice: &Lattice) -> Phase {
        let bipartite = lattice.is_bipartite();
        match model {
            Model::Tfim { h, .. } if *h >= 0.0 => Phase::None,
            Model::Heisenberg { j } | Model::Xxz { j, .. } if *j > 0.0 && bipartite => {
                Phase::Marshall
            }
            Model::Heisenberg { j } | Model::Xxz { j, .. } if *j < 0.0 => Phase::None,
            Model::J1J2 { j1, .. } if *j1 > 0.0 && bipartite => Phase::MarshallLearned,
            Model::Phi4 {
                basis: OscillatorBasis::Local,
                ..
            } => Phase::None,
            _ => Phase::Learned,
        }
    }
}

/// Which revealed sites a conditional's convolutions read, and so how many network passes
/// `log p` takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// One pass per step over the partially revealed lattice (sites of later steps are masked
    /// out of the input): every hidden unit of step `k` sees every site revealed before `k`.
    /// `log p` of one configuration takes `K` rows (one per step).
    #[default]
    Masked,
    /// Step-causal convolutions (the masked convolutions of PixelCNN, ordered by the
    /// schedule's steps instead of the raster): the first layer at site `x` reads the states
    /// of the sites `y` with `step(y) < step(x)`, later layers the hidden units of sites with
    /// `step(y) <= step(x)`, so the output at `x` depends only on sites revealed before its
    /// step and is its conditional `p(s_x | s_<step(x))`. All conditionals of a configuration
    /// come from one pass: `log p` takes one row instead of `K`, which makes the
    /// autoregressive schedule's gradient, Jacobian and connected configurations `K` times
    /// cheaper. Sampling still takes one pass per step. A hidden unit of `x` sees only
    /// earlier sites (a subset of what the masked network's unit sees), so long-range
    /// information must flow through chains of earlier sites: it suits `autoregressive`
    /// (site `x - 1` is always earlier), and `rg` (coarse sites are far apart) only with
    /// [`Dilation::Levels`], whose first layer reads the coarse sites revealed before a site.
    Causal,
}

impl Network {
    pub fn parse(s: &str) -> Result<Network> {
        match s {
            "masked" => Ok(Network::Masked),
            "causal" => Ok(Network::Causal),
            other => Err(Error::Input(format!(
                "unknown network `{other}`; expected masked or causal"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Network::Masked => "masked",
            Network::Causal => "causal",
        }
    }
}

/// Architecture of the denoiser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Channels of the hidden layers.
    pub width: usize,
    /// Number of convolution layers (at least 1).
    pub depth: usize,
    /// Convolution kernel size (odd), per axis.
    pub kernel: usize,
    pub phase: Phase,
    /// Total `S^z` the samples are restricted to (spin-1/2 only, one site per step): at each
    /// step a value that would make the target unreachable gets probability zero, so `p` is
    /// exactly normalised on the sector. `None`: every configuration.
    #[serde(default)]
    pub sz: Option<f64>,
    /// Masked (one pass per step) or step-causal (one pass for all steps) convolutions.
    #[serde(default)]
    pub network: Network,
    /// The group the amplitudes are averaged over (see [`super::symmetry`]), e.g.
    /// `point,flip`; `None`: the plain network.
    #[serde(default)]
    pub symmetry: Option<String>,
    /// How far apart the taps of the convolutions are ([`Dilation`]).
    #[serde(default)]
    pub dilation: Dilation,
    /// Pin the first site the schedule reveals to local state 0: its conditional is fixed,
    /// `p(s_x0 = 0) = 1`, and `p` is a distribution over the configurations with `s_x0 = 0`.
    /// A gauge for targets symmetric under a global flip `s -> -s`: the proposal
    /// `q(s) = p(g s) / 2`, `g` the flip that makes `s_x0 = 0` (or none), is flip-symmetric,
    /// exactly normalised and costs one evaluation of `p` where the mixture
    /// `(p(s) + p(-s)) / 2` costs two (see [`crate::field::variational::Z2`]).
    #[serde(default)]
    pub pin_first: bool,
}

/// The spacing of the convolutions' taps: a tap `j` (`|j| <= (kernel - 1)/2` per axis) of
/// site `x` reads `x + D j`. The `rg` schedule's coarse steps reveal sites `2^level` apart, so
/// with `D = 1` a conditional at a coarse step sees none of the sites revealed before it,
/// only their lattice averages (measured on the 16x16 Ising model at `beta_c` after 150
/// training iterations: importance-weight ESS 0.014 for the undilated causal network of
/// width 8, depth 2, kernel 3, 0.21 for the same network with [`Dilation::Levels`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dilation {
    /// `D = 1`: plain convolutions.
    #[default]
    None,
    /// `D = 2^l` in layer `l` (0 first), the receptive radius growing as `2^depth`.
    Layers,
    /// `D = 2^level(x)` at site `x` in every layer, `level(x)` its RG level (the 2-adic
    /// valuation of its coordinates, `min(v2(x), v2(y))` on the square): each site's
    /// convolution acts on the coarse lattice of its level, whose sites are exactly the
    /// ones the `rg` schedule reveals before it.
    Levels,
}

impl Dilation {
    pub fn parse(s: &str) -> Result<Dilation> {
        match s {
            "none" => Ok(Dilation::None),
            "layers" => Ok(Dilation::Layers),
            "levels" => Ok(Dilation::Levels),
            other => Err(Error::Input(format!(
                "unknown dilation `{other}`; expected none, layers or levels"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dilation::None => "none",
            Dilation::Layers => "layers",
            Dilation::Levels => "levels",
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            width: 16,
            depth: 3,
            kernel: 5,
            phase: Phase::None,
            sz: None,
            network: Network::Masked,
            symmetry: None,
            dilation: Dilation::None,
            pin_first: false,
        }
    }
}

/// The dilation of every site (inner) in each of the `depth` convolution layers (outer)
/// ([`Dilation`]), capped at the largest power of two `D` with `D (kernel - 1)/2 <= L/2`
/// (`L` the longest axis), beyond which the periodic taps would wrap onto sites nearer than
/// their offset.
pub fn dilations(cfg: &ModelConfig, lattice: &Lattice) -> Vec<Vec<usize>> {
    let r = cfg.kernel / 2;
    let [lx, ly] = lattice.extent();
    let half = lx.max(ly) / 2;
    let mut cap = 1;
    while r > 0 && 2 * cap * r <= half {
        cap *= 2;
    }
    // 2^v2(c), with v2(0) = infinity (capped).
    let pow2 = |c: usize| if c == 0 { cap } else { 1 << c.trailing_zeros() };
    let n = lattice.n_sites();
    (0..cfg.depth)
        .map(|l| {
            (0..n)
                .map(|site| {
                    let d = match cfg.dilation {
                        Dilation::None => 1,
                        Dilation::Layers => 1usize << l.min(30),
                        Dilation::Levels => {
                            let (x, y) = lattice.coords(site);
                            match lattice.shape() {
                                Shape::Chain => pow2(x),
                                Shape::Square => pow2(x).min(pow2(y)),
                            }
                        }
                    };
                    d.min(cap)
                })
                .collect()
        })
        .collect()
}

/// Scale of the phase head's initial weights relative to the logit heads' (see
/// [`MaskedDiffusion::new`]). A random phase of order 1 made the first energies of the phi^4
/// chain ten times the ground energy.
const PHASE_INIT: f64 = 0.05;

/// Logit added to local values a sector constraint forbids: `exp` of it is 0 in `f32` and
/// `f64`, and unlike `-inf` it multiplies by 0 to 0.
const FORBIDDEN: f32 = -1e4;

/// Most configurations evaluated per network call (chains of up to 16 sites reach it).
pub const EVAL_ROWS: usize = 8192;

/// Budget of one network call in gathered convolution inputs (`rows x sites x taps x
/// width`, in `f32`: about 40 MiB): the rows per call shrink with the lattice so that the
/// gather buffers stay small enough for the allocator to reuse them (on a 10x10 square, 8192
/// rows meant a 1.3 GB buffer whose pages the kernel zeroed on every call: a third of the
/// time).
const EVAL_ELEMENTS: usize = EVAL_ROWS * 16 * 16 * 5;

/// The step of a row of the causal network that computes every site's conditional at once
/// (its input is the whole configuration; see [`Network::Causal`]).
const ALL_STEPS: usize = usize::MAX;

/// The gathers of the step-causal convolutions ([`Network::Causal`]).
struct CausalGather {
    /// `N x taps x c_in` 0/1 mask of the first layer's unfolded input: the one-hot and mask
    /// channels of a neighbour `y` of `x` count when `step(y) < step(x)`, the averages
    /// channels (which at `y` cover the sites revealed before `y`'s step) when
    /// `step(y) <= step(x)`.
    first: Tensor,
    /// Per layer (entry 0 unused by the unfolded form), for every site and tap the
    /// neighbour `y` if `step(y) <= step(x)`, else `N` (a zero row appended to the hidden
    /// layer): the gather of the later layers.
    hidden: Vec<Tensor>,
    /// `step(x)` of every site (`u32`): the rows of the step embedding added per site.
    steps: Tensor,
    /// The first layer's neighbours (`N x taps`, row-major) on the host.
    first_neighbours: Vec<u32>,
    /// Per step, the gathers of its sites, for draws one step at a time.
    per_step: Vec<StepGather>,
}

/// Exact samples with what the reverse process computed while drawing them.
#[derive(Clone, Debug)]
pub struct Sampled {
    /// `B x N` local states, row-major.
    pub configs: Vec<u8>,
    /// `log p` of each sample.
    pub log_p: Vec<f64>,
    /// `B x N x d`: `log p(s_x = v | sites revealed before the step of x)`.
    pub cond: Vec<f64>,
    /// `log q` of each sample under the distribution it was drawn from: `log p` for exact
    /// samples, the tempered proposal's for [`MaskedDiffusion::sample_tempered`].
    pub log_q: Vec<f64>,
}

/// Per configuration of a block, what its images give a symmetrized wavefunction (see
/// [`MaskedDiffusion::symmetric_weights`]).
struct SymmetricWeights {
    /// `log p_G` per configuration.
    log_p: Vec<f64>,
    /// `c_g = psi(g s) / sum_h psi(h s)` as (re, im), element-major.
    c: Vec<(f64, f64)>,
    /// `arg sum_g psi(g s)` per configuration.
    theta: Vec<f64>,
}

/// The RG masked-diffusion model on one lattice with one schedule.
pub struct MaskedDiffusion {
    cfg: ModelConfig,
    shape: Shape,
    n: usize,
    d: usize,
    schedule: Schedule,
    device: Device,
    dtype: DType,
    params: Vec<(String, Var)>,
    sublattice_a: Vec<bool>,
    /// `[Lx, Ly]` of the lattice.
    extent: [usize; 2],
    /// Number of up spins (local state 0) of the `S^z` sector, when restricted.
    n_up: Option<usize>,
    /// Per convolution layer, for every site its periodic neighbours at the kernel's offsets
    /// times the layer's dilation (offsets `-r..=r`, `y` outer and `x` inner on the square):
    /// the gather that unfolds the layer's convolution.
    neighbours: Vec<Tensor>,
    /// The step-causal gathers, for [`Network::Causal`].
    causal: Option<CausalGather>,
    /// The convolutions as dense matrices, on lattices of at most eight times the kernel's
    /// taps ([`DenseConv::pays`]); `None`: unfolded.
    dense: Option<DenseConv>,
    /// The group the amplitudes are averaged over ([`SymmetryGroup`]), if any.
    symmetry: Option<SymmetryGroup>,
    /// Whether some layer's taps are dilated ([`dilations`] above 1 somewhere).
    dilated: bool,
    /// The receptive radius `(kernel - 1)/2 sum_l max_x D_l(x)` (see [`dilations`]).
    receptive: usize,
    /// Whether the causal network draws step by step (see [`Self::use_stepwise_draws`]).
    stepwise: bool,
    /// Whether the causal network runs on the host where it can (see
    /// [`Self::use_host_kernels`]).
    host: bool,
    /// With [`ModelConfig::pin_first`], `1 x N x d` logits added to every row: [`FORBIDDEN`]
    /// for the states other than 0 of the first site revealed, zero elsewhere.
    pin: Option<Tensor>,
}

impl MaskedDiffusion {
    /// A model with freshly initialised parameters (uniform in `+-1/sqrt(fan_in)`, from
    /// `seed`). `d` is the local dimension.
    pub fn new(
        lattice: &Lattice,
        d: usize,
        schedule: Schedule,
        cfg: ModelConfig,
        device: &Device,
        dtype: DType,
        seed: u64,
    ) -> Result<Self> {
        if cfg.depth == 0 || cfg.width == 0 || cfg.kernel.is_multiple_of(2) {
            return Err(Error::Input(
                "model: depth and width must be positive and the kernel odd".into(),
            ));
        }
        if schedule.n_sites() != lattice.n_sites() {
            return Err(Error::Input(
                "model: schedule and lattice differ in size".into(),
            ));
        }
        if !schedule.unrevealed().is_empty()
            && (cfg.sz.is_some() || cfg.symmetry.is_some() || cfg.phase.is_learned())
        {
            return Err(Error::Input(
                "model: a schedule that leaves sites unrevealed models the distribution of the \
                 others only; an S^z sector, a symmetry group and a learned phase need every site"
                    .into(),
            ));
        }
        let n = lattice.n_sites();
        let symmetry = match &cfg.symmetry {
            Some(spec) => SymmetryGroup::parse(spec, lattice, d, cfg.sz)?,
            None => None,
        };
        let n_up = match cfg.sz {
            None => None,
            Some(sz) => Some(Self::sector_ups(sz, n, d, &schedule)?),
        };
        let dims = lattice.dim();
        let k = cfg.kernel;
        let kshape = |o: usize, i: usize| -> Vec<usize> {
            if dims == 1 {
                vec![o, i, k]
            } else {
                vec![o, i, k, k]
            }
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut shapes: Vec<(String, Vec<usize>, f64)> = Vec::new();
        let c_in = 2 * (d + 1);
        for l in 0..cfg.depth {
            let i = if l == 0 { c_in } else { cfg.width };
            let fan_in = (i * k.pow(dims as u32)) as f64;
            shapes.push((
                format!("layer{l}.weight"),
                kshape(cfg.width, i),
                fan_in.sqrt().recip(),
            ));
            shapes.push((
                format!("layer{l}.bias"),
                vec![cfg.width],
                fan_in.sqrt().recip(),
            ));
        }
        let causal = cfg.network == Network::Causal;
        // The masked network's phase pass (fully revealed) has its own step embedding.
        let n_steps = schedule.n_steps() + usize::from(cfg.phase.is_learned() && !causal);
        shapes.push(("embed".into(), vec![n_steps, cfg.width], 0.5));
        let out = d + Self::phase_channels(&cfg, d);
        let head_shape = if dims == 1 {
            vec![out, cfg.width, 1]
        } else {
            vec![out, cfg.width, 1, 1]
        };
        let a = (cfg.width as f64).sqrt().recip();
        shapes.push(("head.weight".into(), head_shape, a));
        shapes.push(("head.bias".into(), vec![out], a));
        shapes.sort_by(|x, y| x.0.cmp(&y.0));
        let mut params = Vec::new();
        for (name, shape, scale) in shapes {
            let len: usize = shape.iter().product();
            let mut vals: Vec<f64> = (0..len).map(|_| rng.random_range(-scale..scale)).collect();
            if cfg.phase.is_learned() && name.starts_with("head.") {
                // The phase rows (outputs d..) start small: theta ~ 0 (or Marshall's sign), so
                // training starts from the real wavefunction plus a small random phase that
                // breaks the symmetry theta -> -theta (at theta = 0 exactly, a real
                // Hamiltonian's energy gradient in theta vanishes).
                let per_row = len / out;
                vals[d * per_row..]
                    .iter_mut()
                    .for_each(|v| *v *= PHASE_INIT);
            }
            let t = Tensor::from_vec(vals, shape, device)?.to_dtype(dtype)?;
            params.push((name, Var::from_tensor(&t)?));
        }
        let dil = dilations(&cfg, lattice);
        let neighbours = dil
            .iter()
            .map(|g| Self::neighbour_index(lattice, k, g))
            .collect::<Vec<_>>();
        let causal = match cfg.network {
            Network::Masked => None,
            Network::Causal => Some(Self::causal_gather(
                &neighbours,
                &schedule,
                d,
                device,
                dtype,
            )?),
        };
        let neighbours = neighbours
            .into_iter()
            .map(|nb| {
                let len = nb.len();
                Tensor::from_vec(nb, len, device)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pin = if cfg.pin_first {
            let mut mask = vec![0f32; n * d];
            let x0 = schedule.steps()[0][0];
            mask[x0 * d + 1..(x0 + 1) * d].fill(FORBIDDEN);
            Some(Tensor::from_vec(mask, (1, n, d), device)?.to_dtype(dtype)?)
        } else {
            None
        };
        let width = cfg.width;
        let dilated = dil.iter().flatten().any(|&g| g > 1);
        let receptive = (k / 2)
            * dil
                .iter()
                .map(|g| g.iter().copied().max().unwrap_or(1))
                .sum::<usize>();
        let mut model = MaskedDiffusion {
            cfg,
            shape: lattice.shape(),
            n,
            d,
            schedule,
            device: device.clone(),
            dtype,
            params,
            sublattice_a: (0..n).map(|i| lattice.sublattice_sign(i) > 0).collect(),
            extent: lattice.extent(),
            n_up,
            neighbours,
            causal,
            dense: None,
            symmetry,
            dilated,
            receptive,
            stepwise: true,
            host: true,
            pin,
        };
        let taps = model.neighbours[0].dim(0)? / n;
        model.use_dense_convolutions(!dilated && DenseConv::pays(n, taps, width))?;
        Ok(model)
    }

    /// Evaluates the convolutions as dense `(N c) x (N o)` matrices ([`DenseConv`]) or
    /// unfolded. Both compute the same function (to rounding); a new model takes the dense
    /// form where it is faster ([`DenseConv::pays`]: lattices of at most eight times the
    /// kernel's taps) and the taps are not dilated. For tests and timing; refused for
    /// dilated convolutions, whose layers gather differently.
    pub fn use_dense_convolutions(&mut self, on: bool) -> Result<()> {
        if on && self.dilated {
            return Err(Error::Input(
                "dense convolutions need one gather for every layer (no dilation)".into(),
            ));
        }
        self.dense = if on {
            let n = self.n;
            let nb: Vec<u32> = self.neighbours[0].to_vec1()?;
            let hidden: Option<Vec<u32>> = match &self.causal {
                Some(g) => Some(g.hidden[0].to_vec1()?),
                None => None,
            };
            let gathers = hidden
                .as_deref()
                .zip(self.causal.as_ref().map(|g| &g.first));
            Some(DenseConv::new(n, &nb, gathers, &self.device, self.dtype)?)
        } else {
            None
        };
        Ok(())
    }

    /// Draws of the causal network evaluate each site once, at its step (see the
    /// `stepwise` module), or (`false`) with one full causal pass per step. Both give the
    /// same conditionals (to rounding); stepwise is the default, the other for tests and
    /// timing.
    pub fn use_stepwise_draws(&mut self, on: bool) {
        self.stepwise = on;
    }

    /// The causal network's draws and [`Self::log_prob_values`] run on the host, site by
    /// site (the `host` module; CPU, `f32`, no `S^z` sector), or (`false`) as tensor
    /// operations. Both compute the same function (to rounding); the host is the default,
    /// the other for tests and timing.
    pub fn use_host_kernels(&mut self, on: bool) {
        self.host = on;
    }

    /// Whether the convolutions are evaluated as dense matrices (see
    /// [`MaskedDiffusion::use_dense_convolutions`]).
    pub fn dense_convolutions(&self) -> bool {
        self.dense.is_some()
    }

    /// Averages the wavefunction over `group` from now on (see [`super::symmetry`]): every
    /// evaluation of `log p`, the phase, their per-sample gradients and sampling then act
    /// on `psi_G`. `None` restores the plain network. Tempered sampling is refused while a
    /// group is set.
    pub fn set_symmetry(&mut self, group: Option<SymmetryGroup>) {
        self.symmetry = group;
    }

    /// The group the amplitudes are averaged over, if any.
    pub fn symmetry(&self) -> Option<&SymmetryGroup> {
        self.symmetry.as_ref()
    }

    /// Samples per block of a symmetrized evaluation: `|G|` images each, so that a block
    /// stays within [`EVAL_ROWS`] rows.
    fn symmetric_block(&self, g: &SymmetryGroup) -> usize {
        (self.raw_samples_per_pass() / g.order()).max(1)
    }

    /// Per configuration of `s` (plain network, no group): `log p`, and the learned phase
    /// when there is one, on the host.
    fn parts_raw(&self, s: &[u8]) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        let n = self.n;
        let lpsi = if self.causal.is_some() {
            self.log_psi_causal(s)?
        } else {
            let mut out = Vec::with_capacity(s.len() / n);
            for c in s.chunks(self.raw_samples_per_pass() * n) {
                let lp: Vec<f64> = self.log_prob_raw(c)?.to_dtype(DType::F64)?.to_vec1()?;
                let learned: Option<Vec<f64>> = match self.learned_phase_raw(c)? {
                    Some(t) => Some(t.to_dtype(DType::F64)?.to_vec1()?),
                    None => None,
                };
                out.extend(self.combine(c, &lp, learned.as_deref()));
            }
            out
        };
        let lp = lpsi.iter().map(|z| 2.0 * z.re).collect();
        let learned = self.cfg.phase.is_learned().then(|| {
            lpsi.iter()
                .enumerate()
                .map(|(i, z)| z.im - self.fixed_phase(&s[i * n..(i + 1) * n]))
                .collect()
        });
        Ok((lp, learned))
    }

    /// For the images `g s` of a block `s` (`B` configurations; `|G| B` rows, element-major):
    /// `log p(g s)` and the whole phase `phi(g s)` (fixed + learned) of the plain network.
    fn image_parts(&self, images: &[u8]) -> Result<(Vec<f64>, Vec<f64>)> {
        let n = self.n;
        let (lp, learned) = self.parts_raw(images)?;
        let phi = (0..lp.len())
            .map(|r| {
                self.fixed_phase(&images[r * n..(r + 1) * n])
                    + learned.as_ref().map_or(0.0, |t| t[r])
            })
            .collect();
        Ok((lp, phi))
    }

    /// Per configuration `i` of a block of `b` with image parts `(lp, phi)`: `log p_G`, the
    /// complex weights `c_g = psi(g s) / sum_h psi(h s)` (re, im; element-major) and the
    /// symmetrized phase `arg sum_g psi(g s)`.
    fn symmetric_weights(&self, lp: &[f64], phi: &[f64], b: usize) -> SymmetricWeights {
        let order = lp.len() / b;
        let mut lpg = Vec::with_capacity(b);
        let mut theta = Vec::with_capacity(b);
        let mut c = vec![(0.0, 0.0); lp.len()];
        for i in 0..b {
            let max = (0..order).map(|k| lp[k * b + i]).fold(f64::MIN, f64::max);
            let sum: f64 = (0..order).map(|k| (lp[k * b + i] - max).exp()).sum();
            lpg.push(max + (sum / order as f64).ln());
            let terms: Vec<num_complex::Complex64> = (0..order)
                .map(|k| {
                    num_complex::Complex64::from_polar(
                        (0.5 * (lp[k * b + i] - max)).exp(),
                        phi[k * b + i],
                    )
                })
                .collect();
            let total: num_complex::Complex64 = terms.iter().sum();
            theta.push(total.arg());
            for (k, t) in terms.iter().enumerate() {
                let w = t / total;
                c[k * b + i] = (w.re, w.im);
            }
        }
        SymmetricWeights {
            log_p: lpg,
            c,
            theta,
        }
    }

    /// `log p_G` and the learned part of the symmetrized phase of each configuration of `s`
    /// on the host: `log p_G(s) = log (1/|G|) sum_g p(g s)` and
    /// `theta_G(s) = arg sum_g psi(g s) - theta_fixed(s)` (`None` without a learned phase,
    /// whose model keeps its fixed phase).
    fn parts_symmetric(&self, g: &SymmetryGroup, s: &[u8]) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        let n = self.n;
        let mut lp = Vec::with_capacity(s.len() / n);
        let mut learned = self.cfg.phase.is_learned().then(Vec::new);
        for c in s.chunks(self.symmetric_block(g) * n) {
            let (l, phi) = self.image_parts(&g.images(c, n))?;
            let w = self.symmetric_weights(&l, &phi, c.len() / n);
            lp.extend(w.log_p);
            if let Some(out) = learned.as_mut() {
                out.extend(self.learned_part(c, &w.theta));
            }
        }
        Ok((lp, learned))
    }

    /// `theta - theta_fixed(s)` per configuration of `s`: the learned part of a whole phase.
    fn learned_part<'s>(&'s self, s: &'s [u8], theta: &'s [f64]) -> impl Iterator<Item = f64> + 's {
        s.chunks(self.n)
            .zip(theta)
            .map(|(c, t)| t - self.fixed_phase(c))
    }

    /// `sum_g w_g(s) J(g s)` per sample, from the per-sample gradients `jac` of the images of
    /// a block of `b` samples (`|G| b` rows, element-major) and weights `w` (`|G| b`).
    fn combine_images(&self, jac: &Tensor, w: Vec<f64>, b: usize) -> Result<Tensor> {
        let (rows, p) = jac.dims2()?;
        let order = rows / b;
        let w = Tensor::from_vec(w, (order, b, 1), &self.device)?.to_dtype(jac.dtype())?;
        Ok(jac.reshape((order, b, p))?.broadcast_mul(&w)?.sum(0)?)
    }

    /// Per-sample gradients of `log p_G` (if `want_logp`) and of the symmetrized phase (if
    /// `want_phase`) for a batch, sharing the images' Jacobians. With
    /// `c_g = psi(g s) / sum_h psi(h s)`: `d log p_G = sum_g w_g d log p(g s)`,
    /// `w_g = p(g s) / sum_h p(h s)`, and
    /// `d theta_G = Im d log sum_g psi(g s) = sum_g [Im c_g d log p(g s) / 2 + Re c_g d phi(g s)]`.
    fn jacobians_symmetric(
        &self,
        g: &SymmetryGroup,
        s: &[u8],
        want_logp: bool,
        want_phase: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = self.n;
        let order = g.order();
        let (mut lps, mut phases) = (Vec::new(), Vec::new());
        for c in s.chunks(self.symmetric_block(g) * n) {
            let b = c.len() / n;
            let images = g.images(c, n);
            let (lp, phi) = self.image_parts(&images)?;
            let w = self.symmetric_weights(&lp, &phi, b);
            let jl = self.log_prob_jacobian_raw(&images)?;
            if want_logp {
                let wl = (0..lp.len())
                    .map(|r| (lp[r] - w.log_p[r % b]).exp() / order as f64)
                    .collect();
                lps.push(self.combine_images(&jl, wl, b)?);
            }
            if want_phase {
                let jt = self.phase_jacobian_raw(&images)?.expect("a learned phase");
                let from_p =
                    self.combine_images(&jl, w.c.iter().map(|c| 0.5 * c.1).collect(), b)?;
                let from_t = self.combine_images(&jt, w.c.iter().map(|c| c.0).collect(), b)?;
                phases.push((from_p + from_t)?);
            }
        }
        let cat = |v: Vec<Tensor>| -> Result<Option<Tensor>> {
            Ok(if v.is_empty() {
                None
            } else {
                Some(Tensor::cat(&v, 0)?)
            })
        };
        Ok((cat(lps)?, cat(phases)?))
    }

    /// The per-sample gradients of `log p` and, with a learned phase, of the phase (see
    /// [`Self::log_prob_jacobian`], [`Self::phase_jacobian`]); with a symmetry group the two
    /// share the images' evaluation and Jacobian of `log p`.
    pub fn jacobians(&self, s: &[u8]) -> Result<(Tensor, Option<Tensor>)> {
        let Some(g) = &self.symmetry else {
            return Ok((self.log_prob_jacobian_raw(s)?, self.phase_jacobian_raw(s)?));
        };
        let learned = self.cfg.phase.is_learned();
        let (jl, jt) = self.jacobians_symmetric(g, s, true, learned)?;
        Ok((jl.expect("asked for"), jt))
    }

    /// The masks and indices of the step-causal convolutions (see [`CausalGather`]).
    /// `neighbours` holds each layer's gather.
    fn causal_gather(
        neighbours: &[Vec<u32>],
        schedule: &Schedule,
        d: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<CausalGather> {
        let n = schedule.n_sites();
        let nb = &neighbours[0];
        let taps = nb.len() / n;
        let sos = schedule.step_of_site();
        let c = 2 * (d + 1);
        let mut first = vec![0f32; n * taps * c];
        let hidden = neighbours
            .iter()
            .map(|nb| {
                let h: Vec<u32> = nb
                    .iter()
                    .enumerate()
                    .map(|(i, &y)| {
                        if sos[y as usize] <= sos[i / taps] {
                            y
                        } else {
                            n as u32
                        }
                    })
                    .collect();
                Tensor::from_vec(h, n * taps, device)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        for x in 0..n {
            for t in 0..taps {
                let y = nb[x * taps + t] as usize;
                for ch in 0..c {
                    let seen = if ch <= d {
                        sos[y] < sos[x]
                    } else {
                        sos[y] <= sos[x]
                    };
                    first[(x * taps + t) * c + ch] = f32::from(u8::from(seen));
                }
            }
        }
        // The unrevealed sites' outputs are never read: any embedding row will do.
        let last = schedule.n_steps() - 1;
        let steps: Vec<u32> = sos.iter().map(|&k| k.min(last) as u32).collect();
        Ok(CausalGather {
            first: Tensor::from_vec(first, (n, taps * c), device)?.to_dtype(dtype)?,
            hidden,
            steps: Tensor::from_vec(steps, n, device)?,
            first_neighbours: nb.clone(),
            per_step: StepGather::build(neighbours, schedule.steps(), sos, device)?,
        })
    }

    /// Output channels of the phase head: none without a learned phase; one for the masked
    /// network (`theta = sum_x g_x` on the fully revealed lattice); `d` for the causal one,
    /// whose phase is a sum of conditional phases `theta = sum_x phi_x(s_x | s_<step(x))`
    /// read from the same pass as the conditionals (any function of `s` is such a sum, so
    /// nothing is lost, and a configuration's `log psi` takes one row).
    fn phase_channels(cfg: &ModelConfig, d: usize) -> usize {
        match (cfg.phase.is_learned(), cfg.network) {
            (false, _) => 0,
            (true, Network::Masked) => 1,
            (true, Network::Causal) => d,
        }
    }

    /// Per row, the learned phase from the network output of a phase pass (masked) or of a
    /// causal pass (the conditional phases of the actual states, summed): shape `rows`.
    fn phase_terms(&self, out: &Tensor, s: &[u8]) -> Result<Tensor> {
        let (n, d) = (self.n, self.d);
        if self.causal.is_none() {
            return Ok(out.narrow(2, d, 1)?.sum((1, 2))?);
        }
        let rows = s.len() / n;
        let mut onehot = vec![0f32; rows * n * d];
        for (i, &v) in s.iter().enumerate() {
            onehot[i * d + v as usize] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (rows, n, d), &self.device)?.to_dtype(self.dtype)?;
        Ok((out.narrow(2, d, d)? * onehot)?.sum((1, 2))?)
    }

    /// The steps of the rows of a phase pass over `rows` configurations: fully revealed for
    /// the masked network, causal rows for the causal one.
    fn phase_rows(&self, rows: usize) -> Vec<usize> {
        match self.cfg.network {
            Network::Causal => vec![ALL_STEPS; rows],
            Network::Masked => vec![self.schedule.n_steps(); rows],
        }
    }

    /// Rows of network input per configuration for `log p`: one for the causal network,
    /// one per step for the masked one.
    fn rows_per_sample(&self) -> usize {
        match self.cfg.network {
            Network::Causal => 1,
            Network::Masked => self.schedule.n_steps(),
        }
    }

    /// The step of every row of a pass that gives the conditionals of step `k`.
    fn step_rows(&self, k: usize, rows: usize) -> Vec<usize> {
        match self.cfg.network {
            Network::Causal => vec![ALL_STEPS; rows],
            Network::Masked => vec![k; rows],
        }
    }

    /// Up spins `N/2 + S^z` of a sector, checked: spin 1/2, `S^z` an integer or half-integer
    /// reachable on `N` sites, and one site per step (sites revealed together are independent
    /// given the past, so their sum cannot be constrained exactly).
    fn sector_ups(sz: f64, n: usize, d: usize, schedule: &Schedule) -> Result<usize> {
        if d != 2 {
            return Err(Error::Input(format!(
                "model: an S^z sector needs spin 1/2 (local dimension 2), not {d}"
            )));
        }
        if schedule.steps().iter().any(|st| st.len() != 1) {
            return Err(Error::Input(format!(
                "model: an S^z sector needs one site per step (scheme autoregressive); scheme {} reveals several sites at once",
                schedule.name()
            )));
        }
        let ups = n as f64 / 2.0 + sz;
        if ups.fract() != 0.0 || ups < 0.0 || ups > n as f64 {
            return Err(Error::Input(format!(
                "model: S^z = {sz} is not reachable on {n} spins 1/2 (expected one of -N/2, -N/2 + 1, ..., N/2)"
            )));
        }
        Ok(ups as usize)
    }

    /// Additive logit mask (`rows x N x d`) for the `S^z` sector: at the site of each row's step,
    /// up is forbidden once `n_up` sites are up, down once `N - n_up` are down. `None` without
    /// a sector.
    fn sector_mask(&self, s: &[u8], steps: &[usize]) -> Result<Option<Tensor>> {
        let Some(n_up) = self.n_up else {
            return Ok(None);
        };
        let n = self.n;
        let sos = self.schedule.step_of_site();
        let order = self.schedule.steps();
        let mut mask = vec![0f32; steps.len() * n * 2];
        for (r, &k) in steps.iter().enumerate() {
            let row = &s[r * n..(r + 1) * n];
            if k == ALL_STEPS {
                // Every site's conditional: the counts of the sites revealed before it.
                let (mut ups, mut downs) = (0, 0);
                for step in order {
                    let x = step[0];
                    if ups >= n_up {
                        mask[(r * n + x) * 2] = FORBIDDEN;
                    }
                    if downs >= n - n_up {
                        mask[(r * n + x) * 2 + 1] = FORBIDDEN;
                    }
                    if row[x] == 0 {
                        ups += 1;
                    } else {
                        downs += 1;
                    }
                }
                continue;
            }
            if k >= order.len() {
                continue;
            }
            let (mut ups, mut downs) = (0, 0);
            for y in 0..n {
                if sos[y] < k {
                    if row[y] == 0 {
                        ups += 1;
                    } else {
                        downs += 1;
                    }
                }
            }
            let x = order[k][0];
            if ups >= n_up {
                mask[(r * n + x) * 2] = FORBIDDEN;
            }
            if downs >= n - n_up {
                mask[(r * n + x) * 2 + 1] = FORBIDDEN;
            }
        }
        let t = Tensor::from_vec(mask, (steps.len(), n, 2), &self.device)?.to_dtype(self.dtype)?;
        Ok(Some(t))
    }

    /// The logits of the local states (sector mask and pin applied) from the network output.
    fn logits(&self, out: &Tensor, s: &[u8], steps: &[usize]) -> Result<Tensor> {
        let mut logits = out.narrow(2, 0, self.d)?;
        if let Some(m) = self.sector_mask(s, steps)? {
            logits = (logits + m)?;
        }
        if let Some(pin) = &self.pin {
            logits = logits.broadcast_add(pin)?;
        }
        Ok(logits)
    }

    /// The pinned site ([`ModelConfig::pin_first`]), if any.
    pub fn pinned_site(&self) -> Option<usize> {
        self.pin.as_ref().map(|_| self.schedule.steps()[0][0])
    }

    /// Every site's periodic neighbours at offsets `dilation[site] j`, `|j| <= (k - 1)/2`
    /// (`y` outer and `x` inner on the square), `N x taps` row-major.
    fn neighbour_index(lattice: &Lattice, k: usize, dilation: &[usize]) -> Vec<u32> {
        let r = (k / 2) as isize;
        let [lx, ly] = lattice.extent();
        let wrap = |v: isize, l: usize| v.rem_euclid(l as isize) as usize;
        let mut idx = Vec::new();
        for (site, &g) in dilation.iter().enumerate() {
            let (x, y) = lattice.coords(site);
            let g = g as isize;
            match lattice.shape() {
                Shape::Chain => {
                    for j in -r..=r {
                        idx.push(wrap(x as isize + g * j, lx) as u32);
                    }
                }
                Shape::Square => {
                    for dy in -r..=r {
                        for dx in -r..=r {
                            let nx = wrap(x as isize + g * dx, lx);
                            let ny = wrap(y as isize + g * dy, ly);
                            idx.push(lattice.index(nx, ny) as u32);
                        }
                    }
                }
            }
        }
        idx
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// `None` when the convolutions see the whole periodic lattice (receptive radius
    /// `(kernel - 1)/2 sum_l D_l` at least `L/2` along every axis, `D_l` the largest dilation
    /// of layer `l`, 1 undilated); otherwise a note with the smallest kernel that would, and
    /// for an undilated network on a schedule with coarse steps `--dilation levels`. Beyond the radius a conditional sees the other sites only
    /// through the lattice averages: on the TFIM chain 16 the default kernel 5 (radius 6 < 8)
    /// held the local-energy variance near 1e-2, kernel 9 brought it to 5e-4.
    pub fn receptive_field_note(&self) -> Option<String> {
        let r = self.receptive;
        let [lx, ly] = self.extent;
        let need = match self.shape {
            Shape::Chain => lx / 2,
            Shape::Square => lx.max(ly) / 2,
        };
        if r >= need {
            return None;
        }
        let k = 2 * need.div_ceil(self.cfg.depth) + 1;
        let how = if self.dilated {
            format!("dilation {}", self.cfg.dilation.name())
        } else {
            format!(
                "depth {} x (kernel {} - 1)/2",
                self.cfg.depth, self.cfg.kernel
            )
        };
        // Schedules revealing several sites per step have coarse sites far apart.
        let levels = if self.dilated || self.schedule.n_steps() == self.n {
            ""
        } else {
            ", --dilation levels reaches the coarse sites revealed before each step"
        };
        Some(format!(
            "the network sees {r} sites in each direction ({how}), less than half the lattice ({need}); beyond that only the lattice averages reach a conditional. --kernel {k} covers the lattice{levels}"
        ))
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The floating-point type of the parameters and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn n_sites(&self) -> usize {
        self.n
    }

    pub fn local_dim(&self) -> usize {
        self.d
    }

    /// Parameters, sorted by name (the order used for flattening and checkpoints).
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Total number of scalar parameters.
    pub fn n_params(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Weight and bias of convolution `l`: the `depth` layers (0 first), then the head
    /// (`l = depth`).
    fn conv_params(&self, l: usize) -> (&Tensor, &Tensor) {
        if l < self.cfg.depth {
            (
                self.param(&format!("layer{l}.weight")),
                self.param(&format!("layer{l}.bias")),
            )
        } else {
            (self.param("head.weight"), self.param("head.bias"))
        }
    }

    fn param(&self, name: &str) -> &Tensor {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .expect("parameter exists")
    }

    /// Network inputs (`m x N x 2(d+1)`, channels last) for configurations `s` (`m x N`,
    /// row-major) at the given steps: per site the one-hot state of the sites revealed before
    /// the step and a mask channel, then the lattice averages of those `d + 1` channels (the
    /// same at every site). The averages are the only global information the network gets
    /// (its convolutions see a finite neighbourhood): the magnetisation revealed so far, which
    /// a conditional needs to steer towards an `S^z` sector or an ordered state. A step equal
    /// to `n_steps` reveals every site (the phase head's input). A step [`ALL_STEPS`] is a row
    /// of the causal network: every site's state, and at each site the averages over the
    /// sites revealed before its step.
    fn encode(&self, s: &[u8], steps: &[usize]) -> Result<Tensor> {
        let (n, d) = (self.n, self.d);
        let c = 2 * (d + 1);
        let m = steps.len();
        let sos = self.schedule.step_of_site();
        let mut x = vec![0f32; m * n * c];
        let mut mean = vec![0f32; d + 1];
        for (b, &k) in steps.iter().enumerate() {
            let row = &s[b * n..(b + 1) * n];
            if k == ALL_STEPS {
                // Causal row: every site's state, and at each site the averages over the
                // sites revealed before its step.
                mean.iter_mut().for_each(|v| *v = 0.0);
                for step in self.schedule.steps() {
                    for &site in step {
                        let base = (b * n + site) * c;
                        x[base + row[site] as usize] = 1.0;
                        x[base + d] = 1.0;
                        for (j, m) in mean.iter().enumerate() {
                            x[base + d + 1 + j] = m / n as f32;
                        }
                    }
                    for &site in step {
                        mean[row[site] as usize] += 1.0;
                        mean[d] += 1.0;
                    }
                }
                continue;
            }
            mean.iter_mut().for_each(|v| *v = 0.0);
            for site in 0..n {
                if sos[site] < k {
                    let base = (b * n + site) * c;
                    x[base + row[site] as usize] = 1.0;
                    x[base + d] = 1.0;
                    mean[row[site] as usize] += 1.0;
                    mean[d] += 1.0;
                }
            }
            mean.iter_mut().for_each(|v| *v /= n as f32);
            for site in 0..n {
                let base = (b * n + site) * c + d + 1;
                x[base..base + d + 1].copy_from_slice(&mean);
            }
        }
        let t = Tensor::from_vec(x, (m, n, c), &self.device)?.to_dtype(self.dtype)?;
        Ok(t)
    }

    /// Periodic convolution of `x` (`m x N x c`, channels last) with a weight of this
    /// lattice's dimension (`o x c x k` or `o x c x k x k`), written as an explicit unfold
    /// (one `index_select` gathers, for every site, its `k` or `k^2` periodic neighbours) and
    /// one matrix product `(m N) x (k c)` by `(k c) x o`. candle 0.11's `conv1d` returns wrong
    /// kernel gradients (checked against finite differences), so the convolution is built
    /// from ops whose gradients are exact; it is also a single large GEMM. On a small lattice
    /// ([`DenseConv`]) the gather is skipped: one product with the dense `(N c) x (N o)`
    /// matrix of the kernel.
    fn conv(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        layer: usize,
        causal: bool,
    ) -> Result<Tensor> {
        let m = x.dim(0)?;
        let c = x.dim(2)?;
        let o = w.dim(0)?;
        let k = w.dim(2)?;
        let n = self.n;
        let taps = if self.shape == Shape::Chain { k } else { k * k };
        let w2 = self.unfolded_weight(w)?;
        let b = b.unsqueeze(0)?.unsqueeze(0)?;
        if let (Some(dense), Some(gather)) = (&self.dense, self.gather(k, layer, causal)) {
            let wd = dense.weight(&w2.reshape((taps, c, o))?, gather)?;
            let y = x.reshape((m, n * c))?.matmul(&wd)?.reshape((m, n, o))?;
            return Ok(y.broadcast_add(&b)?);
        }
        let cols = self.unfold(x, k, layer, causal)?;
        let y = cols
            .reshape((m * n, taps * c))?
            .matmul(&w2)?
            .reshape((m, n, o))?;
        Ok(y.broadcast_add(&b)?)
    }

    /// A convolution's weight (`o x c x k` or `o x c x k x k`) as the `taps c x o` matrix
    /// that multiplies the unfolded input (taps in the order of the neighbour index, `y`
    /// outer and `x` inner, then channels).
    fn unfolded_weight(&self, w: &Tensor) -> Result<Tensor> {
        let (o, c, k) = (w.dim(0)?, w.dim(1)?, w.dim(2)?);
        let taps = if self.shape == Shape::Chain { k } else { k * k };
        Ok(match self.shape {
            Shape::Chain => w.permute((2, 1, 0))?,
            Shape::Square => w.permute((2, 3, 1, 0))?,
        }
        .contiguous()?
        .reshape((taps * c, o))?)
    }

    /// The gather of a convolution with kernel `k` at layer `layer` (0 is the first) in a
    /// causal pass or not; `None` for a pointwise layer, which reads only its own site.
    fn gather(&self, k: usize, layer: usize, causal: bool) -> Option<Gather> {
        let causal = causal && self.causal.is_some();
        match (causal, layer) {
            (true, 0) => Some(Gather::CausalFirst),
            _ if k == 1 => None,
            (true, _) => Some(Gather::CausalHidden),
            (false, _) => Some(Gather::Plain),
        }
    }

    /// The unfolded input (`m x N x taps c`) of a convolution with kernel `k` at layer
    /// `layer` (0 is the first): every site's periodic neighbours, restricted to earlier steps
    /// for the causal network (see [`CausalGather`]); `x` itself for a pointwise layer.
    fn unfold(&self, x: &Tensor, k: usize, layer: usize, causal: bool) -> Result<Tensor> {
        let (m, n, c) = x.dims3()?;
        let taps = if self.shape == Shape::Chain { k } else { k * k };
        let gather = self.gather(k, layer, causal);
        match (gather, &self.causal) {
            (None, _) => Ok(x.clone()),
            (Some(Gather::CausalFirst), Some(g)) => Ok(x
                .index_select(&self.neighbours[layer], 1)?
                .reshape((m, n, taps * c))?
                .broadcast_mul(&g.first.unsqueeze(0)?)?),
            (Some(Gather::CausalHidden), Some(g)) => {
                let zero = Tensor::zeros((m, 1, c), x.dtype(), x.device())?;
                Ok(Tensor::cat(&[x, &zero], 1)?
                    .index_select(&g.hidden[layer], 1)?
                    .reshape((m, n, taps * c))?)
            }
            _ => Ok(x
                .index_select(&self.neighbours[layer], 1)?
                .reshape((m, n, taps * c))?),
        }
    }

    /// Whether a pass over rows at these steps is a causal pass (every row [`ALL_STEPS`]);
    /// rows of one pass are all causal or none.
    fn is_causal_pass(&self, steps: &[usize]) -> bool {
        let causal = steps.first() == Some(&ALL_STEPS);
        debug_assert!(steps.iter().all(|&k| (k == ALL_STEPS) == causal));
        causal && self.causal.is_some()
    }

    /// Network output (`m x N x out`) for encoded inputs at the given steps.
    fn forward(&self, input: &Tensor, steps: &[usize]) -> Result<Tensor> {
        self.forward_probed(input, steps, None)
    }

    /// [`MaskedDiffusion::forward`]; with `probes`, a zero variable is added to the output
    /// of every convolution (the `depth` layers, then the head), so that the gradient of a
    /// loss with respect to it is the back-propagated signal `delta_l = dL/dz_l` of every
    /// row, and the inputs of every convolution are recorded (detached) in `inputs`.
    fn forward_probed(
        &self,
        input: &Tensor,
        steps: &[usize],
        mut probes: Option<(&[Var], &mut Vec<Tensor>)>,
    ) -> Result<Tensor> {
        let causal = self.is_causal_pass(steps);
        let emb = match &self.causal {
            // Causal: each site gets the embedding of its own step.
            Some(g) if causal => self
                .param("embed")
                .index_select(&g.steps, 0)?
                .unsqueeze(0)?,
            _ => {
                let ids: Vec<u32> = steps.iter().map(|&k| k as u32).collect();
                let ids = Tensor::from_vec(ids, steps.len(), &self.device)?;
                self.param("embed").index_select(&ids, 0)?.unsqueeze(1)?
            }
        };
        let mut h = input.clone();
        for l in 0..=self.cfg.depth {
            let (w, b) = self.conv_params(l);
            let mut z = self.conv(&h, w, b, l, causal)?;
            if l == 0 {
                z = z.broadcast_add(&emb)?;
            }
            if let Some((vars, inputs)) = probes.as_mut() {
                inputs.push(h.detach());
                z = (z + vars[l].as_tensor())?;
            }
            if l == self.cfg.depth {
                return Ok(z);
            }
            let a = self.activation(&z)?;
            h = if l == 0 { a } else { (h + a)? };
        }
        unreachable!("the loop returns at the head")
    }

    /// `tanh`, through [`FastTanh`] for `f32` on the CPU (libm's `tanhf` was a third of a
    /// VMC iteration).
    fn activation(&self, z: &Tensor) -> Result<Tensor> {
        if self.device.is_cpu() && z.dtype() == DType::F32 {
            Ok(z.apply_op1(FastTanh)?)
        } else {
            Ok(z.tanh()?)
        }
    }

    /// Per-sample gradients `d f_b / d params` (a `B x n_params` tensor on the model's device,
    /// parameters in [`MaskedDiffusion::params`] order, each flattened row-major) of a per-row scalar
    /// `f_r` summed over the `per` consecutive rows of each sample.
    ///
    /// Rows do not interact, so one backward pass of `sum_r f_r` gives every row's signal
    /// `delta_l` at the output of every convolution (through zero probe variables), and a
    /// convolution `z = unfold(h) W + b` has the per-sample gradients
    /// `dW_b = sum_{rows of b, sites} unfold(h)^T delta`, `db_b = sum delta`; the step
    /// embedding, added to the first convolution's output, collects `delta_0` summed over
    /// sites at its step. Replaces `B` backward passes by one plus batched matrix products.
    fn per_sample_grads(
        &self,
        s: &[u8],
        steps: &[usize],
        per: usize,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let n = self.n;
        let rows = steps.len();
        let b = rows / per;
        let input = self.encode(s, steps)?;
        let out_dim = self.d + Self::phase_channels(&self.cfg, self.d);
        let mut vars = Vec::with_capacity(self.cfg.depth + 1);
        for l in 0..=self.cfg.depth {
            let o = if l < self.cfg.depth {
                self.cfg.width
            } else {
                out_dim
            };
            vars.push(Var::zeros((rows, n, o), self.dtype, &self.device)?);
        }
        let mut inputs = Vec::new();
        let out = self.forward_probed(&input, steps, Some((&vars, &mut inputs)))?;
        let grads = f(&out)?.sum_all()?.backward()?;
        let causal = self.is_causal_pass(steps);
        let mut blocks: HashMap<String, Tensor> = HashMap::new();
        let taps_of = |k: usize| if self.shape == Shape::Chain { k } else { k * k };
        for l in 0..=self.cfg.depth {
            let name = if l < self.cfg.depth {
                format!("layer{l}")
            } else {
                "head".to_string()
            };
            let w = self.param(&format!("{name}.weight"));
            let (o, c, k) = (w.dim(0)?, w.dim(1)?, w.dim(2)?);
            let taps = taps_of(k);
            let delta = match grads.get(vars[l].as_tensor()) {
                Some(g) => g.reshape((b, per * n, o))?,
                None => Tensor::zeros((b, per * n, o), self.dtype, &self.device)?,
            };
            let h = &inputs[l];
            let cols = self
                .unfold(h, k, l, causal)?
                .reshape((b, per * n, taps * c))?;
            let gw = cols.transpose(1, 2)?.contiguous()?.matmul(&delta)?; // b x (taps c) x o
            let gw = match self.shape {
                Shape::Chain => gw.reshape((b, k, c, o))?.permute((0, 3, 2, 1))?,
                Shape::Square => gw.reshape((b, k, k, c, o))?.permute((0, 4, 3, 1, 2))?,
            };
            blocks.insert(format!("{name}.weight"), gw.contiguous()?.reshape((b, ()))?);
            blocks.insert(format!("{name}.bias"), delta.sum(1)?);
            if l == 0 {
                let e = self.param("embed");
                let zeros = Tensor::zeros((b, e.dim(0)?, o), self.dtype, &self.device)?;
                let ge = match &self.causal {
                    // Causal rows (one per sample): each site's signal goes to its step's row.
                    Some(g) if causal => zeros.index_add(&g.steps, &delta, 1)?,
                    _ => {
                        let per_step = delta.reshape((b, per, n, o))?.sum(2)?; // b x per x o
                        let ids: Vec<u32> = steps[..per].iter().map(|&k| k as u32).collect();
                        let ids = Tensor::from_vec(ids, per, &self.device)?;
                        zeros.index_add(&ids, &per_step, 1)?
                    }
                };
                blocks.insert("embed".into(), ge.reshape((b, ()))?);
            }
        }
        let parts: Vec<Tensor> = self
            .params
            .iter()
            .map(|(name, _)| blocks.remove(name).expect("every parameter has a block"))
            .collect();
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// Per-sample gradients of `log p(s_b)` (a `B x n_params` tensor), computed by the
    /// private `per_sample_grads`.
    pub fn log_prob_jacobian(&self, s: &[u8]) -> Result<Tensor> {
        if let Some(g) = &self.symmetry {
            return Ok(self
                .jacobians_symmetric(g, s, true, false)?
                .0
                .expect("asked for"));
        }
        self.log_prob_jacobian_raw(s)
    }

    /// [`Self::log_prob_jacobian`] of the plain network.
    fn log_prob_jacobian_raw(&self, s: &[u8]) -> Result<Tensor> {
        let k = self.rows_per_sample();
        let mut blocks = Vec::new();
        for chunk in s.chunks(self.raw_samples_per_pass() * self.n) {
            let (steps, reps) = self.teacher_forcing_rows(chunk);
            blocks.push(self.per_sample_grads(&reps, &steps, k, |out| {
                self.select_terms(out, &reps, &steps)
            })?);
        }
        Ok(Tensor::cat(&blocks, 0)?)
    }

    /// Samples whose teacher-forced rows (`K` per sample) fit in one pass of [`Self::eval_rows`]
    /// rows: gradient passes are split into such blocks so that memory stays bounded
    /// whatever the batch and the number of steps.
    /// With a symmetry group, each sample takes `|G|` images, so a `|G|`-th of that.
    pub fn samples_per_pass(&self) -> usize {
        let order = self.symmetry.as_ref().map_or(1, SymmetryGroup::order);
        (self.raw_samples_per_pass() / order).max(1)
    }

    /// [`Self::samples_per_pass`] of the plain network.
    fn raw_samples_per_pass(&self) -> usize {
        (self.eval_rows() / self.rows_per_sample().max(1)).max(1)
    }

    /// Configurations per network call: [`EVAL_ROWS`], or fewer on large lattices and wide
    /// kernels so that one call stays within `EVAL_ELEMENTS` gathered inputs.
    pub fn eval_rows(&self) -> usize {
        let k = self.cfg.kernel;
        let taps = if self.shape == Shape::Chain { k } else { k * k };
        let per_row = self.n * taps * self.cfg.width.max(1);
        (EVAL_ELEMENTS / per_row.max(1)).clamp(16, EVAL_ROWS)
    }

    /// Per-sample gradients of the learned phase `theta(s_b)` (a `B x n_params` tensor), or
    /// `None` when the phase is not learned.
    pub fn phase_jacobian(&self, s: &[u8]) -> Result<Option<Tensor>> {
        if !self.cfg.phase.is_learned() {
            return Ok(None);
        }
        if let Some(g) = &self.symmetry {
            return Ok(self.jacobians_symmetric(g, s, false, true)?.1);
        }
        self.phase_jacobian_raw(s)
    }

    /// [`Self::phase_jacobian`] of the plain network.
    fn phase_jacobian_raw(&self, s: &[u8]) -> Result<Option<Tensor>> {
        if !self.cfg.phase.is_learned() {
            return Ok(None);
        }
        let mut blocks = Vec::new();
        for chunk in s.chunks(self.eval_rows() * self.n) {
            let steps = self.phase_rows(chunk.len() / self.n);
            blocks
                .push(self.per_sample_grads(chunk, &steps, 1, |out| self.phase_terms(out, chunk))?);
        }
        Ok(Some(Tensor::cat(&blocks, 0)?))
    }

    /// Every sample repeated once per step, with the step of each row (teacher forcing).
    /// For the causal network, one row per sample ([`ALL_STEPS`]).
    fn teacher_forcing_rows(&self, s: &[u8]) -> (Vec<usize>, Vec<u8>) {
        let n = self.n;
        let b = s.len() / n;
        if self.causal.is_some() {
            return (vec![ALL_STEPS; b], s.to_vec());
        }
        let k = self.schedule.n_steps();
        let steps: Vec<usize> = (0..b).flat_map(|_| 0..k).collect();
        let reps: Vec<u8> = (0..b)
            .flat_map(|i| {
                std::iter::repeat_n(&s[i * n..(i + 1) * n], k)
                    .flatten()
                    .copied()
            })
            .collect();
        (steps, reps)
    }

    /// Per row `r`: `sum_{x in step k_r} log p(s_x | s revealed before k_r)`, the terms of
    /// `log p` that step `k_r` contributes, for configurations `s` (`rows x N`) at the given
    /// steps; a differentiable tensor of shape `rows`.
    fn step_terms(&self, s: &[u8], steps: &[usize]) -> Result<Tensor> {
        let out = self.forward(&self.encode(s, steps)?, steps)?;
        self.select_terms(&out, s, steps)
    }

    /// The step terms of [`MaskedDiffusion::step_terms`] from the network output.
    fn select_terms(&self, out: &Tensor, s: &[u8], steps: &[usize]) -> Result<Tensor> {
        let (n, d) = (self.n, self.d);
        let rows = steps.len();
        let logp = candle_nn::ops::log_softmax(&self.logits(out, s, steps)?, 2)?;
        // Select log p of the actual value at the sites revealed at each step.
        let sos = self.schedule.step_of_site();
        let n_steps = self.schedule.n_steps();
        let mut target = vec![0f32; rows * n * d];
        for (row, &step) in steps.iter().enumerate() {
            let cfg = &s[row * n..(row + 1) * n];
            for site in 0..n {
                // A causal row holds every revealed site's conditional.
                if sos[site] == step || (step == ALL_STEPS && sos[site] < n_steps) {
                    target[(row * n + site) * d + cfg[site] as usize] = 1.0;
                }
            }
        }
        let target = Tensor::from_vec(target, (rows, n, d), &self.device)?.to_dtype(self.dtype)?;
        Ok((logp * target)?.sum((1, 2))?)
    }

    /// `log p(s)` for a batch of configurations (`B x N`, row-major), as a differentiable
    /// tensor of shape `B`.
    pub fn log_prob(&self, s: &[u8]) -> Result<Tensor> {
        let Some(g) = &self.symmetry else {
            return self.log_prob_raw(s);
        };
        // log p_G = logsumexp_g log p(g s) - log |G|, max-shifted (the shift is a constant
        // of the gradient).
        let b = s.len() / self.n;
        let lp = self
            .log_prob_raw(&g.images(s, self.n))?
            .reshape((g.order(), b))?;
        let max = lp.max_keepdim(0)?.detach();
        let sum = lp.broadcast_sub(&max)?.exp()?.sum(0)?;
        Ok((sum.log()? + max.squeeze(0)?)?.affine(1.0, -(g.order() as f64).ln())?)
    }

    /// The values of [`Self::log_prob`] (no gradient): for the causal network on the CPU
    /// in `f32` computed on the host, site by site (see [`Self::use_host_kernels`]).
    pub fn log_prob_values(&self, s: &[u8]) -> Result<Vec<f64>> {
        if self.symmetry.is_none() && self.runs_on_host() {
            return Ok(self.host_net()?.log_prob(s));
        }
        Ok(self.log_prob(s)?.to_dtype(DType::F64)?.to_vec1()?)
    }

    /// [`Self::log_prob`] of the plain network.
    fn log_prob_raw(&self, s: &[u8]) -> Result<Tensor> {
        let b = s.len() / self.n;
        let k = self.rows_per_sample();
        let (steps, reps) = self.teacher_forcing_rows(s);
        Ok(self.step_terms(&reps, &steps)?.reshape((b, k))?.sum(1)?)
    }

    /// `log psi` of configurations `conn` (`M x N`) that each differ from a sample
    /// (`parent[j]` indexes `sampled`) at a few sites, without re-running the steps they
    /// share with it.
    ///
    /// If the sites where `s'` differs from its sample `s` are first revealed at step `k0`,
    /// the inputs of every step `k <= k0` are the same for both, so
    /// `log p(s') = sum_{x: step(x) < k0} log p_s(s_x) + sum_{x in step k0} log p_s(s'_x)
    ///            + sum_{k > k0} (terms of step k, evaluated on s')`,
    /// where `log p_s(v)` are the sample's conditionals recorded while it was drawn. Only the
    /// steps after `k0` are evaluated (in batches of [`Self::eval_rows`] rows). For the RG schedule
    /// half of the sites are revealed at the last step, so a single spin flip costs on average
    /// about one step instead of `log2 N`; for the autoregressive schedule, half of `N`. The
    /// causal network evaluates `log psi(s')` in one row instead (`log_psi_causal`).
    /// The masked network's learned phase, a function of the whole configuration, takes one
    /// pass per `s'`.
    pub fn log_psi_connected(
        &self,
        sampled: &Sampled,
        conn: &[u8],
        parent: &[usize],
    ) -> Result<Vec<num_complex::Complex64>> {
        if self.symmetry.is_some() {
            // Every image differs from the sample's: nothing of its drawing is reused.
            return self.log_psi(conn);
        }
        if self.causal.is_some() {
            return self.log_psi_causal(conn);
        }
        let (n, d) = (self.n, self.d);
        let kk = self.schedule.n_steps();
        let sos = self.schedule.step_of_site();
        let steps = self.schedule.steps();
        let s = &sampled.configs;
        let cond = &sampled.cond;
        let b = s.len() / n;
        // prefix[i][k] = sum_{x: step(x) < k} log p_s(s_x).
        let mut prefix = vec![0f64; b * (kk + 1)];
        for i in 0..b {
            let pre = &mut prefix[i * (kk + 1)..(i + 1) * (kk + 1)];
            for x in 0..n {
                pre[sos[x] + 1] += cond[(i * n + x) * d + s[i * n + x] as usize];
            }
            for k in 0..kk {
                pre[k + 1] += pre[k];
            }
        }
        let m = conn.len() / n;
        let mut lp = vec![0f64; m];
        let mut rows: Vec<(usize, usize)> = Vec::new();
        for j in 0..m {
            let i = parent[j];
            let c = &conn[j * n..(j + 1) * n];
            let si = &s[i * n..(i + 1) * n];
            let k0 = (0..n).filter(|&x| c[x] != si[x]).map(|x| sos[x]).min();
            let Some(k0) = k0 else {
                lp[j] = prefix[i * (kk + 1) + kk];
                continue;
            };
            lp[j] = prefix[i * (kk + 1) + k0]
                + steps[k0]
                    .iter()
                    .map(|&x| cond[(i * n + x) * d + c[x] as usize])
                    .sum::<f64>();
            rows.extend((k0 + 1..kk).map(|k| (j, k)));
        }
        for chunk in rows.chunks(self.eval_rows()) {
            let cfgs: Vec<u8> = chunk
                .iter()
                .flat_map(|&(j, _)| conn[j * n..(j + 1) * n].iter().copied())
                .collect();
            let ks: Vec<usize> = chunk.iter().map(|&(_, k)| k).collect();
            let v: Vec<f64> = self
                .step_terms(&cfgs, &ks)?
                .to_dtype(DType::F64)?
                .to_vec1()?;
            for (&(j, _), v) in chunk.iter().zip(v) {
                lp[j] += v;
            }
        }
        let mut out = Vec::with_capacity(m);
        let rows = self.eval_rows();
        for (c, l) in conn.chunks(rows * n).zip(lp.chunks(rows)) {
            out.extend(self.log_psi_with(c, l)?);
        }
        Ok(out)
    }

    /// The phase `theta(s)` for a batch: a differentiable tensor for the learned phase,
    /// `None` when the phase is fixed (see [`MaskedDiffusion::fixed_phase`]).
    pub fn learned_phase(&self, s: &[u8]) -> Result<Option<Tensor>> {
        if !self.cfg.phase.is_learned() {
            return Ok(None);
        }
        if let Some(g) = &self.symmetry {
            return self.learned_phase_symmetric(g, s).map(Some);
        }
        self.learned_phase_raw(s)
    }

    /// The learned part of the symmetrized phase as a differentiable tensor:
    /// `theta_G = arg sum_g psi(g s) - theta_fixed(s)`. With the value `t0` of it from the
    /// host and `u_g = phi(g s) - theta_fixed(s) - t0`, the sum rotated by `-t0` is real and
    /// positive, `x + i y` with `x = sum_g |psi(g s)| cos u_g`, `y = sum_g |psi(g s)| sin u_g = 0`,
    /// so `theta_G = t0 + atan(y / x)` has the value `t0` and the gradient of `t0 + y / x`.
    fn learned_phase_symmetric(&self, g: &SymmetryGroup, s: &[u8]) -> Result<Tensor> {
        let n = self.n;
        let b = s.len() / n;
        let order = g.order();
        let images = g.images(s, n);
        let lp = self.log_prob_raw(&images)?.reshape((order, b))?;
        let th = self
            .learned_phase_raw(&images)?
            .expect("a learned phase")
            .reshape((order, b))?;
        // The value t0 from the same evaluation, on the host.
        let lp_host: Vec<f64> = lp.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        let th_host: Vec<f64> = th.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        let phi: Vec<f64> = th_host
            .iter()
            .zip(images.chunks(n))
            .map(|(t, c)| t + self.fixed_phase(c))
            .collect();
        let w = self.symmetric_weights(&lp_host, &phi, b);
        let t0: Vec<f64> = self.learned_part(s, &w.theta).collect();
        // Constant part of u_g: fixed(g s) - fixed(s) - t0.
        let shift: Vec<f64> = (0..order * b)
            .map(|r| {
                let i = r % b;
                self.fixed_phase(&images[r * n..(r + 1) * n])
                    - self.fixed_phase(&s[i * n..(i + 1) * n])
                    - t0[i]
            })
            .collect();
        let shift = Tensor::from_vec(shift, (order, b), &self.device)?.to_dtype(th.dtype())?;
        let u = (th + shift)?;
        let max = lp.max_keepdim(0)?.detach();
        let a = (lp.broadcast_sub(&max)? * 0.5)?.exp()?;
        let x = (&a * u.cos()?)?.sum(0)?;
        let y = (&a * u.sin()?)?.sum(0)?;
        let t0 = Tensor::from_vec(t0, b, &self.device)?.to_dtype(x.dtype())?;
        Ok((t0 + (y / x)?)?)
    }

    /// [`Self::learned_phase`] of the plain network.
    fn learned_phase_raw(&self, s: &[u8]) -> Result<Option<Tensor>> {
        if !self.cfg.phase.is_learned() {
            return Ok(None);
        }
        let steps = self.phase_rows(s.len() / self.n);
        let out = self.forward(&self.encode(s, &steps)?, &steps)?;
        Ok(Some(self.phase_terms(&out, s)?))
    }

    /// The fixed part of the phase of one configuration: Marshall's `pi * #down on A` when
    /// the phase includes it, else 0.
    pub fn fixed_phase(&self, s: &[u8]) -> f64 {
        if !self.cfg.phase.has_marshall() {
            return 0.0;
        }
        let downs = s
            .iter()
            .zip(&self.sublattice_a)
            .filter(|(&v, &a)| a && v == 1)
            .count();
        std::f64::consts::PI * (downs % 2) as f64
    }

    /// `log psi` of a batch through the causal network: one pass (in blocks of
    /// [`Self::eval_rows`] rows) gives `log p` and the conditional phases together.
    fn log_psi_causal(&self, s: &[u8]) -> Result<Vec<num_complex::Complex64>> {
        let n = self.n;
        let mut out = Vec::with_capacity(s.len() / n);
        for c in s.chunks(self.eval_rows() * n) {
            let steps = vec![ALL_STEPS; c.len() / n];
            let net = self.forward(&self.encode(c, &steps)?, &steps)?;
            let lp: Vec<f64> = self
                .select_terms(&net, c, &steps)?
                .to_dtype(DType::F64)?
                .to_vec1()?;
            let learned: Option<Vec<f64>> = if self.cfg.phase.is_learned() {
                Some(self.phase_terms(&net, c)?.to_dtype(DType::F64)?.to_vec1()?)
            } else {
                None
            };
            out.extend(self.combine(c, &lp, learned.as_deref()));
        }
        Ok(out)
    }

    /// `log p / 2 + i (fixed phase + learned phase)` of each configuration of `s`.
    fn combine(
        &self,
        s: &[u8],
        logp: &[f64],
        learned: Option<&[f64]>,
    ) -> Vec<num_complex::Complex64> {
        let n = self.n;
        logp.iter()
            .enumerate()
            .map(|(i, &l)| {
                let th = self.fixed_phase(&s[i * n..(i + 1) * n]) + learned.map_or(0.0, |v| v[i]);
                num_complex::Complex64::new(0.5 * l, th)
            })
            .collect()
    }

    /// `log psi(s) = log p(s) / 2 + i theta(s)` on the host, for a batch.
    pub fn log_psi(&self, s: &[u8]) -> Result<Vec<num_complex::Complex64>> {
        if let Some(g) = &self.symmetry {
            let (lp, learned) = self.parts_symmetric(g, s)?;
            return Ok(self.combine(s, &lp, learned.as_deref()));
        }
        if self.causal.is_some() {
            return self.log_psi_causal(s);
        }
        let lp: Vec<f64> = self.log_prob(s)?.to_dtype(DType::F64)?.to_vec1()?;
        self.log_psi_with(s, &lp)
    }

    /// `log psi` of a batch whose `log p` is already known (e.g. from sampling): adds the
    /// phase.
    pub fn log_psi_with(&self, s: &[u8], logp: &[f64]) -> Result<Vec<num_complex::Complex64>> {
        if let Some(g) = self
            .symmetry
            .as_ref()
            .filter(|_| self.cfg.phase.is_learned())
        {
            let (_, learned) = self.parts_symmetric(g, s)?;
            return Ok(self.combine(s, logp, learned.as_deref()));
        }
        let learned: Option<Vec<f64>> = match self.learned_phase(s)? {
            Some(t) => Some(t.to_dtype(DType::F64)?.to_vec1()?),
            None => None,
        };
        Ok(self.combine(s, logp, learned.as_deref()))
    }

    /// Draws `b` independent exact samples by the reverse process (one network pass per
    /// step), with their `log p`. All randomness comes from `rng`.
    pub fn sample(&self, b: usize, rng: &mut impl Rng) -> Result<(Vec<u8>, Vec<f64>)> {
        let out = self.sample_with_conditionals(b, rng)?;
        Ok((out.configs, out.log_p))
    }

    /// [`MaskedDiffusion::sample`], also keeping every site's conditional distribution
    /// (given the sites revealed before its step), for [`MaskedDiffusion::log_psi_connected`].
    pub fn sample_with_conditionals(&self, b: usize, rng: &mut impl Rng) -> Result<Sampled> {
        self.sample_tempered(b, 1.0, rng)
    }

    /// Samples of the tempered proposal `q(s) = prod_x q(s_x | s_<step(x))` whose every
    /// conditional is the model's raised to the power `beta` and renormalised,
    /// `q(v | .) = p(v | .)^beta / sum_u p(u | .)^beta`: exactly normalised and sampled by the
    /// same reverse process, broader than `p` for `beta < 1`, so that configurations `p`
    /// rarely draws are drawn often enough to be learned; estimates under `p` then take the
    /// importance weights `p(s) / q(s)` (`log_p - log_q`). The conditionals recorded are `p`'s.
    /// `beta = 1` draws exact samples of `p` (the same draws as before tempering existed).
    ///
    /// With a symmetry group set, each drawn sample is mapped by an element drawn uniformly
    /// (exact samples of `p_G`), and its `log p` is `log p_G`; `cond` then still holds the
    /// conditionals of the drawing, before the map. Tempering is refused.
    pub fn sample_tempered(&self, b: usize, beta: f64, rng: &mut impl Rng) -> Result<Sampled> {
        let Some(g) = &self.symmetry else {
            return self.sample_tempered_raw(b, beta, rng);
        };
        if beta != 1.0 {
            return Err(Error::Input(format!(
                "--temper {beta} with --symmetry {}: a symmetrized model draws exact samples only",
                g.name()
            )));
        }
        let mut out = self.sample_tempered_raw(b, 1.0, rng)?;
        let n = self.n;
        let mut image = vec![0u8; n];
        for c in out.configs.chunks_mut(n) {
            let k = rng.random_range(0..g.order());
            g.apply(k, c, &mut image);
            c.copy_from_slice(&image);
        }
        let (lp, _) = self.parts_symmetric(g, &out.configs)?;
        out.log_q.clone_from(&lp);
        out.log_p = lp;
        Ok(out)
    }

    /// [`Self::sample_tempered`] of the plain network.
    fn sample_tempered_raw(&self, b: usize, beta: f64, rng: &mut impl Rng) -> Result<Sampled> {
        let (n, d) = (self.n, self.d);
        let mut s = vec![0u8; b * n];
        let mut logp = vec![0f64; b];
        let mut logq = vec![0f64; b];
        let mut cond = vec![0f64; b * n * d];
        let mut lq = vec![0f64; d];
        if self.stepwise && self.runs_on_host() {
            return Ok(self.host_net()?.draw(b, beta, true, rng));
        }
        let mut stepwise = if self.draws_stepwise() {
            Some(self.stepwise_start(b)?)
        } else {
            None
        };
        for (k, sites) in self.schedule.steps().iter().enumerate() {
            let m = sites.len();
            // Per row, the distinct row whose output it takes and where in the output the
            // step's sites are: the causal network's stepwise draw evaluates
            // only the step's sites (`B x m x d`); a full pass evaluates every site
            // (`rows x N x d`) of each distinct partial configuration.
            let (lsm, distinct, at_step) = if let Some(state) = stepwise.as_mut() {
                (self.stepwise_logits(state, &s, k)?, None, true)
            } else {
                // The causal network's output at the sites of step k is their conditional
                // whatever the (not yet drawn, zero) states of later sites.
                // Rows that agree on the sites drawn so far (the rest are zero) have the same
                // conditionals: the network sees each distinct partial configuration once.
                let distinct = Unique::new(&s, n);
                let rows = if distinct.all_distinct() {
                    None
                } else {
                    Some(distinct.configs(&s, n))
                };
                let seen = rows.as_deref().unwrap_or(&s);
                let steps = self.step_rows(k, seen.len() / n);
                let out = self.forward(&self.encode(seen, &steps)?, &steps)?;
                let lsm = candle_nn::ops::log_softmax(&self.logits(&out, seen, &steps)?, 2)?;
                let lsm: Vec<f64> = lsm.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                (lsm, rows.map(|_| distinct), false)
            };
            for i in 0..b {
                let row = distinct.as_ref().map_or(i, |u| u.of_row[i]);
                for (j, &x) in sites.iter().enumerate() {
                    let at = (i * n + x) * d;
                    let from = if at_step {
                        (row * m + j) * d
                    } else {
                        (row * n + x) * d
                    };
                    cond[at..at + d].copy_from_slice(&lsm[from..from + d]);
                    let u: f64 = rng.random();
                    let (v, lq_v) = draw_value(&lsm[from..from + d], beta, u, &mut lq);
                    s[i * n + x] = v as u8;
                    logp[i] += cond[at + v];
                    logq[i] += lq_v;
                }
            }
        }
        Ok(Sampled {
            configs: s,
            log_p: logp,
            cond,
            log_q: logq,
        })
    }

    /// Writes the parameters as safetensors (to `path` directly; callers make it atomic).
    pub fn save(&self, path: &Path) -> Result<()> {
        super::params::save(&self.params, path)
    }

    /// Loads parameters saved by [`MaskedDiffusion::save`] into this (same-shaped) model.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        super::params::load(&self.params, path, &self.device, self.dtype)
    }
}

/// Draws a local value from the conditional `lsm` (log-probabilities of the `d` values),
/// raised to the power `beta` and renormalised (`beta = 1`: `lsm` itself), with the uniform
/// `u`: `(value, log q(value))`. `lq` (length `d`) is scratch for the tempered conditional.
/// Values with a [`FORBIDDEN`] logit stay forbidden.
fn draw_value(lsm: &[f64], beta: f64, u: f64, lq: &mut [f64]) -> (usize, f64) {
    let d = lsm.len();
    let lsm = if beta == 1.0 {
        lsm
    } else {
        // log q = beta log p - log sum_u p(u)^beta (max-shifted).
        let max = lsm.iter().fold(f64::MIN, |a, &v| a.max(v));
        let z = lsm
            .iter()
            .map(|&v| (beta * (v - max)).exp())
            .sum::<f64>()
            .ln();
        for (q, &v) in lq.iter_mut().zip(lsm) {
            *q = if v > f64::from(FORBIDDEN) / 2.0 {
                beta * (v - max) - z
            } else {
                v
            };
        }
        &lq[..d]
    };
    let mut acc = 0.0;
    // If rounding leaves u above the total, the last allowed value.
    let mut v = (0..d)
        .rev()
        .find(|&c| lsm[c] > f64::from(FORBIDDEN) / 2.0)
        .unwrap_or(d - 1);
    for (c, &l) in lsm.iter().enumerate() {
        acc += l.exp();
        if u < acc {
            v = c;
            break;
        }
    }
    (v, lsm[v])
}
