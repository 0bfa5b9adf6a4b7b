//! Distinct configurations of a batch.
//!
//! Exact samples of a concentrated wavefunction repeat: on the J1-J2 4x4 square after 50
//! iterations, 1024 samples hold about 600 distinct configurations and their 37,000
//! connected configurations about 7,700. Everything the VMC computes per configuration
//! (`log psi`, a Jacobian row) is a function of the configuration alone, so it is computed
//! once per distinct configuration and copied to the repeats. The distinct configurations
//! keep the order of their first occurrence, so the result does not depend on hashing.

use std::collections::HashMap;

/// The distinct rows of a row-major batch of configurations (`n` sites each).
pub struct Unique {
    /// Index in the batch of each distinct configuration's first occurrence, in batch order.
    pub first: Vec<usize>,
    /// For every configuration of the batch, the index of its distinct configuration in
    /// `first`.
    pub of_row: Vec<usize>,
}

impl Unique {
    /// Groups the rows of `configs` (`configs.len() / n` rows of `n` sites).
    pub fn new(configs: &[u8], n: usize) -> Self {
        let rows = configs.len().checked_div(n).unwrap_or(0);
        let mut index: HashMap<&[u8], usize> = HashMap::with_capacity(rows);
        let mut first = Vec::new();
        let mut of_row = Vec::with_capacity(rows);
        for (r, c) in configs.chunks_exact(n.max(1)).take(rows).enumerate() {
            let next = first.len();
            let u = *index.entry(c).or_insert(next);
            if u == next {
                first.push(r);
            }
            of_row.push(u);
        }
        Self { first, of_row }
    }

    /// Number of distinct configurations.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// Whether the batch was empty.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Whether every configuration of the batch is distinct (nothing to save).
    pub fn all_distinct(&self) -> bool {
        self.first.len() == self.of_row.len()
    }

    /// The distinct configurations, row-major, in the order of `first`.
    pub fn configs(&self, configs: &[u8], n: usize) -> Vec<u8> {
        self.first
            .iter()
            .flat_map(|&r| configs[r * n..(r + 1) * n].iter().copied())
            .collect()
    }

    /// `values` of the distinct configurations spread back to every row of the batch.
    pub fn spread<T: Copy>(&self, values: &[T]) -> Vec<T> {
        self.of_row.iter().map(|&u| values[u]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_repeats_in_order_of_first_occurrence() {
        // Rows: a b a c b a (n = 2).
        let s = [0u8, 1, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1];
        let u = Unique::new(&s, 2);
        assert_eq!(u.first, vec![0, 1, 3]);
        assert_eq!(u.of_row, vec![0, 1, 0, 2, 1, 0]);
        assert_eq!(u.configs(&s, 2), vec![0, 1, 1, 1, 1, 0]);
        assert_eq!(u.spread(&[10, 20, 30]), vec![10, 20, 10, 30, 20, 10]);
        assert!(!u.all_distinct());
        assert!(Unique::new(&[0, 1, 1, 0], 2).all_distinct());
        assert!(Unique::new(&[], 2).is_empty());
    }
}
