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
//!   averages rows `sum_j a_j(k) W_0(t, avg_j)` once per step and tap);
//! - later layers: `z(x) = b_l + sum_t sum_c X_l(y, c) W_l(t, c) [step(y) <= step(x)]`,
//!   `X_{l+1} = X_l + tanh(z)`, `X_1 = tanh(z_0)`;
//! - head: the `d` logits `b_h + W_h X_L(x)`, the pin ([`super::ModelConfig::pin_first`])
//!   added, log-softmax; for `d = 2` only `z = l_1 - l_0`, and `log p = -softplus(-+z)`
//!   for all sites of a step at once in vectorised polynomials.
//!
//! Which neighbours pass the tests `step(y) < step(x)` and `step(y) <= step(x)` is fixed by
//! the schedule: a [`StepPlan`] lists them per site when the weights are laid out, and the
//! averages terms, which depend on the tap and the neighbour's step only, are summed once per
//! configuration for each distinct set of them among a step's sites. A revealed neighbour
//! then costs one row addition in the first layer.
//!
//! With one block of channels (width up to 8, the default) the rows are fixed-size arrays,
//! one bounds check per neighbour rather than per channel, and a two-state draw at `beta = 1`
//! is `s_x = 1` iff `u >= p_0` without the general search of [`draw_value`].
//!
//! Measured on 16x16 (width 8, kernel 3, one core of a 2-core Xeon VM, untrained weights;
//! `cargo bench --bench sampler`, means over batches of 256): depth 1 about 60 ns per site to
//! draw and 47 ns to evaluate `log p`, depth 2 104 and 92 (best of 7 batches of 2000 in a
//! quick timing: 40 and 30, 75 and 55). Before the step plans, the fixed-size rows and the
//! vectorised log-sigmoids the same quick timing gave 80 to 120 and 55 to 90 at depth 1, 140 to
//! 195 and 115 to 200 at depth 2. `fast_tanh` is about a quarter of the time.
//!
//! The same function of the configuration as the tensor form (to `f32` rounding; the tests
//! compare both). Rows are independent and run in parallel (`rayon`); a row's result does not
//! depend on the thread count. On x86-64 with AVX2 and FMA the kernels are compiled for them
//! and chosen at run time.

use std::collections::HashMap;

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
    /// For `d = 2`, the head's logit difference `l_1 - l_0`: weights `W_h(., 1) - W_h(., 0)`
    /// (`padded`) and bias; a site's conditional needs only it.
    head2: Option<(Vec<f32>, f32)>,
    /// Per step, where its sites' kernels read ([`StepPlan`]).
    plans: Vec<StepPlan>,
    fma: bool,
}

/// Where the kernels of the sites of one step read: which neighbours are revealed before the
/// step is fixed by the schedule, so the tests `step(y) < k` and `step(y) <= k` of the layers
/// run once, when the net is laid out, not per site and configuration.
struct StepPlan {
    /// First layer, per site of the step: the end of its taps in `first` (each starts where
    /// the previous ended).
    first_end: Vec<u32>,
    /// `(t d, y)` for each neighbour `y` (tap `t`) revealed before the step: the site adds
    /// weight row `t d + s_y`.
    first: Vec<(u32, u32)>,
    /// Per site, its averages signature: an index into `signatures`.
    signature: Vec<u32>,
    /// The distinct sets of averages rows (`step(y) taps + t` for the taps with `step(y) <=
    /// k`) of the step's sites: sites with the same set add the same sum, formed once per
    /// configuration and step.
    signatures: Vec<Vec<u32>>,
    /// Later layers `l >= 1` (index `l - 1`), per site: the end of its taps in `later`.
    later_end: Vec<Vec<u32>>,
    /// Later layers: `(t, y)` for each neighbour with `step(y) <= k`.
    later: Vec<Vec<(u32, u32)>>,
}

