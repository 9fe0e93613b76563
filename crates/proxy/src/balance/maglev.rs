//! Maglev lookup table, built the way Envoy's `MAGLEV` load balancer builds it.
//!
//! Each host has a permutation of the table slots given by `offset = xxhash64(key, 0) % M`
//! and `skip = xxhash64(key, 1) % (M - 1) + 1`; slot `j` of the permutation is
//! `(offset + j * skip) % M`. Hosts take turns claiming their next free slot until the
//! table is full. Weights are honoured the way Envoy does it: in round `r` a host takes a
//! turn only when `r * weight >= target`, after which its target grows by the largest
//! normalized weight, so a host with a third of the largest weight takes every third turn.
//! A lookup is `table[hash % M]`.

use super::hash::xxhash64;

/// A filled maglev table of local host indices.
pub(crate) struct Maglev {
    table: Vec<u32>,
}

struct Builder {
    offset: u64,
    skip: u64,
    next: u64,
    weight: f64,
    target: f64,
}

// Only the size: the entries themselves run to thousands or millions.
impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev")
            .field("len", &self.table.len())
            .finish()
    }
}

impl Maglev {
    /// Builds a table of `size` slots (Envoy requires a prime; any size `>= 2` works here,
    /// a prime just makes every permutation cover the whole table) for hosts `keys[i]`
    /// with normalized weights `weights[i]`.
    pub(crate) fn build(keys: &[&str], weights: &[f64], size: u64) -> Maglev {
        let size = size.max(2);
        let max_weight = weights.iter().copied().fold(0.0f64, f64::max);
        if keys.is_empty() || max_weight.is_nan() || max_weight <= 0.0 {
            return Maglev { table: Vec::new() };
        }
        let mut builders: Vec<Builder> = keys
            .iter()
            .zip(weights)
            .map(|(key, &weight)| Builder {
                offset: xxhash64(key.as_bytes(), 0) % size,
                skip: xxhash64(key.as_bytes(), 1) % (size - 1) + 1,
                next: 0,
                weight,
                target: 0.0,
            })
            .collect();
        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; size as usize];
        let mut filled = 0u64;
        let mut round = 0u64;
        while filled < size {
            for (local, entry) in builders.iter_mut().enumerate() {
                if filled == size {
                    break;
                }
                // Hosts of weight zero (a locality weighted 0) claim no slots.
                if entry.weight <= 0.0 || (round as f64) * entry.weight < entry.target {
                    continue;
                }
                entry.target += max_weight;
                // With a composite `size` a permutation may revisit slots; bound the
                // search so a short cycle cannot spin forever.
                let mut tries = 0u64;
                loop {
                    let slot = ((entry.offset + entry.skip * (entry.next % size)) % size) as usize;
                    entry.next += 1;
                    tries += 1;
                    if table[slot] == EMPTY {
                        table[slot] = local as u32;
                        filled += 1;
                        break;
                    }
                    if tries > size {
                        let free = table.iter().position(|&s| s == EMPTY).unwrap_or(0);
                        table[free] = local as u32;
                        filled += 1;
                        break;
                    }
                }
            }
            round += 1;
        }
        Maglev { table }
    }

    /// Number of table slots (0 when there are no hosts).
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The slot serving `hash`. The table must not be empty.
    pub(crate) fn position(&self, hash: u64) -> usize {
        (hash % self.table.len() as u64) as usize
    }

    /// The local host index in slot `pos` (taken modulo the table size).
    pub(crate) fn host_at(&self, pos: usize) -> usize {
        self.table[pos % self.table.len()] as usize
    }
}
