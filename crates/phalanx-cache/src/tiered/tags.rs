//! The local tag index: which L1 keys carry a tag, so a tag purge finds them without a walk.

use std::{collections::HashMap, hash::Hash, sync::Arc};

use parking_lot::Mutex;

use super::{l1::Slot, shared::Shared, CacheKey, CacheValue};

/// tag → (key → generation of the slot that carried the tag).
pub(super) type TagIndex<K> = Mutex<HashMap<Arc<str>, HashMap<K, u64>>>;

/// Index a slot's tags under `key`.
pub(super) fn index<K: Hash + Eq + Clone>(tags: &TagIndex<K>, key: &K, slot_tags: &[Arc<str>], generation: u64) {
    let mut index = tags.lock();
    for tag in slot_tags {
        index.entry(Arc::clone(tag)).or_default().insert(key.clone(), generation);
    }
}

/// Forget a slot that left L1 (only if the index still points at this generation of it).
pub(super) fn unindex<K: Hash + Eq>(tags: &TagIndex<K>, key: &K, slot: &Slot<impl Sized>) {
    let mut index = tags.lock();
    for tag in slot.tags.iter() {
        if let Some(keys) = index.get_mut(tag) {
            if keys.get(key) == Some(&slot.generation) {
                keys.remove(key);
            }
            if keys.is_empty() {
                index.remove(tag);
            }
        }
    }
}

impl<K: CacheKey, V: CacheValue> Shared<K, V> {
    /// Drop every L1 entry carrying `tag` (this node only).
    pub(super) fn purge_local_tag(&self, tag: &str) {
        let keys: Vec<K> = self.tags.lock().remove(tag).map(|m| m.into_keys().collect()).unwrap_or_default();
        for key in keys {
            self.l1.invalidate(&key);
        }
    }
}
