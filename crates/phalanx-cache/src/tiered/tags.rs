//! The local tag index: which L1 keys carry a tag, so a tag purge finds them without a walk.

use std::{collections::HashMap, hash::Hash, sync::Arc};

use parking_lot::Mutex;

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
pub(super) fn unindex<K: Hash + Eq>(tags: &TagIndex<K>, key: &K, slot_tags: &[Arc<str>], generation: u64) {
    let mut index = tags.lock();
    for tag in slot_tags {
        if let Some(keys) = index.get_mut(tag) {
            if keys.get(key) == Some(&generation) {
                keys.remove(key);
            }
            if keys.is_empty() {
                index.remove(tag);
            }
        }
    }
}

/// The keys carrying `tag`, removed from the index.
pub(super) fn take<K: Hash + Eq>(tags: &TagIndex<K>, tag: &str) -> Vec<K> {
    tags.lock().remove(tag).map(|m| m.into_keys().collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_slot_of_a_key_keeps_its_index_entry() {
        let tags: TagIndex<&str> = TagIndex::default();
        let group: Arc<str> = "group".into();
        index(&tags, &"k", std::slice::from_ref(&group), 1);
        index(&tags, &"k", std::slice::from_ref(&group), 2);
        unindex(&tags, &"k", std::slice::from_ref(&group), 1);
        assert_eq!(take(&tags, "group"), vec!["k"], "the old slot leaving does not unindex the new one");
        assert!(take(&tags, "group").is_empty());
    }
}
