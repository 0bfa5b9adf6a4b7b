//! Hamiltonians and other operators on lattice configurations.
//!
//! Every operator answers one question, the primitive under both exact diagonalization and
//! the variational local energy: *for configuration `s`, which `s'` have `H[s', s] != 0`, with
//! which value, and what is the diagonal `H[s, s]`* ([`Operator::connected`]). Spin-1/2
//! operators are stored as grouped Pauli strings ([`PauliSum`]), operators on larger local
//! spaces as sums of products of local matrices ([`LocalOperator`]); both are built from the
//! same symbolic [`Term`] list, which is what model definitions and Hamiltonian files produce.

pub mod local;
pub mod local_ops;
pub mod models;
pub mod pauli;
pub mod site_basis;

use num_complex::Complex64;
use std::collections::BTreeMap;

pub use local::LocalOperator;
pub use local_ops::LocalOp;
pub use models::{Model, OscillatorBasis, Support, TermSpec};
pub use pauli::PauliSum;

use crate::hilbert::{pack_spins, unpack_spins, Hilbert, LocalSpace};
use local_ops::{product_on_site, Mat};

/// Reusable buffers for the connected elements of one configuration; reused across calls so
/// the hot path allocates nothing once the buffers have grown.
#[derive(Clone, Debug, Default)]
pub struct Connections {
    n_sites: usize,
    /// `H[s, s]`.
    pub diag: Complex64,
    /// Connected configurations, `n_sites` entries each, concatenated.
    pub configs: Vec<u8>,
    /// `H[s', s]` for each connected `s'`, in the same order.
    pub values: Vec<Complex64>,
    /// Scratch space of [`Connections::merge_duplicates`].
    order: Vec<(u32, Complex64)>,
    merged_configs: Vec<u8>,
}

impl Connections {
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the buffers (keeping their capacity).
    pub fn clear(&mut self, n_sites: usize) {
        self.n_sites = n_sites;
        self.diag = Complex64::new(0.0, 0.0);
        self.configs.clear();
        self.values.clear();
    }

    /// Number of off-diagonal connected configurations.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The `k`-th connected configuration.
    pub fn config(&self, k: usize) -> &[u8] {
        &self.configs[k * self.n_sites..(k + 1) * self.n_sites]
    }

    /// Sums the elements of repeated configurations and drops those that cancel
    /// (`|H[s', s]| <= 1e-14`), keeping the order of first occurrence. Operators built from
    /// independent products list `s'` once per product reaching it (a Heisenberg bond's
    /// `X X` and `Y Y` both reach the flipped pair, and cancel on a parallel pair); merging
    /// halves the configurations a local energy must evaluate.
    pub fn merge_duplicates(&mut self) {
        let m = self.values.len();
        if m < 2 {
            return;
        }
        let n = self.n_sites;
        let cfg = &self.configs;
        let mut idx: Vec<u32> = (0..m as u32).collect();
        idx.sort_unstable_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            cfg[a * n..(a + 1) * n]
                .cmp(&cfg[b * n..(b + 1) * n])
                .then(a.cmp(&b))
        });
        self.order.clear();
        let mut prev: Option<usize> = None;
        for &k in &idx {
            let k = k as usize;
            let same = prev.is_some_and(|p| cfg[p * n..(p + 1) * n] == cfg[k * n..(k + 1) * n]);
            if same {
                self.order.last_mut().expect("a previous entry").1 += self.values[k];
            } else {
                self.order.push((k as u32, self.values[k]));
            }
            prev = Some(k);
        }
        self.order.retain(|e| e.1.norm() > 1e-14);
        self.order.sort_unstable_by_key(|e| e.0);
        self.merged_configs.clear();
        self.values.clear();
        for &(k, v) in &self.order {
            let k = k as usize;
            self.merged_configs
                .extend_from_slice(&self.configs[k * n..(k + 1) * n]);
            self.values.push(v);
        }
        std::mem::swap(&mut self.configs, &mut self.merged_configs);
    }

    /// Appends a copy of `s` modified by `edit`, with element `v`.
    #[inline]
    pub fn push_with(&mut self, s: &[u8], v: Complex64, edit: impl FnOnce(&mut [u8])) {
        let start = self.configs.len();
        self.configs.extend_from_slice(s);
        edit(&mut self.configs[start..]);
        self.values.push(v);
    }
}

