//! The step-causal network evaluated on the host, site by site, without gradients (CPU,
//! `f32`): the draws and the `log p` values of proposals.
//!
//! The tensor form of a causal pass unfolds every site's neighbourhood into a `taps x
//! channels` row and multiplies by the unfolded weight: with the default width 8 on a 16x16
//! square, most of its time went to allocating, zeroing and copying the unfolded rows and
//! broadcasting, not to the products (measured: the matrix kernel 15 to 20% of a sampling
//! run). Here each site's pre-activation is accumulated directly, output channel innermost:
//!
//! - first layer: `z(x) = b_0 + e_step(x) + sum_t [W_0(t, s_y) + W_0(t, mask)] [step(y) <
//!   step(x)] + sum_t sum_j a_j(step(y)) W_0(t, avg_j) [step(y) <= step(x)]`, `y` the `t`-th
//!   neighbour of `x` and `a(k)` the averages of the one-hot and mask channels over the sites
//!   of steps before `k` (the one-hot input selects one weight row instead of a product;
//!   the one-hot and mask rows are summed once when the weights are laid out, and the
//!   averages rows `sum_j a_j(k) W_0(t, avg_j)` once per step and tap, so a neighbour costs
//!   at most two row additions);
//! - later layers: `z(x) = b_l + sum_t sum_c X_l(y, c) W_l(t, c) [step(y) <= step(x)]`,
//!   `X_{l+1} = X_l + tanh(z)`, `X_1 = tanh(z_0)`;
//! - head: the `d` logits `b_h + W_h X_L(x)`, the pin ([`super::ModelConfig::pin_first`])
//!   added, log-softmax (for `d = 2` one `exp` and one `ln`).
//!
//! Measured on 16x16 (width 8, depth 2, kernel 3, one core of a 2-core Xeon VM): about 200
//! ns per site to draw and 160 ns to evaluate `log p`, against 235 and 195 ns before the
//! summed rows; `fast_tanh` is about a fifth of it.
//!
//! The same function of the configuration as the tensor form (to `f32` rounding; the tests
//! compare both). Rows are independent and run in parallel (`rayon`); a row's result does not
//! depend on the thread count. On x86-64 with AVX2 and FMA the kernels are compiled for them
//! and chosen at run time.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::model::activation::fast_tanh;
use rand::Rng;

use super::{draw_value, MaskedDiffusion, Sampled, FORBIDDEN};
use crate::error::Result;

/// The network's weights on the host, laid out for the site kernels (row-major, output
/// channel innermost).
pub(super) struct HostNet {
    n: usize,
    d: usize,
    width: usize,
    /// `width` rounded up to a multiple of [`LANES`]: the row length of weights and hidden
    /// states (the padding is zero and stays zero).
    padded: usize,
    depth: usize,
    taps: usize,
    /// Per layer, every site's neighbours (`N x taps`).
    neighbours: Vec<Vec<u32>>,
    step_of_site: Vec<usize>,
    /// The sites of each step.
    steps: Vec<Vec<usize>>,
    /// Per layer then the head: weights and biases (padded with zeros to multiples of
    /// [`LANES`]). Layer 0: the one-hot rows with the mask row added, `taps d x padded`
    /// (a revealed neighbour in state `v` adds row `(t, v)`); later layers: `taps padded x
    /// padded` (input channels padded too); the head: `width x dp` (`dp` = `d` padded).
    weights: Vec<(Vec<f32>, Vec<f32>)>,
    /// The first layer's averages rows, `taps (d + 1) x padded`.
    first_avg: Vec<f32>,
    /// `n_steps x padded` step embedding.
    embed: Vec<f32>,
    /// The pinned site, if any.
    pin: Option<usize>,
    fma: bool,
}

impl MaskedDiffusion {
    /// Whether draws and `log p` values run on the host ([`HostNet`]): the causal network
    /// in `f32` on the CPU without an `S^z` sector, unless turned off.
    pub(super) fn runs_on_host(&self) -> bool {
        self.host
            && self.device.is_cpu()
            && self.dtype == DType::F32
            && self.causal.is_some()
            && self.n_up.is_none()
    }

