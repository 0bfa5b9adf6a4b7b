//! The built-in lattice models and the generic `terms` model, as symbolic term lists.
//!
//! Conventions (lattice spacing 1; `sum_<ij>` over nearest-neighbour bonds, each once;
//! `sum_<<ij>>` over next-nearest bonds):
//! - **TFIM**, Pauli matrices: `H = -J sum_<ij> Z_i Z_j - h sum_i X_i - g sum_i Z_i`.
//! - **Heisenberg / XXZ / J1-J2**, spin operators `S = sigma / 2`:
//!   `H = J1 sum_<ij> (Sx Sx + Sy Sy + Delta Sz Sz) + J2 sum_<<ij>> S_i . S_j`
//!   (Heisenberg: `J1 = J`, `Delta = 1`, `J2 = 0`; XXZ: `J2 = 0`).
//! - **phi^4** (coupled anharmonic oscillators), truncated Fock basis of frequency `omega`
//!   (or, with `basis = "local"`, the eigenbasis of the on-site part in that space, see
//!   [`super::site_basis`]):
//!   `H = sum_x [pi_x^2/2 + m2 phi_x^2/2 + lambda phi_x^4] + 1/2 sum_<xy> (phi_x - phi_y)^2`.
//! - **terms**: `H = sum_t c_t sum_{(x_1..x_k) in support_t} op_{t,1}(x_1) ... op_{t,k}(x_k)`.

use num_complex::Complex64;

use super::local_ops::{LocalOp, Mat};
use super::site_basis::phi4_site_basis;
use super::{Hamiltonian, Term};
use crate::hilbert::{Hilbert, LocalSpace};
use crate::lattice::Lattice;

/// Where a `terms` entry acts.
#[derive(Clone, Debug, PartialEq)]
pub enum Support {
    /// Every nearest-neighbour bond `(i, j)`; the term has two operators.
    Bonds,
    /// Every next-nearest bond; two operators.
    NextBonds,
    /// Every site `x`; all the term's operators act on `x` (e.g. `["phi", "phi"]` is `phi_x^2`).
    Sites,
    /// Explicit site tuples, one site per operator.
    List(Vec<Vec<usize>>),
}

/// One entry of a `terms` model.
#[derive(Clone, Debug, PartialEq)]
pub struct TermSpec {
    pub ops: Vec<LocalOp>,
    pub on: Support,
    pub coeff: Complex64,
}

/// The local basis of an oscillator model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OscillatorBasis {
    /// Fock states of the oscillator of frequency `omega`.
    #[default]
    Fock,
    /// Eigenstates of the on-site Hamiltonian (see [`super::site_basis`]).
    Local,
}

impl OscillatorBasis {
    pub fn name(self) -> &'static str {
        match self {
            OscillatorBasis::Fock => "fock",
            OscillatorBasis::Local => "local",
        }
    }
}

/// A lattice model with its parameters, checked when it was read.
#[derive(Clone, Debug, PartialEq)]
pub enum Model {
    Tfim {
        j: f64,
        h: f64,
        g: f64,
    },
    Heisenberg {
        j: f64,
    },
    Xxz {
        j: f64,
        delta: f64,
    },
    J1J2 {
        j1: f64,
        j2: f64,
        delta: f64,
    },
    Phi4 {
        m2: f64,
        lambda: f64,
        cutoff: usize,
        omega: f64,
        basis: OscillatorBasis,
    },
    Terms {
        local: LocalSpace,
        terms: Vec<TermSpec>,
    },
}

