//! Exact Ising references: enumeration of small lattices (up to 24 sites) and the transfer
//! matrix of an `L x L` torus (up to `L = 12`), used to check every sampler.
//!
//! Enumeration counts the configurations by `(B, M)`, `B = sum_<ij> s_i s_j`,
//! `M = sum_i s_i`; every observable at any `beta, J, h` follows from these counts with
//! weight `exp(beta (J B + h M))`.
//!
//! Transfer matrix (`h = 0`): column states `a` of `L` spins,
//! `T_ab = exp(beta J (V_a / 2 + V_b / 2 + W_ab))` with `V_a` the bonds inside a column and
//! `W_ab` those between neighbouring columns, `Z = Tr T^L`,
//! `<E> = -d log Z / d beta = -L Tr(T' T^{L-1}) / Z` with `T'_ab = J(V_a/2 + V_b/2 + W_ab) T_ab`,
//! and `<M^2> = N sum_{c, y} <s_{0,0} s_{c,y}>`, `<s_{0,0} s_{c,y}> =
//! Tr(D_0 T^c D_y T^{L-c}) / Z`, `D_y = diag(s_a(y))`.

use nalgebra::DMatrix;

use crate::lattice::Lattice;

/// Exact Ising observables (the names match [`super::observables::analyse`]).
#[derive(Clone, Debug)]
pub struct IsingExact {
    pub log_z: f64,
    pub energy_density: f64,
    pub abs_magnetization: f64,
    /// `<M^2>/N`.
    pub m2_density: f64,
    pub susceptibility: f64,
    pub binder: f64,
    /// `(B, M, probability)` of every occupied class.
    pub histogram: Vec<(i64, i64, f64)>,
}

/// Exact observables by enumerating the `2^N` configurations (`N <= 24`).
pub fn ising_enumerate(lattice: &Lattice, beta: f64, j: f64, h: f64) -> IsingExact {
    let n = lattice.n_sites();
    assert!(n <= 24, "enumeration is limited to 24 sites");
    let bonds: Vec<(usize, usize)> = lattice.bonds().to_vec();
    let nb = bonds.len() as i64;
    // counts[(B + nb) * (n + 1) + (M + n) / 2]
    let width = n + 1;
    let mut counts = vec![0u64; (2 * nb as usize + 1) * width];
    for c in 0u32..(1u32 << n) {
        let mut unsat = 0i64;
        for &(a, b) in &bonds {
            unsat += (((c >> a) ^ (c >> b)) & 1) as i64;
        }
        let b = nb - 2 * unsat;
        // Bit 1 is spin down (the model's state 1 = -1).
        let m = n as i64 - 2 * c.count_ones() as i64;
        counts[(b + nb) as usize * width + ((m + n as i64) / 2) as usize] += 1;
    }
    let mut classes = Vec::new();
    let mut max_lw = f64::NEG_INFINITY;
    for (k, &cnt) in counts.iter().enumerate() {
        if cnt == 0 {
            continue;
        }
        let b = (k / width) as i64 - nb;
        let m = 2 * (k % width) as i64 - n as i64;
        let lw = (cnt as f64).ln() + beta * (j * b as f64 + h * m as f64);
        max_lw = max_lw.max(lw);
        classes.push((b, m, lw));
    }
    let z: f64 = classes.iter().map(|c| (c.2 - max_lw).exp()).sum();
    let mut out = IsingExact {
        log_z: max_lw + z.ln(),
        energy_density: 0.0,
        abs_magnetization: 0.0,
        m2_density: 0.0,
        susceptibility: 0.0,
        binder: 0.0,
        histogram: Vec::with_capacity(classes.len()),
    };
    let (mut e, mut am, mut m2, mut m4) = (0.0, 0.0, 0.0, 0.0);
    for &(b, m, lw) in &classes {
        let p = (lw - max_lw).exp() / z;
        let mf = m as f64;
        e += p * (-j * b as f64 - h * mf);
        am += p * mf.abs();
        m2 += p * mf * mf;
        m4 += p * mf.powi(4);
        out.histogram.push((b, m, p));
    }
    let nf = n as f64;
    out.energy_density = e / nf;
    out.abs_magnetization = am / nf;
    out.m2_density = m2 / nf;
    out.susceptibility = (m2 - am * am) / nf;
    out.binder = 1.0 - m4 / (3.0 * m2 * m2);
    out
}

