//! Markov chains for phi^4, `S = sum_<xy> (phi_x - phi_y)^2 + sum_x [m2 phi_x^2 + lambda phi_x^4]`:
//! local Metropolis, hybrid Monte Carlo and the embedded-Ising Wolff update.
//!
//! - **Local Metropolis**: a sweep proposes `phi_x -> phi_x + delta u`, `u ~ U(-1, 1)`, at each
//!   site in order and accepts with `min(1, exp(-dS))`, where with `B = sum_{y~x} phi_y` and
//!   `z` the site's coordination
//!   `dS = (z + m2)(phi'^2 - phi^2) - 2 B (phi' - phi) + lambda (phi'^4 - phi^4)`.
//! - **HMC**: momenta `p ~ N(0, 1)`, `H = p^2/2 + S(phi)`, `n` leapfrog steps of size `eps`
//!   (`p -= eps/2 grad S; phi += eps p; ...`), accepted with `min(1, exp(-dH))`. Leapfrog is
//!   reversible and area-preserving, so this is exact for any fixed `eps` and `n`.
//! - **Embedded Wolff** (Brower and Tamayo, PRL 62, 1087 (1989)): the signs `s_x = sign phi_x`
//!   form an Ising model with couplings `2 |phi_x phi_y|` (the `-2 phi_x phi_y` of each bond);
//!   a cluster grows across bonds with `phi_x phi_y > 0` with probability
//!   `1 - exp(-4 phi_x phi_y)` and is flipped, `phi -> -phi`, always accepted. It only moves
//!   signs, so it is combined with local Metropolis sweeps for ergodicity.
//!
//! Step sizes are tuned during thermalisation ([`Phi4Chain::tune`]) and then fixed, so the
//! chain used for measurements is a fixed, exact Markov chain.

use rand::Rng;
use rand_distr::StandardNormal;

use super::theory::{phi4_action, phi4_gradient, ClusterMarks, Neighbours};

/// Target acceptance of local Metropolis while tuning its step.
pub const METROPOLIS_TARGET: f64 = 0.5;
/// Target acceptance of HMC while tuning its step size.
pub const HMC_TARGET: f64 = 0.8;
/// HMC trajectory length `n eps`.
pub const HMC_TRAJECTORY: f64 = 1.0;

/// The phi^4 field and the scratch space of its updates.
pub struct Phi4Chain {
    pub phi: Vec<f64>,
    nb: Neighbours,
    m2: f64,
    lambda: f64,
    /// Local Metropolis step `delta`.
    pub delta: f64,
    /// HMC step size and number of leapfrog steps.
    pub eps: f64,
    pub n_leap: usize,
    mom: Vec<f64>,
    grad: Vec<f64>,
    saved: Vec<f64>,
    marks: ClusterMarks,
    stack: Vec<u32>,
    accepted: f64,
    attempted: u64,
    /// Wolff clusters per sweep (set during tuning to about `N / mean cluster size`).
    pub clusters_per_sweep: usize,
}

impl Phi4Chain {
    /// A chain started from `phi = 0`.
    pub fn new(nb: Neighbours, m2: f64, lambda: f64) -> Self {
        let n = nb.n_sites();
        Phi4Chain {
            phi: vec![0.0; n],
            nb,
            m2,
            lambda,
            delta: 1.0,
            eps: 0.1,
            n_leap: 10,
            mom: vec![0.0; n],
            grad: vec![0.0; n],
            saved: vec![0.0; n],
            marks: ClusterMarks::new(n),
            stack: Vec::with_capacity(n),
            accepted: 0.0,
            attempted: 0,
            clusters_per_sweep: 1,
        }
    }

    pub fn n_sites(&self) -> usize {
        self.phi.len()
    }

    pub fn neighbours(&self) -> &Neighbours {
        &self.nb
    }

    pub fn action(&self) -> f64 {
        phi4_action(&self.nb, self.m2, self.lambda, &self.phi)
    }

