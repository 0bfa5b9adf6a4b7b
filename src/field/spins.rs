//! Stored Ising configurations, one bit a spin.
//!
//! A chain keeps every configuration it measures (they go to `samples.npy`). As `i8` that is
//! a byte a spin, and the first write to each fresh page costs the kernel a zeroed page: on
//! a 32x32 table chain storing the configurations took a fifth of a proposal's time. Packed
//! into `u64` words (bit set for `s = -1`), a row of `N` spins takes `ceil(N / 64)` words, an
//! eighth of the memory; the rows are expanded back to `+-1` only when written out.

/// Configurations of `n` spins `+-1`, row after row, one bit a spin (1 for `-1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpinRows {
    n: usize,
    words: Vec<u64>,
}

impl SpinRows {
    /// No rows yet, of `n` spins each, with room for `rows` of them.
    pub fn with_capacity(n: usize, rows: usize) -> Self {
        SpinRows {
            n,
            words: Vec::with_capacity(rows * n.div_ceil(64)),
        }
    }

    /// Rows of `n` spins from their packed words (as [`Self::words`] gives them).
    pub fn from_words(n: usize, words: Vec<u64>) -> Self {
        assert!(
            n > 0 && words.len().is_multiple_of(n.div_ceil(64)),
            "{} words are not rows of {n} spins",
            words.len()
        );
        SpinRows { n, words }
    }

    /// Spins per row.
    pub fn n_sites(&self) -> usize {
        self.n
    }

    /// Words per row.
    fn stride(&self) -> usize {
        self.n.div_ceil(64)
    }

    /// Rows stored.
    pub fn len(&self) -> usize {
        if self.n == 0 {
            0
        } else {
            self.words.len() / self.stride()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The packed words, row after row.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Appends the configuration `s` (`n` spins `+-1`).
    pub fn push(&mut self, s: &[i8]) {
        assert_eq!(s.len(), self.n, "a row of {} spins", self.n);
        self.words.extend(s.chunks(64).map(|c| {
            c.iter()
                .enumerate()
                .fold(0u64, |w, (i, &v)| w | (u64::from(v < 0) << i))
        }));
    }

    /// Appends the last row again (an independence chain that rejected its proposal).
    pub fn repeat_last(&mut self) {
        let k = self.stride();
        let at = self.words.len() - k;
        self.words.extend_from_within(at..);
    }

    /// Appends every row of `other` (of the same size).
    pub fn append(&mut self, other: &SpinRows) {
        assert_eq!(self.n, other.n);
        self.words.extend_from_slice(&other.words);
    }

    /// Row `k` as spins `+-1` in `out` (`n` long).
    pub fn row_into(&self, k: usize, out: &mut [i8]) {
        let w = &self.words[k * self.stride()..(k + 1) * self.stride()];
        for (i, o) in out[..self.n].iter_mut().enumerate() {
            *o = 1 - 2 * ((w[i / 64] >> (i % 64)) & 1) as i8;
        }
    }

    /// Every row as spins `+-1`, one after the other.
    pub fn rows(&self) -> impl Iterator<Item = Vec<i8>> + '_ {
        (0..self.len()).map(|k| {
            let mut s = vec![0; self.n];
            self.row_into(k, &mut s);
            s
        })
    }

    /// All rows as `+-1`, concatenated.
    pub fn to_i8(&self) -> Vec<i8> {
        let mut out = vec![0; self.len() * self.n];
        for (k, row) in out.chunks_mut(self.n.max(1)).enumerate() {
            self.row_into(k, row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back() {
        for n in [1, 5, 63, 64, 65, 130] {
            let rows: Vec<Vec<i8>> = (0..4)
                .map(|k| {
                    (0..n)
                        .map(|i| if (i * 7 + k * 3) % 5 < 2 { -1 } else { 1 })
                        .collect()
                })
                .collect();
            let mut s = SpinRows::with_capacity(n, 5);
            for r in &rows {
                s.push(r);
            }
            s.repeat_last();
            assert_eq!(s.len(), 5);
            let back: Vec<Vec<i8>> = s.rows().collect();
            assert_eq!(&back[..4], &rows[..]);
            assert_eq!(back[4], rows[3]);
            assert_eq!(s.to_i8(), back.concat());
            let again = SpinRows::from_words(n, s.words().to_vec());
            assert_eq!(again, s);
        }
    }
}
