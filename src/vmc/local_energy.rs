//! Local energies `E_loc(s) = sum_{s'} H[s, s'] psi(s') / psi(s)`.
//!
//! The connected configurations of every sample are generated in parallel (rayon) from the
//! Hamiltonian's [`Operator::connected`] (which gives `H[s', s]`; `H[s, s'] = conj(H[s', s])`),
//! then `log psi` of all of them is evaluated in large batches by the model, and
//! `E_loc(s) = H[s, s] + sum conj(H[s', s]) exp(log psi(s') - log psi(s))` in complex
//! arithmetic.

use num_complex::Complex64;
use rayon::prelude::*;

use crate::error::Result;
use crate::operator::{Connections, Operator};

/// Configurations evaluated per model call.
const EVAL_BATCH: usize = 8192;

/// `E_loc` of each sample (`samples` row-major, `n` sites each), given `log psi` of the
/// samples and a batched evaluator of `log psi`.
pub fn local_energies(
    op: &dyn Operator,
    samples: &[u8],
    n: usize,
    log_psi_samples: &[Complex64],
    log_psi: &dyn Fn(&[u8]) -> Result<Vec<Complex64>>,
) -> Result<Vec<Complex64>> {
    let b = samples.len() / n;
    // Connected configurations of every sample, in sample order.
    let conns: Vec<(Complex64, Vec<u8>, Vec<Complex64>)> = samples
        .par_chunks(n)
        .map_init(Connections::new, |c, s| {
            op.connected(s, c);
            (c.diag, c.configs.clone(), c.values.clone())
        })
        .collect();
    let all: Vec<u8> = conns.iter().flat_map(|c| c.1.iter().copied()).collect();
    let mut lp = Vec::with_capacity(all.len() / n.max(1));
    for chunk in all.chunks(EVAL_BATCH * n) {
        lp.extend(log_psi(chunk)?);
    }
    let mut out = Vec::with_capacity(b);
    let mut k = 0;
    for (i, (diag, _, values)) in conns.iter().enumerate() {
        let mut e = *diag;
        for v in values {
            e += v.conj() * (lp[k] - log_psi_samples[i]).exp();
            k += 1;
        }
        out.push(e);
    }
    Ok(out)
}
