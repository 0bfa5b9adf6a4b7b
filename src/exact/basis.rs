//! Bases of spin-1/2 symmetry sectors, with fast ranking of states.
//!
//! - [`FullBasis`]: all `2^N` states; the index of a state is its packed bits.
//! - [`SzBasis`]: fixed number of down spins (total `Sz = N/2 - n_down`). States are ranked
//!   with two lookup tables (Lin's method): writing `s = hi * 2^b + lo`,
//!   `rank(s) = offset[hi] + rank_lo[lo]`, so ranking costs two loads and no hashing.
//! - [`SymmetricBasis`]: translation momentum `k` and/or spin-flip parity `p`, optionally within
//!   a fixed `Sz`. Each orbit under the group `G` (translations times `{1, F}`) is represented by
//!   its smallest member `r`; the basis vector is `|r_k> = P|r> / ||P|r>||` with the projector
//!   `P = |G|^-1 sum_g chi(g)^* U_g`, `chi(T_t F^f) = exp(-i k.t) p^f`, and
//!   `||P|r>||^2 = N_r / |G|`, `N_r = sum_{g in Stab(r)} chi(g)^*` (orbits with `N_r = 0` do not
//!   occur in the sector). If `s = g^-1 r'` then `P|s> = chi(g)^* P|r'>`, which gives the
//!   matrix element `<r_k|H|r'_k> = sum_{s' ~ r'} <r|H|s'>... ` used by the matvec:
//!   `y[r] += conj(H[s', r]) chi(g*) sqrt(N_r' / N_r) x[r']` with `g* s' = r'`.

use num_complex::Complex64;
use rayon::prelude::*;

use crate::lattice::{Boundary, Lattice};
use crate::scalar::Scalar;

/// A basis of a spin-1/2 sector, seen by the matrix-free matvec.
pub trait SpinBasis: Sync {
    /// Whether [`SpinBasis::find`] can return characters other than 1 and norms other than 1.
    const SYMMETRIC: bool;
    fn dim(&self) -> usize;
    /// The (representative) state of basis vector `i`.
    fn state(&self, i: usize) -> u64;
    /// The basis vector holding `s` and the character `chi(g*)` of the group element that
    /// maps `s` to its representative, or `None` if `s` has no component in this sector.
    fn find(&self, s: u64) -> Option<(usize, Complex64)>;
    /// `sqrt(N_r)` of basis vector `i` (1 without symmetries).
    fn norm(&self, i: usize) -> f64;
    /// Bytes held by the basis.
    fn bytes(&self) -> u64;
}

/// All `2^N` states.
pub struct FullBasis {
    n: usize,
}

impl FullBasis {
    pub fn new(n: usize) -> Self {
        assert!(n <= 40, "the full basis is limited to 40 spins");
        FullBasis { n }
    }
}

impl SpinBasis for FullBasis {
    const SYMMETRIC: bool = false;
    fn dim(&self) -> usize {
        1 << self.n
    }
    #[inline]
    fn state(&self, i: usize) -> u64 {
        i as u64
    }
    #[inline]
    fn find(&self, s: u64) -> Option<(usize, Complex64)> {
        Some((s as usize, Complex64::new(1.0, 0.0)))
    }
    fn norm(&self, _: usize) -> f64 {
        1.0
    }
    fn bytes(&self) -> u64 {
        0
    }
}

/// Binomial coefficient as u64 (exact for the sizes used here).
pub fn binomial(n: usize, k: usize) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    (0..k).fold(1u64, |acc, i| acc * (n - i) as u64 / (i + 1) as u64)
}

/// Next larger integer with the same number of set bits (Gosper's hack).
#[inline]
pub fn next_same_popcount(v: u64) -> u64 {
    let t = v | (v.wrapping_sub(1));
    (t.wrapping_add(1)) | (((!t & (!t).wrapping_neg()) - 1) >> (v.trailing_zeros() + 1))
}

/// Calls `f(lo)` for every `lo < 2^bits` with `ones` set bits, in increasing order.
fn for_each_with_popcount(bits: usize, ones: usize, mut f: impl FnMut(u64)) {
    debug_assert!(bits < 63);
    if ones > bits {
        return;
    }
    if ones == 0 {
        f(0);
        return;
    }
    let mut v = (1u64 << ones) - 1;
    while v < 1u64 << bits {
        f(v);
        v = next_same_popcount(v);
    }
}

/// States with a fixed number of down spins, ranked by Lin tables.
pub struct SzBasis {
    n_down: usize,
    lo_bits: usize,
    states: Vec<u64>,
    offset: Vec<u64>,
    rank_lo: Vec<u32>,
}

