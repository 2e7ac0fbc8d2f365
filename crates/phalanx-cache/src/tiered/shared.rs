//! The state every clone of a TieredCache shares, and the two paths through both levels: the
//! L2 lookup after an L1 miss, and the store (L1 now, L2 queued).

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64},
        Arc,
    },
    time::{Duration, SystemTime},
};

use moka::sync::Cache;
use parking_lot::Mutex;
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use super::{
    circuit::Circuit,
    doorkeeper::{Admission, Doorkeeper},
    l2::{Failure, L2},
    options::EntryOptions,
    slot::Slot,
    tags::TagIndex,
    token::{Check, LoadToken},
    unix_ms,
    wire::{decode_stored, encode_stored, StoreOp, WriteMsg},
    CacheKey, CacheValue, Hasher,
};
use crate::{
    coalesce::Coalescer,
    stats::{bump, Counters, StatsProbe},
};

pub(super) struct Shared<K, V> {
    pub(super) l1: Cache<K, Arc<Slot<V>>, Hasher>,
    pub(super) tags: Arc<TagIndex<K>>,
    pub(super) counters: Arc<Counters>,
    pub(super) loads: Arc<Coalescer<K, Option<V>>>,
    pub(super) local_counters: Cache<K, Arc<AtomicI64>, Hasher>,
    pub(super) l2: Option<L2>,
    pub(super) circuit: Circuit,
    pub(super) writes: Option<mpsc::Sender<WriteMsg>>,
    pub(super) node_id: Arc<str>,
    pub(super) default_ttl: Duration,
    pub(super) coalesce_timeout: Duration,
    /// 0: L1 entries are served to their TTL while invalidations may be missed.
    pub(super) incoherent_max_age: Duration,
    pub(super) compress_above: usize,
    pub(super) generation: AtomicU64,
    pub(super) doorkeeper: Doorkeeper,
    pub(super) max_bytes: u64,
    /// This node's invalidation clock; per name bucket, the clock of its last invalidation
    /// here and the highest Redis epoch of its invalidations (`u64::MAX`: unknown).
    pub(super) clock: AtomicU64,
    pub(super) invalidated: Box<[AtomicU64]>,
    pub(super) invalidated_epoch: Box<[AtomicU64]>,
    /// Per name bucket, the highest Redis epoch of its invalidations applied here (known
    /// epochs only): a reconcile drops what is in buckets Redis has newer epochs for.
    pub(super) applied_epoch: Box<[AtomicU64]>,
    /// The highest Redis epoch seen (reads, messages, own invalidations).
    pub(super) remote_epoch: AtomicU64,
    /// Milliseconds since `epoch` + 1 at which invalidations may have started to be missed; 0
    /// while the channel is subscribed and reconciled (or there is no L2).
    pub(super) incoherent_since: AtomicU64,
    /// Whether the invalidation channel is subscribed on a live connection.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) subscribed: AtomicBool,
    pub(super) epoch: Instant,
    /// Invalidations Redis could not take, sent again once it answers.
    pub(super) pending: Mutex<HashSet<(u8, String)>>,
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The `/status` hit-ratio target, if any.
    pub(super) target_hit_ratio: Option<f64>,
}

impl<K, V> Drop for Shared<K, V> {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
    }
}

impl<K: CacheKey, V: CacheValue> StatsProbe for Shared<K, V> {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn l1_size(&self) -> (u64, u64) {
        (self.l1.weighted_size(), self.l1.entry_count())
    }
}

impl<K: CacheKey, V: CacheValue> Shared<K, V> {
    pub(super) fn fallback(&self, op: &str, err: &Failure) {
        bump(&self.counters.fallbacks);
        tracing::debug!(op, error = %err, "cache L2 unavailable; answered from L1 and the loader");
    }

    /// The value in L2 (one round trip, bounded by the read deadline; none while the circuit is
    /// open). A hit fills L1, unless the key was invalidated while the read was in flight.
    pub(super) async fn lookup_l2(&self, key: &K) -> Option<V> {
        let l2 = self.l2.as_ref()?;
        let Some(attempt) = self.circuit.try_acquire() else {
            bump(&self.counters.l2_short_circuits);
            return None;
        };
        let token = self.token();
        let key_text = key.to_string();
        let (raw, read_epoch) = match l2.get(&key_text).await {
            Ok((raw, epoch)) => {
                attempt.success();
                self.current_epoch(epoch);
                (raw, epoch)
            }
            Err(e) => {
                attempt.failure();
                self.fallback("get", &e);
                return None;
            }
        };
        let Some(raw) = raw else {
            bump(&self.counters.l2.misses);
            return None;
        };
        let decoded = decode_stored(raw).and_then(|stored| {
            let value = postcard::from_bytes::<V>(&stored.value).ok()?;
            Some((stored, value))
        });
        let Some((stored, value)) = decoded else {
            bump(&self.counters.l2.misses);
            return None;
        };
        let remaining = stored.expires_unix_ms.saturating_sub(unix_ms(SystemTime::now()));
        if remaining == 0 {
            bump(&self.counters.l2.stale);
            return None;
        }
        bump(&self.counters.l2.hits);
        let weight = stored.value.len() + key_text.len();
        let ttl = Duration::from_millis(remaining);
        self.fill_l1(
            key.clone(),
            value.clone(),
            ttl,
            stored.tags,
            weight,
            Admission::Filtered,
            Some(Check::Read { since: token.local, epoch: read_epoch }),
        );
        Some(value)
    }

    /// Store in L1 now and queue the L2 write. `announce`: an explicit write, which tells the
    /// other nodes to drop their copy and refuses older loads of the key. `token`: a load's,
    /// checked in both levels (`None`: unconditional).
    pub(super) fn store(
        &self,
        key: K,
        value: V,
        options: EntryOptions,
        announce: bool,
        admission: Admission,
        token: Option<LoadToken>,
    ) -> bool {
        let ttl = options.ttl.unwrap_or(self.default_ttl);
        let encoded = match postcard::to_allocvec(&value) {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::warn!(error = %e, "cache value could not be encoded; not cached");
                return false;
            }
        };
        let key_text = (self.l2.is_some() || announce).then(|| key.to_string());
        if let (true, Some(text)) = (announce, &key_text) {
            self.note_invalidation(b'k', text, None);
        }
        let weight = encoded.len() + std::mem::size_of::<K>();
        let admitted =
            self.fill_l1(key, value, ttl, options.tags.clone(), weight, admission, token.map(|t| Check::Load(t.local)));
        if !admitted {
            return false;
        }
        let (Some(writes), Some(key_text)) = (&self.writes, key_text) else { return true };
        let expires_unix_ms = unix_ms(SystemTime::now()).saturating_add(ttl.as_millis().min(u64::MAX as u128) as u64);
        let payload = encode_stored(&encoded, expires_unix_ms, &options.tags, self.compress_above);
        let op = StoreOp {
            key: key_text,
            payload,
            ttl,
            expires_unix_ms,
            tags: options.tags,
            token: token.map(|t| t.remote),
            announce,
        };
        if writes.try_send(WriteMsg::Store(op)).is_err() {
            bump(&self.counters.l2_writes_dropped);
        }
        true
    }
}
