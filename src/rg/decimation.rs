//! Decimation schedules: in which order the reverse (coarse-to-fine) process reveals sites.
//!
//! - `rg`: the level of a chain site `x` is its 2-adic valuation `v2(x)` (site 0 is the top
//!   level); the steps are the top level, then each level down to the odd sites, about
//!   `log2 N + 1` steps. On an `Lx x Ly` square the level of `(x, y)` is `min(v2(x), v2(y))`;
//!   within a level the sites with both coordinates odd multiples of `2^k` come first, then the
//!   rest (the checkerboard / multigrid order), about `2 log2 L + 1` steps. Sizes that are not
//!   powers of two work the same way (levels that would be empty are skipped).
//! - `rg-colors=K`: each `rg` step split into `K` interleaved colours (the `j`-th site of a
//!   step, in site order, gets colour `j mod K`): more steps, more expressive conditionals.
//! - `autoregressive`: one site per step in site order `0, 1, ..., N-1`, the reference model
//!   whose network passes grow as `N` instead of `log N`.

use crate::error::{Error, Result};
use crate::lattice::{Lattice, Shape};

/// The order in which a reverse process reveals the sites of a lattice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    name: String,
    n_sites: usize,
    steps: Vec<Vec<usize>>,
    /// The step of each site; `steps.len()` for the sites no step reveals
    /// ([`Schedule::without_last_step`]).
    step_of_site: Vec<usize>,
    /// The sites no step reveals (left to the caller, in site order).
    unrevealed: Vec<usize>,
}

/// 2-adic valuation with `v2(0) = u32::MAX` (the origin is on every level).
fn v2(x: usize) -> u32 {
    if x == 0 {
        u32::MAX
    } else {
        x.trailing_zeros()
    }
}

impl Schedule {
    /// Parses `rg`, `rg-colors=K` (K >= 1) or `autoregressive`.
    pub fn parse(name: &str, lattice: &Lattice) -> Result<Schedule> {
        match name {
            "rg" => Ok(Self::rg(lattice)),
            "autoregressive" => Ok(Self::autoregressive(lattice)),
            _ => {
                let k = name
                    .strip_prefix("rg-colors=")
                    .and_then(|k| k.parse::<usize>().ok())
                    .filter(|&k| k >= 1)
                    .ok_or_else(|| {
                        Error::Input(format!(
                            "unknown scheme `{name}`; expected rg, rg-colors=K (K >= 1) or autoregressive"
                        ))
                    })?;
                Ok(Self::rg_colors(lattice, k))
            }
        }
    }

    /// The RG decimation schedule.
    pub fn rg(lattice: &Lattice) -> Schedule {
        Self::from_steps("rg", lattice.n_sites(), rg_steps(lattice))
    }

    /// Each RG step split into `k` interleaved colours.
    pub fn rg_colors(lattice: &Lattice, k: usize) -> Schedule {
        let mut steps = Vec::new();
        for step in rg_steps(lattice) {
            for c in 0..k {
                let part: Vec<usize> = step.iter().skip(c).step_by(k).copied().collect();
                if !part.is_empty() {
                    steps.push(part);
                }
            }
        }
        Self::from_steps(&format!("rg-colors={k}"), lattice.n_sites(), steps)
    }

    /// One site per step, in site order.
    pub fn autoregressive(lattice: &Lattice) -> Schedule {
        let n = lattice.n_sites();
        Self::from_steps("autoregressive", n, (0..n).map(|i| vec![i]).collect())
    }

    fn from_steps(name: &str, n_sites: usize, steps: Vec<Vec<usize>>) -> Schedule {
        let mut step_of_site = vec![usize::MAX; n_sites];
        for (k, step) in steps.iter().enumerate() {
            for &x in step {
                assert_eq!(step_of_site[x], usize::MAX, "site {x} revealed twice");
                step_of_site[x] = k;
            }
        }
        assert!(
            step_of_site.iter().all(|&k| k != usize::MAX),
            "a site is never revealed"
        );
        Schedule {
            name: name.to_string(),
            n_sites,
            steps,
            step_of_site,
            unrevealed: Vec::new(),
        }
    }

    /// This schedule without its last step, whose sites no step then reveals
    /// ([`Self::unrevealed`]): a model on it is a distribution over the other sites, and
    /// the caller draws the last step's sites itself (the exact heat bath of the Ising
    /// sampler, [`crate::field::variational::LastStep`]). `None` for a one-step schedule.
    pub fn without_last_step(&self) -> Option<Schedule> {
        if self.steps.len() < 2 {
            return None;
        }
        let mut steps = self.steps.clone();
        let last = steps.pop().expect("two steps or more");
        let k = steps.len();
        let mut step_of_site = self.step_of_site.clone();
        for &x in &last {
            step_of_site[x] = k;
        }
        let mut unrevealed = self.unrevealed.clone();
        unrevealed.extend(last);
        unrevealed.sort_unstable();
        Some(Schedule {
            name: self.name.clone(),
            n_sites: self.n_sites,
            steps,
            step_of_site,
            unrevealed,
        })
    }

    /// The sites no step reveals (empty for the schemes of [`Self::parse`]).
    pub fn unrevealed(&self) -> &[usize] {
        &self.unrevealed
    }

    /// The scheme's name as given on the command line.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn n_sites(&self) -> usize {
        self.n_sites
    }

    /// Number of reverse steps (network passes to sample or evaluate `log p`).
    pub fn n_steps(&self) -> usize {
        self.steps.len()
    }

    /// Sites revealed at each step, coarsest first.
    pub fn steps(&self) -> &[Vec<usize>] {
        &self.steps
    }

    /// The step at which each site is revealed (`n_steps` for the [`Self::unrevealed`] sites).
    pub fn step_of_site(&self) -> &[usize] {
        &self.step_of_site
    }

    /// Whether site `x` is already revealed when step `k` is drawn (i.e. conditioned on).
    pub fn revealed_before(&self, x: usize, k: usize) -> bool {
        self.step_of_site[x] < k
    }
}

