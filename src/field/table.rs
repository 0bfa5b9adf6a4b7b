//! Lookup-table conditionals for the RG masked diffusion of the Ising model
//! (`rgdiff sample --network table`).
//!
//! The same reverse process as [`super::variational`] (the `rg` schedule, coarse to fine,
//! its last step, one checkerboard sublattice, drawn by the exact heat bath), with each step
//! split into colours ([`split_steps`]) and each conditional a table instead of a network: a
//! site `x` reads the states of its `C` nearest sites drawn before it (periodic distance,
//! ties broken by direction; at the coarse steps these lie `2^level` apart, so every step
//! sees its own scale) or, where it has been drawn already, its Markov blanket once the
//! heat-bath sites are summed out (the other neighbours of its heat-bath neighbours): on the
//! square the last modelled sub-step reads its 8 blanket sites, of which `q` can be exactly a
//! function, instead of 12 nearest sites, and
//!
//! `q(s_x = up | earlier sites) = sigmoid(theta_T[c])`,
//!
//! `c` the context's bits (bit `i` set when its `i`-th site is down) and `T` the table of
//! every site whose context sites lie at the same offsets (the translations of one sub-step
//! share one table). For binary spins a table over `C` sites is the most general function of
//! them: a convolutional network of the same receptive field computes a compressed form of
//! it at far greater cost (a site here costs `C` loads and one lookup, about 6 ns against
//! 60 to 100 ns for the host network, and the finer colour order costs nothing).
//!
//! **Symmetries** ([`Tying`]). At `h = 0` the tables are kept odd, `theta_T[!c] =
//! -theta_T[c]`, so `q(-s) = q(s)` exactly: the proposal is flip-symmetric with one
//! evaluation and no mixture. Entries that a rotation or reflection of the square maps onto
//! each other share one logit (more samples per logit, the same cost per draw).
//!
//! **Training** minimises the variational free energy `F = E_q[beta E + log q] >= -log Z`
//! by the score-function gradient, as the network does; for a table entry `e` it is
//! `dF/dtheta_e = E_q[(f - mean f) sum_{x reads e} ([s_x = up] - q_e)]`,
//! `f = beta E + log q`, accumulated on the host with no autograd, averaged over the tied
//! entries and applied by Adam (as [`crate::vmc::adam`]). The annealing, learning-rate
//! schedule and the `(seed, iteration, chunk)` generators are those of the network.
//!
//! Measured on 16x16 at `beta_c` (2,000 iterations of 512 samples, 7 s on one core):
//! `KL(q || p)` 0.033 nats, acceptance 0.88 against 0.55 for the best network, a draw in
//! about 1.6 us.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::npy;
use super::theory::Neighbours;
use super::variational::TrainConfig;
use super::variational::{
    free_energy, independence_chain, ChainSetup, Drawn, MhResult, TrainStats,
};
use crate::error::{Error, Result};
use crate::lattice::{Boundary, Lattice};
use crate::parallel::chunk_rng;
use crate::rg::Schedule;

/// Shape of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableConfig {
    /// Context sites `C` per conditional (at most 20: a table has `2^C` entries).
    pub context: usize,
    /// Colours each step of the `rg` schedule is split into (1, 2 or 4; see [`split_steps`]).
    pub colours: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            context: 12,
            colours: 2,
        }
    }
}

/// Splits each step of an `rg` schedule into `colours` sub-steps (1: none), drawn one after
/// the other. A step's sites at RG level `l` (coordinates multiples of `a = 2^l`, not both
/// of `2a`) are the centres of the cells of side `2a` (both coordinates odd multiples of `a`)
/// or the midpoints of their edges (one odd multiple); `(i, j) = (x >> (l + 1), y >> (l + 1))`
/// is the site's cell. With 2 colours the centres split by `(i + j) mod 2` (a checkerboard of
/// cells: `2 sqrt(2) a` apart instead of `2a`) and the midpoints by orientation (edges along
/// x, then along y: `2a` apart instead of `sqrt(2) a`); with 4 colours the centres split by
/// `(i mod 2, j mod 2)` (`4a` apart) and each orientation of midpoints by `(i + j) mod 2`.
/// Sites of one step are drawn independently given the earlier steps, but the model they
/// approximate couples them (after the heat-bath sites are summed out, nearby sites of a step
/// interact through the decimated plaquettes); a table costs the same per site however many
/// steps there are, so the finer order is free. Measured on 16x16 at `beta_c` (default
/// training): `KL(q || p)` 0.36 nats without colours, 0.09 with the centres' checkerboard
/// alone, 0.033 with both splits (4 colours: 0.034).
pub fn split_steps(lattice: &Lattice, steps: &[Vec<usize>], colours: usize) -> Vec<Vec<usize>> {
    let tz = |v: usize| {
        if v == 0 {
            31
        } else {
            v.trailing_zeros().min(31)
        }
    };
    let mut out = Vec::new();
    for step in steps {
        let mut parts: Vec<Vec<usize>> = vec![Vec::new(); colours.max(1)];
        for &x in step {
            let (cx, cy) = lattice.coords(x);
            let l = tz(cx).min(tz(cy));
            let sh = (l + 1).min(31);
            let (i, j) = (cx >> sh, cy >> sh);
            // Odd multiples of a: the coordinates whose valuation is the level.
            let (ox, oy) = (tz(cx) == l, tz(cy) == l);
            let c = match (colours, ox && oy) {
                (2, true) => (i + j) % 2,
                (2, false) => usize::from(oy && !ox),
                (4, true) => i % 2 + 2 * (j % 2),
                (4, false) => (i + j) % 2 + 2 * usize::from(oy && !ox),
                _ => 0,
            };
            parts[c].push(x);
        }
        out.extend(parts.into_iter().filter(|p| !p.is_empty()));
    }
    out
}

