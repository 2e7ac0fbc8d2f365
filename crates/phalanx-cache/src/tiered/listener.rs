//! The pub/sub invalidation listener: subscribes the namespace's channel on the process's
//! shared subscriber (on every (re)connection), applies what other nodes publish, and
//! reconciles L1 with what it may have missed while it was not subscribed.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast::error::RecvError;

use super::{
    shared::Shared,
    wire::{bucket, decode_message, Invalidation},
    CacheKey, CacheValue,
};

/// Subscribe to the invalidation channel on every (re)connection, reconcile L1 with the
/// invalidations it may have missed, and apply what other nodes publish. The tasks hold the
/// cache weakly and are aborted when the cache is dropped. The handle's clients are connected
/// by whoever made the handle; the subscriber is shared, so messages of other channels (other
/// caches of the process) are skipped.
pub(super) fn start_listener<K: CacheKey, V: CacheValue>(shared: &Arc<Shared<K, V>>) {
    let Some(l2) = &shared.l2 else { return };
    let subscriber = l2.subscriber().clone();
    let channel = l2.channel.clone();
    let mut reconnects = subscriber.reconnect_rx();
    let mut messages = subscriber.message_rx();
    let mut errors = subscriber.error_rx();
    shared.circuit.set_ready(false);
    let weak: Weak<Shared<K, V>> = Arc::downgrade(shared);
    let pool = l2.redis.pool().clone();
    let ready = weak.clone();
    let connected = tokio::spawn(async move {
        // Every client of the pool up (on a cluster: with its slot map); retried on error.
        while pool.wait_for_connect().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(shared) = ready.upgrade() {
            shared.circuit.set_ready(true);
        }
    });
    shared.tasks.lock().push(connected);
    let task = tokio::spawn(async move {
        // A handle connected before this cache was built sends no connection event for it.
        if subscriber.is_connected() && !subscribe(&subscriber, &channel, &weak).await {
            return;
        }
        // While subscribed but not yet reconciled (Redis did not answer), try again this often.
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = reconnects.recv() => {
                    if matches!(event, Err(RecvError::Closed)) { break; }
                    if !subscribe(&subscriber, &channel, &weak).await { break; }
                }
                message = messages.recv() => {
                    let Some(shared) = weak.upgrade() else { break };
                    match message {
                        Ok(message) => {
                            if *message.channel != *channel {
                                continue;
                            }
                            if let Some(text) = message.value.as_string() {
                                shared.apply_remote(&text);
                            }
                        }
                        // Messages were dropped: reconcile instead of trusting L1 blindly.
                        Err(RecvError::Lagged(_)) => {
                            shared.mark_incoherent();
                            shared.reconcile().await;
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
                error = errors.recv() => {
                    if matches!(error, Err(RecvError::Closed)) { break; }
                    let Some(shared) = weak.upgrade() else { break };
                    shared.subscribed.store(false, Ordering::Release);
                    shared.mark_incoherent();
                }
                _ = retry.tick() => {
                    let Some(shared) = weak.upgrade() else { break };
                    if shared.subscribed.load(Ordering::Acquire) && !shared.coherent() {
                        shared.reconcile().await;
                    }
                    let waiting = !shared.pending.lock().is_empty();
                    if waiting {
                        shared.replay_pending().await;
                    }
                }
            }
        }
    });
    shared.tasks.lock().push(task);
}

/// Subscribe the channel and reconcile; false when the cache is gone.
async fn subscribe<K: CacheKey, V: CacheValue>(
    subscriber: &fred::clients::SubscriberClient,
    channel: &str,
    weak: &Weak<Shared<K, V>>,
) -> bool {
    let subscribed = subscriber.subscribe(channel).await;
    let Some(shared) = weak.upgrade() else { return false };
    match subscribed {
        Ok(()) => {
            shared.subscribed.store(true, Ordering::Release);
            shared.mark_incoherent();
            shared.reconcile().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cache invalidation channel: subscribe failed");
            shared.mark_incoherent();
        }
    }
    true
}

impl<K: CacheKey, V: CacheValue> Shared<K, V> {
    /// Once subscribed again (or after lost messages): ask Redis which name buckets were
    /// invalidated after the last epoch heard, drop the L1 entries in them, and trust L1 again.
    /// One round trip; L1 is walked only when something was missed.
    pub(super) async fn reconcile(&self) -> bool {
        let Some(l2) = &self.l2 else { return true };
        let (epoch, buckets) = match l2.invalidations().await {
            Ok(found) => {
                self.current_epoch(found.0);
                found
            }
            Err(e) => {
                tracing::debug!(error = %e, "cache reconcile: Redis did not answer; will retry");
                return false;
            }
        };
        let missed: HashMap<u64, u64> = buckets
            .into_iter()
            .filter(|&(b, at)| self.applied_epoch.get(b as usize).is_some_and(|seen| at > seen.load(Ordering::Acquire)))
            .collect();
        let mut dropped = 0u64;
        if !missed.is_empty() {
            // Loads in flight may have read what was invalidated: refuse their stores too.
            for (&b, &at) in &missed {
                self.note_bucket(b as usize, Some(at));
            }
            for (key, slot) in self.l1.iter() {
                let stale = missed.contains_key(&bucket(b'k', &key.to_string()))
                    || slot.tags.iter().any(|t| missed.contains_key(&bucket(b't', t)));
                if stale {
                    self.l1.invalidate(&*key);
                    dropped += 1;
                }
            }
        }
        for (&b, &at) in &missed {
            self.applied(b as usize, at);
        }
        self.note_epoch(epoch);
        self.incoherent_since.store(0, Ordering::Release);
        tracing::debug!(node = %self.node_id, missed = missed.len(), dropped, "cache invalidations reconciled");
        true
    }

    fn apply_remote(&self, text: &str) {
        let Some((origin, epoch, inv)) = decode_message(text) else { return };
        if origin == &*self.node_id {
            return;
        }
        self.note_epoch(epoch);
        match inv {
            Invalidation::Key(k) => {
                self.note_invalidation(b'k', k, Some(epoch));
                self.applied(bucket(b'k', k) as usize, epoch);
                if let Ok(key) = k.parse::<K>() {
                    self.l1.invalidate(&key);
                }
            }
            Invalidation::Tag(t) => {
                self.note_invalidation(b't', t, Some(epoch));
                self.purge_local_tag(t);
                self.applied(bucket(b't', t) as usize, epoch);
            }
        }
    }
}
