//! Operators on sites of any local dimension (truncated oscillators, or spins for
//! cross-checks): sums of products of `d x d` matrices on sites, stored column-sparse so that
//! the connected elements of a configuration are read off without allocation.

use num_complex::Complex64;

use super::local_ops::Mat;
use super::{Connections, Operator};
use crate::hilbert::Hilbert;

/// Column-sparse `d x d` matrix: for each column `c`, the pairs `(row, M[row, c])`.
#[derive(Clone, Debug)]
struct SparseCols {
    start: Vec<u32>,
    rows: Vec<u8>,
    vals: Vec<Complex64>,
}

impl SparseCols {
    fn from_mat(m: &Mat) -> Self {
        let mut out = SparseCols {
            start: vec![0],
            rows: vec![],
            vals: vec![],
        };
        for c in 0..m.n {
            for r in 0..m.n {
                let v = m.get(r, c);
                if v.norm() > 1e-14 {
                    out.rows.push(r as u8);
                    out.vals.push(v);
                }
            }
            out.start.push(out.rows.len() as u32);
        }
        out
    }

    #[inline]
    fn col(&self, c: u8) -> std::ops::Range<usize> {
        self.start[c as usize] as usize..self.start[c as usize + 1] as usize
    }

    fn max_col(&self) -> usize {
        self.start
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }
}

/// A product of local matrices on distinct sites, times a coefficient.
#[derive(Clone, Debug)]
struct Product {
    coeff: Complex64,
    sites: Vec<usize>,
    mats: Vec<SparseCols>,
}

/// `H = sum_x h_x + sum_t c_t prod_k A_{t,k}(site_{t,k})`: merged single-site matrices plus
/// products on several sites.
#[derive(Clone, Debug)]
pub struct LocalOperator {
    hilbert: Hilbert,
    single: Vec<SparseCols>,
    products: Vec<Product>,
    real: bool,
}

impl LocalOperator {
    /// Builds the operator from single-site matrices (merged per site) and products.
    /// `terms` holds `(coeff, [(site, matrix)])` with distinct sites in each term.
    pub fn new(hilbert: Hilbert, terms: &[(Complex64, Vec<(usize, Mat)>)]) -> Self {
        let d = hilbert.local_dim();
        let mut single: Vec<Mat> = (0..hilbert.n_sites).map(|_| Mat::zeros(d)).collect();
        let mut products = Vec::new();
        let mut real = true;
        for (c, factors) in terms {
            match factors.as_slice() {
                [] => {
                    // A constant: spread it over site 0's identity.
                    single[0].add_scaled(*c, &Mat::identity(d));
                }
                [(site, m)] => single[*site].add_scaled(*c, m),
                _ => {
                    let mut coeff = *c;
                    let mut sites = vec![];
                    let mut mats = vec![];
                    for (s, m) in factors {
                        sites.push(*s);
                        mats.push(SparseCols::from_mat(m));
                    }
                    if coeff.norm() > 1e-14 {
                        real &= coeff.im.abs() < 1e-14
                            && factors
                                .iter()
                                .all(|(_, m)| m.data.iter().all(|v| v.im.abs() < 1e-14));
                        if real {
                            coeff.im = 0.0;
                        }
                        products.push(Product { coeff, sites, mats });
                    }
                }
            }
        }
        real &= single
            .iter()
            .all(|m| m.data.iter().all(|v| v.im.abs() < 1e-14));
        LocalOperator {
            hilbert,
            single: single.iter().map(SparseCols::from_mat).collect(),
            products,
            real,
        }
    }
}

impl Operator for LocalOperator {
    fn hilbert(&self) -> Hilbert {
        self.hilbert
    }

    fn is_real(&self) -> bool {
        self.real
    }

    fn max_conn(&self) -> usize {
        let s: usize = self.single.iter().map(|m| m.max_col()).sum();
        let p: usize = self
            .products
            .iter()
            .map(|p| p.mats.iter().map(|m| m.max_col()).product::<usize>())
            .sum();
        s + p
    }

    fn connected(&self, s: &[u8], out: &mut Connections) {
        out.clear(s.len());
        let mut diag = Complex64::new(0.0, 0.0);
        for (x, m) in self.single.iter().enumerate() {
            let c = s[x];
            for k in m.col(c) {
                let r = m.rows[k];
                if r == c {
                    diag += m.vals[k];
                } else {
                    out.push_with(s, m.vals[k], |t| t[x] = r);
                }
            }
        }
        // Products: walk the Cartesian product of the factors' columns with an odometer.
        let mut pos = [0usize; 16];
        for p in &self.products {
            let nf = p.mats.len();
            assert!(nf <= 16, "products of more than 16 sites are not supported");
            let ranges: [std::ops::Range<usize>; 16] = std::array::from_fn(|k| {
                if k < nf {
                    p.mats[k].col(s[p.sites[k]])
                } else {
                    0..0
                }
            });
            if ranges[..nf].iter().any(|r| r.is_empty()) {
                continue;
            }
            for k in 0..nf {
                pos[k] = ranges[k].start;
            }
            loop {
                let mut v = p.coeff;
                let mut is_diag = true;
                for k in 0..nf {
                    let m = &p.mats[k];
                    v *= m.vals[pos[k]];
                    is_diag &= m.rows[pos[k]] == s[p.sites[k]];
                }
                if is_diag {
                    diag += v;
                } else {
                    out.push_with(s, v, |t| {
                        for k in 0..nf {
                            t[p.sites[k]] = p.mats[k].rows[pos[k]];
                        }
                    });
                }
                // Advance the odometer.
                let mut k = 0;
                loop {
                    pos[k] += 1;
                    if pos[k] < ranges[k].end {
                        break;
                    }
                    pos[k] = ranges[k].start;
                    k += 1;
                    if k == nf {
                        break;
                    }
                }
                if k == nf {
                    break;
                }
            }
        }
        out.diag = diag;
        out.merge_duplicates();
    }
}
