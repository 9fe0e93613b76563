//! Ketama-style consistent hash ring, built the way Envoy's `RING_HASH` builds it.
//!
//! Every host gets a number of ring entries proportional to its normalized weight. The ring
//! size is `min(ceil(min_weight * minimum_ring_size) / min_weight, maximum_ring_size)`, so
//! the lightest host still gets at least one entry when the maximum allows it. Entry `i` of
//! a host is `xxhash64("{key}_{i}")`. A lookup takes the first entry whose hash is `>=` the
//! request hash, wrapping to the start.

use super::hash::xxhash64;

/// A sorted ring of `(hash, local host index)` entries.
pub(crate) struct Ring {
    entries: Vec<(u64, u32)>,
}

// Only the size: the entries themselves run to thousands or millions.
impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("len", &self.entries.len())
            .finish()
    }
}

impl Ring {
    /// Builds the ring for hosts `keys[i]` with normalized weights `weights[i]` (summing to
    /// 1). Sizes are clamped so that `1 <= minimum <= maximum`.
    pub(crate) fn build(keys: &[&str], weights: &[f64], minimum: u64, maximum: u64) -> Ring {
        let maximum = maximum.max(1);
        let minimum = minimum.clamp(1, maximum);
        // Hosts of weight zero (a locality weighted 0) get no entries.
        let min_weight = weights
            .iter()
            .copied()
            .filter(|&w| w > 0.0)
            .fold(f64::INFINITY, f64::min);
        if keys.is_empty() || !min_weight.is_finite() {
            return Ring {
                entries: Vec::new(),
            };
        }
        let scale = ((min_weight * minimum as f64).ceil() / min_weight).min(maximum as f64);
        let mut entries = Vec::with_capacity(scale as usize + keys.len());
        let mut current = 0.0f64;
        let mut target = 0.0f64;
        for (local, (key, weight)) in keys.iter().zip(weights).enumerate() {
            target += scale * weight;
            let mut replica = 0u64;
            while current < target {
                let hash = xxhash64(format!("{key}_{replica}").as_bytes(), 0);
                entries.push((hash, local as u32));
                replica += 1;
                current += 1.0;
            }
        }
        entries.sort_by_key(|&(hash, _)| hash);
        Ring { entries }
    }

    /// Number of entries on the ring.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Position of the entry serving `hash`: the first entry with a hash `>= hash`,
    /// wrapping to 0. The ring must not be empty.
    pub(crate) fn position(&self, hash: u64) -> usize {
        let at = self.entries.partition_point(|&(h, _)| h < hash);
        if at == self.entries.len() { 0 } else { at }
    }

    /// The local host index at ring position `pos` (taken modulo the ring length).
    pub(crate) fn host_at(&self, pos: usize) -> usize {
        self.entries[pos % self.entries.len()].1 as usize
    }
}