/// A Hermitian operator on a lattice Hilbert space, seen row by row.
pub trait Operator: Send + Sync {
    /// The space it acts on.
    fn hilbert(&self) -> Hilbert;
    /// True when all matrix elements in the computational basis are real.
    fn is_real(&self) -> bool;
    /// An upper bound on the number of off-diagonal elements of one column.
    fn max_conn(&self) -> usize;
    /// Fills `out` with `H[s, s]` and every `(s', H[s', s])`, `s' != s`, `H[s', s] != 0`
    /// (an `s'` reached by several terms may appear more than once; values then add).
    fn connected(&self, s: &[u8], out: &mut Connections);
}

impl Operator for PauliSum {
    fn hilbert(&self) -> Hilbert {
        Hilbert::new(self.n_sites(), LocalSpace::Spin)
    }

    fn is_real(&self) -> bool {
        PauliSum::is_real(self)
    }

    fn max_conn(&self) -> usize {
        self.n_groups()
    }

    fn connected(&self, s: &[u8], out: &mut Connections) {
        out.clear(s.len());
        let bits = pack_spins(s);
        out.diag = self.diag::<Complex64>(bits);
        let n = s.len();
        self.for_each_offdiag::<Complex64>(bits, |t, v| {
            let start = out.configs.len();
            out.configs.resize(start + n, 0);
            unpack_spins(t, &mut out.configs[start..]);
            out.values.push(v);
        });
    }
}

/// One symbolic term: `coeff * prod_k op_k(site_k)`, applied right to left as written.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    pub coeff: Complex64,
    pub factors: Vec<(usize, LocalOp)>,
}

impl Term {
    pub fn new(coeff: f64, factors: &[(usize, LocalOp)]) -> Self {
        Term {
            coeff: Complex64::new(coeff, 0.0),
            factors: factors.to_vec(),
        }
    }
}

/// Most spins a [`PauliSum`] holds (one bit of a `u64` per site).
pub const MAX_PAULI_SITES: usize = 64;

/// A compiled Hamiltonian: Pauli strings for spins (up to [`MAX_PAULI_SITES`] sites), local
/// matrices otherwise.
#[derive(Clone, Debug)]
pub enum Hamiltonian {
    Pauli(PauliSum),
    Local(LocalOperator),
}

impl Hamiltonian {
    /// Compiles a term list on `hilbert`. Factors on the same site are multiplied in order
    /// (for oscillators in an enlarged space, then truncated: see [`local_ops`]).
    pub fn compile(hilbert: Hilbert, terms: &[Term]) -> Hamiltonian {
        let grouped = terms.iter().map(|t| (t.coeff, site_matrices(hilbert, t)));
        match hilbert.local {
            // Pauli strings pack a configuration into a u64; larger spin lattices (VMC only:
            // nothing diagonalises 2^65 states) take the generic local-matrix form.
            LocalSpace::Spin if hilbert.n_sites > MAX_PAULI_SITES => {
                Hamiltonian::Local(Self::compile_local(hilbert, terms))
            }
            LocalSpace::Spin => {
                let mut strings: BTreeMap<(u64, u64), Complex64> = BTreeMap::new();
                for (c, mats) in grouped {
                    add_pauli_expansion(&mut strings, c, &mats);
                }
                Hamiltonian::Pauli(PauliSum::from_strings(hilbert.n_sites, &strings))
            }
            LocalSpace::Oscillator { .. } => {
                let list: Vec<_> = grouped.collect();
                Hamiltonian::Local(LocalOperator::new(hilbert, &list))
            }
        }
    }

    /// The operator as a trait object.
    pub fn as_operator(&self) -> &dyn Operator {
        match self {
            Hamiltonian::Pauli(p) => p,
            Hamiltonian::Local(l) => l,
        }
    }

