//! Drawing from the step-causal network one step at a time, each site evaluated once.
//!
//! In the step-causal network ([`Network::Causal`]) the hidden state `X_l(x)` of a site `x`
//! depends only on the sites revealed before the step of `x`: the first layer reads the
//! states of sites of earlier steps (and the averages channels of sites of earlier or the same
//! step, which hold the averages over earlier steps), and every later layer reads the hidden
//! states of sites of earlier or the same step. So once step `k`'s sites are to be drawn,
//! everything their conditionals need has been computed at earlier steps or can be computed
//! now, layer by layer, at the sites of step `k` alone:
//!
//! `X_1(x) = tanh(W_0 . u(x) + b_0 + e_k)`, `X_{l+1}(x) = X_l(x) + tanh(W_l . X_l(N(x)) + b_l)`,
//! `logits(x) = W_h X_L(x) + b_h`, for `x` in step `k`,
//!
//! with `u(x)` the first layer's masked unfolded input and `X_l(N(x))` the stored hidden states
//! of the neighbours (zero for later steps, as in the full pass). A draw then costs one network
//! pass over the lattice in all, where a full causal pass per step costs one per step (9 on a
//! 16x16 square with the `rg` schedule): the caching of fast PixelCNN generation, applied to the
//! RG schedule's steps.
//!
//! [`Network::Causal`]: super::Network::Causal

use candle_core::{DType, Tensor};

use super::MaskedDiffusion;
use crate::error::Result;

/// The gathers of one step's sites (see [`MaskedDiffusion::stepwise_logits`]).
pub(super) struct StepGather {
    /// The step's sites (`u32`, length `m`): the rows of the hidden states they write.
    sites: Tensor,
    /// The step's sites on the host.
    site_list: Vec<usize>,
    /// Per layer from the second (entry `l - 1` for layer `l`), the neighbours of each site
    /// of the step (`m taps`, `u32`), `N` (the zero row) for sites of later steps.
    hidden: Vec<Tensor>,
}

