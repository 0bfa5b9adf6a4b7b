//! The Hamiltonian of a symmetry sector stored as a sparse matrix, built once with the same
//! row kernel as the matrix-free matvec. In momentum sectors every connected state must be
//! mapped to its representative (a minimum over the whole symmetry group), which costs far
//! more than the multiply itself; when memory allows, paying that once instead of once per
//! Lanczos step makes large symmetric sectors (the 32-site chain) practical. Rows are stored
//! in independent chunks so that building and multiplying are parallel and no chunk-sized
//! concatenation doubles the peak memory.

use rayon::prelude::*;

use super::basis::SpinBasis;
use crate::operator::PauliSum;
use crate::scalar::Scalar;

const CHUNK: usize = 1 << 12;

struct Block<S> {
    diag: Vec<S>,
    row_end: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<S>,
}

/// Row-chunked sparse matrix `H[r, r']` of a sector.
pub struct SectorMatrix<S> {
    blocks: Vec<Block<S>>,
}

impl<S: Scalar> SectorMatrix<S> {
    /// Upper bound of the bytes needed for a basis of `dim` states and at most `max_conn`
    /// off-diagonal elements per row.
    pub fn bytes_bound(dim: usize, max_conn: usize) -> u64 {
        let entry = 4 + std::mem::size_of::<S>();
        (dim * (max_conn * entry + 4 + std::mem::size_of::<S>())) as u64
    }

    /// Builds the matrix: row `r` holds `conj(H[s', r]) chi(g*) sqrt(N_r'/N_r)` at `r'`
    /// for every connected `s'` (duplicates merged), exactly the terms of
    /// [`super::basis::matvec`].
    pub fn build<B: SpinBasis>(h: &PauliSum, basis: &B) -> Self {
        let dim = basis.dim();
        let ng = h.n_groups();
        let blocks = (0..dim.div_ceil(CHUNK))
            .into_par_iter()
            .map_init(
                || (vec![0u64; ng], vec![S::zero(); ng], Vec::<(u32, S)>::new()),
                |(states, values, row), c| {
                    let lo = c * CHUNK;
                    let hi = (lo + CHUNK).min(dim);
                    let mut b = Block {
                        diag: Vec::with_capacity(hi - lo),
                        row_end: Vec::with_capacity(hi - lo),
                        cols: Vec::new(),
                        vals: Vec::new(),
                    };
                    for i in lo..hi {
                        let s = basis.state(i);
                        b.diag.push(h.diag::<S>(s));
                        let m = h.offdiag_into(s, states, values);
                        let inv = 1.0 / basis.norm(i);
                        row.clear();
                        for q in 0..m {
                            if let Some((j, chi)) = basis.find(states[q]) {
                                let f = S::from_c64(chi.scale(basis.norm(j) * inv));
                                row.push((j as u32, values[q].conj() * f));
                            }
                        }
                        row.sort_unstable_by_key(|e| e.0);
                        let mut k = 0;
                        while k < row.len() {
                            let (j, mut v) = row[k];
                            k += 1;
                            while k < row.len() && row[k].0 == j {
                                v += row[k].1;
                                k += 1;
                            }
                            b.cols.push(j);
                            b.vals.push(v);
                        }
                        b.row_end.push(b.cols.len() as u32);
                    }
                    b.cols.shrink_to_fit();
                    b.vals.shrink_to_fit();
                    b
                },
            )
            .collect();
        SectorMatrix { blocks }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.blocks
            .iter()
            .map(|b| {
                (b.cols.len() * 4
                    + (b.vals.len() + b.diag.len()) * std::mem::size_of::<S>()
                    + b.row_end.len() * 4) as u64
            })
            .sum()
    }

    /// `y = H x`.
    pub fn apply(&self, x: &[S], y: &mut [S]) {
        y.par_chunks_mut(CHUNK)
            .zip(self.blocks.par_iter())
            .enumerate()
            .for_each(|(c, (ys, b))| {
                let mut start = 0usize;
                for (k, yi) in ys.iter_mut().enumerate() {
                    let end = b.row_end[k] as usize;
                    let mut acc = b.diag[k] * x[c * CHUNK + k];
                    for e in start..end {
                        acc += b.vals[e] * x[b.cols[e] as usize];
                    }
                    *yi = acc;
                    start = end;
                }
            });
    }
}
