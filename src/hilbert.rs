//! Local Hilbert spaces and the compact storage of configurations.
//!
//! A configuration is a slice of `u8`, one local basis index per site.
//! - Spin-1/2: index 0 is `|up>` (`Z = +1`, `Sz = +1/2`), index 1 is `|down>` (`Z = -1`). Spin
//!   configurations of up to 64 sites are also packed into a `u64` whose bit `i` is the index of
//!   site `i` (a set bit is a down spin), which is also the configuration's position in the full
//!   `2^N` basis.
//! - Truncated oscillator: index `n = 0 .. cutoff-1` is the Fock level `|n>` of an oscillator of
//!   frequency `omega` (`phi = (a + a^dag)/sqrt(2 omega)`).

/// The space of one site.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LocalSpace {
    /// Spin-1/2 in the `Z` basis.
    Spin,
    /// Harmonic-oscillator Fock space truncated to `cutoff` levels, frequency `omega`.
    Oscillator { cutoff: usize, omega: f64 },
}

impl LocalSpace {
    /// Number of local basis states `d`.
    pub fn dim(&self) -> usize {
        match *self {
            LocalSpace::Spin => 2,
            LocalSpace::Oscillator { cutoff, .. } => cutoff,
        }
    }
}

/// The many-body space: `n_sites` copies of one local space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hilbert {
    pub n_sites: usize,
    pub local: LocalSpace,
}

impl Hilbert {
    pub fn new(n_sites: usize, local: LocalSpace) -> Self {
        Hilbert { n_sites, local }
    }

    /// Local dimension `d`.
    pub fn local_dim(&self) -> usize {
        self.local.dim()
    }

    /// `d^N` as a float (it overflows integers quickly).
    pub fn log2_dim(&self) -> f64 {
        self.n_sites as f64 * (self.local_dim() as f64).log2()
    }

    /// `d^N` if it fits in a `u64`.
    pub fn dim(&self) -> Option<u64> {
        (self.local_dim() as u64).checked_pow(self.n_sites as u32)
    }

    /// Mixed-radix position of a configuration in the full basis (site 0 least significant).
    pub fn index_of(&self, s: &[u8]) -> u64 {
        let d = self.local_dim() as u64;
        s.iter().rev().fold(0u64, |acc, &v| acc * d + v as u64)
    }

    /// Inverse of [`Hilbert::index_of`].
    pub fn config_of(&self, mut index: u64, s: &mut [u8]) {
        let d = self.local_dim() as u64;
        for v in s.iter_mut() {
            *v = (index % d) as u8;
            index /= d;
        }
    }
}

/// Packs a spin configuration (entries 0 or 1) into bits: bit `i` = `s[i]`.
#[inline]
pub fn pack_spins(s: &[u8]) -> u64 {
    s.iter()
        .enumerate()
        .fold(0u64, |acc, (i, &v)| acc | ((v as u64 & 1) << i))
}

/// Unpacks bits into a spin configuration.
#[inline]
pub fn unpack_spins(bits: u64, s: &mut [u8]) {
    for (i, v) in s.iter_mut().enumerate() {
        *v = ((bits >> i) & 1) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        let s = [1u8, 0, 0, 1, 1];
        let b = pack_spins(&s);
        assert_eq!(b, 0b11001);
        let mut t = [0u8; 5];
        unpack_spins(b, &mut t);
        assert_eq!(s, t);
        let h = Hilbert::new(5, LocalSpace::Spin);
        assert_eq!(h.index_of(&s), b);
    }

    #[test]
    fn mixed_radix_round_trips() {
        let h = Hilbert::new(
            3,
            LocalSpace::Oscillator {
                cutoff: 4,
                omega: 1.0,
            },
        );
        assert_eq!(h.dim(), Some(64));
        let mut s = [0u8; 3];
        for i in 0..64 {
            h.config_of(i, &mut s);
            assert_eq!(h.index_of(&s), i);
        }
    }
}