impl SzBasis {
    /// Number of states, without building the basis.
    pub fn dimension(n: usize, n_down: usize) -> u64 {
        binomial(n, n_down)
    }

    pub fn new(n: usize, n_down: usize) -> Self {
        assert!(n <= 64 && n_down <= n);
        let lo_bits = n / 2;
        let hi_bits = n - lo_bits;
        let mut rank_lo = vec![0u32; 1 << lo_bits];
        let mut count = vec![0u32; lo_bits + 1];
        for (lo, r) in rank_lo.iter_mut().enumerate() {
            let c = (lo as u64).count_ones() as usize;
            *r = count[c];
            count[c] += 1;
        }
        let mut offset = vec![0u64; 1 << hi_bits];
        let mut acc = 0u64;
        for (hi, o) in offset.iter_mut().enumerate() {
            *o = acc;
            let c = (hi as u64).count_ones() as usize;
            if c <= n_down && n_down - c <= lo_bits {
                acc += binomial(lo_bits, n_down - c);
            }
        }
        let states: Vec<u64> = (0..1u64 << hi_bits)
            .into_par_iter()
            .flat_map_iter(|hi| {
                let c = hi.count_ones() as usize;
                let mut v = Vec::new();
                if c <= n_down {
                    for_each_with_popcount(lo_bits, n_down - c, |lo| v.push(hi << lo_bits | lo));
                }
                v
            })
            .collect();
        debug_assert_eq!(states.len() as u64, acc);
        SzBasis {
            n_down,
            lo_bits,
            states,
            offset,
            rank_lo,
        }
    }

    pub fn n_down(&self) -> usize {
        self.n_down
    }
}

impl SpinBasis for SzBasis {
    const SYMMETRIC: bool = false;
    fn dim(&self) -> usize {
        self.states.len()
    }
    #[inline]
    fn state(&self, i: usize) -> u64 {
        self.states[i]
    }
    #[inline]
    fn find(&self, s: u64) -> Option<(usize, Complex64)> {
        if s.count_ones() as usize != self.n_down {
            return None;
        }
        let lo = s & ((1u64 << self.lo_bits) - 1);
        let hi = s >> self.lo_bits;
        Some((
            (self.offset[hi as usize] + self.rank_lo[lo as usize] as u64) as usize,
            Complex64::new(1.0, 0.0),
        ))
    }
    fn norm(&self, _: usize) -> f64 {
        1.0
    }
    fn bytes(&self) -> u64 {
        (self.states.len() * 8 + self.offset.len() * 8 + self.rank_lo.len() * 4) as u64
    }
}

/// A lattice translation acting on packed spin states by bit operations: every row of `Lx`
/// bits is rotated by `tx`, then the rows are rotated by `ty`.
#[derive(Clone, Copy, Debug)]
pub struct BitTranslation {
    tx: u32,
    lx: u32,
    row_shift: u32,
    n: u32,
    keep: u64,
    wrap: u64,
    full: u64,
}

impl BitTranslation {
    pub fn new(lattice: &Lattice, tx: usize, ty: usize) -> Self {
        let [lx, ly] = lattice.extent();
        let n = lx * ly;
        let full = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let mut keep = 0u64;
        let mut wrap = 0u64;
        for y in 0..ly {
            for x in 0..lx {
                let bit = 1u64 << (x + lx * y);
                if x >= tx {
                    keep |= bit;
                } else {
                    wrap |= bit;
                }
            }
        }
        BitTranslation {
            tx: tx as u32,
            lx: lx as u32,
            row_shift: (ty * lx) as u32,
            n: n as u32,
            keep,
            wrap,
            full,
        }
    }

    /// The translated state: bit `(x, y)` moves to `(x + tx, y + ty)`.
    #[inline(always)]
    pub fn apply(&self, s: u64) -> u64 {
        let r = if self.tx == 0 {
            s
        } else {
            ((s << self.tx) & self.keep) | ((s >> (self.lx - self.tx)) & self.wrap)
        };
        if self.row_shift == 0 {
            r
        } else {
            ((r << self.row_shift) | (r >> (self.n - self.row_shift))) & self.full
        }
    }
}

/// Momentum and/or spin-flip parity sector, optionally at fixed `Sz`.
pub struct SymmetricBasis {
    translations: Vec<BitTranslation>,
    /// Characters `chi(T_t)` for each translation, then (if flip) `chi(T_t F)`.
    chars: Vec<Complex64>,
    flip_mask: Option<u64>,
    /// Fixed number of down spins, if any (states with another count are not in the sector).
    n_down: Option<usize>,
    reps: Vec<u64>,
    norms: Vec<f64>,
    /// Start of each bucket of representatives sharing their top `bucket_bits` bits.
    bucket_start: Vec<u32>,
    bucket_shift: u32,
}

