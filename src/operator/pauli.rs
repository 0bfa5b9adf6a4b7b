//! Spin-1/2 operators as sums of Pauli strings acting on packed `u64` configurations.
//!
//! A Pauli string is stored as a flip mask `x`, a sign mask `z` and a coefficient `c` such
//! that the string equals `c X^x Z^z` (a `Y` on a site contributes its bit to both masks and a
//! factor `i` to `c`, since `Y = i X Z`). Acting on a basis state,
//! `c X^x Z^z |s> = c (-1)^popcount(s & z) |s ^ x>`. Strings are grouped by flip mask, so the
//! matrix element `<s ^ x|H|s> = sum_t c_t (-1)^popcount(s & z_t)` of one group costs a few bit
//! operations and no allocation: this is the inner loop of both Lanczos and the local energy.

use num_complex::Complex64;
use std::collections::BTreeMap;

use crate::scalar::Scalar;

/// Sum of Pauli strings on at most 64 spins, grouped by flip mask.
#[derive(Clone, Debug)]
pub struct PauliSum {
    n_sites: usize,
    /// Diagonal strings (`x = 0`): sign masks and coefficients.
    diag_z: Vec<u64>,
    diag_re: Vec<f64>,
    diag_im: Vec<f64>,
    /// Off-diagonal groups: flip mask and the range of their strings in `z`, `re`, `im`.
    groups: Vec<(u64, u32, u32)>,
    z: Vec<u64>,
    re: Vec<f64>,
    im: Vec<f64>,
    real: bool,
    /// How to evaluate each off-diagonal group's element, and the diagonal in chunks.
    group_eval: Vec<Eval>,
    diag_eval: Vec<Eval>,
    table_re: Vec<f64>,
    table_im: Vec<f64>,
}

/// Evaluation of `sum_t c_t (-1)^popcount(s & z_t)` over a run of strings: the sum depends
/// only on the spins in the union of the `z_t`, so when those fit in a window of at most
/// [`MAX_WINDOW`] consecutive bits it is one table lookup at `(s >> shift) & mask`; otherwise
/// the strings `a..b` are summed one popcount at a time.
#[derive(Clone, Copy, Debug)]
enum Eval {
    Window { shift: u32, mask: u64, table: u32 },
    Strings { a: u32, b: u32 },
}

/// Widest window of spins tabulated (a table of `2^MAX_WINDOW` entries).
const MAX_WINDOW: u32 = 10;

/// The smallest window `(shift, width)` of consecutive bits holding every set bit of `m`, if
/// it is at most [`MAX_WINDOW`] wide (the empty mask fits a window of width 0).
fn window(m: u64) -> Option<(u32, u32)> {
    if m == 0 {
        return Some((0, 0));
    }
    let shift = m.trailing_zeros();
    let width = 64 - m.leading_zeros() - shift;
    (width <= MAX_WINDOW).then_some((shift, width))
}

/// `-1` if `popcount(v)` is odd, else `+1`.
#[inline(always)]
fn parity_sign(v: u64) -> f64 {
    1.0 - 2.0 * (v.count_ones() & 1) as f64
}

impl PauliSum {
    /// Builds the sum from `(x, z) -> c` (strings `c X^x Z^z`); zero coefficients are dropped.
    pub fn from_strings(n_sites: usize, strings: &BTreeMap<(u64, u64), Complex64>) -> Self {
        assert!(n_sites <= 64, "Pauli sums hold at most 64 spins");
        let mut out = PauliSum {
            n_sites,
            diag_z: vec![],
            diag_re: vec![],
            diag_im: vec![],
            groups: vec![],
            z: vec![],
            re: vec![],
            im: vec![],
            real: true,
            group_eval: vec![],
            diag_eval: vec![],
            table_re: vec![],
            table_im: vec![],
        };
        let tol = 1e-14;
        // The BTreeMap orders by (x, z), so each flip mask's strings are contiguous.
        for (&(x, z), &c) in strings {
            if c.norm() <= tol {
                continue;
            }
            if c.im.abs() > tol {
                out.real = false;
            }
            if x == 0 {
                out.diag_z.push(z);
                out.diag_re.push(c.re);
                out.diag_im.push(c.im);
            } else {
                if out.groups.last().map(|g| g.0) != Some(x) {
                    let start = out.z.len() as u32;
                    out.groups.push((x, start, start));
                }
                out.z.push(z);
                out.re.push(c.re);
                out.im.push(c.im);
                out.groups.last_mut().unwrap().2 += 1;
            }
        }
        out.build_tables();
        out
    }