impl Model {
    /// The `kind` name used in files.
    pub fn kind(&self) -> &'static str {
        match self {
            Model::Tfim { .. } => "tfim",
            Model::Heisenberg { .. } => "heisenberg",
            Model::Xxz { .. } => "xxz",
            Model::J1J2 { .. } => "j1j2",
            Model::Phi4 { .. } => "phi4",
            Model::Terms { .. } => "terms",
        }
    }

    /// The local space of each site.
    pub fn local_space(&self) -> LocalSpace {
        match self {
            Model::Phi4 { cutoff, omega, .. } => LocalSpace::Oscillator {
                cutoff: *cutoff,
                omega: *omega,
            },
            Model::Terms { local, .. } => *local,
            _ => LocalSpace::Spin,
        }
    }

    /// True for antiferromagnetic spin models, whose order parameter is staggered.
    pub fn is_antiferromagnetic(&self) -> bool {
        match *self {
            Model::Tfim { j, .. } => j < 0.0,
            Model::Heisenberg { j } | Model::Xxz { j, .. } => j > 0.0,
            Model::J1J2 { j1, .. } => j1 > 0.0,
            _ => false,
        }
    }

    /// The symbolic terms of this model on `lattice`.
    pub fn terms(&self, lattice: &Lattice) -> Vec<Term> {
        use LocalOp::*;
        let mut t = Vec::new();
        let n = lattice.n_sites();
        let heis = |t: &mut Vec<Term>, bonds: &[(usize, usize)], jxy: f64, jz: f64| {
            for &(i, j) in bonds {
                t.push(Term::new(jxy / 4.0, &[(i, X), (j, X)]));
                t.push(Term::new(jxy / 4.0, &[(i, Y), (j, Y)]));
                t.push(Term::new(jz / 4.0, &[(i, Z), (j, Z)]));
            }
        };
        match *self {
            Model::Tfim { j, h, g } => {
                for &(a, b) in lattice.bonds() {
                    t.push(Term::new(-j, &[(a, Z), (b, Z)]));
                }
                for x in 0..n {
                    t.push(Term::new(-h, &[(x, X)]));
                    if g != 0.0 {
                        t.push(Term::new(-g, &[(x, Z)]));
                    }
                }
            }
            Model::Heisenberg { j } => heis(&mut t, lattice.bonds(), j, j),
            Model::Xxz { j, delta } => heis(&mut t, lattice.bonds(), j, j * delta),
            Model::J1J2 { j1, j2, delta } => {
                heis(&mut t, lattice.bonds(), j1, j1 * delta);
                if j2 != 0.0 {
                    heis(&mut t, lattice.next_bonds(), j2, j2);
                }
            }
            Model::Phi4 { m2, lambda, .. } => {
                let z = lattice.coordination();
                for (x, &zx) in z.iter().enumerate() {
                    t.push(Term::new(0.5, &[(x, Pi), (x, Pi)]));
                    t.push(Term::new(0.5 * (m2 + zx as f64), &[(x, Phi), (x, Phi)]));
                    if lambda != 0.0 {
                        t.push(Term::new(lambda, &[(x, Phi), (x, Phi), (x, Phi), (x, Phi)]));
                    }
                }
                for &(a, b) in lattice.bonds() {
                    t.push(Term::new(-1.0, &[(a, Phi), (b, Phi)]));
                }
            }
            Model::Terms { ref terms, .. } => {
                for spec in terms {
                    let tuples: Vec<Vec<usize>> = match &spec.on {
                        Support::Bonds => {
                            lattice.bonds().iter().map(|&(a, b)| vec![a, b]).collect()
                        }
                        Support::NextBonds => lattice
                            .next_bonds()
                            .iter()
                            .map(|&(a, b)| vec![a, b])
                            .collect(),
                        Support::Sites => (0..n).map(|x| vec![x; spec.ops.len()]).collect(),
                        Support::List(l) => l.clone(),
                    };
                    for sites in tuples {
                        t.push(Term {
                            coeff: spec.coeff,
                            factors: sites.into_iter().zip(spec.ops.iter().copied()).collect(),
                        });
                    }
                }
            }
        }
        t
    }

    /// The per-site basis matrices `U_x` (columns: the basis states in the Fock basis) of a
    /// model in a non-Fock basis, `None` in the Fock (or spin) basis.
    pub fn site_bases(&self, lattice: &Lattice) -> Option<Vec<Mat>> {
        match *self {
            Model::Phi4 {
                m2,
                lambda,
                cutoff,
                omega,
                basis: OscillatorBasis::Local,
            } => {
                let mut by_z: Vec<(usize, Mat)> = Vec::new();
                let out = lattice
                    .coordination()
                    .iter()
                    .map(|&z| {
                        if let Some((_, u)) = by_z.iter().find(|(zz, _)| *zz == z) {
                            return u.clone();
                        }
                        let (u, _) = phi4_site_basis(m2 + z as f64, lambda, cutoff, omega);
                        by_z.push((z, u.clone()));
                        u
                    })
                    .collect();
                Some(out)
            }
            _ => None,
        }
    }

    /// The compiled Hamiltonian on `lattice`, in the model's basis.
    pub fn hamiltonian(&self, lattice: &Lattice) -> Hamiltonian {
        let hilbert = self.hilbert(lattice);
        let terms = self.terms(lattice);
        match self.site_bases(lattice) {
            Some(u) => Hamiltonian::Local(Hamiltonian::compile_in_basis(hilbert, &terms, &u)),
            None => Hamiltonian::compile(hilbert, &terms),
        }
    }

    /// The Hilbert space of this model on `lattice`.
    pub fn hilbert(&self, lattice: &Lattice) -> Hilbert {
        Hilbert::new(lattice.n_sites(), self.local_space())
    }

    /// The model's scalar parameters as `(name, value)`, named as in files.
    pub fn parameters(&self) -> Vec<(&'static str, f64)> {
        match *self {
            Model::Tfim { j, h, g } => vec![("J", j), ("h", h), ("g", g)],
            Model::Heisenberg { j } => vec![("J", j)],
            Model::Xxz { j, delta } => vec![("J", j), ("delta", delta)],
            Model::J1J2 { j1, j2, delta } => vec![("J1", j1), ("J2", j2), ("delta", delta)],
            Model::Phi4 {
                m2,
                lambda,
                cutoff,
                omega,
                ..
            } => vec![
                ("m2", m2),
                ("lambda", lambda),
                ("cutoff", cutoff as f64),
                ("omega", omega),
            ],
            Model::Terms { ref terms, local } => {
                let mut v = vec![("terms", terms.len() as f64)];
                if let LocalSpace::Oscillator { cutoff, omega } = local {
                    v.push(("cutoff", cutoff as f64));
                    v.push(("omega", omega));
                }
                v
            }
        }
    }

    /// One-line statement of the convention, for output and documentation.
    pub fn convention(&self) -> &'static str {
        match self {
            Model::Tfim { .. } => "H = -J sum_<ij> Z_i Z_j - h sum_i X_i - g sum_i Z_i (Pauli matrices)",
            Model::Heisenberg { .. } => "H = J sum_<ij> S_i . S_j (S = sigma/2)",
            Model::Xxz { .. } => "H = J sum_<ij> (Sx Sx + Sy Sy + delta Sz Sz) (S = sigma/2)",
            Model::J1J2 { .. } => {
                "H = J1 sum_<ij> (Sx Sx + Sy Sy + delta Sz Sz) + J2 sum_<<ij>> S_i . S_j (S = sigma/2)"
            }
            Model::Phi4 {
                basis: OscillatorBasis::Fock,
                ..
            } => {
                "H = sum_x [pi^2/2 + m2 phi^2/2 + lambda phi^4] + 1/2 sum_<xy> (phi_x - phi_y)^2 (Fock basis, frequency omega)"
            }
            Model::Phi4 { .. } => {
                "H = sum_x [pi^2/2 + m2 phi^2/2 + lambda phi^4] + 1/2 sum_<xy> (phi_x - phi_y)^2 (eigenbasis of the on-site part pi^2/2 + (m2 + z) phi^2/2 + lambda phi^4, in the Fock space of frequency omega)"
            }
            Model::Terms { .. } => "H = sum_t coeff_t prod_k op_k(site_k)",
        }
    }
}