impl SymmetricBasis {
    /// Builds the sector: `momentum` as integers `(nx, ny)` with `k = 2 pi n / L` (ignored,
    /// i.e. no translation symmetry, when `None`), `parity` = +1/-1 for the spin flip, `n_down`
    /// to fix `Sz`.
    pub fn new(
        lattice: &Lattice,
        momentum: Option<[usize; 2]>,
        parity: Option<i8>,
        n_down: Option<usize>,
    ) -> Self {
        let n = lattice.n_sites();
        assert!(n <= 63, "symmetric bases are limited to 63 spins");
        let [lx, ly] = lattice.extent();
        let mut translations = Vec::new();
        let mut chars = Vec::new();
        match momentum {
            Some([nx, ny]) => {
                assert_eq!(lattice.boundary(), Boundary::Periodic);
                for ty in 0..ly {
                    for tx in 0..lx {
                        translations.push(BitTranslation::new(lattice, tx, ty));
                        let phase = 2.0
                            * std::f64::consts::PI
                            * ((nx * tx) as f64 / lx as f64 + (ny * ty) as f64 / ly as f64);
                        chars.push(Complex64::from_polar(1.0, -phase));
                    }
                }
            }
            None => {
                translations.push(BitTranslation::new(lattice, 0, 0));
                chars.push(Complex64::new(1.0, 0.0));
            }
        }
        let full = (1u64 << n) - 1;
        let flip_mask = parity.map(|_| full);
        if let Some(p) = parity {
            let m = chars.len();
            for t in 0..m {
                let c = chars[t] * p as f64;
                chars.push(c);
            }
        }
        let n_t = translations.len();
        // Is `s` the smallest member of its orbit? If so return N_s (0 if incompatible).
        let check = |s: u64| -> Option<f64> {
            let mut stab = Complex64::new(0.0, 0.0);
            for (e, c) in chars.iter().enumerate() {
                let t = translations[e % n_t].apply(s) ^ if e >= n_t { full } else { 0 };
                if t < s {
                    return None;
                }
                if t == s {
                    stab += c.conj();
                }
            }
            (stab.re > 1e-8).then_some(stab.re)
        };
        let pairs: Vec<(u64, f64)> = match n_down {
            Some(nd) => {
                let lo_bits = n / 2;
                let hi_bits = n - lo_bits;
                (0..1u64 << hi_bits)
                    .into_par_iter()
                    .flat_map_iter(|hi| {
                        let c = hi.count_ones() as usize;
                        let mut v = Vec::new();
                        if c <= nd {
                            for_each_with_popcount(lo_bits, nd - c, |lo| {
                                let s = hi << lo_bits | lo;
                                if let Some(w) = check(s) {
                                    v.push((s, w));
                                }
                            });
                        }
                        v
                    })
                    .collect()
            }
            None => {
                let chunk = 1u64 << 16.min(n);
                (0..(1u64 << n).div_ceil(chunk))
                    .into_par_iter()
                    .flat_map_iter(|c| {
                        let mut v = Vec::new();
                        for s in c * chunk..((c + 1) * chunk).min(1u64 << n) {
                            if let Some(w) = check(s) {
                                v.push((s, w));
                            }
                        }
                        v
                    })
                    .collect()
            }
        };
        let reps: Vec<u64> = pairs.iter().map(|p| p.0).collect();
        let norms: Vec<f64> = pairs.iter().map(|p| p.1.sqrt()).collect();
        let bucket_bits = (n as u32).min(22);
        let bucket_shift = n as u32 - bucket_bits;
        let mut bucket_start = vec![0u32; (1usize << bucket_bits) + 1];
        for &r in &reps {
            bucket_start[(r >> bucket_shift) as usize + 1] += 1;
        }
        for b in 1..bucket_start.len() {
            bucket_start[b] += bucket_start[b - 1];
        }
        SymmetricBasis {
            translations,
            chars,
            flip_mask,
            n_down,
            reps,
            norms,
            bucket_start,
            bucket_shift,
        }
    }

    /// Order of the symmetry group.
    pub fn group_order(&self) -> usize {
        self.chars.len()
    }
}