    /// Builds the evaluation plan: one [`Eval`] per off-diagonal group; the diagonal strings
    /// (sorted by their lowest spin) are cut greedily into runs that fit one window.
    fn build_tables(&mut self) {
        for gi in 0..self.groups.len() {
            let (_, a, b) = self.groups[gi];
            let e = self.plan(a, b, false);
            self.group_eval.push(e);
        }
        // Reorder the diagonal strings by lowest set bit so that runs are local.
        let mut order: Vec<usize> = (0..self.diag_z.len()).collect();
        order.sort_by_key(|&k| {
            (
                self.diag_z[k].trailing_zeros(),
                64 - self.diag_z[k].leading_zeros(),
            )
        });
        self.diag_z = order.iter().map(|&k| self.diag_z[k]).collect();
        self.diag_re = order.iter().map(|&k| self.diag_re[k]).collect();
        self.diag_im = order.iter().map(|&k| self.diag_im[k]).collect();
        let mut a = 0;
        while a < self.diag_z.len() {
            let mut b = a + 1;
            while b < self.diag_z.len()
                && window(self.diag_z[a..=b].iter().fold(0, |m, z| m | z)).is_some()
            {
                b += 1;
            }
            let e = self.plan(a as u32, b as u32, true);
            self.diag_eval.push(e);
            a = b;
        }
    }

    /// Tabulates the strings `a..b` (of the diagonal or off-diagonal list) if their sign
    /// masks fit one window.
    fn plan(&mut self, a: u32, b: u32, diag: bool) -> Eval {
        let zs = if diag { &self.diag_z } else { &self.z };
        let union = zs[a as usize..b as usize].iter().fold(0u64, |m, z| m | z);
        let Some((shift, width)) = window(union) else {
            return Eval::Strings { a, b };
        };
        let table = self.table_re.len() as u32;
        for pattern in 0..1u64 << width {
            let s = pattern << shift;
            let (mut re, mut im) = (0.0, 0.0);
            for k in a as usize..b as usize {
                let (z, cr, ci) = if diag {
                    (self.diag_z[k], self.diag_re[k], self.diag_im[k])
                } else {
                    (self.z[k], self.re[k], self.im[k])
                };
                re += cr * parity_sign(s & z);
                im += ci * parity_sign(s & z);
            }
            self.table_re.push(re);
            self.table_im.push(im);
        }
        Eval::Window {
            shift,
            mask: (1u64 << width) - 1,
            table,
        }
    }

    /// Evaluates one plan entry at state `s`: `(re, im)` (im only when `S` is complex).
    #[inline(always)]
    fn eval<S: Scalar>(&self, e: Eval, s: u64, diag: bool) -> (f64, f64) {
        match e {
            Eval::Window { shift, mask, table } => {
                let idx = table as usize + ((s >> shift) & mask) as usize;
                (
                    self.table_re[idx],
                    if S::IS_COMPLEX {
                        self.table_im[idx]
                    } else {
                        0.0
                    },
                )
            }
            Eval::Strings { a, b } => {
                let (zs, res, ims) = if diag {
                    (&self.diag_z, &self.diag_re, &self.diag_im)
                } else {
                    (&self.z, &self.re, &self.im)
                };
                let (mut re, mut im) = (0.0, 0.0);
                for k in a as usize..b as usize {
                    re += res[k] * parity_sign(s & zs[k]);
                    if S::IS_COMPLEX {
                        im += ims[k] * parity_sign(s & zs[k]);
                    }
                }
                (re, im)
            }
        }
    }

    pub fn n_sites(&self) -> usize {
        self.n_sites
    }

    /// True when every matrix element in the `Z` basis is real.
    pub fn is_real(&self) -> bool {
        self.real
    }

    /// Number of distinct flip masks: the most off-diagonal elements one row can have.
    pub fn n_groups(&self) -> usize {
        self.groups.len()
    }