    /// The weights and gathers in the host layout.
    pub(super) fn host_net(&self) -> Result<HostNet> {
        let vec = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        let width = self.cfg.width;
        let padded = width.div_ceil(LANES) * LANES;
        let dp = self.d.div_ceil(LANES) * LANES;
        let (d, c) = (self.d, 2 * (self.d + 1));
        let mut weights = Vec::with_capacity(self.cfg.depth + 1);
        let mut first_avg = Vec::new();
        for l in 0..self.cfg.depth {
            let (w, b) = self.conv_params(l);
            let w = pad_rows(&vec(&self.unfolded_weight(w)?)?, width, padded);
            let rows = if l == 0 {
                // Per tap: one-hot rows + mask row; the averages rows apart.
                let mut rows = Vec::new();
                for tap in w.chunks(c * padded) {
                    let mask = &tap[d * padded..(d + 1) * padded];
                    for v in 0..d {
                        let row = &tap[v * padded..(v + 1) * padded];
                        rows.extend(row.iter().zip(mask).map(|(a, b)| a + b));
                    }
                    first_avg.extend_from_slice(&tap[(d + 1) * padded..]);
                }
                rows
            } else {
                // Per tap: `width` input rows, padded with zero rows to `padded`.
                let mut rows = Vec::new();
                for tap in w.chunks(width * padded) {
                    rows.extend_from_slice(tap);
                    rows.resize(rows.len() + (padded - width) * padded, 0.0);
                }
                rows
            };
            weights.push((rows, pad_rows(&vec(b)?, width, padded)));
        }
        // The head: only the d logit channels (phase channels are not needed here).
        let (wh, bh) = self.conv_params(self.cfg.depth);
        let wh = self
            .unfolded_weight(wh)?
            .narrow(1, 0, self.d)?
            .contiguous()?;
        let bh = vec(&bh.narrow(0, 0, self.d)?)?;
        weights.push((pad_rows(&vec(&wh)?, self.d, dp), pad_rows(&bh, self.d, dp)));
        let neighbours = self
            .neighbours
            .iter()
            .map(|t| Ok(t.to_vec1::<u32>()?))
            .collect::<Result<Vec<_>>>()?;
        let taps = neighbours[0].len() / self.n;
        #[cfg(target_arch = "x86_64")]
        let fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let fma = false;
        Ok(HostNet {
            n: self.n,
            d: self.d,
            width,
            padded,
            depth: self.cfg.depth,
            taps,
            neighbours,
            step_of_site: self.schedule.step_of_site().to_vec(),
            steps: self.schedule.steps().to_vec(),
            weights,
            first_avg,
            embed: pad_rows(&vec(self.param("embed"))?, width, padded),
            pin: self.pinned_site(),
            fma,
        })
    }
}

/// The network frozen for evaluation while its parameters stay fixed (the proposals of a
/// Markov chain): on the host its weights are laid out once, not on every call (a local
/// sweep's single configuration cost more to set up than to evaluate).
pub struct Frozen<'a> {
    model: &'a MaskedDiffusion,
    host: Option<HostNet>,
}

impl MaskedDiffusion {
    /// This network, frozen (see [`Frozen`]); valid until its parameters change.
    pub fn frozen(&self) -> Result<Frozen<'_>> {
        let host = if self.symmetry.is_none() && self.runs_on_host() {
            Some(self.host_net()?)
        } else {
            None
        };
        Ok(Frozen { model: self, host })
    }
}

impl Frozen<'_> {
    /// [`MaskedDiffusion::sample`].
    pub fn sample(&self, b: usize, rng: &mut impl Rng) -> Result<(Vec<u8>, Vec<f64>)> {
        match &self.host {
            Some(net) if self.model.stepwise => {
                let out = net.draw(b, 1.0, false, rng);
                Ok((out.configs, out.log_p))
            }
            _ => self.model.sample(b, rng),
        }
    }

    /// [`MaskedDiffusion::log_prob_values`].
    pub fn log_prob_values(&self, s: &[u8]) -> Result<Vec<f64>> {
        match &self.host {
            Some(net) => Ok(net.log_prob(s)),
            None => self.model.log_prob_values(s),
        }
    }
}

impl HostNet {
    /// The per-row buffers of [`Self::row_step`] ([`RowBuffers`]).
    fn row_buffers(&self) -> RowBuffers {
        let k = self.steps.len();
        RowBuffers {
            hidden: vec![0f32; self.depth * self.n * self.padded],
            counts: vec![0f32; k * (self.d + 1)],
            averages: vec![0f32; k * self.taps * self.padded],
            logits: vec![0f32; self.d.div_ceil(LANES) * LANES],
        }
    }