impl SpinBasis for SymmetricBasis {
    const SYMMETRIC: bool = true;
    fn dim(&self) -> usize {
        self.reps.len()
    }
    #[inline]
    fn state(&self, i: usize) -> u64 {
        self.reps[i]
    }
    #[inline]
    fn find(&self, s: u64) -> Option<(usize, Complex64)> {
        if self.n_down.is_some_and(|nd| s.count_ones() as usize != nd) {
            return None;
        }
        let n_t = self.translations.len();
        let mut best = s;
        let mut best_e = 0usize;
        // Each translated state and its flipped partner are compared in the same pass.
        let mask = self.flip_mask.unwrap_or(0);
        let flip = self.flip_mask.is_some();
        for (e, tr) in self.translations.iter().enumerate() {
            let t = tr.apply(s);
            if t < best {
                best = t;
                best_e = e;
            }
            let f = t ^ mask;
            if flip && f < best {
                best = f;
                best_e = e + n_t;
            }
        }
        let b = (best >> self.bucket_shift) as usize;
        let lo = self.bucket_start[b] as usize;
        let hi = self.bucket_start[b + 1] as usize;
        self.reps[lo..hi]
            .binary_search(&best)
            .ok()
            .map(|k| (lo + k, self.chars[best_e]))
    }
    #[inline]
    fn norm(&self, i: usize) -> f64 {
        self.norms[i]
    }
    fn bytes(&self) -> u64 {
        (self.reps.len() * 16 + self.bucket_start.len() * 4) as u64
    }
}

/// Whether every character of the sector is real (`k_mu` in `{0, pi}`), so that a real
/// Hamiltonian stays real in it.
pub fn real_characters(lattice: &Lattice, momentum: Option<[usize; 2]>) -> bool {
    match momentum {
        None => true,
        Some([nx, ny]) => {
            let [lx, ly] = lattice.extent();
            (2 * nx) % lx == 0 && (2 * ny) % ly == 0
        }
    }
}

/// `y = H x` in a spin basis, one row per output element (no write conflicts), parallel over
/// rows. Uses `H[r, s'] = conj(H[s', r])` (Hermiticity) to gather from the connections of row
/// `r`'s own state.
pub fn matvec<S: Scalar, B: SpinBasis>(
    h: &crate::operator::PauliSum,
    basis: &B,
    x: &[S],
    y: &mut [S],
) {
    const CHUNK: usize = 1 << 12;
    let ng = h.n_groups();
    y.par_chunks_mut(CHUNK).enumerate().for_each_init(
        || (vec![0u64; ng], vec![S::zero(); ng]),
        |(states, values), (c, ys)| {
            for (k, yi) in ys.iter_mut().enumerate() {
                let i = c * CHUNK + k;
                let s = basis.state(i);
                let mut acc = h.diag::<S>(s) * x[i];
                let m = h.offdiag_into(s, states, values);
                if B::SYMMETRIC {
                    let inv = 1.0 / basis.norm(i);
                    for q in 0..m {
                        if let Some((j, chi)) = basis.find(states[q]) {
                            let f = S::from_c64(chi.scale(basis.norm(j) * inv));
                            acc += values[q].conj() * f * x[j];
                        }
                    }
                } else {
                    for q in 0..m {
                        if let Some((j, _)) = basis.find(states[q]) {
                            acc += values[q].conj() * x[j];
                        }
                    }
                }
                *yi = acc;
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_translations_match_site_permutations() {
        for lat in [
            Lattice::chain(7, Boundary::Periodic),
            Lattice::square(4, 3, Boundary::Periodic),
        ] {
            let perms = lat.translations();
            let [lx, _] = lat.extent();
            for (t, perm) in perms.iter().enumerate() {
                let bt = BitTranslation::new(&lat, t % lx, t / lx);
                for s in [0b1u64, 0b1011, 0b110010110101, 0b100000000001] {
                    let s = s & ((1 << lat.n_sites()) - 1);
                    let want = (0..lat.n_sites())
                        .filter(|i| s >> i & 1 == 1)
                        .fold(0u64, |a, i| a | 1 << perm[i]);
                    assert_eq!(bt.apply(s), want);
                }
            }
        }
    }

    #[test]
    fn sz_ranking_is_the_position() {
        let b = SzBasis::new(10, 4);
        assert_eq!(b.dim() as u64, binomial(10, 4));
        for i in 0..b.dim() {
            assert_eq!(b.find(b.state(i)).unwrap().0, i);
            assert_eq!(b.state(i).count_ones(), 4);
        }
        assert!(b.states.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn symmetric_sectors_partition_the_space() {
        let lat = Lattice::chain(8, Boundary::Periodic);
        let total: usize = (0..8)
            .flat_map(|k| [1i8, -1].map(|p| (k, p)))
            .map(|(k, p)| SymmetricBasis::new(&lat, Some([k, 0]), Some(p), None).dim())
            .sum();
        assert_eq!(total, 256);
        let total: usize = (0..8)
            .map(|k| SymmetricBasis::new(&lat, Some([k, 0]), None, Some(4)).dim())
            .sum();
        assert_eq!(total, 70);
    }
}
