//! The invalidation clock: tokens, the per-bucket record of invalidations (here and, by
//! epoch, in Redis) that refuses stale re-caches, coherence tracking, and the replay of
//! invalidations Redis could not take.

use std::sync::{atomic::Ordering, Arc};

use super::{
    shared::Shared,
    tags,
    token::{Check, LoadToken},
    wire::bucket,
    CacheKey, CacheValue,
};
use crate::stats::bump;

/// Invalidations kept for replay while Redis cannot take them; past this, dropped (counted),
/// and other nodes' copies are bounded by their TTL.
const MAX_PENDING: usize = 10_000;

impl<K: CacheKey, V: CacheValue> Shared<K, V> {
    pub(super) fn coherent(&self) -> bool {
        self.incoherent_since.load(Ordering::Acquire) == 0
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn mark_incoherent(&self) {
        if self.l2.is_none() {
            return;
        }
        let since = self.epoch.elapsed().as_millis() as u64 + 1;
        let _ = self.incoherent_since.compare_exchange(0, since, Ordering::AcqRel, Ordering::Relaxed);
    }

    pub(super) fn note_epoch(&self, epoch: u64) {
        self.remote_epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Redis's current epoch, as a read just returned it. Lower than one seen before: Redis lost
    /// its data (a restart without persistence), so the epochs start again; forget the old ones,
    /// or tokens and reconciliation would compare against numbers that no longer exist.
    pub(super) fn current_epoch(&self, epoch: u64) {
        let seen = self.remote_epoch.load(Ordering::Acquire);
        if epoch >= seen {
            self.note_epoch(epoch);
            return;
        }
        if self.remote_epoch.compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            for applied in self.applied_epoch.iter() {
                applied.store(0, Ordering::Release);
            }
            tracing::info!(seen, epoch, "cache invalidation epoch went back: Redis lost its data");
        }
    }

    /// Record that `name` (a key, `kind` b'k', or a tag, b't') was invalidated now, at this
    /// Redis epoch (`None`: not known, as for this node's own), so that loads that began
    /// earlier are not stored.
    pub(super) fn note_invalidation(&self, kind: u8, name: &str, epoch: Option<u64>) {
        self.note_bucket(bucket(kind, name) as usize, epoch);
    }

    /// An invalidation of bucket `b` at `epoch` is applied here (nothing to refuse: it is done).
    pub(super) fn applied(&self, b: usize, epoch: u64) {
        if let Some(applied) = self.applied_epoch.get(b) {
            applied.fetch_max(epoch, Ordering::AcqRel);
        }
    }

    pub(super) fn note_bucket(&self, b: usize, epoch: Option<u64>) {
        let now = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        if let (Some(local), Some(remote)) = (self.invalidated.get(b), self.invalidated_epoch.get(b)) {
            remote.fetch_max(epoch.unwrap_or(u64::MAX), Ordering::SeqCst);
            local.fetch_max(now, Ordering::SeqCst);
        }
    }

    pub(super) fn token(&self) -> LoadToken {
        LoadToken { local: self.clock.load(Ordering::SeqCst), remote: self.remote_epoch.load(Ordering::Acquire) }
    }

    /// Whether the key or a tag was invalidated on this node after the check's token (and,
    /// for a value read from L2, at an epoch the read did not already see).
    pub(super) fn refuses(&self, check: Check, key: &K, tags: &[Arc<str>]) -> bool {
        let (since, read_epoch) = match check {
            Check::Load(since) => (since, None),
            Check::Read { since, epoch } => (since, Some(epoch)),
        };
        if self.clock.load(Ordering::SeqCst) <= since {
            return false;
        }
        let after = |kind, name: &str| {
            let b = bucket(kind, name) as usize;
            self.invalidated[b].load(Ordering::SeqCst) > since
                && read_epoch.is_none_or(|read| self.invalidated_epoch[b].load(Ordering::SeqCst) > read)
        };
        after(b'k', &key.to_string()) || tags.iter().any(|t| after(b't', t))
    }

    /// Record an invalidation in Redis, unlink what it covers and publish it. When Redis cannot
    /// take it now, keep it (at most [`MAX_PENDING`], then counted as dropped) for
    /// [`Self::replay_pending`].
    pub(super) async fn invalidate_remote(&self, kind: u8, name: String) {
        if !self.try_invalidate_remote(kind, &name).await {
            let mut pending = self.pending.lock();
            if pending.len() < MAX_PENDING {
                pending.insert((kind, name));
            } else {
                bump(&self.counters.l2_writes_dropped);
            }
        }
    }

    async fn try_invalidate_remote(&self, kind: u8, name: &str) -> bool {
        let Some(l2) = &self.l2 else { return true };
        let Some(attempt) = self.circuit.try_acquire() else {
            bump(&self.counters.l2_short_circuits);
            return false;
        };
        let done = if kind == b'k' {
            l2.remove(name, &self.node_id).await
        } else {
            l2.purge_tag(name, &self.node_id).await.map(|(e, _)| e)
        };
        match done {
            Ok(epoch) => {
                attempt.success();
                self.note_epoch(epoch);
                self.applied(bucket(kind, name) as usize, epoch);
                true
            }
            Err(e) => {
                attempt.failure();
                self.fallback(if kind == b'k' { "remove" } else { "invalidate_tag" }, &e);
                false
            }
        }
    }

    /// Send the invalidations Redis could not take earlier, while it answers.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) async fn replay_pending(&self) {
        if self.circuit.is_open() {
            return;
        }
        let waiting: Vec<(u8, String)> = self.pending.lock().drain().collect();
        let mut left = waiting.into_iter();
        for (kind, name) in left.by_ref() {
            if !self.try_invalidate_remote(kind, &name).await {
                let mut pending = self.pending.lock();
                pending.insert((kind, name));
                pending.extend(left);
                return;
            }
        }
    }

    /// Drop every L1 entry carrying `tag` (this node only).
    pub(super) fn purge_local_tag(&self, tag: &str) {
        for key in tags::take(&self.tags, tag) {
            self.l1.invalidate(&key);
        }
    }
}