    /// `(1/V) sum_x phi_x dS/dphi_x`, whose expectation is 1 (Schwinger-Dyson: integrate
    /// `d/dphi_x (phi_x e^{-S})` over the field).
    pub fn schwinger_dyson(&mut self) -> f64 {
        phi4_gradient(&self.nb, self.m2, self.lambda, &self.phi, &mut self.grad);
        let n = self.phi.len() as f64;
        self.phi
            .iter()
            .zip(&self.grad)
            .map(|(p, g)| p * g)
            .sum::<f64>()
            / n
    }

    /// Mean acceptance since the last reset (HMC: of trajectories; Metropolis: of site moves).
    pub fn acceptance(&self) -> f64 {
        self.accepted / self.attempted.max(1) as f64
    }

    pub fn reset_acceptance(&mut self) {
        self.accepted = 0.0;
        self.attempted = 0;
    }

    /// One local Metropolis sweep; returns its acceptance rate.
    pub fn metropolis_sweep(&mut self, rng: &mut impl Rng) -> f64 {
        let mut acc = 0u64;
        let n = self.phi.len();
        for x in 0..n {
            let p = self.phi[x];
            let nbs = self.nb.of(x);
            let mut b = 0.0;
            for &y in nbs {
                b += self.phi[y as usize];
            }
            let q = p + self.delta * (2.0 * rng.random::<f64>() - 1.0);
            let (p2, q2) = (p * p, q * q);
            let ds = (nbs.len() as f64 + self.m2) * (q2 - p2) - 2.0 * b * (q - p)
                + self.lambda * (q2 * q2 - p2 * p2);
            if ds <= 0.0 || rng.random::<f64>() < (-ds).exp() {
                self.phi[x] = q;
                acc += 1;
            }
        }
        self.accepted += acc as f64;
        self.attempted += n as u64;
        acc as f64 / n as f64
    }

    /// One HMC trajectory; returns `min(1, exp(-dH))` (the acceptance probability).
    pub fn hmc_trajectory(&mut self, rng: &mut impl Rng) -> f64 {
        let (m2, l, eps) = (self.m2, self.lambda, self.eps);
        for m in self.mom.iter_mut() {
            *m = rng.sample(StandardNormal);
        }
        self.saved.copy_from_slice(&self.phi);
        let kinetic = |mom: &[f64]| 0.5 * mom.iter().map(|p| p * p).sum::<f64>();
        let h0 = kinetic(&self.mom) + phi4_action(&self.nb, m2, l, &self.phi);
        phi4_gradient(&self.nb, m2, l, &self.phi, &mut self.grad);
        for (p, g) in self.mom.iter_mut().zip(&self.grad) {
            *p -= 0.5 * eps * g;
        }
        for step in 0..self.n_leap {
            for (f, p) in self.phi.iter_mut().zip(&self.mom) {
                *f += eps * p;
            }
            phi4_gradient(&self.nb, m2, l, &self.phi, &mut self.grad);
            let w = if step + 1 == self.n_leap { 0.5 } else { 1.0 };
            for (p, g) in self.mom.iter_mut().zip(&self.grad) {
                *p -= w * eps * g;
            }
        }
        let h1 = kinetic(&self.mom) + phi4_action(&self.nb, m2, l, &self.phi);
        let dh = h1 - h0;
        let p_acc = if dh.is_finite() {
            (-dh).exp().min(1.0)
        } else {
            0.0
        };
        if rng.random::<f64>() >= p_acc {
            self.phi.copy_from_slice(&self.saved);
        }
        self.accepted += p_acc;
        self.attempted += 1;
        p_acc
    }

    /// One embedded-Ising Wolff cluster flip; returns the cluster size.
    pub fn wolff_cluster(&mut self, rng: &mut impl Rng) -> usize {
        let n = self.phi.len();
        self.marks.new_cluster();
        let seed = rng.random_range(0..n);
        self.stack.clear();
        self.marks.mark(seed);
        self.phi[seed] = -self.phi[seed];
        self.stack.push(seed as u32);
        let mut size = 1;
        while let Some(x) = self.stack.pop() {
            let old = -self.phi[x as usize];
            for &y in self.nb.of(x as usize) {
                let y = y as usize;
                if self.marks.is_marked(y) {
                    continue;
                }
                let c = old * self.phi[y];
                if c > 0.0 && rng.random::<f64>() < 1.0 - (-4.0 * c).exp() {
                    self.marks.mark(y);
                    self.phi[y] = -self.phi[y];
                    self.stack.push(y as u32);
                    size += 1;
                }
            }
        }
        size
    }