    /// All strings as `((x, z), c)`.
    pub fn strings(&self) -> impl Iterator<Item = ((u64, u64), Complex64)> + '_ {
        let d = (0..self.diag_z.len()).map(|k| {
            (
                (0, self.diag_z[k]),
                Complex64::new(self.diag_re[k], self.diag_im[k]),
            )
        });
        let o = self.groups.iter().flat_map(move |&(x, a, b)| {
            (a as usize..b as usize)
                .map(move |k| ((x, self.z[k]), Complex64::new(self.re[k], self.im[k])))
        });
        d.chain(o)
    }

    /// `<s|H|s>`.
    #[inline]
    pub fn diag<S: Scalar>(&self, s: u64) -> S {
        let (mut re, mut im) = (0.0, 0.0);
        for &e in &self.diag_eval {
            let (r, i) = self.eval::<S>(e, s, true);
            re += r;
            im += i;
        }
        if S::IS_COMPLEX {
            S::from_c64(Complex64::new(re, im))
        } else {
            S::from_re(re)
        }
    }

    /// Calls `f(s', <s'|H|s>)` for every `s' != s` with a non-zero element.
    #[inline]
    pub fn for_each_offdiag<S: Scalar>(&self, s: u64, mut f: impl FnMut(u64, S)) {
        for (&(x, _, _), &e) in self.groups.iter().zip(&self.group_eval) {
            let (re, im) = self.eval::<S>(e, s, false);
            if re != 0.0 || im != 0.0 {
                f(s ^ x, S::from_c64(Complex64::new(re, im)));
            }
        }
    }

    /// Writes every `(s', <s'|H|s>)` with a possibly non-zero element into `states`/`values`
    /// and returns how many were written. Branch-free: each group's element is computed and
    /// the pair is kept by advancing the count only when it is non-zero, so the unpredictable
    /// "is this bond flippable" test costs no branch misprediction (the buffers must hold
    /// [`PauliSum::n_groups`] entries).
    #[inline]
    pub fn offdiag_into<S: Scalar>(&self, s: u64, states: &mut [u64], values: &mut [S]) -> usize {
        let mut count = 0;
        for (&(x, _, _), &e) in self.groups.iter().zip(&self.group_eval) {
            let (re, im) = self.eval::<S>(e, s, false);
            states[count] = s ^ x;
            values[count] = if S::IS_COMPLEX {
                S::from_c64(Complex64::new(re, im))
            } else {
                S::from_re(re)
            };
            count += (re != 0.0 || im != 0.0) as usize;
        }
        count
    }

    /// Whether every non-zero element conserves the number of down spins (total `Sz`). Each
    /// group's element depends only on the spins in its support, so the check enumerates those.
    pub fn conserves_sz(&self) -> bool {
        self.groups.iter().all(|&(x, a, b)| {
            let support = self.z[a as usize..b as usize]
                .iter()
                .fold(x, |acc, &z| acc | z);
            if support.count_ones() > 20 {
                return false;
            }
            let bits: Vec<u32> = (0..64).filter(|i| support >> i & 1 == 1).collect();
            (0..1u64 << bits.len()).all(|pattern| {
                let s = bits
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (k, &i)| acc | ((pattern >> k & 1) << i));
                let mut c = Complex64::new(0.0, 0.0);
                for k in a as usize..b as usize {
                    c += Complex64::new(self.re[k], self.im[k]) * parity_sign(s & self.z[k]);
                }
                c.norm() < 1e-14 || (s ^ x).count_ones() == s.count_ones()
            })
        })
    }

    /// Whether the sum commutes with the global spin flip `prod_i X_i`, which maps
    /// `X^x Z^z -> (-1)^popcount(z) X^x Z^z`.
    pub fn flip_symmetric(&self) -> bool {
        self.strings().all(|((_, z), _)| z.count_ones() % 2 == 0)
    }

    /// The same sum with its sites relabelled `i -> perm[i]`.
    pub fn permuted(&self, perm: &[usize]) -> PauliSum {
        let map = |m: u64| {
            (0..self.n_sites)
                .filter(|&i| m >> i & 1 == 1)
                .fold(0u64, |acc, i| acc | 1 << perm[i])
        };
        let mut strings = BTreeMap::new();
        for ((x, z), c) in self.strings() {
            *strings
                .entry((map(x), map(z)))
                .or_insert(Complex64::new(0.0, 0.0)) += c;
        }
        PauliSum::from_strings(self.n_sites, &strings)
    }

    /// Whether two sums have the same strings and coefficients (to `tol`).
    pub fn approx_eq(&self, other: &PauliSum, tol: f64) -> bool {
        let a: BTreeMap<_, _> = self.strings().collect();
        let b: BTreeMap<_, _> = other.strings().collect();
        a.len() == b.len()
            && a.iter()
                .all(|(k, v)| b.get(k).is_some_and(|w| (v - w).norm() <= tol))
    }
}
