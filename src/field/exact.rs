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
}
