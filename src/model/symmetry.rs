//! Lattice symmetry groups for symmetrizing the wavefunction's amplitudes.
//!
//! An autoregressive or RG-ordered model breaks the lattice's symmetries: its order of
//! revelation picks sites out. Averaging the model's distribution over a group `G` of maps of
//! configurations restores them without losing exact sampling:
//!
//! `p_G(s) = (1/|G|) sum_{g in G} p(g s)`,
//! `theta_G(s) = theta_fixed(s) + (1/|G|) sum_{g in G} theta_learned(g s)`,
//! `psi_G(s) = sqrt(p_G(s)) exp(i theta_G(s))`.
//!
//! `p_G` is normalised (each `g` is a bijection) and is sampled exactly by drawing `s ~ p` and
//! applying a `g` drawn uniformly: `P(s') = (1/|G|) sum_g p(g^-1 s') = p_G(s')` (a group is
//! closed under inverses). Every evaluation costs `|G|` evaluations of the model. This is the
//! symmetrization of autoregressive wavefunctions of Hibat-Allah et al., Phys. Rev. Research 2,
//! 023358 (2020). The fixed part of the phase (Marshall's sign) is kept as it is; it is
//! invariant under these maps wherever the number of down spins and of sublattice sites makes
//! it so (e.g. the `S^z = 0` sector of a 4x4 square).

use crate::error::{Error, Result};
use crate::lattice::{Boundary, Lattice, Shape};

/// A group of maps `s -> g s` of configurations: a permutation of the sites, optionally
/// followed by the global spin flip (local state `v -> 1 - v`, spin 1/2 only).
#[derive(Clone, Debug, PartialEq)]
pub struct SymmetryGroup {
    /// The group as written (`translation,point,flip`), for messages and summaries.
    name: String,
    /// `perms[g][x]`: the site that site `x`'s state moves to under element `g`.
    perms: Vec<Vec<usize>>,
    /// Whether element `g` also flips every spin.
    flips: Vec<bool>,
}

impl SymmetryGroup {
    /// The group named by `spec` on `lattice` with local dimension `d`; `None` for `none`.
    ///
    /// `spec` is a comma-separated list of generators whose product is taken: `translation`
    /// (every lattice translation; periodic lattices), `point` (the square's 8 rotations and
    /// reflections about a site, 4 when `Lx != Ly`; the chain's reflection) and `flip` (the
    /// global spin flip; spin 1/2, and not with an `S^z != 0` sector, which it would leave).
    pub fn parse(spec: &str, lattice: &Lattice, d: usize, sz: Option<f64>) -> Result<Option<Self>> {
        let spec = spec.trim();
        if spec.is_empty() || spec == "none" {
            return Ok(None);
        }
        let n = lattice.n_sites();
        let mut perms: Vec<Vec<usize>> = vec![(0..n).collect()];
        let mut flips = vec![false];
        let mut names: Vec<&str> = Vec::new();
        for part in spec.split(',').map(str::trim) {
            if names.contains(&part) {
                return Err(Error::Input(format!(
                    "--symmetry `{spec}`: `{part}` is named twice"
                )));
            }
            let generators: Vec<(Vec<usize>, bool)> = match part {
                "translation" => {
                    if lattice.boundary() == Boundary::Open {
                        return Err(Error::Input(format!(
                            "--symmetry `{spec}`: an open lattice has no translations \
                             (expected point or flip)"
                        )));
                    }
                    lattice
                        .translations()
                        .into_iter()
                        .map(|p| (p, false))
                        .collect()
                }
                "point" => point_group(lattice)
                    .into_iter()
                    .map(|p| (p, false))
                    .collect(),
                "flip" => {
                    if d != 2 {
                        return Err(Error::Input(format!(
                            "--symmetry `{spec}`: the spin flip needs spins 1/2 (local dimension 2, \
                             not {d})"
                        )));
                    }
                    if sz.is_some_and(|m| m != 0.0) {
                        return Err(Error::Input(format!(
                            "--symmetry `{spec}`: the spin flip maps S^z = {} to {}, out of the \
                             sector (use it with --sz 0 or without --sz)",
                            sz.unwrap_or(0.0),
                            -sz.unwrap_or(0.0)
                        )));
                    }
                    vec![((0..n).collect(), false), ((0..n).collect(), true)]
                }
                other => {
                    return Err(Error::Input(format!(
                        "--symmetry `{spec}`: unknown part `{other}`; expected none or a \
                         comma-separated list of translation, point and flip"
                    )))
                }
            };
            names.push(part);
            // Product with what we have: g' = h after g.
            let mut p2 = Vec::with_capacity(perms.len() * generators.len());
            let mut f2 = Vec::with_capacity(perms.len() * generators.len());
            for (hp, hf) in &generators {
                for (gp, &gf) in perms.iter().zip(&flips) {
                    p2.push(gp.iter().map(|&x| hp[x]).collect());
                    f2.push(gf ^ hf);
                }
            }
            perms = p2;
            flips = f2;
        }
        // Remove repeated elements (e.g. the translation that equals a rotation on tiny
        // lattices): a group's average counts each element once.
        let mut seen: Vec<(Vec<usize>, bool)> = Vec::new();
        for (p, f) in perms.into_iter().zip(flips) {
            if !seen.iter().any(|(q, g)| *q == p && *g == f) {
                seen.push((p, f));
            }
        }
        let (perms, flips) = seen.into_iter().unzip();
        Ok(Some(SymmetryGroup {
            name: names.join(","),
            perms,
            flips,
        }))
    }