/// One site of the last step, drawn by its heat bath: its `deg` neighbours, padded to 4
/// with site 0 (masked off when counted).
#[derive(Clone, Copy, Debug)]
struct HeatSite {
    x: u32,
    deg: u32,
    nbs: [u32; 4],
}

/// One modelled site, in draw order.
#[derive(Clone, Copy, Debug)]
struct SitePlan {
    x: u32,
    /// First entry of its table.
    base: u32,
    /// Its context sites: `ctx[start .. start + len]`.
    start: u32,
    len: u32,
}

/// The tables of one Ising model and how each site reads them.
pub struct IsingTable {
    n: usize,
    j: f64,
    h: f64,
    nb: Neighbours,
    plan: Vec<SitePlan>,
    ctx: Vec<u32>,
    /// The sites of the last step, drawn by their heat bath.
    heat_plan: Vec<HeatSite>,
    /// The logits `theta`, all tables one after the other.
    pub theta: Vec<f64>,
    /// `q(up)` of every entry (from `theta`), for the gradient.
    p_up: Vec<f64>,
    /// What a draw reads of every entry: its threshold and logarithms, in one 32-byte slot
    /// so that a site costs one cache line (2,000 iterations at L = 16 hold 29,023 entries,
    /// 0.9 MB, in L2).
    cond: Vec<Entry>,
    /// `q(up)` and the logarithms of the heat-bath sites, by neighbour sum `sigma + z`.
    heat: Vec<Entry>,
    z: i32,
    /// Which entries share one logit.
    tying: Tying,
    /// Every bond joins a heat-bath site to a modelled one (see [`Self::draw_row`]).
    bipartite: bool,
}

/// Entries tied by the point symmetries of the square and, at `h = 0`, the spin flip:
/// `theta_e = sign_e theta_{orbit(e)}`. A rotation or reflection `g` maps a table whose
/// context offsets are `K` onto the table with offsets `g(K)` (where one exists; a context
/// cut inside a shell of equidistant sites may have none), context bit `i` onto the bit of
/// `g(K_i)`; the flip maps entry `c` of a table onto `!c` with the opposite sign (so `q(-s) =
/// q(s)`). An orbit that contains an entry with both signs is zero. The tables stay tied
/// because their gradients are averaged over orbits (signs applied) before each step.
struct Tying {
    orbit: Vec<u32>,
    sign: Vec<f64>,
    /// Entries per orbit, 0 for the orbits held at zero.
    size: Vec<f64>,
}

impl Tying {
    fn new(
        tables: &[(usize, usize)],
        keys: &HashMap<Vec<(i64, i64)>, usize>,
        (lx, ly, periodic): (usize, usize, bool),
        flip: bool,
    ) -> Tying {
        let total: usize = tables.iter().map(|&(_, bits)| 1usize << bits).sum();
        let mut uf = SignedUnion::new(total);
        let maps: [PointMap; 7] = [
            |x, y| (-y, x),
            |x, y| (-x, -y),
            |x, y| (y, -x),
            |x, y| (-x, y),
            |x, y| (x, -y),
            |x, y| (y, x),
            |x, y| (-y, -x),
        ];
        for (key, &t) in keys {
            let (base, bits) = tables[t];
            for g in maps {
                let mut image: Vec<(i64, i64)> = key
                    .iter()
                    .map(|&(dx, dy)| {
                        let (a, b) = g(dx, dy);
                        (wrap(a, lx, periodic), wrap(b, ly, periodic))
                    })
                    .collect();
                let moved = image.clone();
                image.sort_unstable_by_key(|&(dx, dy)| (dx * dx + dy * dy, dy, dx));
                let Some(&t2) = keys.get(&image) else {
                    continue;
                };
                let base2 = tables[t2].0;
                let pos: Vec<usize> = moved
                    .iter()
                    .map(|o| image.iter().position(|i| i == o).expect("same set"))
                    .collect();
                for c in 0..1usize << bits {
                    let mut c2 = 0;
                    for (i, &p) in pos.iter().enumerate() {
                        c2 |= ((c >> i) & 1) << p;
                    }
                    uf.union(base + c, base2 + c2, 1);
                }
            }
            if flip {
                let mask = (1usize << bits) - 1;
                for c in 0..=mask {
                    uf.union(base + c, base + (!c & mask), -1);
                }
            }
        }
        let mut id = vec![u32::MAX; total];
        let mut orbit = vec![0u32; total];
        let mut sign = vec![0.0; total];
        let mut size: Vec<f64> = Vec::new();
        for e in 0..total {
            let (r, p) = uf.find(e);
            if id[r] == u32::MAX {
                id[r] = size.len() as u32;
                size.push(0.0);
            }
            orbit[e] = id[r];
            sign[e] = f64::from(p);
            if !uf.zero[r] {
                size[id[r] as usize] += 1.0;
            }
        }
        Tying { orbit, sign, size }
    }

