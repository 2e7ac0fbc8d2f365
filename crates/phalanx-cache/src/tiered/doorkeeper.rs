//! Admission to L1 while it is full: a TinyLFU-style doorkeeper in front of moka's own filter.

use std::{
    hash::Hash,
    sync::atomic::{AtomicU64, Ordering},
};

/// Whether a fill of L1 goes through the doorkeeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Through the doorkeeper while L1 is full.
    Filtered,
    /// Always (the HTTP layer's coalesced followers look for the leader's entry in L1).
    Always,
}

/// TinyLFU's doorkeeper: while L1 is full, a key is admitted only on its third load within a
/// sample period, so keys seen once or twice do not push out popular ones. moka's own TinyLFU
/// sketch is sized from the entry count at half capacity when a weigher is set (about a quarter
/// of the entries), so its frequencies age too fast; this restores the filtering on skewed
/// traffic (see `benches/zipf.rs`). Bloom filters with two hashes, one per earlier sighting,
/// cleared after `4 × entries` first sightings.
pub(super) struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    additions: AtomicU64,
    hasher: std::hash::RandomState,
}

impl Doorkeeper {
    const BANK_BITS_LOG2: u32 = 20;
    /// Earlier sightings required before admission.
    const SIGHTINGS: u64 = 2;
    /// The sample period, in multiples of the entry count.
    const PERIOD_PER_ENTRY: u64 = 4;

    pub(super) fn new() -> Self {
        let words = (Self::SIGHTINGS << Self::BANK_BITS_LOG2) / 64;
        Doorkeeper {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            additions: AtomicU64::new(0),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn bit(&self, bank: u64, position: u64) -> (usize, u64) {
        let p = (bank << Self::BANK_BITS_LOG2) + position;
        ((p / 64) as usize, 1 << (p % 64))
    }

    /// Whether `key` had enough earlier sightings in this period; records this one.
    pub(super) fn seen_before<K: Hash>(&self, key: &K, entries: u64) -> bool {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        let mask = (1u64 << Self::BANK_BITS_LOG2) - 1;
        let positions = [hash & mask, (hash >> 32) & mask];
        for bank in 0..Self::SIGHTINGS {
            let is_set = |&p: &u64| {
                let (word, bit) = self.bit(bank, p);
                self.bits[word].load(Ordering::Relaxed) & bit != 0
            };
            if positions.iter().all(is_set) {
                continue;
            }
            for p in positions {
                let (word, bit) = self.bit(bank, p);
                self.bits[word].fetch_or(bit, Ordering::Relaxed);
            }
            if bank == 0 && self.additions.fetch_add(1, Ordering::Relaxed) > entries.max(128) * Self::PERIOD_PER_ENTRY {
                self.additions.store(0, Ordering::Relaxed);
                for word in self.bits.iter() {
                    word.store(0, Ordering::Relaxed);
                }
            }
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_admitted_on_its_third_sighting() {
        let door = Doorkeeper::new();
        assert!(!door.seen_before(&"k", 1000));
        assert!(!door.seen_before(&"k", 1000));
        assert!(door.seen_before(&"k", 1000));
        assert!(!door.seen_before(&"other", 1000));
    }
}
