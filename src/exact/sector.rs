//! Symmetry sectors: which symmetries an operator has, how a sector is named on the command
//! line (`full`, `sz=0`, `sz=1/2,k=3,p=-1`, `kx=0,ky=2`), and how big it is.

use crate::error::{Error, Result};
use crate::lattice::{Boundary, Lattice, Shape};
use crate::operator::PauliSum;

/// A symmetry sector of a spin-1/2 problem. `None` fields are not imposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sector {
    /// Number of down spins (`Sz = N/2 - n_down`).
    pub n_down: Option<usize>,
    /// Momentum integers `(nx, ny)`, `k_mu = 2 pi n_mu / L_mu`.
    pub momentum: Option<[usize; 2]>,
    /// Spin-flip parity `+1` or `-1`.
    pub parity: Option<i8>,
}

/// The symmetries an operator has on a lattice.
#[derive(Clone, Copy, Debug)]
pub struct Symmetries {
    /// Total `Sz` is conserved.
    pub u1: bool,
    /// Invariant under every lattice translation (periodic lattices only).
    pub translation: bool,
    /// Commutes with the global spin flip `prod_i X_i`.
    pub flip: bool,
}

impl Symmetries {
    pub fn of(h: &PauliSum, lattice: &Lattice) -> Self {
        let translation = lattice.boundary() == Boundary::Periodic && {
            let [lx, ly] = lattice.extent();
            let gens = [(1usize, 0usize), (0, 1)];
            gens.iter()
                .filter(|&&(tx, ty)| (tx == 1 && lx > 1) || (ty == 1 && ly > 1))
                .all(|&(tx, ty)| {
                    let perm: Vec<usize> = (0..lattice.n_sites())
                        .map(|i| lattice.shift(i, (tx as isize, ty as isize)).unwrap())
                        .collect();
                    h.permuted(&perm).approx_eq(h, 1e-12)
                })
        };
        Symmetries {
            u1: h.conserves_sz(),
            translation,
            flip: h.flip_symmetric(),
        }
    }
}

impl Sector {
    /// No symmetry imposed.
    pub fn full() -> Self {
        Sector::default()
    }

    pub fn is_full(&self) -> bool {
        *self == Sector::default()
    }

    /// Human and machine label, e.g. `sz=0,k=8,p=+1` (`full` without symmetries).
    pub fn label(&self, lattice: &Lattice) -> String {
        let n = lattice.n_sites();
        let mut parts = Vec::new();
        if let Some(nd) = self.n_down {
            let two_sz = n as i64 - 2 * nd as i64;
            parts.push(if two_sz % 2 == 0 {
                format!("sz={}", two_sz / 2)
            } else {
                format!("sz={two_sz}/2")
            });
        }
        if let Some([nx, ny]) = self.momentum {
            match lattice.shape() {
                Shape::Chain => parts.push(format!("k={nx}")),
                Shape::Square => parts.push(format!("kx={nx},ky={ny}")),
            }
        }
        if let Some(p) = self.parity {
            parts.push(format!("p={}", if p > 0 { "+1" } else { "-1" }));
        }
        if parts.is_empty() {
            "full".into()
        } else {
            parts.join(",")
        }
    }