    /// Averages `g` over every orbit (signs applied) and writes it back to its entries.
    fn tie(&self, g: &mut [f64]) {
        let mut acc = vec![0.0; self.size.len()];
        for ((&o, &s), &v) in self.orbit.iter().zip(&self.sign).zip(g.iter()) {
            acc[o as usize] += s * v;
        }
        for ((&o, &s), v) in self.orbit.iter().zip(&self.sign).zip(g.iter_mut()) {
            let n = self.size[o as usize];
            *v = if n > 0.0 {
                s * acc[o as usize] / n
            } else {
                0.0
            };
        }
    }
}

/// The offset `d` along a direction of length `len`, wrapped into `[-len/2, len/2)` when
/// periodic.
fn wrap(d: i64, len: usize, periodic: bool) -> i64 {
    let l = len as i64;
    if periodic {
        (d + l / 2).rem_euclid(l) - l / 2
    } else {
        d
    }
}

/// A rotation or reflection of the square acting on an offset `(dx, dy)`.
type PointMap = fn(i64, i64) -> (i64, i64);

/// Union-find over entries with a relative sign: `theta_a = sign theta_b` for joined entries.
struct SignedUnion {
    parent: Vec<u32>,
    /// Sign relative to the parent.
    sign: Vec<i8>,
    /// Roots whose orbit holds an entry with both signs.
    zero: Vec<bool>,
}

impl SignedUnion {
    fn new(n: usize) -> Self {
        SignedUnion {
            parent: (0..n as u32).collect(),
            sign: vec![1; n],
            zero: vec![false; n],
        }
    }

    /// The root of `e` and the sign of `e` relative to it (compressing the path).
    fn find(&mut self, e: usize) -> (usize, i8) {
        let mut path = Vec::new();
        let mut x = e;
        while self.parent[x] as usize != x {
            path.push(x);
            x = self.parent[x] as usize;
        }
        // Walk back from the node nearest the root, accumulating signs.
        let mut acc = 1i8;
        for &y in path.iter().rev() {
            acc *= self.sign[y];
            self.sign[y] = acc;
            self.parent[y] = x as u32;
        }
        (x, if path.is_empty() { 1 } else { self.sign[e] })
    }

    /// Joins `a` and `b` with `theta_a = s theta_b`.
    fn union(&mut self, a: usize, b: usize, s: i8) {
        let (ra, pa) = self.find(a);
        let (rb, pb) = self.find(b);
        if ra == rb {
            if pa != s * pb {
                self.zero[ra] = true;
            }
            return;
        }
        // theta_ra = pa theta_a = pa s theta_b = pa s pb theta_rb.
        self.parent[ra] = rb as u32;
        self.sign[ra] = pa * s * pb;
        let z = self.zero[ra];
        self.zero[rb] |= z;
    }
}

/// One conditional as a draw reads it: the threshold of `q(up)` ([`up_threshold`]) and
/// `[log q(up), log q(down)]` (indexed by the state).
#[derive(Clone, Copy, Debug, Default)]
#[repr(align(32))]
struct Entry {
    thr: u64,
    log: [f64; 2],
}

impl Entry {
    /// The conditional `q(up) = sigmoid(a)`.
    fn of_logit(a: f64) -> Entry {
        Entry {
            thr: up_threshold(sigmoid(a)),
            log: [-softplus(-a), -softplus(a)],
        }
    }

    /// Draws a state, `0` up or `1` down, from 53 random bits: `u >= q(up)` for the uniform
    /// `u = (bits >> 11) 2^-53` of `rng.random::<f64>()`.
    #[inline]
    fn draw(&self, bits: u64) -> u8 {
        u8::from(bits >> 11 >= self.thr)
    }
}

/// `1 / (1 + e^-a)`.
fn sigmoid(a: f64) -> f64 {
    1.0 / (1.0 + (-a).exp())
}

/// `sum_i row[ctx_i] 2^i`, the entry of a context of `K` sites (`K` known at compile time
/// so that the loop unrolls: a sixth faster draw at `K = 12` than the loop over a slice).
///
/// # Safety
/// Every `ctx_i < row.len()`.
#[inline(always)]
unsafe fn gather<const K: usize>(ctx: &[u32; K], row: &[u8]) -> usize {
    let mut c = 0usize;
    for (i, &y) in ctx.iter().enumerate() {
        debug_assert!((y as usize) < row.len());
        // SAFETY: the caller's contract.
        c |= (unsafe { *row.get_unchecked(y as usize) } as usize) << i;
    }
    c
}