impl StepPlan {
    fn new(
        k: usize,
        sites: &[usize],
        neighbours: &[Vec<u32>],
        step_of_site: &[usize],
        taps: usize,
        d: usize,
    ) -> StepPlan {
        let mut first_end = Vec::with_capacity(sites.len());
        let mut first = Vec::new();
        let mut signature = Vec::with_capacity(sites.len());
        let mut signatures: Vec<Vec<u32>> = Vec::new();
        let mut index: HashMap<Vec<u32>, u32> = HashMap::new();
        for &x in sites {
            let nbx = &neighbours[0][x * taps..(x + 1) * taps];
            let mut rows = Vec::new();
            for (t, &y) in nbx.iter().enumerate() {
                let ky = step_of_site[y as usize];
                if ky < k {
                    first.push(((t * d) as u32, y));
                }
                if ky <= k {
                    rows.push((ky * taps + t) as u32);
                }
            }
            first_end.push(first.len() as u32);
            // A map, not a search: with open boundaries or an irregular schedule a step's
            // sites can have many distinct sets.
            let sig = match index.get(&rows) {
                Some(&i) => i,
                None => {
                    index.insert(rows.clone(), signatures.len() as u32);
                    signatures.push(rows);
                    (signatures.len() - 1) as u32
                }
            };
            signature.push(sig);
        }
        let (mut later_end, mut later) = (Vec::new(), Vec::new());
        for nb in &neighbours[1..] {
            let (mut ends, mut list) = (Vec::with_capacity(sites.len()), Vec::new());
            for &x in sites {
                for (t, &y) in nb[x * taps..(x + 1) * taps].iter().enumerate() {
                    if step_of_site[y as usize] <= k {
                        list.push((t as u32, y));
                    }
                }
                ends.push(list.len() as u32);
            }
            later_end.push(ends);
            later.push(list);
        }
        StepPlan {
            first_end,
            first,
            signature,
            signatures,
            later_end,
            later,
        }
    }
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
        let wh = vec(&wh)?;
        let head2 = (self.d == 2).then(|| {
            let diff: Vec<f32> = wh.chunks(2).map(|w| w[1] - w[0]).collect();
            (pad_rows(&diff, width, padded), bh[1] - bh[0])
        });
        weights.push((pad_rows(&wh, self.d, dp), pad_rows(&bh, self.d, dp)));
        let neighbours = self
            .neighbours
            .iter()
            .map(|t| Ok(t.to_vec1::<u32>()?))
            .collect::<Result<Vec<_>>>()?;
        let taps = neighbours[0].len() / self.n;
        let step_of_site = self.schedule.step_of_site();
        let plans = self
            .schedule
            .steps()
            .iter()
            .enumerate()
            .map(|(k, sites)| StepPlan::new(k, sites, &neighbours, step_of_site, taps, d))
            .collect();
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
            steps: self.schedule.steps().to_vec(),
            weights,
            first_avg,
            embed: pad_rows(&vec(self.param("embed"))?, width, padded),
            pin: self.pinned_site(),
            head2,
            plans,
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
            signature_sums: vec![
                0f32;
                self.plans
                    .iter()
                    .map(|p| p.signatures.len())
                    .max()
                    .unwrap_or(0)
                    * self.padded
            ],
            diffs: vec![0f32; self.steps.iter().map(Vec::len).max().unwrap_or(0)],
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
        let two_exact = d == 2 && beta == 1.0;
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
                        let us = &uniforms[offset[k] + i * m..offset[k] + (i + 1) * m];
                        if two_exact {
                            // `draw_value` for two states at beta = 1: state 1 iff
                            // u >= p_0, and log q = log p.
                            for ((&x, lsm), &u) in sites.iter().zip(out.chunks_exact(2)).zip(us) {
                                if keep_cond {
                                    cond[x * 2..x * 2 + 2].copy_from_slice(lsm);
                                }
                                let v = usize::from(u >= lsm[0].exp());
                                row[x] = v as u8;
                                *lp += lsm[v];
                                *lqs += lsm[v];
                            }
                            continue;
                        }
                        for (j, &x) in sites.iter().enumerate() {
                            let lsm = &out[j * d..(j + 1) * d];
                            if keep_cond {
                                cond[x * d..(x + 1) * d].copy_from_slice(lsm);
                            }
                            let (v, lq_v) = draw_value(lsm, beta, us[j], lq);
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
        let RowBuffers {
            hidden,
            counts,
            averages,
            signature_sums,
            diffs,
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
        let plan = &self.plans[k];
        // Per averages signature: b_0 + e_step + the sum of its averages rows.
        let (w0, b0) = &self.weights[0];
        for (sig, rows) in plan.signatures.iter().enumerate() {
            for o in (0..wp).step_by(LANES) {
                let mut acc = lane(&b0[o..]);
                add_lane(&mut acc, &self.embed[k * wp + o..]);
                for &r in rows {
                    add_lane(&mut acc, &averages[r as usize * wp + o..]);
                }
                signature_sums[sig * wp + o..][..LANES].copy_from_slice(&acc);
            }
        }
        // First layer, LANES output channels at a time (the accumulator stays in a register):
        // the signature's sum plus one weight row per revealed neighbour.
        if wp == LANES {
            // One block of channels: rows as fixed-size arrays (see the later layers).
            let (w0b, _) = w0.as_chunks::<LANES>();
            let (sums, _) = signature_sums.as_chunks::<LANES>();
            let (hb, _) = hidden[..n * wp].as_chunks_mut::<LANES>();
            let mut begin = 0;
            for (j, &x) in sites.iter().enumerate() {
                let end = plan.first_end[j] as usize;
                let mut acc = sums[plan.signature[j] as usize];
                for &(r, y) in &plan.first[begin..end] {
                    add_lane(&mut acc, &w0b[r as usize + row[y as usize] as usize]);
                }
                begin = end;
                for (h, &z) in hb[x].iter_mut().zip(&acc) {
                    *h = fast_tanh(z);
                }
            }
        } else {
            let mut begin = 0;
            for (j, &x) in sites.iter().enumerate() {
                let end = plan.first_end[j] as usize;
                let revealed = &plan.first[begin..end];
                begin = end;
                let sig = plan.signature[j] as usize;
                for o in (0..wp).step_by(LANES) {
                    let mut acc = lane(&signature_sums[sig * wp + o..]);
                    for &(r, y) in revealed {
                        let r = r as usize + row[y as usize] as usize;
                        add_lane(&mut acc, &w0[r * wp + o..]);
                    }
                    let h = &mut hidden[x * wp + o..x * wp + o + LANES];
                    for (h, &z) in h.iter_mut().zip(&acc) {
                        *h = fast_tanh(z);
                    }
                }
            }
        }
        // Later layers: X_{l+1}(x) = X_l(x) + tanh(W_l . X_l(neighbours) + b_l).
        for l in 1..self.depth {
            let (wl, bl) = &self.weights[l];
            let (ends, list) = (&plan.later_end[l - 1], &plan.later[l - 1]);
            let (lower, upper) = hidden.split_at_mut(l * n * wp);
            let xl = &lower[(l - 1) * n * wp..];
            let next = &mut upper[..n * wp];
            if wp == LANES {
                // One block of channels (width <= 8, the default): rows as fixed-size arrays,
                // one bounds check per neighbour instead of one per input channel.
                let (xb, _) = xl.as_chunks::<LANES>();
                let (wb, _) = wl.as_chunks::<LANES>();
                let (nb_, _) = next.as_chunks_mut::<LANES>();
                let bias = lane(bl);
                let mut begin = 0;
                for (j, &x) in sites.iter().enumerate() {
                    let end = ends[j] as usize;
                    let mut acc = [bias, [0f32; LANES], [0f32; LANES], [0f32; LANES]];
                    for &(t, y) in &list[begin..end] {
                        let v = xb[y as usize];
                        let rows: &[[f32; LANES]; LANES] = wb
                            [t as usize * LANES..(t as usize + 1) * LANES]
                            .try_into()
                            .expect("LANES rows per tap");
                        for q in 0..LANES {
                            axpy::<FMA>(&mut acc[q % 4], v[q], &rows[q]);
                        }
                    }
                    begin = end;
                    let acc = sum4(acc);
                    let hx = xb[x];
                    for ((nx, &h), &z) in nb_[x].iter_mut().zip(&hx).zip(&acc) {
                        *nx = h + fast_tanh(z);
                    }
                }
                continue;
            }
            let mut begin = 0;
            for (j, &x) in sites.iter().enumerate() {
                let end = ends[j] as usize;
                let nbx = &list[begin..end];
                begin = end;
                for o in (0..wp).step_by(LANES) {
                    // Four independent accumulators: the products of one site form a long
                    // chain of dependent additions otherwise.
                    let mut acc = [lane(&bl[o..]), [0f32; LANES], [0f32; LANES], [0f32; LANES]];
                    for &(t, y) in nbx {
                        let (t, y) = (t as usize, y as usize);
                        let hy = &xl[y * wp..(y + 1) * wp];
                        let wt = &wl[t * wp * wp..(t + 1) * wp * wp];
                        // Input channels in blocks of LANES (the padding rows are zero).
                        for (v, rows) in hy.chunks_exact(LANES).zip(wt.chunks_exact(LANES * wp)) {
                            let v = lane(v);
                            for q in 0..LANES {
                                axpy::<FMA>(&mut acc[q % 4], v[q], &rows[q * wp + o..]);
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
        let top = &hidden[(self.depth - 1) * n * wp..self.depth * n * wp];
        if let Some((wd, bd)) = &self.head2 {
            // d = 2: the logit difference z = l_1 - l_0 of every site of the step, then
            // their log-sigmoids in one vectorised pass.
            let zs = &mut diffs[..sites.len()];
            for (z, &x) in zs.iter_mut().zip(sites) {
                let mut acc = [0f32; LANES];
                for o in (0..wp).step_by(LANES) {
                    let v = lane(&top[x * wp + o..]);
                    for ((a, &v), &w) in acc.iter_mut().zip(&v).zip(&wd[o..o + LANES]) {
                        *a = if FMA { v.mul_add(w, *a) } else { *a + v * w };
                    }
                }
                *z = bd + hsum(acc);
                if self.pin == Some(x) {
                    *z += FORBIDDEN;
                }
            }
            log_sigmoid_pairs(zs, &mut out[..2 * sites.len()]);
            return;
        }
        let (wh, bh) = &self.weights[self.depth];
        let dp = bh.len();
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
    /// Per averages signature of the current step ([`StepPlan`]), `b_0 + e_step` plus its
    /// rows' sum (`padded` each).
    signature_sums: Vec<f32>,
    /// For `d = 2`, the logit differences of the current step's sites.
    diffs: Vec<f32>,
    /// One site's logits (`d` padded).
    logits: Vec<f32>,
}

impl RowBuffers {
    fn clear(&mut self) {
        self.hidden.fill(0.0);
        self.counts.fill(0.0);
    }
}

/// `out = log softmax(logits)` for more than two states (two go through
/// [`log_sigmoid_pairs`]).
#[inline(always)]
fn log_softmax(logits: &[f32], out: &mut [f64]) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let lse = max + logits.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
    for (o, &v) in out.iter_mut().zip(logits) {
        *o = f64::from(v - lse);
    }
}

/// `log p_0 = -softplus(z)` and `log p_1 = -softplus(-z)` of two-state conditionals with
/// logit differences `z = l_1 - l_0` (`out`: the pairs, interleaved), with `softplus(z) =
/// max(z, 0) + ln(1 + e^{-|z|})`. The exponential and logarithm are polynomials in plain
/// `f32` arithmetic that the compiler vectorises across the sites (libm's `expf` and `logf`,
/// called per site, were an eighth of a chain's time): relative error a few `1e-8`, below
/// `f32` rounding.
#[inline(always)]
fn log_sigmoid_pairs(zs: &[f32], out: &mut [f64]) {
    let mut sp = [0f32; 64];
    for (block, outs) in zs.chunks(64).zip(out.chunks_mut(128)) {
        let sp = &mut sp[..block.len()];
        for (s, &z) in sp.iter_mut().zip(block) {
            *s = ln_1p_unit(exp_nonpositive(-z.abs()));
        }
        for ((o, &z), &s) in outs.chunks_exact_mut(2).zip(block.iter()).zip(sp.iter()) {
            o[0] = f64::from(-(z.max(0.0) + s));
            o[1] = f64::from(-((-z).max(0.0) + s));
        }
    }
}

/// `e^x` for `x <= 0` in `f32` (0 below -87): `x = n ln 2 + r`, `|r| <= ln 2 / 2`, `e^r` by
/// its Taylor polynomial to degree 7 (truncation below `6e-9`), times `2^n` built from its
/// exponent bits.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n ln2_hi is exact.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let small = x < -87.0;
    let x = x.max(-87.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if small {
        0.0
    } else {
        p * scale
    }
}

/// `ln(1 + e)` for `0 <= e <= 1`: `2 atanh(u)`, `u = e / (2 + e) <= 1/3`, by its series to
/// `u^13` (truncation below `1e-8` relative).
#[inline(always)]
fn ln_1p_unit(e: f32) -> f32 {
    let u = e / (2.0 + e);
    let u2 = u * u;
    let p = 1.0 / 13.0;
    let p = p * u2 + 1.0 / 11.0;
    let p = p * u2 + 1.0 / 9.0;
    let p = p * u2 + 1.0 / 7.0;
    let p = p * u2 + 1.0 / 5.0;
    let p = p * u2 + 1.0 / 3.0;
    let p = p * u2 + 1.0;
    2.0 * u * p
}

/// The sum of the lanes of an accumulator, pairwise.
#[inline(always)]
fn hsum(acc: [f32; LANES]) -> f32 {
    let a: [f32; 4] = std::array::from_fn(|i| acc[i] + acc[i + 4]);
    (a[0] + a[2]) + (a[1] + a[3])
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The polynomial log-sigmoids against `f64` libm, over `z` from -40 to 40 and the
    /// extremes (a pinned site's `z` is offset by [`FORBIDDEN`]): relative error within a few
    /// `f32` roundings, absolute below `1e-30` where `e^{-|z|}` underflows.
    #[test]
    fn log_sigmoid_pairs_match_libm() {
        let zs: Vec<f32> = (-4000..=4000)
            .map(|i| i as f32 * 0.01)
            .chain([-1e4, 1e4, -200.0, 90.0, -87.3, 86.9, 1e-6, -1e-6])
            .collect();
        let mut out = vec![0.0; 2 * zs.len()];
        log_sigmoid_pairs(&zs, &mut out);
        for (&z, o) in zs.iter().zip(out.chunks(2)) {
            let z = f64::from(z);
            let sp = (-z.abs()).exp().ln_1p();
            for (got, exact) in [(o[0], -(z.max(0.0) + sp)), (o[1], -((-z).max(0.0) + sp))] {
                let err = (got - exact).abs();
                assert!(
                    err <= 4e-7 * exact.abs() || err < 1e-30,
                    "z = {z}: {got} against {exact}"
                );
            }
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
    }
}