    /// One local Metropolis sweep followed by Wolff clusters until `N` sites were flipped.
    pub fn wolff_sweep(&mut self, rng: &mut impl Rng) {
        self.metropolis_sweep(rng);
        self.wolff_clusters(rng);
    }

    /// [`Phi4Chain::clusters_per_sweep`] Wolff clusters (a fixed number: a count that
    /// depended on the cluster sizes would measure at state-dependent times, a bias); returns
    /// the sites flipped.
    pub fn wolff_clusters(&mut self, rng: &mut impl Rng) -> usize {
        (0..self.clusters_per_sweep)
            .map(|_| self.wolff_cluster(rng))
            .sum()
    }

    /// Thermalises for `sweeps` updates of `kind`, adapting the local step (towards
    /// [`METROPOLIS_TARGET`]) or the HMC step size (towards [`HMC_TARGET`], with
    /// `n eps = HMC_TRAJECTORY`) with a gain that decreases; the steps are then fixed.
    pub fn tune(&mut self, kind: Phi4Update, sweeps: usize, rng: &mut impl Rng) {
        let (mut flipped, mut clusters) = (0usize, 0usize);
        for t in 0..sweeps {
            let gain = 1.0 / (1.0 + t as f64 / 10.0).sqrt();
            match kind {
                Phi4Update::Metropolis | Phi4Update::Wolff => {
                    let a = self.metropolis_sweep(rng);
                    if kind == Phi4Update::Wolff {
                        flipped += self.wolff_clusters(rng);
                        clusters += self.clusters_per_sweep;
                        if (t + 1 == sweeps / 2 || t + 1 == sweeps) && clusters > 0 {
                            let mean = flipped as f64 / clusters as f64;
                            let n = self.phi.len() as f64;
                            self.clusters_per_sweep = ((n / mean).round() as usize).max(1);
                            (flipped, clusters) = (0, 0);
                        }
                    }
                    self.delta = (self.delta * (gain * (a - METROPOLIS_TARGET)).exp()).min(10.0);
                }
                Phi4Update::Hmc => {
                    let a = self.hmc_trajectory(rng);
                    self.eps = (self.eps * (gain * (a - HMC_TARGET)).exp()).clamp(1e-4, 1.0);
                    self.n_leap = ((HMC_TRAJECTORY / self.eps).round() as usize).max(1);
                }
            }
        }
        self.reset_acceptance();
    }
}

/// The update a phi^4 chain uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phi4Update {
    Metropolis,
    Hmc,
    Wolff,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::{Boundary, Lattice};
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn leapfrog_is_reversible_and_conserves_h_for_small_steps() {
        let nb = Neighbours::new(&Lattice::square(4, 4, Boundary::Periodic));
        let mut c = Phi4Chain::new(nb, -1.0, 0.5);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        for _ in 0..20 {
            c.metropolis_sweep(&mut rng);
        }
        c.eps = 1e-3;
        c.n_leap = 100;
        let a = c.hmc_trajectory(&mut rng);
        assert!(a > 0.999, "{a}");
    }

    #[test]
    fn tuning_reaches_the_target_acceptance() {
        let nb = Neighbours::new(&Lattice::square(8, 8, Boundary::Periodic));
        let mut c = Phi4Chain::new(nb, -4.0, 8.0);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        c.tune(Phi4Update::Hmc, 300, &mut rng);
        for _ in 0..300 {
            c.hmc_trajectory(&mut rng);
        }
        assert!(
            (c.acceptance() - HMC_TARGET).abs() < 0.1,
            "{}",
            c.acceptance()
        );
        c.tune(Phi4Update::Metropolis, 300, &mut rng);
        for _ in 0..100 {
            c.metropolis_sweep(&mut rng);
        }
        assert!((c.acceptance() - 0.5).abs() < 0.1, "{}", c.acceptance());
    }
}