/// The `rg` steps of a chain or square, coarsest first.
fn rg_steps(lattice: &Lattice) -> Vec<Vec<usize>> {
    let n = lattice.n_sites();
    let level = |i: usize| -> (u32, u32) {
        let (x, y) = lattice.coords(i);
        match lattice.shape() {
            Shape::Chain => (v2(x), 0),
            // (level, sub-step): both coordinates on the level's odd multiples come first.
            Shape::Square => {
                let (a, b) = (v2(x), v2(y));
                let l = a.min(b);
                (l, u32::from(a != b))
            }
        }
    };
    let mut keys: Vec<(u32, u32)> = (0..n).map(level).collect();
    keys.sort_unstable_by(|p, q| q.0.cmp(&p.0).then(p.1.cmp(&q.1)));
    keys.dedup();
    keys.iter()
        .map(|&key| (0..n).filter(|&i| level(i) == key).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::Boundary;

    #[test]
    fn chain_levels_follow_the_2_adic_valuation() {
        let s = Schedule::rg(&Lattice::chain(16, Boundary::Periodic));
        assert_eq!(
            s.steps(),
            &[
                vec![0],
                vec![8],
                vec![4, 12],
                vec![2, 6, 10, 14],
                vec![1, 3, 5, 7, 9, 11, 13, 15]
            ]
        );
        let s = Schedule::rg(&Lattice::chain(12, Boundary::Periodic));
        assert_eq!(
            s.steps(),
            &[
                vec![0],
                vec![8],
                vec![4],
                vec![2, 6, 10],
                vec![1, 3, 5, 7, 9, 11]
            ]
        );
    }

    #[test]
    fn square_uses_the_checkerboard_order() {
        let lat = Lattice::square(4, 4, Boundary::Periodic);
        let s = Schedule::rg(&lat);
        let at = |x, y| lat.index(x, y);
        assert_eq!(s.steps()[0], vec![at(0, 0)]);
        assert_eq!(s.steps()[1], vec![at(2, 2)]);
        assert_eq!(s.steps()[2], vec![at(2, 0), at(0, 2)]);
        assert_eq!(s.steps()[3].len(), 4); // (1,1), (3,1), (1,3), (3,3)
        assert_eq!(s.steps()[4].len(), 8);
        assert_eq!(s.n_steps(), 5);
        assert_eq!(
            Schedule::rg(&Lattice::square(8, 8, Boundary::Periodic)).n_steps(),
            7
        );
    }

    #[test]
    fn every_schedule_reveals_every_site_once() {
        for lat in [
            Lattice::chain(10, Boundary::Periodic),
            Lattice::square(6, 6, Boundary::Periodic),
            Lattice::square(5, 3, Boundary::Open),
        ] {
            for name in ["rg", "rg-colors=2", "rg-colors=3", "autoregressive"] {
                let s = Schedule::parse(name, &lat).unwrap();
                let mut seen: Vec<usize> = s.steps().concat();
                seen.sort_unstable();
                assert_eq!(seen, (0..lat.n_sites()).collect::<Vec<_>>(), "{name}");
                for (k, step) in s.steps().iter().enumerate() {
                    for &x in step {
                        assert!(!s.revealed_before(x, k));
                        assert!(s.revealed_before(x, k + 1));
                    }
                }
            }
        }
        let lat = Lattice::chain(16, Boundary::Periodic);
        assert_eq!(Schedule::parse("rg-colors=2", &lat).unwrap().n_steps(), 8);
        assert_eq!(
            Schedule::parse("autoregressive", &lat).unwrap().n_steps(),
            16
        );
        assert!(Schedule::parse("rg-colors=0", &lat).is_err());
        assert!(Schedule::parse("carosso", &lat).is_err());
    }

    #[test]
    fn without_last_step_leaves_the_last_steps_sites_unrevealed() {
        let lat = Lattice::square(4, 4, Boundary::Periodic);
        for name in ["rg", "rg-colors=2", "autoregressive"] {
            let full = Schedule::parse(name, &lat).unwrap();
            assert!(full.unrevealed().is_empty());
            let s = full.without_last_step().unwrap();
            let k = full.n_steps() - 1;
            assert_eq!(s.n_steps(), k, "{name}");
            assert_eq!(s.steps(), &full.steps()[..k], "{name}");
            let mut last = full.steps()[k].clone();
            last.sort_unstable();
            assert_eq!(s.unrevealed(), last.as_slice(), "{name}");
            for x in 0..lat.n_sites() {
                let want = if last.contains(&x) {
                    k
                } else {
                    full.step_of_site()[x]
                };
                assert_eq!(s.step_of_site()[x], want, "{name} site {x}");
                assert_eq!(s.revealed_before(x, k), !last.contains(&x), "{name}");
            }
        }
        // The rg schedule's last step on an even square is one checkerboard sublattice.
        let s = Schedule::rg(&lat).without_last_step().unwrap();
        assert!(s.unrevealed().iter().all(|&x| {
            let (a, b) = lat.coords(x);
            (a + b) % 2 == 1
        }));
        assert_eq!(s.unrevealed().len(), 8);
        let one = Schedule::rg(&Lattice::chain(1, Boundary::Open));
        assert!(one.without_last_step().is_none());
    }
}
