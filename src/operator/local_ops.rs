//! Named single-site operators and their matrices.
//!
//! Spin-1/2 (basis `|up> = 0`, `|down> = 1`): Pauli `X Y Z`, and the spin operators
//! `Sz = Z/2`, `Sp = |up><down| = (X + iY)/2`, `Sm = Sp^dag`.
//!
//! Truncated oscillator with frequency `w` and `d` levels: `a`, `adag`, `n = adag a`,
//! `phi = (a + adag)/sqrt(2w)`, `pi = i sqrt(w/2) (adag - a)`. A product of several of these
//! on one site is formed in a space with as many extra levels as it has factors and only then
//! truncated to `d`, so that e.g. `phi phi phi phi` is the exact projection of `phi^4` onto the
//! first `d` levels (a product of already-truncated matrices is not).

use num_complex::Complex64;
use std::fmt;

/// A named local operator, as written in Hamiltonian files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalOp {
    X,
    Y,
    Z,
    Sp,
    Sm,
    Sz,
    A,
    Adag,
    N,
    Phi,
    Pi,
}

impl LocalOp {
    pub const SPIN: [LocalOp; 6] = [
        LocalOp::X,
        LocalOp::Y,
        LocalOp::Z,
        LocalOp::Sp,
        LocalOp::Sm,
        LocalOp::Sz,
    ];
    pub const OSCILLATOR: [LocalOp; 5] = [
        LocalOp::A,
        LocalOp::Adag,
        LocalOp::N,
        LocalOp::Phi,
        LocalOp::Pi,
    ];

    /// Parses the file name of an operator (`"X"`, `"Sp"`, `"adag"`, ...).
    pub fn parse(name: &str) -> Option<LocalOp> {
        Some(match name {
            "X" => LocalOp::X,
            "Y" => LocalOp::Y,
            "Z" => LocalOp::Z,
            "Sp" => LocalOp::Sp,
            "Sm" => LocalOp::Sm,
            "Sz" => LocalOp::Sz,
            "a" => LocalOp::A,
            "adag" => LocalOp::Adag,
            "n" => LocalOp::N,
            "phi" => LocalOp::Phi,
            "pi" => LocalOp::Pi,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            LocalOp::X => "X",
            LocalOp::Y => "Y",
            LocalOp::Z => "Z",
            LocalOp::Sp => "Sp",
            LocalOp::Sm => "Sm",
            LocalOp::Sz => "Sz",
            LocalOp::A => "a",
            LocalOp::Adag => "adag",
            LocalOp::N => "n",
            LocalOp::Phi => "phi",
            LocalOp::Pi => "pi",
        }
    }

    pub fn is_spin(&self) -> bool {
        Self::SPIN.contains(self)
    }
}

impl fmt::Display for LocalOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dense square complex matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub n: usize,
    pub data: Vec<Complex64>,
}

impl Mat {
    pub fn zeros(n: usize) -> Self {
        Mat {
            n,
            data: vec![Complex64::new(0.0, 0.0); n * n],
        }
    }

    pub fn identity(n: usize) -> Self {
        let mut m = Self::zeros(n);
        for i in 0..n {
            m.data[i * n + i] = Complex64::new(1.0, 0.0);
        }
        m
    }

    #[inline]
    pub fn get(&self, i: usize, j: usize) -> Complex64 {
        self.data[i * self.n + j]
    }

    #[inline]
    pub fn set(&mut self, i: usize, j: usize, v: Complex64) {
        self.data[i * self.n + j] = v;
    }

    pub fn matmul(&self, other: &Mat) -> Mat {
        let n = self.n;
        let mut out = Mat::zeros(n);
        for i in 0..n {
            for k in 0..n {
                let a = self.get(i, k);
                if a == Complex64::new(0.0, 0.0) {
                    continue;
                }
                for j in 0..n {
                    out.data[i * n + j] += a * other.get(k, j);
                }
            }
        }
        out
    }

    /// Adds `c * other` in place.
    pub fn add_scaled(&mut self, c: Complex64, other: &Mat) {
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a += c * b;
        }
    }

    /// The leading `d x d` block.
    pub fn truncate(&self, d: usize) -> Mat {
        let mut out = Mat::zeros(d);
        for i in 0..d {
            for j in 0..d {
                out.set(i, j, self.get(i, j));
            }
        }
        out
    }
}