    /// A term list on an oscillator space whose site `x` uses the basis of the columns of
    /// `bases[x]` (see [`site_basis`]): every site matrix `M` becomes `U^dag M U`.
    ///
    /// The single-site terms of each site are summed into one matrix before the change of
    /// basis (in the on-site eigenbasis their sum is diagonal while each part is dense), and
    /// elements below `1e-13` of a matrix's largest are dropped as rounding.
    pub fn compile_in_basis(hilbert: Hilbert, terms: &[Term], bases: &[Mat]) -> LocalOperator {
        let d = hilbert.local_dim();
        let clean = |m: Mat| -> Mat {
            let big = m.data.iter().map(|v| v.norm()).fold(0.0, f64::max);
            let mut m = m;
            for v in m.data.iter_mut() {
                if v.norm() <= 1e-13 * big {
                    *v = Complex64::new(0.0, 0.0);
                }
            }
            m
        };
        let mut on_site: BTreeMap<usize, Mat> = BTreeMap::new();
        let mut list = Vec::new();
        for t in terms {
            let mats = site_matrices(hilbert, t);
            if let [(x, m)] = mats.as_slice() {
                on_site
                    .entry(*x)
                    .or_insert_with(|| Mat::zeros(d))
                    .add_scaled(t.coeff, m);
                continue;
            }
            let mats = mats
                .into_iter()
                .map(|(x, m)| (x, clean(site_basis::in_basis(&m, &bases[x]))))
                .collect();
            list.push((t.coeff, mats));
        }
        for (x, m) in on_site {
            let m = clean(site_basis::in_basis(&m, &bases[x]));
            list.push((Complex64::new(1.0, 0.0), vec![(x, m)]));
        }
        LocalOperator::new(hilbert, &list)
    }

    /// The same Hamiltonian in the generic local-matrix form (for cross-checks of the Pauli
    /// form).
    pub fn compile_local(hilbert: Hilbert, terms: &[Term]) -> LocalOperator {
        let list: Vec<_> = terms
            .iter()
            .map(|t| (t.coeff, site_matrices(hilbert, t)))
            .collect();
        LocalOperator::new(hilbert, &list)
    }
}

/// Multiplies each term's factors site by site: `[(site, d x d matrix)]`, sites ascending.
fn site_matrices(hilbert: Hilbert, t: &Term) -> Vec<(usize, Mat)> {
    let mut by_site: BTreeMap<usize, Vec<LocalOp>> = BTreeMap::new();
    for &(site, op) in &t.factors {
        by_site.entry(site).or_default().push(op);
    }
    let (spin, d, omega) = match hilbert.local {
        LocalSpace::Spin => (true, 2, 1.0),
        LocalSpace::Oscillator { cutoff, omega } => (false, cutoff, omega),
    };
    by_site
        .into_iter()
        .map(|(site, ops)| (site, product_on_site(&ops, spin, d, omega)))
        .collect()
}

/// Expands `c * prod_site M_site` over Pauli strings `c' X^x Z^z` and adds them to `strings`.
/// Each 2x2 matrix is `m_I I + m_X X + m_Y Y + m_Z Z` with `Y = i X Z`.
fn add_pauli_expansion(
    strings: &mut BTreeMap<(u64, u64), Complex64>,
    c: Complex64,
    mats: &[(usize, Mat)],
) {
    let half = Complex64::new(0.5, 0.0);
    let i = Complex64::new(0.0, 1.0);
    let mut partial: Vec<((u64, u64), Complex64)> = vec![((0, 0), c)];
    for (site, m) in mats {
        let bit = 1u64 << site;
        let (m00, m01, m10, m11) = (m.get(0, 0), m.get(0, 1), m.get(1, 0), m.get(1, 1));
        // Coefficients of I, X, Y, Z, and the (x, z) bits and extra factor each contributes.
        let comps = [
            ((m00 + m11) * half, 0, 0, Complex64::new(1.0, 0.0)),
            ((m01 + m10) * half, bit, 0, Complex64::new(1.0, 0.0)),
            (i * (m01 - m10) * half, bit, bit, i),
            ((m00 - m11) * half, 0, bit, Complex64::new(1.0, 0.0)),
        ];
        let mut next = Vec::with_capacity(partial.len() * 4);
        for &((x, z), v) in &partial {
            for &(coef, bx, bz, phase) in &comps {
                if coef.norm() > 1e-15 {
                    next.push(((x | bx, z | bz), v * coef * phase));
                }
            }
        }
        partial = next;
    }
    for (key, v) in partial {
        *strings.entry(key).or_insert(Complex64::new(0.0, 0.0)) += v;
    }
}