    /// `b` exact draws of the tempered conditionals (see
    /// [`MaskedDiffusion::sample_tempered`]). The uniforms are drawn from `rng` first, in
    /// the order the step-by-step tensor draw consumes them (step, then row, then the step's
    /// sites), so both draw the same samples; the rows then run independently.
    /// Without `keep_cond` the conditionals are not recorded (`cond` is empty): a chain's
    /// proposals need only the states and `log q`.
    pub(super) fn draw(&self, b: usize, beta: f64, keep_cond: bool, rng: &mut impl Rng) -> Sampled {
        let (n, d) = (self.n, self.d);
        let mut offset = Vec::with_capacity(self.steps.len());
        let mut uniforms = Vec::with_capacity(b * n);
        for sites in &self.steps {
            offset.push(uniforms.len());
            uniforms.extend((0..b * sites.len()).map(|_| rng.random::<f64>()));
        }
        let mut configs = vec![0u8; b * n];
        // Without keep_cond one unused slot per row keeps the rows zipped.
        let per_row = if keep_cond { n * d } else { 1 };
        let mut cond = vec![0f64; b * per_row];
        let mut log_p = vec![0f64; b];
        let mut log_q = vec![0f64; b];
        let max_m = self.steps.iter().map(Vec::len).max().unwrap_or(0);
        configs
            .par_chunks_mut(n)
            .zip(cond.par_chunks_mut(per_row))
            .zip(log_p.par_iter_mut().zip(log_q.par_iter_mut()))
            .enumerate()
            .for_each_init(
                || (self.row_buffers(), vec![0f64; max_m * d], vec![0f64; d]),
                |(buf, out, lq), (i, ((row, cond), (lp, lqs)))| {
                    buf.clear();
                    for (k, sites) in self.steps.iter().enumerate() {
                        let m = sites.len();
                        let out = &mut out[..m * d];
                        self.row_step(buf, out, row, k);
                        for (j, &x) in sites.iter().enumerate() {
                            let lsm = &out[j * d..(j + 1) * d];
                            if keep_cond {
                                cond[x * d..(x + 1) * d].copy_from_slice(lsm);
                            }
                            let u = uniforms[offset[k] + i * m + j];
                            let (v, lq_v) = draw_value(lsm, beta, u, lq);
                            row[x] = v as u8;
                            *lp += lsm[v];
                            *lqs += lq_v;
                        }
                    }
                },
            );
        if !keep_cond {
            cond = Vec::new();
        }
        Sampled {
            configs,
            log_p,
            cond,
            log_q,
        }
    }

    /// `log p` of complete configurations `s` (`B x N`): every step in order, the
    /// conditionals of the actual states summed.
    pub(super) fn log_prob(&self, s: &[u8]) -> Vec<f64> {
        let (n, d) = (self.n, self.d);
        let max_m = self.steps.iter().map(Vec::len).max().unwrap_or(0);
        let init = || (self.row_buffers(), vec![0f64; max_m * d]);
        let eval = |(buf, out): &mut (RowBuffers, Vec<f64>), row: &[u8]| {
            buf.clear();
            let mut lp = 0.0;
            for (k, sites) in self.steps.iter().enumerate() {
                let out = &mut out[..sites.len() * d];
                self.row_step(buf, out, row, k);
                for (j, &x) in sites.iter().enumerate() {
                    lp += out[j * d + row[x] as usize];
                }
            }
            lp
        };
        if s.len() < SERIAL_ROWS * n {
            let mut scratch = init();
            return s.chunks(n).map(|row| eval(&mut scratch, row)).collect();
        }
        s.par_chunks(n).map_init(init, eval).collect()
    }

