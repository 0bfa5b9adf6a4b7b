//! Real or complex amplitudes, so that the exact solver runs in `f64` whenever the Hamiltonian
//! and the symmetry sector are real and in `Complex64` otherwise, with one generic code path.

use num_complex::Complex64;
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Mul, Sub};

/// A field of amplitudes: `f64` or `Complex64`.
pub trait Scalar:
    Copy
    + Send
    + Sync
    + Debug
    + Default
    + PartialEq
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + AddAssign
    + 'static
{
    /// True for `Complex64`.
    const IS_COMPLEX: bool;
    fn zero() -> Self;
    fn from_re(x: f64) -> Self;
    /// The real part alone for `f64` (callers only pass real numbers there).
    fn from_c64(c: Complex64) -> Self;
    fn to_c64(self) -> Complex64;
    fn conj(self) -> Self;
    fn scale(self, a: f64) -> Self;
    fn abs2(self) -> f64;
}

impl Scalar for f64 {
    const IS_COMPLEX: bool = false;
    #[inline]
    fn zero() -> Self {
        0.0
    }
    #[inline]
    fn from_re(x: f64) -> Self {
        x
    }
    #[inline]
    fn from_c64(c: Complex64) -> Self {
        c.re
    }
    #[inline]
    fn to_c64(self) -> Complex64 {
        Complex64::new(self, 0.0)
    }
    #[inline]
    fn conj(self) -> Self {
        self
    }
    #[inline]
    fn scale(self, a: f64) -> Self {
        self * a
    }
    #[inline]
    fn abs2(self) -> f64 {
        self * self
    }
}

impl Scalar for Complex64 {
    const IS_COMPLEX: bool = true;
    #[inline]
    fn zero() -> Self {
        Complex64::new(0.0, 0.0)
    }
    #[inline]
    fn from_re(x: f64) -> Self {
        Complex64::new(x, 0.0)
    }
    #[inline]
    fn from_c64(c: Complex64) -> Self {
        c
    }
    #[inline]
    fn to_c64(self) -> Complex64 {
        self
    }
    #[inline]
    fn conj(self) -> Self {
        Complex64::conj(&self)
    }
    #[inline]
    fn scale(self, a: f64) -> Self {
        self * a
    }
    #[inline]
    fn abs2(self) -> f64 {
        self.norm_sqr()
    }
}
