//! Lattices: periodic or open chains and squares, their bonds, translations and momenta.
//!
//! Sites are numbered row-major: site `(x, y)` of an `Lx x Ly` square has index `x + Lx * y`; a
//! chain is the square with `Ly = 1`. With periodic boundaries the nearest-neighbour bonds are
//! `(r, r + e_mu)` for every site `r` and direction `mu` (so `sum_<ij>` runs over `d * N` bonds
//! and every site has coordination `2 d`), and the next-nearest bonds of the square are
//! `(r, r + e_x + e_y)` and `(r, r + e_x - e_y)`. A bond that would join a site to itself (a
//! periodic direction of length 1) is dropped. With open boundaries bonds that would wrap are
//! dropped. Lattice spacing is 1 throughout.

use std::f64::consts::PI;

/// Shape of a lattice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A one-dimensional chain of `N` sites.
    Chain,
    /// A two-dimensional `Lx x Ly` square lattice.
    Square,
}

/// Boundary conditions, the same in every direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    Periodic,
    Open,
}

/// A hypercubic lattice of dimension 1 or 2 with its bond lists.
#[derive(Clone, Debug)]
pub struct Lattice {
    shape: Shape,
    extent: [usize; 2],
    boundary: Boundary,
    bonds: Vec<(usize, usize)>,
    next_bonds: Vec<(usize, usize)>,
}

impl Lattice {
    /// A chain of `n` sites.
    pub fn chain(n: usize, boundary: Boundary) -> Self {
        Self::build(Shape::Chain, [n, 1], boundary)
    }

    /// An `lx x ly` square lattice.
    pub fn square(lx: usize, ly: usize, boundary: Boundary) -> Self {
        Self::build(Shape::Square, [lx, ly], boundary)
    }

    fn build(shape: Shape, extent: [usize; 2], boundary: Boundary) -> Self {
        assert!(
            extent[0] > 0 && extent[1] > 0,
            "a lattice needs at least one site"
        );
        let mut lat = Lattice {
            shape,
            extent,
            boundary,
            bonds: Vec::new(),
            next_bonds: Vec::new(),
        };
        let dirs: &[(isize, isize)] = match shape {
            Shape::Chain => &[(1, 0)],
            Shape::Square => &[(1, 0), (0, 1)],
        };
        let diag: &[(isize, isize)] = match shape {
            Shape::Chain => &[(2, 0)],
            Shape::Square => &[(1, 1), (1, -1)],
        };
        lat.bonds = lat.bond_list(dirs);
        lat.next_bonds = lat.bond_list(diag);
        lat
    }

    fn bond_list(&self, dirs: &[(isize, isize)]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for i in 0..self.n_sites() {
            for &d in dirs {
                if let Some(j) = self.shift(i, d) {
                    if j != i {
                        out.push((i, j));
                    }
                }
            }
        }
        out
    }

