//! Request coalescing: the first caller for a key loads, the others wait for its result.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;
use tokio::sync::watch;

/// A load in flight: its leader's id and where its result will appear.
type InFlight<T> = (u64, watch::Receiver<Option<T>>);

/// Loads in flight, by key.
pub(crate) struct Coalescer<K, T> {
    in_flight: Mutex<HashMap<K, InFlight<T>, foldhash::quality::RandomState>>,
    next_id: AtomicU64,
}

impl<K, T> Default for Coalescer<K, T> {
    fn default() -> Self {
        Coalescer { in_flight: Mutex::new(HashMap::default()), next_id: AtomicU64::new(0) }
    }
}

/// The caller's part in a load.
pub(crate) enum Join<K: Hash + Eq, T> {
    /// Load, then [`Leader::complete`]. Dropping the leader without completing wakes the
    /// followers empty-handed, so they load by themselves.
    Leader(Leader<K, T>),
    /// Wait for the leader with [`wait`].
    Follower(watch::Receiver<Option<T>>),
}

impl<K: Hash + Eq + Clone, T: Clone> Coalescer<K, T> {
    /// Become the leader for `key`, or a follower of the load already in flight.
    pub(crate) fn join(self: &Arc<Self>, key: &K) -> Join<K, T> {
        let mut map = self.in_flight.lock();
        if let Some((_, rx)) = map.get(key) {
            return Join::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        map.insert(key.clone(), (id, rx));
        Join::Leader(Leader { owner: Arc::clone(self), key: key.clone(), id, tx })
    }
}

/// The one caller that loads a key.
pub(crate) struct Leader<K: Hash + Eq, T> {
    owner: Arc<Coalescer<K, T>>,
    key: K,
    id: u64,
    tx: watch::Sender<Option<T>>,
}

impl<K: Hash + Eq, T> Leader<K, T> {
    /// Hand the result to every follower (and to the ones that join until this leader drops).
    pub(crate) fn complete(self, value: T) {
        self.tx.send_replace(Some(value));
    }
}

impl<K: Hash + Eq, T> Drop for Leader<K, T> {
    fn drop(&mut self) {
        let mut map = self.owner.in_flight.lock();
        // Remove only our own entry: after a completed load a new leader may have taken the key.
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}

/// Wait for the leader's result; `None` when the leader gave up without one.
pub(crate) async fn wait<T: Clone>(mut rx: watch::Receiver<Option<T>>) -> Option<T> {
    let got = match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    };
    got.or_else(|| rx.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_result_and_a_dropped_leader_frees_the_key() {
        let c: Arc<Coalescer<&str, u32>> = Arc::default();
        let Join::Leader(leader) = c.join(&"k") else { panic!("first caller leads") };
        let Join::Follower(rx) = c.join(&"k") else { panic!("second caller follows") };
        leader.complete(7);
        assert_eq!(wait(rx).await, Some(7));
        assert!(c.in_flight.lock().is_empty());

        let Join::Leader(leader) = c.join(&"k") else { panic!("key is free again") };
        let Join::Follower(rx) = c.join(&"k") else { panic!() };
        drop(leader);
        assert_eq!(wait(rx).await, None);
    }
}
