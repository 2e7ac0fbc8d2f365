//! One L1 entry and how long moka keeps it.

use std::{sync::Arc, time::Duration};

use moka::Expiry;
use tokio::time::Instant;

/// One L1 entry.
pub(super) struct Slot<V> {
    pub(super) value: V,
    pub(super) loaded_at: Instant,
    pub(super) expires_at: Instant,
    /// How long moka keeps it (its own clock); freshness is judged on `expires_at`.
    pub(super) keep_for: Duration,
    pub(super) tags: Box<[Arc<str>]>,
    pub(super) weight: u32,
    pub(super) generation: u64,
}

pub(super) struct SlotExpiry;

impl<K, V> Expiry<K, Arc<Slot<V>>> for SlotExpiry {
    fn expire_after_create(&self, _: &K, slot: &Arc<Slot<V>>, _: std::time::Instant) -> Option<Duration> {
        Some(slot.keep_for)
    }

    fn expire_after_update(
        &self,
        _: &K,
        slot: &Arc<Slot<V>>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.keep_for)
    }
}