    /// Parses a `--sector` value (`auto` is handled by the caller). Momentum integers are
    /// taken modulo the lattice length; `sz` must make `n_down` an integer in `0..=N`.
    pub fn parse(text: &str, lattice: &Lattice) -> Result<Sector> {
        let bad = |msg: String| Error::Input(format!("--sector {text}: {msg}"));
        let mut s = Sector::default();
        if text == "full" {
            return Ok(s);
        }
        let n = lattice.n_sites() as i64;
        let [lx, ly] = lattice.extent();
        let mut k = [None, None];
        for part in text.split(',') {
            let (key, val) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("expected key=value, found `{part}`")))?;
            let int = |v: &str| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| bad(format!("`{key}` expects an integer, found `{v}`")))
            };
            match key.trim() {
                "sz" => {
                    let two_sz = match val.split_once('/') {
                        Some((num, "2")) => int(num)?,
                        Some(_) => {
                            return Err(bad(
                                "sz must be an integer or a half-integer like 1/2".into()
                            ))
                        }
                        None => 2 * int(val)?,
                    };
                    if (n - two_sz) % 2 != 0 || two_sz.abs() > n {
                        return Err(bad(format!("sz={val} is impossible with {n} spins")));
                    }
                    s.n_down = Some(((n - two_sz) / 2) as usize);
                }
                "k" | "kx" => k[0] = Some(int(val)?.rem_euclid(lx as i64) as usize),
                "ky" => {
                    if lattice.shape() == Shape::Chain {
                        return Err(bad("a chain has no ky; use k".into()));
                    }
                    k[1] = Some(int(val)?.rem_euclid(ly as i64) as usize)
                }
                "p" => {
                    s.parity = Some(match val.trim() {
                        "1" | "+1" | "+" => 1,
                        "-1" | "-" => -1,
                        _ => return Err(bad(format!("p must be +1 or -1, found `{val}`"))),
                    })
                }
                other => {
                    return Err(bad(format!(
                        "unknown key `{other}`; expected sz, k (chain), kx and ky (square), p"
                    )))
                }
            }
        }
        if k[0].is_some() || k[1].is_some() {
            if lattice.shape() == Shape::Square && (k[0].is_none() || k[1].is_none()) {
                return Err(bad("a square needs both kx and ky".into()));
            }
            s.momentum = Some([k[0].unwrap_or(0), k[1].unwrap_or(0)]);
        }
        Ok(s)
    }

    /// Refuses a sector the operator does not conserve, naming the missing symmetry.
    pub fn check(&self, sym: &Symmetries, lattice: &Lattice) -> Result<()> {
        let n = lattice.n_sites();
        if self.n_down.is_some() && !sym.u1 {
            return Err(Error::Input(
                "this Hamiltonian does not conserve total Sz; drop `sz=` from --sector".into(),
            ));
        }
        if self.momentum.is_some() && !sym.translation {
            return Err(Error::Input(
                "this Hamiltonian is not translation invariant on this lattice (open boundaries or site-dependent terms); drop the momentum from --sector".into(),
            ));
        }
        if self.parity.is_some() {
            if !sym.flip {
                return Err(Error::Input(
                    "this Hamiltonian does not commute with the global spin flip; drop `p=` from --sector".into(),
                ));
            }
            if let Some(nd) = self.n_down {
                if 2 * nd != n {
                    return Err(Error::Input(
                        "spin-flip parity only exists in the sz=0 sector (or without sz)".into(),
                    ));
                }
            }
        }
        if n > 63 && !self.is_full() {
            return Err(Error::Input(
                "symmetry sectors are limited to 63 spins".into(),
            ));
        }
        Ok(())
    }

    /// Dimension of the sector before momentum/parity reduction (`2^N` or `C(N, n_down)`).
    pub fn parent_dimension(&self, n: usize) -> f64 {
        match self.n_down {
            Some(nd) => super::basis::binomial(n, nd) as f64,
            None => 2f64.powi(n as i32),
        }
    }

    /// Approximate dimension: the parent dimension divided by the order of the group.
    pub fn estimated_dimension(&self, lattice: &Lattice) -> f64 {
        let n = lattice.n_sites();
        let mut g = 1.0;
        if self.momentum.is_some() {
            g *= n as f64;
        }
        if self.parity.is_some() {
            g *= 2.0;
        }
        self.parent_dimension(n) / g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let chain = Lattice::chain(10, Boundary::Periodic);
        for text in ["full", "sz=0", "sz=1,k=3", "sz=0,k=5,p=-1", "k=0,p=+1"] {
            let s = Sector::parse(text, &chain).unwrap();
            assert_eq!(s.label(&chain), text);
        }
        let odd = Lattice::chain(9, Boundary::Periodic);
        assert_eq!(Sector::parse("sz=1/2", &odd).unwrap().n_down, Some(4));
        assert!(Sector::parse("sz=0", &odd).is_err());
        let sq = Lattice::square(4, 4, Boundary::Periodic);
        assert_eq!(
            Sector::parse("kx=1,ky=2", &sq).unwrap().label(&sq),
            "kx=1,ky=2"
        );
        assert!(Sector::parse("k=1", &sq).is_err());
        assert!(Sector::parse("q=1", &chain).is_err());
    }
}