/// `ceil(p 2^53)`: with `u = k 2^-53` the uniform of `rng.random::<f64>()` (`k` the top 53
/// bits of a `u64`), `u >= p` exactly when `k >= ceil(p 2^53)` (`p 2^53` is exact in `f64`),
/// so a draw compares integers and makes the same choice as the floating-point test.
fn up_threshold(p: f64) -> u64 {
    (p * (1u64 << 53) as f64).ceil() as u64
}

/// `log(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// The draws of a training iteration.
struct Draws {
    /// States, `0` up and `1` down, one row of `N` per configuration.
    states: Vec<u8>,
    /// `log q` and `E` of each configuration.
    log_q: Vec<f64>,
    energy: Vec<f64>,
    /// The entry each modelled site read, one row per configuration (draw order).
    entries: Vec<u32>,
}

impl IsingTable {
    /// Tables for the Ising model `E = -J sum_<xy> s_x s_y - h sum_x s_x` at `beta` on
    /// `lattice`, all logits zero (`q` uniform).
    pub fn new(
        lattice: &Lattice,
        (beta, j, h): (f64, f64, f64),
        cfg: TableConfig,
    ) -> Result<IsingTable> {
        if !matches!(cfg.colours, 1 | 2 | 4) {
            return Err(Error::Input(format!(
                "table colours {}: expected 1, 2 or 4",
                cfg.colours
            )));
        }
        if cfg.context > 20 {
            return Err(Error::Input(format!(
                "table context {}: expected at most 20 sites",
                cfg.context
            )));
        }
        let n = lattice.n_sites();
        let nb = Neighbours::new(lattice);
        let full = Schedule::rg(lattice);
        let schedule = full.without_last_step().ok_or_else(|| {
            Error::Input("a lattice of one site has nothing for tables to model".into())
        })?;
        let heat_bath = schedule.unrevealed().to_vec();
        let last: std::collections::HashSet<usize> = heat_bath.iter().copied().collect();
        if heat_bath
            .iter()
            .any(|&x| nb.of(x).iter().any(|&y| last.contains(&(y as usize))))
        {
            return Err(Error::Input(format!(
                "the rg schedule's last step on this {}x{} lattice has neighbouring sites; \
                 the table model needs a bipartite lattice (even sides when periodic)",
                lattice.extent()[0],
                lattice.extent()[1]
            )));
        }
        let [lx, ly] = lattice.extent();
        let periodic = lattice.boundary() == Boundary::Periodic;
        let sub_steps = split_steps(lattice, schedule.steps(), cfg.colours);
        let mut step_of = vec![usize::MAX; n];
        for (k, step) in sub_steps.iter().enumerate() {
            for &x in step {
                step_of[x] = k;
            }
        }
        let mut keys: HashMap<Vec<(i64, i64)>, usize> = HashMap::new();
        let mut tables: Vec<(usize, usize)> = Vec::new();
        let mut total = 0usize;
        let mut plan = Vec::new();
        let mut ctx = Vec::new();
        for (k, step) in sub_steps.iter().enumerate() {
            for &x in step {
                let (x0, y0) = lattice.coords(x);
                let mut cand: Vec<(i64, i64, i64, usize)> = (0..n)
                    .filter(|&y| step_of[y] < k)
                    .map(|y| {
                        let (x1, y1) = lattice.coords(y);
                        let (dx, dy) = (
                            wrap(x1 as i64 - x0 as i64, lx, periodic),
                            wrap(y1 as i64 - y0 as i64, ly, periodic),
                        );
                        (dx * dx + dy * dy, dy, dx, y)
                    })
                    .collect();
                cand.sort_unstable();
                // x's Markov blanket once the heat-bath sites are summed out: the other
                // neighbours of its heat-bath neighbours and its own modelled neighbours.
                // When all of it is drawn before x, q(s_x | blanket) can be exact, and the
                // other earlier sites carry nothing more.
                let blanket: std::collections::HashSet<usize> = nb
                    .of(x)
                    .iter()
                    .flat_map(|&b| {
                        let b = b as usize;
                        if last.contains(&b) {
                            nb.of(b).to_vec()
                        } else {
                            vec![b as u32]
                        }
                    })
                    .map(|y| y as usize)
                    .filter(|&y| y != x)
                    .collect();
                if blanket.len() <= cfg.context && blanket.iter().all(|&y| step_of[y] < k) {
                    cand.retain(|c| blanket.contains(&c.3));
                } else {
                    cand.truncate(cfg.context);
                }
                let key: Vec<(i64, i64)> = cand.iter().map(|c| (c.2, c.1)).collect();
                let bits = key.len();
                let t = *keys.entry(key).or_insert_with(|| {
                    tables.push((total, bits));
                    total += 1 << bits;
                    tables.len() - 1
                });
                let start = ctx.len() as u32;
                ctx.extend(cand.iter().map(|c| c.3 as u32));
                plan.push(SitePlan {
                    x: x as u32,
                    base: tables[t].0 as u32,
                    start,
                    len: bits as u32,
                });
            }
        }
        let bipartite = nb
            .bonds()
            .all(|(a, b)| last.contains(&a) != last.contains(&b));
        let heat_plan: Vec<HeatSite> = heat_bath
            .iter()
            .map(|&x| {
                let nbs = nb.of(x);
                assert!(
                    nbs.len() <= 4,
                    "chains and squares have at most 4 neighbours"
                );
                let mut padded = [0; 4];
                padded[..nbs.len()].copy_from_slice(nbs);
                HeatSite {
                    x: x as u32,
                    deg: nbs.len() as u32,
                    nbs: padded,
                }
            })
            .collect();
        let tying = Tying::new(&tables, &keys, (lx, ly, periodic), h == 0.0);
        // `states_of` and `heat_index` read the states of context sites and neighbours
        // unchecked.
        assert!(ctx.iter().all(|&y| (y as usize) < n));
        assert!(heat_plan
            .iter()
            .all(|h| h.nbs.iter().all(|&y| (y as usize) < n)));
        let mut t = IsingTable {
            n,
            j,
            h,
            nb,
            plan,
            ctx,
            heat_plan,
            theta: vec![0.0; total],
            p_up: Vec::new(),
            cond: Vec::new(),
            heat: Vec::new(),
            z: 0,
            tying,
            bipartite,
        };
        t.z = t.nb.max_degree() as i32;
        t.heat = t.heat_at(beta);
        t.refresh();
        Ok(t)
    }

