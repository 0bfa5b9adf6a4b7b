//! Local energies `E_loc(s) = sum_{s'} H[s, s'] psi(s') / psi(s)`.
//!
//! The connected configurations of every sample are generated in parallel (rayon) from the
//! Hamiltonian's [`Operator::connected`] (which gives `H[s', s]`; `H[s, s'] = conj(H[s', s])`),
//! then `log psi` of the distinct ones is evaluated by the model (which knows which sample each
//! came from, so it can reuse what the sample's own evaluation computed; a configuration
//! connected to several samples, or to a repeated sample, is evaluated once), and
//! `E_loc(s) = H[s, s] + sum conj(H[s', s]) exp(log psi(s') - log psi(s))` in complex
//! arithmetic.

use num_complex::Complex64;
use rayon::prelude::*;

use crate::error::Result;
use crate::model::unique::Unique;
use crate::operator::{Connections, Operator};

/// Connected elements of a block of samples, flattened.
struct Block {
    diag: Vec<Complex64>,
    counts: Vec<usize>,
    configs: Vec<u8>,
    values: Vec<Complex64>,
}

/// A batched evaluator of `log psi` of configurations (`M x N`), given the sample each one
/// is connected to.
pub type ConnectedLogPsi<'a> = dyn Fn(&[u8], &[usize]) -> Result<Vec<Complex64>> + 'a;

/// `E_loc` of each sample (`samples` row-major, `n` sites each), given `log psi` of the
/// samples and a batched evaluator `log_psi(configs, parents)` of `log psi` of connected
/// configurations (`parents[j]` is the sample that configuration `j` is connected to).
pub fn local_energies(
    op: &dyn Operator,
    samples: &[u8],
    n: usize,
    log_psi_samples: &[Complex64],
    log_psi: &ConnectedLogPsi,
) -> Result<Vec<Complex64>> {
    let b = samples.len() / n;
    // Connected configurations of every sample, in sample order: per block of samples one
    // flat buffer of configurations and values (no allocation per sample).
    const BLOCK: usize = 64;
    let blocks: Vec<Block> = samples
        .par_chunks(BLOCK * n)
        .map(|chunk| {
            let mut c = Connections::new();
            let (mut diag, mut counts, mut configs, mut values) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for s in chunk.chunks(n) {
                op.connected(s, &mut c);
                diag.push(c.diag);
                counts.push(c.len());
                configs.extend_from_slice(&c.configs);
                values.extend_from_slice(&c.values);
            }
            Block {
                diag,
                counts,
                configs,
                values,
            }
        })
        .collect();
    let all: Vec<u8> = blocks
        .iter()
        .flat_map(|c| c.configs.iter().copied())
        .collect();
    let parents: Vec<usize> = blocks
        .iter()
        .enumerate()
        .flat_map(|(bi, blk)| {
            blk.counts
                .iter()
                .enumerate()
                .flat_map(move |(i, &m)| std::iter::repeat_n(bi * BLOCK + i, m))
        })
        .collect();
    // A diagonal operator, or samples without off-diagonal elements, connect to nothing.
    let lp = if all.is_empty() {
        Vec::new()
    } else {
        let u = Unique::new(&all, n);
        if u.all_distinct() {
            log_psi(&all, &parents)?
        } else {
            let parents: Vec<usize> = u.first.iter().map(|&r| parents[r]).collect();
            u.spread(&log_psi(&u.configs(&all, n), &parents)?)
        }
    };
    let mut out = Vec::with_capacity(b);
    let (mut i, mut k) = (0, 0);
    for blk in &blocks {
        let mut v = blk.values.iter();
        for (d, &m) in blk.diag.iter().zip(&blk.counts) {
            let mut e = *d;
            for h in v.by_ref().take(m) {
                e += h.conj() * (lp[k] - log_psi_samples[i]).exp();
                k += 1;
            }
            out.push(e);
            i += 1;
        }
    }
    Ok(out)
}
