//! Periodic convolutions as one dense matrix, on lattices not much larger than the kernel.
//!
//! A convolution of `x` (`m x N x c`, channels last) whose tap `t` at site `x` reads site
//! `nb(x, t)` is a linear map of the whole configuration,
//!
//! `z[x, o] = sum_{y, c} x[y, c] W[(y, c), (x, o)]`,
//! `W[(y, c), (x, o)] = sum_t [nb(x, t) = y] M[x, t, c] w[t, c, o]`,
//!
//! with `M` the causal network's first-layer mask (1 otherwise) and a tap that reads nothing
//! (a later step, in the causal network's hidden layers) left out. The unfolded form gathers
//! `m x N x taps x c` values and multiplies them by the `(taps c) x o` kernel; on the small
//! lattices of the ground-state table (16 sites, 9 taps) that gather and its zeroed buffers,
//! not the products, were most of a forward pass. With `N <= 2 taps` the dense product
//! `(m) x (N c)` by `(N c) x (N o)` costs at most twice the flops and reads only `x`; when the
//! kernel is wider than the lattice (`N < taps`), several taps read the same site and `W`
//! sums them. `W` is built from `w` by candle operations at every pass (`N^2 taps c o`
//! multiply-adds, small next to a batch), so gradients reach `w` unchanged.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Which gather a convolution uses (see `MaskedDiffusion::unfold`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gather {
    /// Every tap reads its periodic neighbour.
    Plain,
    /// The causal network's first layer: periodic neighbours times the step mask.
    CausalFirst,
    /// The causal network's later layers: taps at later steps read nothing.
    CausalHidden,
}

/// The tap incidences `[nb(x, t) = y]` of a lattice's gathers, for building dense weights.
pub struct DenseConv {
    n: usize,
    taps: usize,
    /// `N x N x taps`: 1 at `(x, y, t)` when tap `t` of site `x` reads `y`.
    plain: Tensor,
    /// The same for the causal hidden layers (taps at later steps read nothing).
    hidden: Option<Tensor>,
    /// The causal first layer's mask, `N x taps x c_in x 1`.
    first: Option<Tensor>,
}

impl DenseConv {
    /// Whether the dense form pays on `n` sites with `taps` taps and `width` channels: up
    /// to `N = 8 taps` (eight times the flops of the unfolded form), with dense weights of
    /// at most a million entries (`N width <= 1024`; building one costs `taps` rows of a
    /// pass). Measured on 2 cores, seconds per ground-state iteration, unfolded against
    /// dense: TFIM chain 16, kernel 9, causal (`N = 1.8 taps`), 0.34 against 0.24; the
    /// default `rg` network, kernel 5, on the chain of 16 (`N = 3.2 taps`) 0.144 against
    /// 0.102, on the chain of 32 (`6.4 taps`) 1.40 against 1.18, on the 8x8 square
    /// (`2.6 taps`) 19.2 against 14.2; kernel 3 on the chain of 32 (`10.7 taps`) even.
    pub fn pays(n: usize, taps: usize, width: usize) -> bool {
        n <= 8 * taps && n * width <= 1024
    }

    /// From the plain gather `nb` (`N x taps`, row-major), and for the causal network its
    /// hidden gather (`N` meaning "reads nothing") and first-layer mask (`N x (taps c_in)`).
    pub fn new(
        n: usize,
        nb: &[u32],
        causal: Option<(&[u32], &Tensor)>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let taps = nb.len() / n;
        let incidence = |idx: &[u32]| -> Result<Tensor> {
            let mut a = vec![0f32; n * n * taps];
            for x in 0..n {
                for t in 0..taps {
                    let y = idx[x * taps + t] as usize;
                    if y < n {
                        a[(x * n + y) * taps + t] = 1.0;
                    }
                }
            }
            Ok(Tensor::from_vec(a, (n, n, taps), device)?.to_dtype(dtype)?)
        };
        let (hidden, first) = match causal {
            Some((hidden, first)) => {
                let c = first.dim(1)? / taps;
                (
                    Some(incidence(hidden)?),
                    Some(first.reshape((n, taps, c, 1))?),
                )
            }
            None => (None, None),
        };
        Ok(DenseConv {
            n,
            taps,
            plain: incidence(nb)?,
            hidden,
            first,
        })
    }

    /// `W` (`(N c) x (N o)`) of the kernel `w2` (`taps x c x o`) under `gather`.
    pub fn weight(&self, w2: &Tensor, gather: Gather) -> Result<Tensor> {
        let (n, taps) = (self.n, self.taps);
        let (_, c, o) = w2.dims3()?;
        let w2 = w2.unsqueeze(0)?;
        let (a, p) = match gather {
            Gather::Plain => (&self.plain, w2.broadcast_as((n, taps, c, o))?),
            Gather::CausalFirst => (&self.plain, w2.broadcast_mul(self.causal(&self.first)?)?),
            Gather::CausalHidden => (
                self.causal(&self.hidden)?,
                w2.broadcast_as((n, taps, c, o))?,
            ),
        };
        // Per site x: (N_y x taps) by (taps x c o), then (y, c) rows and (x, o) columns.
        let p = p.contiguous()?.reshape((n, taps, c * o))?;
        Ok(a.matmul(&p)?
            .reshape((n, n, c, o))?
            .permute((1, 2, 0, 3))?
            .contiguous()?
            .reshape((n * c, n * o))?)
    }

    /// A causal gather's tensor, which only a causal network's `DenseConv` has.
    fn causal<'a>(&self, t: &'a Option<Tensor>) -> Result<&'a Tensor> {
        t.as_ref()
            .ok_or_else(|| Error::Input("model: a causal convolution on a masked network".into()))
    }
}