    /// Entries of all tables together.
    pub fn n_entries(&self) -> usize {
        self.theta.len()
    }

    /// The heat-bath conditionals at `beta` by neighbour sum `sigma = -z ..= z`:
    /// `q(up) = sigmoid(2 beta (J sigma + h))`.
    fn heat_at(&self, beta: f64) -> Vec<Entry> {
        (-self.z..=self.z)
            .map(|sigma| Entry::of_logit(2.0 * beta * (self.j * f64::from(sigma) + self.h)))
            .collect()
    }

    /// Recomputes the probabilities from `theta`.
    fn refresh(&mut self) {
        self.p_up = self.theta.iter().map(|&t| sigmoid(t)).collect();
        self.cond = self.theta.iter().map(|&t| Entry::of_logit(t)).collect();
    }

    /// The entry site `p` reads in configuration `row`.
    #[inline]
    fn entry(&self, p: &SitePlan, row: &[u8]) -> usize {
        p.base as usize
            + self.states_of(&self.ctx[p.start as usize..(p.start + p.len) as usize], row)
    }

    /// `sum_i row[sites_i] 2^i` for context sites (at most 20), by [`gather`] unrolled
    /// for their number.
    #[inline(always)]
    fn states_of(&self, sites: &[u32], row: &[u8]) -> usize {
        assert_eq!(row.len(), self.n);
        // SAFETY: context sites are lattice sites, `y < n` (asserted in `new`), and `row`
        // holds `n` states (asserted above).
        macro_rules! unrolled {
            ($($k:literal)*) => {
                match sites.len() {
                    $($k => unsafe { gather::<$k>(sites.try_into().unwrap(), row) },)*
                    _ => unreachable!("contexts hold at most 20 sites"),
                }
            };
        }
        unrolled!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20)
    }

    /// Draws one configuration into `row` from `rng`, with the heat baths `heat`; writes
    /// the entry each modelled site read (with `ENTRIES`, for the gradient) and returns
    /// `(log q, E)`. On a bipartite lattice whose last step is one side (every bond joins a
    /// heat-bath site to a modelled one) the energy comes from the heat baths' neighbour
    /// sums, `E = -J sum_{x last} s_x sigma_x - h M`, without a pass over the bonds.
    fn draw_row<const ENTRIES: bool>(
        &self,
        row: &mut [u8],
        entries: &mut [u32],
        heat: &[Entry],
        rng: &mut impl Rng,
    ) -> (f64, f64) {
        let mut lq = 0.0;
        let mut down = 0u32;
        // The plan is in draw order: a site's context was drawn before it.
        for (i, p) in self.plan.iter().enumerate() {
            let e = self.entry(p, row);
            if ENTRIES {
                entries[i] = e as u32;
            }
            let q = &self.cond[e];
            let s = q.draw(rng.next_u64());
            row[p.x as usize] = s;
            down += u32::from(s);
            lq += q.log[s as usize];
        }
        let mut bond = 0i32;
        for site in &self.heat_plan {
            let k = self.heat_index(row, site);
            let q = &heat[k];
            let s = q.draw(rng.next_u64());
            row[site.x as usize] = s;
            down += u32::from(s);
            lq += q.log[s as usize];
            // s_x sigma_x, sigma_x = k - z.
            bond += (1 - 2 * i32::from(s)) * (k as i32 - self.z);
        }
        let energy = if self.bipartite {
            let m = self.n as i32 - 2 * down as i32;
            -self.j * f64::from(bond) - self.h * f64::from(m)
        } else {
            self.energy(row)
        };
        (lq, energy)
    }

    /// `log q` of the configuration `row`, writing the entries its modelled sites read.
    fn eval_row(&self, row: &[u8], entries: &mut [u32], heat: &[Entry]) -> f64 {
        let mut lq = 0.0;
        for (p, slot) in self.plan.iter().zip(entries.iter_mut()) {
            let e = self.entry(p, row);
            *slot = e as u32;
            lq += self.cond[e].log[row[p.x as usize] as usize];
        }
        for site in &self.heat_plan {
            lq += heat[self.heat_index(row, site)].log[row[site.x as usize] as usize];
        }
        lq
    }

    /// The heat-bath entry of a site: `sigma + z`, `sigma = sum_y s_y = deg - 2 #{down}`
    /// over its `deg` neighbours (the padding's states gathered, then masked off).
    #[inline(always)]
    fn heat_index(&self, row: &[u8], site: &HeatSite) -> usize {
        assert_eq!(row.len(), self.n);
        // SAFETY: neighbours and padding are lattice sites, `y < n` (asserted in `new`),
        // and `row` holds `n` states (asserted above).
        let bits = unsafe { gather::<4>(&site.nbs, row) } & ((1 << site.deg) - 1);
        (site.deg as i32 - 2 * bits.count_ones() as i32 + self.z) as usize
    }

    /// `E(s)` of a row of states.
    pub fn energy(&self, row: &[u8]) -> f64 {
        let bond: i32 = self
            .nb
            .bonds()
            .map(|(a, b)| 1 - 2 * i32::from(row[a] ^ row[b]))
            .sum();
        let m: i32 = row.iter().map(|&v| 1 - 2 * i32::from(v)).sum();
        -self.j * f64::from(bond) - self.h * f64::from(m)
    }

    /// Draws `b` configurations with `rng`, one after the other, at the model's `beta`, with
    /// their `log q` and energies.
    pub fn draw_with(&self, b: usize, rng: &mut impl Rng) -> Drawn {
        let mut states = vec![0u8; b * self.n];
        let (log_q, energy) = states
            .chunks_mut(self.n)
            .map(|row| self.draw_row::<false>(row, &mut [], &self.heat, rng))
            .unzip();
        Drawn {
            states,
            log_q,
            energy: Some(energy),
        }
    }

    /// The draws of a training iteration: `b` configurations with the heat baths at
    /// `beta_t`, in [`TRAIN_CHUNKS`] chunks of consecutive rows, chunk `c` from
    /// `chunk_rng(seed, iter, c)` (in parallel; the draws do not depend on the thread count).
    fn draw_training(&self, b: usize, beta_t: f64, seed: u64, iter: usize) -> Draws {
        let (n, m) = (self.n, self.plan.len());
        let heat = self.heat_at(beta_t);
        let mut states = vec![0u8; b * n];
        let mut entries = vec![0u32; b * m];
        let mut out = vec![(0.0, 0.0); b];
        let per = b.div_ceil(TRAIN_CHUNKS);
        states
            .par_chunks_mut(per * n)
            .zip(entries.par_chunks_mut(per * m))
            .zip(out.par_chunks_mut(per))
            .enumerate()
            .for_each(|(c, ((s, e), o))| {
                let mut rng = chunk_rng(seed, iter, c);
                for ((row, ent), o) in s.chunks_mut(n).zip(e.chunks_mut(m)).zip(o.iter_mut()) {
                    *o = self.draw_row::<true>(row, ent, &heat, &mut rng);
                }
            });
        let (log_q, energy) = out.into_iter().unzip();
        Draws {
            states,
            log_q,
            energy,
            entries,
        }
    }

    /// `log q` of one configuration (a row of states).
    pub fn log_q_one(&self, row: &[u8]) -> f64 {
        let mut ent = vec![0u32; self.plan.len()];
        self.eval_row(row, &mut ent, &self.heat)
    }

    /// `log q` of configurations (rows of states), in parallel.
    pub fn log_q(&self, states: &[u8]) -> Vec<f64> {
        states
            .par_chunks(self.n)
            .map(|r| self.log_q_one(r))
            .collect()
    }

    /// `dF/dtheta = (1 / B) sum_b (f_b - mean f) sum_{x of b} ([s_x = up] - q_e(x))`, `e(x)`
    /// the entry site `x` read; averaged over the tied entries ([`Tying::tie`]), so that the
    /// ties hold.
    fn gradient(&self, d: &Draws, f: &[f64], mean: f64) -> Vec<f64> {
        let (n, m) = (self.n, self.plan.len());
        let b = f.len() as f64;
        let mut grad = vec![0.0; self.theta.len()];
        for ((row, ent), fv) in d.states.chunks(n).zip(d.entries.chunks(m)).zip(f) {
            let c = (fv - mean) / b;
            for (p, &e) in self.plan.iter().zip(ent) {
                let up = f64::from(u8::from(row[p.x as usize] == 0));
                grad[e as usize] += c * (up - self.p_up[e as usize]);
            }
        }
        self.tying.tie(&mut grad);
        grad
    }
}

