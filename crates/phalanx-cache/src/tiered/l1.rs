//! L1 lookups and fills: whether a slot may be served, the counted lookup, and the fill that
//! the invalidation clock and the doorkeeper may refuse.

use std::{hash::Hash, sync::atomic::Ordering, sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{doorkeeper::Admission, shared::Shared, slot::Slot, tags, token::Check, CacheKey, CacheValue};
use crate::stats::bump;

impl<K: CacheKey, V: CacheValue> Shared<K, V> {
    /// Whether an L1 slot may be served now.
    pub(super) fn servable(&self, slot: &Slot<V>, now: Instant) -> bool {
        if now >= slot.expires_at {
            return false;
        }
        if self.incoherent_max_age.is_zero() {
            return true;
        }
        let since = self.incoherent_since.load(Ordering::Acquire);
        if since == 0 {
            return true;
        }
        let outage_start = self.epoch + Duration::from_millis(since - 1);
        now < slot.loaded_at.max(outage_start) + self.incoherent_max_age
    }

    pub(super) fn lookup_l1<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.l1.get(key) {
            Some(slot) if self.servable(&slot, now) => {
                bump(&self.counters.l1.hits);
                Some(slot.value.clone())
            }
            Some(_) => {
                bump(&self.counters.l1.stale);
                self.l1.invalidate(key);
                None
            }
            None => {
                bump(&self.counters.l1.misses);
                None
            }
        }
    }

    /// Put a value in L1, unless an invalidation since `token` (local clock) refuses it.
    /// Returns whether it was admitted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fill_l1(
        &self,
        key: K,
        value: V,
        ttl: Duration,
        tags: Vec<Arc<str>>,
        weight: usize,
        admission: Admission,
        check: Option<Check>,
    ) -> bool {
        if check.is_some_and(|check| self.refuses(check, &key, &tags)) {
            bump(&self.counters.stores_refused);
            return false;
        }
        if admission == Admission::Filtered
            && self.l1.weighted_size() >= self.max_bytes / 10 * 9
            && !self.l1.contains_key(&key)
            && !self.doorkeeper.seen_before(&key, self.l1.entry_count())
        {
            return true;
        }
        let now = Instant::now();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            value,
            loaded_at: now,
            expires_at: now + ttl,
            keep_for: ttl,
            tags: tags.into_boxed_slice(),
            weight: (weight + std::mem::size_of::<Slot<V>>()).min(u32::MAX as usize) as u32,
            generation,
        });
        if !slot.tags.is_empty() {
            tags::index(&self.tags, &key, &slot.tags, generation);
        }
        self.l1.insert(key, slot);
        true
    }
}