/// Exact `(log Z, <E>/N, <M^2>/N)` of the `L x L` periodic Ising model at `h = 0` by the
/// transfer matrix (`L <= 12`).
pub fn ising_transfer_matrix(l: usize, beta: f64, j: f64) -> (f64, f64, f64) {
    assert!((2..=12).contains(&l), "transfer matrix for 2 <= L <= 12");
    let dim = 1usize << l;
    let spin = |a: usize, y: usize| -> f64 {
        if (a >> y) & 1 == 0 {
            1.0
        } else {
            -1.0
        }
    };
    let v: Vec<f64> = (0..dim)
        .map(|a| (0..l).map(|y| spin(a, y) * spin(a, (y + 1) % l)).sum())
        .collect();
    // Scale every element by exp(-shift) so T^L stays in range; it cancels in ratios.
    let shift = beta * j.abs() * 2.0 * l as f64;
    let mut t = DMatrix::<f64>::zeros(dim, dim);
    let mut dt = DMatrix::<f64>::zeros(dim, dim);
    for a in 0..dim {
        for b in 0..dim {
            let w: f64 = (0..l).map(|y| spin(a, y) * spin(b, y)).sum();
            let f = j * (0.5 * v[a] + 0.5 * v[b] + w);
            let x = (beta * f - shift).exp();
            t[(a, b)] = x;
            dt[(a, b)] = f * x;
        }
    }
    let mut powers = vec![DMatrix::<f64>::identity(dim, dim)];
    for c in 1..=l {
        let next = &powers[c - 1] * &t;
        powers.push(next);
    }
    let z = powers[l].trace();
    let log_z = z.ln() + l as f64 * shift;
    let e = -(l as f64) * (&dt * &powers[l - 1]).trace() / z;
    let mut corr_sum = 0.0;
    for c in 0..l {
        let (p, q) = (&powers[c], &powers[l - c]);
        for y in 0..l {
            let mut s = 0.0;
            for a in 0..dim {
                let sa = spin(a, 0);
                for b in 0..dim {
                    s += sa * p[(a, b)] * spin(b, y) * q[(b, a)];
                }
            }
            corr_sum += s / z;
        }
    }
    let n = (l * l) as f64;
    (log_z, e / n, corr_sum)
}

/// Exact distribution of the magnetisation `M` of the `L x L` periodic Ising model at `h = 0`
/// (`2 <= L <= 10`): entry `k` is `P(M = N - 2k)`, `k` the number of down spins.
///
/// A site-by-site transfer matrix: with the first column `c0` held fixed, the state is the
/// frontier of the last `L` spins added (one per row) and the number of down spins so far;
/// adding site `(x, y)` multiplies by `exp(beta J s (s_left + s_below [+ s_top]))`, the bonds to
/// its left neighbour, to the site below it in the same column and, for the last row, to the
/// first row (periodic). After the last column the bonds back to `c0` close the torus. Cost
/// `2^{2L} L^2 N` (Z2 symmetry halves it): about a second at `L = 8` in release.
pub fn ising_magnetization_distribution(l: usize, beta: f64, j: f64) -> Vec<f64> {
    assert!(
        (2..=10).contains(&l),
        "magnetisation distribution for 2 <= L <= 10"
    );
    let n = l * l;
    let dim = 1usize << l;
    let sign = |bits: usize, y: usize| -> i32 { 1 - 2 * ((bits >> y) & 1) as i32 };
    // exp(beta J k) for bond sums k in -3..=3 (at most three bonds per added site).
    let boltz: Vec<f64> = (-3..=3).map(|k| (beta * j * k as f64).exp()).collect();
    let w = |k: i32| boltz[(k + 3) as usize];
    let mut total = vec![0.0f64; n + 1];
    // Column states with spin (0, 0) up; the flipped ones give the mirrored distribution.
    for c0 in 0..dim / 2 {
        let mut vertical = 0;
        for y in 0..l {
            vertical += sign(c0, y) * sign(c0, (y + 1) % l);
        }
        // weights[frontier * (n + 1) + downs]
        let mut cur = vec![0.0f64; dim * (n + 1)];
        cur[c0 * (n + 1) + c0.count_ones() as usize] = (beta * j * vertical as f64).exp();
        let mut next = vec![0.0f64; dim * (n + 1)];
        for _x in 1..l {
            for y in 0..l {
                next.iter_mut().for_each(|v| *v = 0.0);
                for f in 0..dim {
                    let row = &cur[f * (n + 1)..(f + 1) * (n + 1)];
                    if row.iter().all(|&v| v == 0.0) {
                        continue;
                    }
                    let mut nb = sign(f, y);
                    if y > 0 {
                        nb += sign(f, y - 1);
                    }
                    if y == l - 1 {
                        nb += sign(f, 0);
                    }
                    for s_bit in 0..2usize {
                        let s = 1 - 2 * s_bit as i32;
                        let g = (f & !(1 << y)) | (s_bit << y);
                        let fac = w(s * nb);
                        let out = &mut next[g * (n + 1)..(g + 1) * (n + 1)];
                        for k in 0..n + 1 - s_bit {
                            out[k + s_bit] += fac * row[k];
                        }
                    }
                }
                std::mem::swap(&mut cur, &mut next);
            }
        }
        // Close the torus: horizontal bonds between the last column and c0.
        for f in 0..dim {
            let closing: i32 = (0..l).map(|y| sign(f, y) * sign(c0, y)).sum();
            let fac = (beta * j * closing as f64).exp();
            for k in 0..=n {
                let v = fac * cur[f * (n + 1) + k];
                total[k] += v;
                total[n - k] += v;
            }
        }
    }
    let z: f64 = total.iter().sum();
    total.iter().map(|v| v / z).collect()
}