/// Chunks of a training batch, each with its own generator.
pub const TRAIN_CHUNKS: usize = 16;

/// Adam over the flat logits: the update of [`crate::vmc::adam`] (no weight decay),
/// `m <- b1 m + (1 - b1) g`, `v <- b2 v + (1 - b2) g^2`,
/// `theta <- theta - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
struct TableAdam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: u64,
}

impl TableAdam {
    fn new(len: usize) -> Self {
        TableAdam {
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
        }
    }

    fn step(&mut self, theta: &mut [f64], grad: &[f64], lr: f64) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (((th, m), v), g) in theta.iter_mut().zip(&mut self.m).zip(&mut self.v).zip(grad) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *th -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
    }
}

/// The table model of one Ising model with its training state.
pub struct TableModel {
    pub table: IsingTable,
    adam: TableAdam,
    pub cfg: TrainConfig,
    /// Training iterations completed.
    pub iter: usize,
    beta: f64,
}

impl TableModel {
    pub fn new(
        lattice: &Lattice,
        (beta, j, h): (f64, f64, f64),
        table: TableConfig,
        cfg: TrainConfig,
    ) -> Result<TableModel> {
        let table = IsingTable::new(lattice, (beta, j, h), table)?;
        let adam = TableAdam::new(table.n_entries());
        Ok(TableModel {
            table,
            adam,
            cfg,
            iter: 0,
            beta,
        })
    }