    /// One row at step `k`: the averages before `k`, then every layer at the step's sites,
    /// then the head's log-softmax into `out` (`m x d`).
    fn row_step(&self, buf: &mut RowBuffers, out: &mut [f64], row: &[u8], k: usize) {
        #[cfg(target_arch = "x86_64")]
        if self.fma {
            // SAFETY: the CPU supports AVX2 and FMA (checked when the net was built).
            unsafe { self.row_step_fma(buf, out, row, k) };
            return;
        }
        self.row_step_generic::<false>(buf, out, row, k);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_step_fma(&self, buf: &mut RowBuffers, out: &mut [f64], row: &[u8], k: usize) {
        self.row_step_generic::<true>(buf, out, row, k);
    }

    #[inline(always)]
    fn row_step_generic<const FMA: bool>(
        &self,
        buf: &mut RowBuffers,
        out: &mut [f64],
        row: &[u8],
        k: usize,
    ) {
        let (n, d, w, wp, taps) = (self.n, self.d, self.width, self.padded, self.taps);
        let sos = &self.step_of_site;
        let RowBuffers {
            hidden,
            counts,
            averages,
            logits,
        } = buf;
        if k > 0 {
            // The counts before step k: those before k - 1 plus the sites of step k - 1.
            let (before, now) = counts.split_at_mut(k * (d + 1));
            let now = &mut now[..d + 1];
            now.copy_from_slice(&before[(k - 1) * (d + 1)..]);
            for &x in &self.steps[k - 1] {
                now[row[x] as usize] += 1.0;
                now[d] += 1.0;
            }
        }
        // The averages rows of step k, per tap: sum_j a_j(k) W_0(t, avg_j), a = counts / N.
        let inv_n = 1.0 / n as f32;
        let a = &counts[k * (d + 1)..(k + 1) * (d + 1)];
        for t in 0..taps {
            for o in (0..wp).step_by(LANES) {
                let mut acc = [0f32; LANES];
                for (j, &count) in a.iter().enumerate() {
                    let r = t * (d + 1) + j;
                    axpy::<FMA>(&mut acc, count * inv_n, &self.first_avg[r * wp + o..]);
                }
                averages[(k * taps + t) * wp + o..][..LANES].copy_from_slice(&acc);
            }
        }
        let sites = &self.steps[k];
        // First layer, LANES output channels at a time (the accumulator stays in a register).
        let (w0, b0) = &self.weights[0];
        let nb = &self.neighbours[0];
        for &x in sites {
            let nbx = &nb[x * taps..(x + 1) * taps];
            for o in (0..wp).step_by(LANES) {
                // Two accumulators: the one-hot rows and the averages.
                let mut acc = [lane(&b0[o..]), lane(&self.embed[k * wp + o..])];
                for (t, &y) in nbx.iter().enumerate() {
                    let ky = sos[y as usize];
                    if ky < k {
                        let r = t * d + row[y as usize] as usize;
                        add_lane(&mut acc[0], &w0[r * wp + o..]);
                    }
                    if ky <= k {
                        add_lane(&mut acc[1], &averages[(ky * taps + t) * wp + o..]);
                    }
                }
                let mut sum = acc[0];
                add_lane(&mut sum, &acc[1]);
                let h = &mut hidden[x * wp + o..x * wp + o + LANES];
                for (h, &z) in h.iter_mut().zip(&sum) {
                    *h = fast_tanh(z);
                }
            }
        }
        // Later layers: X_{l+1}(x) = X_l(x) + tanh(W_l . X_l(neighbours) + b_l).
        for l in 1..self.depth {
            let (wl, bl) = &self.weights[l];
            let nb = &self.neighbours[l];
            let (lower, upper) = hidden.split_at_mut(l * n * wp);
            let xl = &lower[(l - 1) * n * wp..];
            let next = &mut upper[..n * wp];
            for &x in sites {
                let nbx = &nb[x * taps..(x + 1) * taps];
                for o in (0..wp).step_by(LANES) {
                    // Four independent accumulators: the products of one site form a long
                    // chain of dependent additions otherwise.
                    let mut acc = [lane(&bl[o..]), [0f32; LANES], [0f32; LANES], [0f32; LANES]];
                    for (t, &y) in nbx.iter().enumerate() {
                        if sos[y as usize] <= k {
                            let y = y as usize;
                            let hy = &xl[y * wp..(y + 1) * wp];
                            let wt = &wl[t * wp * wp..(t + 1) * wp * wp];
                            // Input channels in blocks of LANES (the padding rows are zero).
                            for (v, rows) in hy.chunks_exact(LANES).zip(wt.chunks_exact(LANES * wp))
                            {
                                let v = lane(v);
                                for q in 0..LANES {
                                    axpy::<FMA>(&mut acc[q % 4], v[q], &rows[q * wp + o..]);
                                }
                            }
                        }
                    }
                    let acc = sum4(acc);
                    let at = x * wp + o;
                    let hx = &xl[at..at + LANES];
                    for ((nx, &h), &z) in next[at..at + LANES].iter_mut().zip(hx).zip(&acc) {
                        *nx = h + fast_tanh(z);
                    }
                }
            }
        }
        // Head and log-softmax.
        let (wh, bh) = &self.weights[self.depth];
        let dp = bh.len();
        let top = &hidden[(self.depth - 1) * n * wp..self.depth * n * wp];
        for (j, &x) in sites.iter().enumerate() {
            let xs = &top[x * wp..x * wp + w];
            for o in (0..dp).step_by(LANES) {
                let mut acc = lane(&bh[o..]);
                for (ch, &v) in xs.iter().enumerate() {
                    axpy::<FMA>(&mut acc, v, &wh[ch * dp + o..]);
                }
                logits[o..o + LANES].copy_from_slice(&acc);
            }
            self.conditional(&mut logits[..d], x, &mut out[j * d..(j + 1) * d]);
        }
    }

    /// The conditional `log p(s_x = v | .)` (`out`) from the logits of site `x`, pinned
    /// if `x` is.
    #[inline(always)]
    fn conditional(&self, logits: &mut [f32], x: usize, out: &mut [f64]) {
        if self.pin == Some(x) {
            logits[1..].iter_mut().for_each(|v| *v += FORBIDDEN);
        }
        log_softmax(logits, out);
    }
}

/// Per-row scratch of [`HostNet::row_step`].
struct RowBuffers {
    /// The hidden states `X_1 .. X_L` of every site (`L x N x padded`).
    hidden: Vec<f32>,
    /// The channel counts before each step (`n_steps x (d + 1)`).
    counts: Vec<f32>,
    /// Per step `k` and tap `t`, the first layer's averages rows `sum_j a_j(k) W_0(t, avg_j)`
    /// (`n_steps x taps x padded`): a neighbour of step `k` adds its tap's row.
    averages: Vec<f32>,
    /// One site's logits (`d` padded).
    logits: Vec<f32>,
}

impl RowBuffers {
    fn clear(&mut self) {
        self.hidden.fill(0.0);
        self.counts.fill(0.0);
    }
}

/// `out = log softmax(logits)`; for two states `log p_0 = -softplus(l_1 - l_0)` and
/// `log p_1 = -softplus(l_0 - l_1)` (one `exp`, one `ln`).
#[inline(always)]
fn log_softmax(logits: &[f32], out: &mut [f64]) {
    if let [l0, l1] = *logits {
        let z = l1 - l0;
        // ln(1 + e) rather than ln_1p: libm's log1pf was a tenth of a draw.
        let sp = (1.0 + (-z.abs()).exp()).ln();
        out[0] = f64::from(-(z.max(0.0) + sp));
        out[1] = f64::from(-((-z).max(0.0) + sp));
        return;
    }
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let lse = max + logits.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
    for (o, &v) in out.iter_mut().zip(logits) {
        *o = f64::from(v - lse);
    }
}

/// Below this many rows `log p` runs on the calling thread: handing a job to the rayon pool
/// wakes a worker (tens of microseconds), which made the model chain's local sweeps, one
/// configuration's `log q` every 10 proposals, cost a third of its time on 16x16.
const SERIAL_ROWS: usize = 8;

/// Output channels per accumulator: one AVX register of `f32`.
const LANES: usize = 8;

/// The first [`LANES`] values of `v`.
#[inline(always)]
fn lane(v: &[f32]) -> [f32; LANES] {
    v[..LANES].try_into().expect("padded to LANES")
}

/// `acc += w[..LANES]`.
#[inline(always)]
fn add_lane(acc: &mut [f32; LANES], w: &[f32]) {
    let w = lane(w);
    for (s, &v) in acc.iter_mut().zip(&w) {
        *s += v;
    }
}

/// The sum of four accumulators.
#[inline(always)]
fn sum4(acc: [[f32; LANES]; 4]) -> [f32; LANES] {
    let [mut a, b, c, d] = acc;
    for i in 0..LANES {
        a[i] += b[i] + (c[i] + d[i]);
    }
    a
}

/// `acc += a w[..LANES]`, fused when `FMA`.
#[inline(always)]
fn axpy<const FMA: bool>(acc: &mut [f32; LANES], a: f32, w: &[f32]) {
    let w = lane(w);
    for (s, &v) in acc.iter_mut().zip(&w) {
        *s = if FMA { v.mul_add(a, *s) } else { *s + a * v };
    }
}

/// `rows x cols` row-major values with each row padded with zeros to `padded` columns.
fn pad_rows(v: &[f32], cols: usize, padded: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(v.len() / cols.max(1) * padded);
    for row in v.chunks(cols) {
        out.extend_from_slice(row);
        out.resize(out.len() + padded - cols, 0.0);
    }
    out
}