    /// The group as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of elements `|G|`.
    pub fn order(&self) -> usize {
        self.perms.len()
    }

    /// `g s` for element `g` of one configuration `s` (written into `out`).
    pub fn apply(&self, g: usize, s: &[u8], out: &mut [u8]) {
        let flip = self.flips[g];
        for (x, &y) in self.perms[g].iter().enumerate() {
            out[y] = if flip { 1 - s[x] } else { s[x] };
        }
    }

    /// The images of a batch `s` (`B x N`), element-major: rows `g B .. (g + 1) B` hold
    /// `g s_0, ..., g s_{B-1}`.
    pub fn images(&self, s: &[u8], n: usize) -> Vec<u8> {
        let mut out = vec![0u8; s.len() * self.order()];
        let per = s.len();
        for g in 0..self.order() {
            for (c, o) in s.chunks(n).zip(out[g * per..(g + 1) * per].chunks_mut(n)) {
                self.apply(g, c, o);
            }
        }
        out
    }
}

/// Rotations and reflections of `lattice` about site 0 (periodic) or its centre (open), as
/// site permutations: 8 on a square with `Lx == Ly`, 4 otherwise; 2 on a chain.
fn point_group(lattice: &Lattice) -> Vec<Vec<usize>> {
    let [lx, ly] = lattice.extent();
    let n = lattice.n_sites();
    let open = lattice.boundary() == Boundary::Open;
    let mirror = |v: usize, l: usize| if open { l - 1 - v } else { (l - v) % l };
    let transposes = if lattice.shape() == Shape::Square && lx == ly {
        2
    } else {
        1
    };
    let ys = if lattice.shape() == Shape::Square {
        2
    } else {
        1
    };
    let mut out = Vec::new();
    for t in 0..transposes {
        for my in 0..ys {
            for mx in 0..2 {
                out.push(
                    (0..n)
                        .map(|i| {
                            let (x, y) = lattice.coords(i);
                            let x = if mx == 1 { mirror(x, lx) } else { x };
                            let y = if my == 1 { mirror(y, ly) } else { y };
                            let (x, y) = if t == 1 { (y, x) } else { (x, y) };
                            lattice.index(x, y)
                        })
                        .collect(),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_group(g: &SymmetryGroup) -> bool {
        let n = g.perms[0].len();
        let s: Vec<u8> = (0..n).map(|x| (x % 2) as u8).collect();
        // Closure: composing any two elements gives an element (checked on a configuration
        // with distinct site labels: the permutations themselves).
        (0..g.order()).all(|a| {
            (0..g.order()).all(|b| {
                let ab: Vec<usize> = g.perms[a].iter().map(|&x| g.perms[b][x]).collect();
                let f = g.flips[a] ^ g.flips[b];
                g.perms
                    .iter()
                    .zip(&g.flips)
                    .any(|(p, &h)| *p == ab && h == f)
            })
        }) && {
            let mut out = vec![0u8; n];
            g.apply(0, &s, &mut out);
            out.len() == n
        }
    }

    #[test]
    fn orders_and_closure() {
        let sq = Lattice::square(4, 4, Boundary::Periodic);
        let order = |spec: &str, lat: &Lattice| {
            SymmetryGroup::parse(spec, lat, 2, Some(0.0))
                .unwrap()
                .unwrap()
        };
        for (spec, o) in [
            ("translation", 16),
            ("point", 8),
            ("flip", 2),
            ("translation,point", 128),
            ("translation,point,flip", 256),
        ] {
            let g = order(spec, &sq);
            assert_eq!(g.order(), o, "{spec}");
            assert!(is_group(&g), "{spec}");
        }
        let rect = Lattice::square(4, 3, Boundary::Periodic);
        assert_eq!(order("point", &rect).order(), 4);
        let chain = Lattice::chain(6, Boundary::Open);
        let g = order("point,flip", &chain);
        assert_eq!(g.order(), 4);
        assert!(is_group(&g));
        assert!(SymmetryGroup::parse("none", &chain, 2, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_groups_are_refused() {
        let chain = Lattice::chain(6, Boundary::Open);
        let err = |spec: &str, d: usize, sz: Option<f64>| {
            SymmetryGroup::parse(spec, &chain, d, sz)
                .unwrap_err()
                .to_string()
        };
        assert!(err("translation", 2, None).contains("open lattice"));
        assert!(err("flip", 3, None).contains("local dimension 2"));
        assert!(err("flip", 2, Some(1.0)).contains("S^z = 1"));
        assert!(err("rotation", 2, None).contains("unknown part `rotation`"));
        assert!(err("point,point", 2, None).contains("named twice"));
    }
}
