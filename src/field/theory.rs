//! Classical lattice theories (conventions.md, classical part): the Ising model and real
//! scalar phi^4, with a flat neighbour table shared by every sampler.
//!
//! - Ising: `E(s) = -J sum_<ij> s_i s_j - h sum_i s_i`, `s_i = +-1`, weight `exp(-beta E)`.
//! - phi^4: `S(phi) = sum_<xy> (phi_x - phi_y)^2 + sum_x [m2 phi_x^2 + lambda phi_x^4]`, weight
//!   `exp(-S)`. On a periodic lattice `sum_<xy>` runs over the `d N` bonds `(x, x + mu)`, so
//!   `S = sum_x [sum_mu (phi_{x+mu} - phi_x)^2 + m2 phi_x^2 + lambda phi_x^4]`
//!   `  = sum_x [-2 sum_mu phi_x phi_{x+mu} + (m2 + 2d) phi_x^2 + lambda phi_x^4]`.
//!   Its gradient is `dS/dphi_x = 2 sum_{y~x} (phi_x - phi_y) + 2 m2 phi_x + 4 lambda phi_x^3`.
//!
//! The sum over bonds is the lattice's bond list ([`Lattice::bonds`]); open boundaries drop the
//! bonds that would wrap.

use serde::Serialize;

use crate::lattice::Lattice;

/// A classical theory read from a problem file.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Theory {
    /// `E = -J sum_<ij> s_i s_j - h sum_i s_i` at inverse temperature `beta`.
    Ising {
        beta: f64,
        #[serde(rename = "J")]
        j: f64,
        h: f64,
    },
    /// `S = sum_<xy> (phi_x - phi_y)^2 + sum_x [m2 phi_x^2 + lambda phi_x^4]`.
    #[serde(rename = "phi4-classical")]
    Phi4 { m2: f64, lambda: f64 },
}

impl Theory {
    /// The kind as written in problem files.
    pub fn kind(&self) -> &'static str {
        match self {
            Theory::Ising { .. } => "ising",
            Theory::Phi4 { .. } => "phi4-classical",
        }
    }

    /// The convention, for reports.
    pub fn convention(&self) -> &'static str {
        match self {
            Theory::Ising { .. } => {
                "E = -J sum_<ij> s_i s_j - h sum_i s_i, weight exp(-beta E)"
            }
            Theory::Phi4 { .. } => {
                "S = sum_<xy> (phi_x - phi_y)^2 + sum_x [m2 phi_x^2 + lambda phi_x^4], weight exp(-S)"
            }
        }
    }
}

/// Neighbours of every site in one flat table: site `i`'s neighbours are
/// `table[offset[i]..offset[i + 1]]` (a bond listed twice, as on a periodic direction of
/// length 2, appears twice).
#[derive(Clone, Debug)]
pub struct Neighbours {
    offset: Vec<u32>,
    table: Vec<u32>,
    /// Every bond once, `(i, j)` with `i < j`, in the order of [`Self::bonds`].
    bonds: Vec<(u32, u32)>,
}

impl Neighbours {
    pub fn new(lattice: &Lattice) -> Self {
        let n = lattice.n_sites();
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); n];
        for &(i, j) in lattice.bonds() {
            lists[i].push(j as u32);
            lists[j].push(i as u32);
        }
        let mut offset = Vec::with_capacity(n + 1);
        let mut table = Vec::new();
        offset.push(0);
        for l in lists {
            table.extend(l);
            offset.push(table.len() as u32);
        }
        let mut nb = Neighbours {
            offset,
            table,
            bonds: Vec::new(),
        };
        // Site by site, the neighbours above it: the order the sums over bonds keep.
        nb.bonds = (0..n)
            .flat_map(|i| {
                nb.of(i)
                    .iter()
                    .filter(move |&&j| (j as usize) > i)
                    .map(move |&j| (i as u32, j))
            })
            .collect();
        nb
    }

    #[inline]
    pub fn of(&self, i: usize) -> &[u32] {
        &self.table[self.offset[i] as usize..self.offset[i + 1] as usize]
    }

    pub fn n_sites(&self) -> usize {
        self.offset.len() - 1
    }

    /// The largest coordination number.
    pub fn max_degree(&self) -> usize {
        (0..self.n_sites())
            .map(|i| self.of(i).len())
            .max()
            .unwrap_or(0)
    }

    /// Every bond once, as `(i, j)` with `i < j` (the lattice never joins a site to itself).
    pub fn bonds(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.bonds.iter().map(|&(i, j)| (i as usize, j as usize))
    }
}