    /// Adam steps taken.
    pub fn adam_t(&self) -> u64 {
        self.adam.t
    }

    /// One training iteration on `cfg.samples` draws with the generators of
    /// `(seed, iter, chunk)` (a resumed run draws what the uninterrupted one would).
    pub fn train_step(&mut self) -> Result<TrainStats> {
        let t0 = Instant::now();
        let t = self.iter;
        let b = self.cfg.samples.max(2);
        let beta_t = self.cfg.beta_at(t, self.beta);
        let d = self.table.draw_training(b, beta_t, self.cfg.seed, t);
        let f: Vec<f64> = d
            .energy
            .iter()
            .zip(&d.log_q)
            .map(|(e, lq)| beta_t * e + lq)
            .collect();
        let fs = free_energy(t, &f)?;
        let grad = self.table.gradient(&d, &f, fs.mean);
        let lr = self.cfg.lr_at(t);
        self.adam.step(&mut self.table.theta, &grad, lr);
        self.table.refresh();
        self.iter += 1;
        Ok(TrainStats::of_batch(t, (&f, &d.log_q), beta_t, lr, t0))
    }

    /// Runs an independence Metropolis-Hastings chain of table proposals
    /// ([`independence_chain`]; a single-spin sweep after every `local_every` steps).
    #[allow(clippy::too_many_arguments)]
    pub fn metropolis_hastings(
        &self,
        lattice: &Lattice,
        proposals: usize,
        batch: usize,
        local_every: usize,
        rng: &mut impl Rng,
        progress: &mut dyn FnMut(usize),
        stop: &AtomicBool,
    ) -> Result<MhResult> {
        let setup = ChainSetup {
            lattice,
            nb: &self.table.nb,
            beta: self.beta,
            j: self.table.j,
            h: self.table.h,
            pinned: None,
        };
        independence_chain(
            &setup,
            (proposals, batch, local_every),
            rng,
            &mut |b, rng| Ok(self.table.draw_with(b, rng)),
            &mut |state| Ok(self.table.log_q_one(state)),
            progress,
            stop,
        )
    }