/// Matrix of a spin operator in the basis `(|up>, |down>)`.
pub fn spin_matrix(op: LocalOp) -> Mat {
    let c = |re: f64, im: f64| Complex64::new(re, im);
    let z = c(0.0, 0.0);
    let data = match op {
        LocalOp::X => vec![z, c(1.0, 0.0), c(1.0, 0.0), z],
        LocalOp::Y => vec![z, c(0.0, -1.0), c(0.0, 1.0), z],
        LocalOp::Z => vec![c(1.0, 0.0), z, z, c(-1.0, 0.0)],
        LocalOp::Sz => vec![c(0.5, 0.0), z, z, c(-0.5, 0.0)],
        LocalOp::Sp => vec![z, c(1.0, 0.0), z, z],
        LocalOp::Sm => vec![z, z, c(1.0, 0.0), z],
        _ => panic!("{op} is not a spin operator"),
    };
    Mat { n: 2, data }
}

/// Matrix of an oscillator operator on the first `dim` Fock levels (frequency `omega`).
pub fn oscillator_matrix(op: LocalOp, dim: usize, omega: f64) -> Mat {
    let mut a = Mat::zeros(dim);
    for n in 1..dim {
        a.set(n - 1, n, Complex64::new((n as f64).sqrt(), 0.0));
    }
    let mut adag = Mat::zeros(dim);
    for n in 1..dim {
        adag.set(n, n - 1, Complex64::new((n as f64).sqrt(), 0.0));
    }
    match op {
        LocalOp::A => a,
        LocalOp::Adag => adag,
        LocalOp::N => adag.matmul(&a),
        LocalOp::Phi => {
            let mut m = Mat::zeros(dim);
            let s = 1.0 / (2.0 * omega).sqrt();
            m.add_scaled(Complex64::new(s, 0.0), &a);
            m.add_scaled(Complex64::new(s, 0.0), &adag);
            m
        }
        LocalOp::Pi => {
            let mut m = Mat::zeros(dim);
            let s = (omega / 2.0).sqrt();
            m.add_scaled(Complex64::new(0.0, s), &adag);
            m.add_scaled(Complex64::new(0.0, -s), &a);
            m
        }
        _ => panic!("{op} is not an oscillator operator"),
    }
}

/// The product `ops[0] ops[1] ...` acting on one site, as a `d x d` matrix. For oscillators the
/// product is formed with `len(ops)` extra levels and then truncated (exact projection).
pub fn product_on_site(ops: &[LocalOp], spin: bool, d: usize, omega: f64) -> Mat {
    if spin {
        ops.iter()
            .fold(Mat::identity(2), |m, &op| m.matmul(&spin_matrix(op)))
    } else {
        let big = d + ops.len();
        ops.iter()
            .fold(Mat::identity(big), |m, &op| {
                m.matmul(&oscillator_matrix(op, big, omega))
            })
            .truncate(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_algebra() {
        // Sp = (X + iY)/2, Sz = Z/2, XY = iZ.
        let x = spin_matrix(LocalOp::X);
        let y = spin_matrix(LocalOp::Y);
        let mut sp = Mat::zeros(2);
        sp.add_scaled(Complex64::new(0.5, 0.0), &x);
        sp.add_scaled(Complex64::new(0.0, 0.5), &y);
        assert_eq!(sp, spin_matrix(LocalOp::Sp));
        let xy = x.matmul(&y);
        let mut iz = Mat::zeros(2);
        iz.add_scaled(Complex64::new(0.0, 1.0), &spin_matrix(LocalOp::Z));
        assert_eq!(xy, iz);
    }

    #[test]
    fn projected_phi4_is_exact_projection() {
        // <n|phi^4|n> for w = 1: (6 n^2 + 6 n + 3)/4, including the top level.
        let d = 5;
        let m = product_on_site(&[LocalOp::Phi; 4], false, d, 1.0);
        for n in 0..d {
            let nf = n as f64;
            let want = (6.0 * nf * nf + 6.0 * nf + 3.0) / 4.0;
            assert!((m.get(n, n).re - want).abs() < 1e-12, "n={n}");
        }
        // [phi, pi] = i on all but the top level.
        let w = 1.7;
        let phi = oscillator_matrix(LocalOp::Phi, 8, w);
        let pi = oscillator_matrix(LocalOp::Pi, 8, w);
        let c = phi.matmul(&pi);
        let c2 = pi.matmul(&phi);
        for n in 0..7 {
            let v = c.get(n, n) - c2.get(n, n);
            assert!((v - Complex64::new(0.0, 1.0)).norm() < 1e-12);
        }
    }
}