/// Ising energy `E(s) = -J sum_<ij> s_i s_j - h sum_i s_i` of spins `s_i = +-1`.
pub fn ising_energy(nb: &Neighbours, j: f64, h: f64, s: &[i8]) -> f64 {
    let (bond, m) = ising_sums(nb, s);
    -j * bond as f64 - h * m as f64
}

/// The bond sum `B = sum_<ij> s_i s_j` and the magnetisation `M` of spins `s`, integers
/// (`E = -J B - h M`).
pub fn ising_sums(nb: &Neighbours, s: &[i8]) -> (i64, i64) {
    let bond = nb
        .bonds
        .iter()
        .map(|&(a, b)| i64::from(s[a as usize]) * i64::from(s[b as usize]))
        .sum();
    (bond, s.iter().map(|&v| i64::from(v)).sum())
}

/// phi^4 action `S(phi)`.
pub fn phi4_action(nb: &Neighbours, m2: f64, lambda: f64, phi: &[f64]) -> f64 {
    let mut s = 0.0;
    for (a, b) in nb.bonds() {
        let d = phi[a] - phi[b];
        s += d * d;
    }
    for &p in phi {
        let p2 = p * p;
        s += m2 * p2 + lambda * p2 * p2;
    }
    s
}

/// `grad[x] = dS/dphi_x = 2 sum_{y~x} (phi_x - phi_y) + 2 m2 phi_x + 4 lambda phi_x^3`.
pub fn phi4_gradient(nb: &Neighbours, m2: f64, lambda: f64, phi: &[f64], grad: &mut [f64]) {
    for (x, g) in grad.iter_mut().enumerate() {
        let p = phi[x];
        let mut d = 0.0;
        for &y in nb.of(x) {
            d += p - phi[y as usize];
        }
        *g = 2.0 * d + 2.0 * m2 * p + 4.0 * lambda * p * p * p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::Boundary;

    #[test]
    fn ising_ground_state_and_gradient_by_finite_differences() {
        let lat = Lattice::square(4, 4, Boundary::Periodic);
        let nb = Neighbours::new(&lat);
        assert_eq!(nb.bonds().count(), 32);
        let up = vec![1i8; 16];
        assert_eq!(ising_energy(&nb, 1.0, 0.5, &up), -32.0 - 8.0);
        // The periodic form: S = sum_x [-2 sum_mu phi_x phi_{x+mu} + (m2 + 2d) phi^2 + l phi^4].
        let phi: Vec<f64> = (0..16).map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.3).collect();
        let (m2, l) = (-1.3, 0.7);
        let alt: f64 = (0..16)
            .map(|x| {
                let p = phi[x];
                let nbs = lat.shift(x, (1, 0)).unwrap();
                let nbt = lat.shift(x, (0, 1)).unwrap();
                -2.0 * p * (phi[nbs] + phi[nbt]) + (m2 + 4.0) * p * p + l * p.powi(4)
            })
            .sum();
        assert!((phi4_action(&nb, m2, l, &phi) - alt).abs() < 1e-12);
        let mut g = vec![0.0; 16];
        phi4_gradient(&nb, m2, l, &phi, &mut g);
        for x in 0..16 {
            let mut p = phi.clone();
            p[x] += 1e-6;
            let up = phi4_action(&nb, m2, l, &p);
            p[x] -= 2e-6;
            let dn = phi4_action(&nb, m2, l, &p);
            assert!(((up - dn) / 2e-6 - g[x]).abs() < 1e-6);
        }
    }

    #[test]
    fn a_chain_of_two_has_a_double_bond() {
        let nb = Neighbours::new(&Lattice::chain(2, Boundary::Periodic));
        assert_eq!(nb.of(0), &[1, 1]);
        assert_eq!(nb.bonds().count(), 2);
    }
}

/// Which sites a growing cluster has reached (Wolff updates), cleared in O(1) per cluster: a
/// site is marked when its stamp equals the current generation, and starting a cluster
/// advances the generation (the stamps are zeroed only when the counter wraps).
#[derive(Clone, Debug)]
pub struct ClusterMarks {
    stamp: Vec<u32>,
    generation: u32,
}

impl ClusterMarks {
    pub fn new(n: usize) -> Self {
        ClusterMarks {
            stamp: vec![0; n],
            generation: 0,
        }
    }

    /// Starts a new cluster: no site is marked.
    pub fn new_cluster(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.fill(0);
            self.generation = 1;
        }
    }

    #[inline]
    pub fn is_marked(&self, i: usize) -> bool {
        self.stamp[i] == self.generation
    }

    #[inline]
    pub fn mark(&mut self, i: usize) {
        self.stamp[i] = self.generation;
    }
}