    /// Site reached from `i` by the displacement `d`, or `None` if it leaves an open lattice.
    pub fn shift(&self, i: usize, d: (isize, isize)) -> Option<usize> {
        let [lx, ly] = self.extent;
        let (x, y) = self.coords(i);
        let nx = x as isize + d.0;
        let ny = y as isize + d.1;
        match self.boundary {
            Boundary::Periodic => Some(self.index(
                nx.rem_euclid(lx as isize) as usize,
                ny.rem_euclid(ly as isize) as usize,
            )),
            Boundary::Open => {
                if nx < 0 || ny < 0 || nx >= lx as isize || ny >= ly as isize {
                    None
                } else {
                    Some(self.index(nx as usize, ny as usize))
                }
            }
        }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn boundary(&self) -> Boundary {
        self.boundary
    }

    /// `[Lx, Ly]` (`Ly = 1` for a chain).
    pub fn extent(&self) -> [usize; 2] {
        self.extent
    }

    /// Spatial dimension: 1 for a chain, 2 for a square.
    pub fn dim(&self) -> usize {
        match self.shape {
            Shape::Chain => 1,
            Shape::Square => 2,
        }
    }

    pub fn n_sites(&self) -> usize {
        self.extent[0] * self.extent[1]
    }

    /// Integer coordinates `(x, y)` of site `i`.
    pub fn coords(&self, i: usize) -> (usize, usize) {
        (i % self.extent[0], i / self.extent[0])
    }

    /// Site index of `(x, y)`.
    pub fn index(&self, x: usize, y: usize) -> usize {
        x + self.extent[0] * y
    }

    /// Nearest-neighbour bonds `(i, j)`, each listed once.
    pub fn bonds(&self) -> &[(usize, usize)] {
        &self.bonds
    }

    /// Next-nearest-neighbour bonds: diagonals of the square, distance-2 pairs of the chain.
    pub fn next_bonds(&self) -> &[(usize, usize)] {
        &self.next_bonds
    }

    /// Number of nearest-neighbour bonds that touch each site (2d in the bulk).
    pub fn coordination(&self) -> Vec<usize> {
        let mut z = vec![0; self.n_sites()];
        for &(i, j) in &self.bonds {
            z[i] += 1;
            z[j] += 1;
        }
        z
    }

    /// Sublattice sign `(-1)^(x + y)`, used for staggered order and Marshall's sign rule.
    pub fn sublattice_sign(&self, i: usize) -> i32 {
        let (x, y) = self.coords(i);
        if (x + y) % 2 == 0 {
            1
        } else {
            -1
        }
    }

    /// True when the two-colouring by `(-1)^(x+y)` is consistent with every nearest-neighbour
    /// bond (false for periodic directions of odd length).
    pub fn is_bipartite(&self) -> bool {
        self.bonds
            .iter()
            .all(|&(i, j)| self.sublattice_sign(i) != self.sublattice_sign(j))
    }

    /// All lattice translations as site permutations, `perm[t][i]` = image of site `i` under
    /// translation `t = (tx, ty)`, ordered `t = tx + Lx * ty`. Only periodic lattices have them;
    /// an open lattice returns the identity alone.
    pub fn translations(&self) -> Vec<Vec<usize>> {
        if self.boundary == Boundary::Open {
            return vec![(0..self.n_sites()).collect()];
        }
        let [lx, ly] = self.extent;
        let mut out = Vec::with_capacity(lx * ly);
        for ty in 0..ly {
            for tx in 0..lx {
                out.push(
                    (0..self.n_sites())
                        .map(|i| self.shift(i, (tx as isize, ty as isize)).unwrap())
                        .collect(),
                );
            }
        }
        out
    }

    /// Allowed momenta `k = 2 pi n / L` per direction, in the order `n = nx + Lx * ny`.
    pub fn momenta(&self) -> Vec<[f64; 2]> {
        let [lx, ly] = self.extent;
        let mut out = Vec::with_capacity(lx * ly);
        for ny in 0..ly {
            for nx in 0..lx {
                out.push([
                    2.0 * PI * nx as f64 / lx as f64,
                    2.0 * PI * ny as f64 / ly as f64,
                ]);
            }
        }
        out
    }

    /// Lattice momentum squared `p_hat^2 = sum_mu 4 sin^2(k_mu / 2)` of the Laplacian on the
    /// periodic lattice, for every momentum of [`Lattice::momenta`].
    pub fn p_hat_squared(&self) -> Vec<f64> {
        let d = self.dim();
        self.momenta()
            .iter()
            .map(|k| {
                (0..d)
                    .map(|mu| 4.0 * (k[mu] / 2.0).sin().powi(2))
                    .sum::<f64>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_bonds_and_translations() {
        let l = Lattice::chain(4, Boundary::Periodic);
        assert_eq!(l.bonds(), &[(0, 1), (1, 2), (2, 3), (3, 0)]);
        assert_eq!(l.next_bonds(), &[(0, 2), (1, 3), (2, 0), (3, 1)]);
        let t = l.translations();
        assert_eq!(t.len(), 4);
        assert_eq!(t[1], vec![1, 2, 3, 0]);
        let o = Lattice::chain(4, Boundary::Open);
        assert_eq!(o.bonds().len(), 3);
        assert_eq!(o.translations().len(), 1);
    }

    #[test]
    fn square_bonds_and_momenta() {
        let l = Lattice::square(4, 3, Boundary::Periodic);
        assert_eq!(l.n_sites(), 12);
        assert_eq!(l.bonds().len(), 24);
        assert_eq!(l.next_bonds().len(), 24);
        assert!(l.coordination().iter().all(|&z| z == 4));
        assert_eq!(l.coords(l.index(3, 2)), (3, 2));
        let p2 = l.p_hat_squared();
        assert_eq!(p2[0], 0.0);
        // (pi, 2pi/3): 4 + 4 sin^2(pi/3) = 7
        assert!((p2[2 + 4] - 7.0).abs() < 1e-12);
        assert!(!l.is_bipartite());
        assert!(Lattice::square(4, 4, Boundary::Periodic).is_bipartite());
    }
}