    /// Writes the logits (`tables.npy`) and Adam's moments (`adam.npy`, shape `[2, E]`)
    /// into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let e = self.table.n_entries();
        npy::write_f64(&dir.join("tables.npy"), &[e], &self.table.theta)?;
        let mv: Vec<f64> = self.adam.m.iter().chain(&self.adam.v).copied().collect();
        npy::write_f64(&dir.join("adam.npy"), &[2, e], &mv)
    }

    /// Reads what [`Self::save`] wrote, with `adam_t` steps taken and `iter` iterations
    /// done; the shapes must match this lattice and table configuration.
    pub fn load(&mut self, dir: &Path, adam_t: u64, iter: usize) -> Result<()> {
        let e = self.table.n_entries();
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f64>> {
            let path = dir.join(name);
            let (got, data) = npy::read_f64(&path)?;
            if got != shape {
                return Err(Error::Input(format!(
                    "{}: shape {got:?}, expected {shape:?} (tables of this lattice and \
                     --table-context)",
                    path.display()
                )));
            }
            Ok(data)
        };
        let theta = read("tables.npy", &[e])?;
        let mv = read("adam.npy", &[2, e])?;
        self.table.theta = theta;
        self.table.refresh();
        self.adam.m = mv[..e].to_vec();
        self.adam.v = mv[e..].to_vec();
        self.adam.t = adam_t;
        self.iter = iter;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Smallest squared periodic distance between two sites of `sites` on an
    /// `l x l` square.
    fn min_distance2(lattice: &Lattice, sites: &[usize], l: i64) -> i64 {
        let d = |a: usize, b: usize| wrap(b as i64 - a as i64, l as usize, true);
        let mut best = i64::MAX;
        for (k, &a) in sites.iter().enumerate() {
            for &b in &sites[k + 1..] {
                let ((xa, ya), (xb, yb)) = (lattice.coords(a), lattice.coords(b));
                let (dx, dy) = (d(xa, xb), d(ya, yb));
                best = best.min(dx * dx + dy * dy);
            }
        }
        best
    }

    /// The colours split every step of the 16x16 `rg` schedule into sub-steps that keep
    /// its sites and order, and move the sites drawn together apart: cell centres of level
    /// `l` from `2a` to `2 sqrt(2) a` (2 colours) and `4a` (4), edge midpoints from
    /// `sqrt(2) a` to `2a` and `2 sqrt(2) a`.
    #[test]
    fn colours_move_the_sites_of_a_step_apart() {
        let lat = Lattice::square(16, 16, Boundary::Periodic);
        let steps = Schedule::rg(&lat)
            .without_last_step()
            .unwrap()
            .steps()
            .to_vec();
        // Level-0 centres (both coordinates odd) are the last modelled step.
        let centres = steps.last().unwrap();
        assert_eq!(min_distance2(&lat, centres, 16), 4);
        // Level-1 edge midpoints: the step before.
        let edges = &steps[steps.len() - 2];
        assert_eq!(min_distance2(&lat, edges, 16), 8);
        for (colours, centre2, edge2) in [(2, 8, 16), (4, 16, 32)] {
            let split = split_steps(&lat, &steps, colours);
            let flat: Vec<usize> = split.iter().flatten().copied().collect();
            assert_eq!(flat.len(), steps.iter().map(Vec::len).sum::<usize>());
            let parts = |step: &Vec<usize>| {
                split
                    .iter()
                    .filter(|p| p.iter().all(|x| step.contains(x)))
                    .collect::<Vec<_>>()
            };
            for p in parts(centres) {
                assert_eq!(min_distance2(&lat, p, 16), centre2, "{colours} colours");
            }
            let edge_parts = parts(edges);
            assert_eq!(edge_parts.len(), colours);
            for p in edge_parts {
                assert_eq!(min_distance2(&lat, p, 16), edge2, "{colours} colours");
            }
        }
    }

    /// After training, every entry holds its orbit's logit with its sign (the spin flip and
    /// the rotations and reflections of the square tie them), and the ties reach beyond the
    /// flip: fewer orbits than half the entries.
    #[test]
    fn tied_entries_keep_one_logit() {
        let lat = Lattice::square(8, 8, Boundary::Periodic);
        let beta = 0.44;
        let train = TrainConfig {
            samples: 64,
            iters: 10,
            anneal_iters: 0,
            ..TrainConfig::default()
        };
        let mut m = TableModel::new(&lat, (beta, 1.0, 0.0), TableConfig::default(), train).unwrap();
        for _ in 0..10 {
            m.train_step().unwrap();
        }
        let t = &m.table;
        let ty = &t.tying;
        let mut root = vec![f64::NAN; ty.size.len()];
        let mut moved = 0;
        for (e, &th) in t.theta.iter().enumerate() {
            let o = ty.orbit[e] as usize;
            let v = ty.sign[e] * th;
            if ty.size[o] == 0.0 {
                assert_eq!(th, 0.0, "entry {e} of a zero orbit");
            } else if root[o].is_nan() {
                root[o] = v;
            } else {
                assert!((root[o] - v).abs() < 1e-12, "entry {e}: {v} vs {}", root[o]);
            }
            moved += usize::from(th != 0.0);
        }
        assert!(moved > t.n_entries() / 4, "training moved {moved} entries");
        assert!(
            2 * ty.size.len() < t.n_entries(),
            "{} orbits of {} entries",
            ty.size.len(),
            t.n_entries()
        );
    }

    /// The last modelled sub-step (level-0 centres of the second colour) reads exactly its
    /// Markov blanket once the heat baths are summed out: its 4 diagonal neighbours and the 4
    /// centres 2 apart; the sites before it their 12 nearest earlier sites.
    #[test]
    fn the_last_modelled_sites_read_their_markov_blanket() {
        let lat = Lattice::square(16, 16, Boundary::Periodic);
        let t = IsingTable::new(&lat, (0.44, 1.0, 0.0), TableConfig::default()).unwrap();
        let last = t.plan.last().unwrap().base;
        let mut blanket_sites = 0;
        for p in &t.plan {
            if p.base != last {
                // The coarsest sites have fewer than 12 earlier sites.
                assert!(p.len <= 12);
                continue;
            }
            blanket_sites += 1;
            assert_eq!(p.len, 8);
            let (x0, y0) = lat.coords(p.x as usize);
            let mut d2: Vec<i64> = t.ctx[p.start as usize..(p.start + p.len) as usize]
                .iter()
                .map(|&y| {
                    let (x1, y1) = lat.coords(y as usize);
                    let dx = wrap(x1 as i64 - x0 as i64, 16, true);
                    let dy = wrap(y1 as i64 - y0 as i64, 16, true);
                    dx * dx + dy * dy
                })
                .collect();
            d2.sort_unstable();
            assert_eq!(d2, [2, 2, 2, 2, 4, 4, 4, 4]);
        }
        assert_eq!(blanket_sites, 32);
        // The first colour of those centres (whose blanket holds the second) reads 12.
        let first = t.plan[t.plan.len() - 33];
        assert!(first.base != last && first.len == 12);
    }
}