/// Exact `(<|M|>/N, <M^2>/N, susceptibility (<M^2> - <|M|>^2)/N, Binder 1 - <M^4>/(3 <M^2>^2))`
/// of the `L x L` periodic Ising model at `h = 0` from [`ising_magnetization_distribution`]
/// (the same definitions as [`ising_enumerate`]).
pub fn ising_magnetization_moments(l: usize, beta: f64, j: f64) -> (f64, f64, f64, f64) {
    let p = ising_magnetization_distribution(l, beta, j);
    let n = (l * l) as f64;
    let (mut am, mut m2, mut m4) = (0.0, 0.0, 0.0);
    for (k, &pk) in p.iter().enumerate() {
        let m = n - 2.0 * k as f64;
        am += pk * m.abs();
        m2 += pk * m * m;
        m4 += pk * m.powi(4);
    }
    (
        am / n,
        m2 / n,
        (m2 - am * am) / n,
        1.0 - m4 / (3.0 * m2 * m2),
    )
}

/// `(sign, log|x|)` sums: `log |sum_i sign_i exp(l_i)|` with its sign.
fn signed_log_sum(terms: &[(f64, f64)]) -> (f64, f64) {
    let max = terms
        .iter()
        .filter(|t| t.0 != 0.0)
        .map(|t| t.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = terms.iter().map(|t| t.0 * (t.1 - max).exp()).sum();
    (s.signum(), max + s.abs().ln())
}

/// `log Z` of the `m x n` periodic Ising model at `h = 0`, `J = 1`, coupling `K = beta`, by
/// Kaufman's formula (Phys. Rev. 76, 1232 (1949); as written by Ferdinand and Fisher, Phys.
/// Rev. 185, 832 (1969)):
/// `Z = (1/2) (2 sinh 2K)^{mn/2} (Z_1 + Z_2 + Z_3 + Z_4)`,
/// `Z_1 = prod_{r<n} 2 cosh(m g_{2r+1} / 2)`, `Z_2 = prod 2 sinh(m g_{2r+1} / 2)`,
/// `Z_3 = prod 2 cosh(m g_{2r} / 2)`, `Z_4 = prod 2 sinh(m g_{2r} / 2)`,
/// `cosh g_l = cosh 2K coth 2K - cos(pi l / n)` (`g_l > 0`) except `g_0 = 2K + ln tanh K`, whose
/// sign matters. Evaluated in logarithms, so any size works.
pub fn ising_kaufman_log_z(m: usize, n: usize, k: f64) -> f64 {
    let c = (2.0 * k).cosh() / (2.0 * k).tanh();
    let gamma = |l: usize| -> f64 {
        if l == 0 {
            2.0 * k + k.tanh().ln()
        } else {
            (c - (std::f64::consts::PI * l as f64 / n as f64).cos()).acosh()
        }
    };
    let half_m = m as f64 / 2.0;
    // log(2 cosh x) and (sign, log|2 sinh x|).
    let log2cosh = |x: f64| x.abs() + (1.0 + (-2.0 * x.abs()).exp()).ln();
    let log2sinh = |x: f64| -> (f64, f64) {
        if x == 0.0 {
            (0.0, f64::NEG_INFINITY)
        } else {
            (x.signum(), x.abs() + (-(-2.0 * x.abs()).exp()).ln_1p())
        }
    };
    let (mut l1, mut l3) = (0.0, 0.0);
    let (mut s2, mut l2, mut s4, mut l4) = (1.0, 0.0, 1.0, 0.0);
    for r in 0..n {
        let odd = half_m * gamma(2 * r + 1);
        let even = half_m * gamma(2 * r);
        l1 += log2cosh(odd);
        l3 += log2cosh(even);
        let (a, b) = log2sinh(odd);
        s2 *= a;
        l2 += b;
        let (a, b) = log2sinh(even);
        s4 *= a;
        l4 += b;
    }
    let (_, sum) = signed_log_sum(&[(1.0, l1), (s2, l2), (1.0, l3), (s4, l4)]);
    -(2f64).ln() + (m * n) as f64 / 2.0 * (2.0 * (2.0 * k).sinh()).ln() + sum
}

/// Exact `(log Z, <E>/N)` of the `L x L` periodic Ising model at `h = 0` for any `L`, by
/// Kaufman's formula (`beta J` enters as the coupling `K`; `<E> = -d log Z / d beta` by a
/// central difference of step `1e-5` in `K`, accurate to about `1e-9` per site).
pub fn ising_kaufman(l: usize, beta: f64, j: f64) -> (f64, f64) {
    let k = beta * j;
    let lz = ising_kaufman_log_z(l, l, k);
    let h = 1e-5;
    let d = (ising_kaufman_log_z(l, l, k + h) - ising_kaufman_log_z(l, l, k - h)) / (2.0 * h);
    // d log Z / d beta = J d log Z / dK.
    (lz, -j * d / (l * l) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lattice::Boundary;

    #[test]
    fn transfer_matrix_agrees_with_enumeration_on_4x4() {
        let lat = Lattice::square(4, 4, Boundary::Periodic);
        let beta = 0.4406867935;
        let ex = ising_enumerate(&lat, beta, 1.0, 0.0);
        let (lz, e, m2) = ising_transfer_matrix(4, beta, 1.0);
        assert!((lz - ex.log_z).abs() < 1e-10, "{lz} {}", ex.log_z);
        assert!((e - ex.energy_density).abs() < 1e-10);
        assert!((m2 - ex.m2_density).abs() < 1e-9, "{m2} {}", ex.m2_density);
        // beta = 0: log Z = N ln 2, <M^2>/N = 1.
        let ex0 = ising_enumerate(&lat, 0.0, 1.0, 0.3);
        assert!((ex0.log_z - 16.0 * 2f64.ln()).abs() < 1e-12);
        assert!((ex0.m2_density - 1.0).abs() < 1e-12);
        let total: f64 = ex.histogram.iter().map(|c| c.2).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kaufman_agrees_with_the_transfer_matrix() {
        for l in [2usize, 4, 6, 8] {
            for beta in [0.2, 0.4406867935, 0.7] {
                let (lz, e, _) = ising_transfer_matrix(l, beta, 1.0);
                let (kz, ke) = ising_kaufman(l, beta, 1.0);
                assert!(
                    (lz - kz).abs() < 1e-9 * lz.abs(),
                    "L {l} beta {beta}: {lz} {kz}"
                );
                assert!((e - ke).abs() < 1e-7, "L {l} beta {beta}: {e} {ke}");
            }
        }
        // Large L tends to Onsager's critical energy density -sqrt 2.
        let (_, e) = ising_kaufman(256, 0.440_686_793_509_771_5, 1.0);
        assert!((e + 2f64.sqrt()).abs() < 0.01, "{e}");
    }

    #[test]
    fn magnetisation_distribution_agrees_with_enumeration_and_the_transfer_matrix() {
        for l in [2usize, 3, 4] {
            let lat = Lattice::square(l, l, Boundary::Periodic);
            for beta in [0.0, 0.3, 0.4406867935, 0.8] {
                let ex = ising_enumerate(&lat, beta, 1.0, 0.0);
                let (am, m2, chi, binder) = ising_magnetization_moments(l, beta, 1.0);
                for (got, want, what) in [
                    (am, ex.abs_magnetization, "|M|"),
                    (m2, ex.m2_density, "M^2"),
                    (chi, ex.susceptibility, "chi"),
                    (binder, ex.binder, "binder"),
                ] {
                    assert!(
                        (got - want).abs() < 1e-12,
                        "L {l} beta {beta} {what}: {got} {want}"
                    );
                }
            }
        }
        // Antiferromagnetic coupling on an even torus.
        let lat = Lattice::square(4, 4, Boundary::Periodic);
        let ex = ising_enumerate(&lat, 0.5, -1.0, 0.0);
        let (am, ..) = ising_magnetization_moments(4, 0.5, -1.0);
        assert!((am - ex.abs_magnetization).abs() < 1e-12);
        // 8x8: <M^2>/N from the site-by-site transfer matrix equals the column one.
        let (_, _, m2_tm) = ising_transfer_matrix(8, 0.4406867935, 1.0);
        let (_, m2, ..) = ising_magnetization_moments(8, 0.4406867935, 1.0);
        assert!((m2 - m2_tm).abs() < 1e-9 * m2_tm, "{m2} {m2_tm}");
    }
}