impl StepGather {
    /// The per-step gathers from each layer's neighbour index `neighbours[l]` (`N x taps`
    /// row-major) and every site's step.
    pub(super) fn build(
        neighbours: &[Vec<u32>],
        steps: &[Vec<usize>],
        step_of_site: &[usize],
        device: &candle_core::Device,
    ) -> Result<Vec<StepGather>> {
        let n = step_of_site.len();
        let taps = neighbours[0].len() / n;
        steps
            .iter()
            .map(|sites| {
                let ids: Vec<u32> = sites.iter().map(|&x| x as u32).collect();
                let hidden = neighbours[1..]
                    .iter()
                    .map(|nb| {
                        let idx: Vec<u32> = sites
                            .iter()
                            .flat_map(|&x| {
                                nb[x * taps..(x + 1) * taps].iter().map(move |&y| {
                                    if step_of_site[y as usize] <= step_of_site[x] {
                                        y
                                    } else {
                                        n as u32
                                    }
                                })
                            })
                            .collect();
                        let len = idx.len();
                        Tensor::from_vec(idx, len, device)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(StepGather {
                    sites: Tensor::from_vec(ids, sites.len(), device)?,
                    site_list: sites.clone(),
                    hidden,
                })
            })
            .collect()
    }
}

/// The state of a stepwise draw of `B` configurations: the weights in unfolded form, the
/// averages of the revealed channels per row before each step, and the hidden states of the
/// sites evaluated so far.
pub(super) struct Stepwise {
    b: usize,
    /// Per convolution layer then the head: `(taps c x o, 1 x 1 x o)`.
    weights: Vec<(Tensor, Tensor)>,
    /// Per step `k` and row, the averages `d + 1` channels over the sites of steps `< k`
    /// (the first layer's averages channels, as [`MaskedDiffusion::encode`] computes them).
    means: Vec<Vec<f32>>,
    /// Per layer from the second: `B x (N + 1) x width` inputs `X_l` of the sites evaluated
    /// so far, zeros elsewhere (row `N` stays zero: the gather of sites of later steps).
    hidden: Vec<Tensor>,
}

impl MaskedDiffusion {
    /// Whether draws go step by step ([`Stepwise`]): the causal network without an `S^z`
    /// sector mask (whose masks count the states of the whole row), unless turned off.
    pub(super) fn draws_stepwise(&self) -> bool {
        self.stepwise && self.n_up.is_none() && self.causal.is_some()
    }

    /// A stepwise draw of `b` configurations, before its first step.
    pub(super) fn stepwise_start(&self, b: usize) -> Result<Stepwise> {
        let mut weights = Vec::with_capacity(self.cfg.depth + 1);
        for l in 0..=self.cfg.depth {
            let (w, bias) = self.conv_params(l);
            weights.push((self.unfolded_weight(w)?, bias.unsqueeze(0)?.unsqueeze(0)?));
        }
        let zeros = Tensor::zeros((b, self.n + 1, self.cfg.width), self.dtype, &self.device)?;
        Ok(Stepwise {
            b,
            weights,
            means: vec![vec![0f32; b * (self.d + 1)]],
            hidden: vec![zeros; self.cfg.depth - 1],
        })
    }

    /// The log-softmax of the conditionals (`B x m x d`, `f64`, rows then the step's sites
    /// in schedule order) of the sites of step `k`, given the configurations `s` (`B x N`)
    /// whose sites of steps before `k` are drawn. Steps must come in order.
    pub(super) fn stepwise_logits(
        &self,
        state: &mut Stepwise,
        s: &[u8],
        k: usize,
    ) -> Result<Vec<f64>> {
        let (n, d, b) = (self.n, self.d, state.b);
        let gather = self.causal.as_ref().expect("a causal network");
        let step = &gather.per_step[k];
        let sos = self.schedule.step_of_site();
        if k > 0 {
            // The averages before step k: those before k - 1 plus the sites of step k - 1.
            let mut next = state.means[k - 1].clone();
            for (i, mean) in next.chunks_mut(d + 1).enumerate() {
                for &x in &gather.per_step[k - 1].site_list {
                    mean[s[i * n + x] as usize] += 1.0;
                    mean[d] += 1.0;
                }
            }
            state.means.push(next);
        }
        debug_assert_eq!(state.means.len(), k + 1, "steps in order");
        // The first layer's unfolded input at the step's sites (see `CausalGather::first`).
        let m = step.site_list.len();
        let c = 2 * (d + 1);
        let nb0 = &gather.first_neighbours;
        let taps = nb0.len() / n;
        let mut cols = vec![0f32; b * m * taps * c];
        let nf = n as f32;
        for (i, row) in cols.chunks_mut(m * taps * c).enumerate() {
            for (j, &x) in step.site_list.iter().enumerate() {
                for t in 0..taps {
                    let y = nb0[x * taps + t] as usize;
                    let at = (j * taps + t) * c;
                    if sos[y] < k {
                        row[at + s[i * n + y] as usize] = 1.0;
                        row[at + d] = 1.0;
                    }
                    if sos[y] <= k {
                        let mean = &state.means[sos[y]][i * (d + 1)..(i + 1) * (d + 1)];
                        for (v, &count) in row[at + d + 1..at + c].iter_mut().zip(mean) {
                            *v = count / nf;
                        }
                    }
                }
            }
        }
        let cols = Tensor::from_vec(cols, (b * m, taps * c), &self.device)?.to_dtype(self.dtype)?;
        let embed = self.param("embed").narrow(0, k, 1)?.unsqueeze(0)?;
        let (w, bias) = &state.weights[0];
        let z = cols
            .matmul(w)?
            .reshape((b, m, w.dim(1)?))?
            .broadcast_add(bias)?
            .broadcast_add(&embed)?;
        let mut x = self.activation(&z)?;
        for l in 1..self.cfg.depth {
            let buffer = &mut state.hidden[l - 1];
            *buffer = buffer.index_add(&step.sites, &x, 1)?;
            let (w, bias) = &state.weights[l];
            let width = x.dim(2)?;
            let z = buffer
                .index_select(&step.hidden[l - 1], 1)?
                .reshape((b * m, w.dim(0)?))?
                .matmul(w)?
                .reshape((b, m, width))?
                .broadcast_add(bias)?;
            x = (x + self.activation(&z)?)?;
        }
        let (w, bias) = &state.weights[self.cfg.depth];
        let out = x
            .reshape((b * m, x.dim(2)?))?
            .matmul(w)?
            .reshape((b, m, w.dim(1)?))?
            .broadcast_add(bias)?
            .narrow(2, 0, d)?;
        // The pin, on the first site of step 0 ([`super::ModelConfig::pin_first`]).
        let out = match &self.pin {
            Some(pin) if k == 0 => out.broadcast_add(&pin.index_select(&step.sites, 1)?)?,
            _ => out,
        };
        let lsm = candle_nn::ops::log_softmax(&out, 2)?;
        Ok(lsm.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
    }
}
