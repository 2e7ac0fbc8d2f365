//! [`TieredCache`]: the public API over the shared state.

use std::{
    future::Future,
    hash::Hash,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
};

use tokio::{sync::oneshot, time::Instant};

use super::{
    doorkeeper::Admission, options::EntryOptions, shared::Shared, token::LoadToken, wire::WriteMsg, CacheKey,
    CacheValue,
};
use crate::{
    coalesce::{self, Join},
    stats::{bump, CacheStats, Counters, StatsProbe},
};

/// A two-level cache for application data. Cheap to clone; clones share everything. Register
/// it for `/status` with `registry.register(cache.clone())` (section `cache`) or
/// `register_as(name, cache.clone())`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use phalanx_cache::{EntryOptions, TieredCache};
///
/// let rows: TieredCache<u64, String> = TieredCache::builder().max_bytes(1 << 20).build().unwrap();
/// let row = rows
///     .get_with_options(7, EntryOptions::new().ttl(Duration::from_secs(30)).tag("item:7"), async {
///         Ok::<_, std::convert::Infallible>("row 7".to_string())
///     })
///     .await
///     .unwrap();
/// assert_eq!(row, "row 7");
/// rows.invalidate_tag("item:7").await;
/// assert_eq!(rows.get_local(&7), None);
/// # }
/// ```
pub struct TieredCache<K, V> {
    pub(super) shared: Arc<Shared<K, V>>,
}

impl<K, V> Clone for TieredCache<K, V> {
    fn clone(&self) -> Self {
        TieredCache { shared: Arc::clone(&self.shared) }
    }
}

impl<K, V> std::fmt::Debug for TieredCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache")
            .field("node_id", &self.shared.node_id)
            .field("l2", &self.shared.l2.is_some())
            .finish_non_exhaustive()
    }
}

impl<K: CacheKey, V: CacheValue> TieredCache<K, V> {
    /// This node's id in invalidation messages.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// Whether this node's L1 is known to have heard every invalidation: true without L2, and
    /// with L2 while the invalidation channel is subscribed and reconciled.
    pub fn is_coherent(&self) -> bool {
        self.shared.coherent()
    }

    /// Whether the L2 circuit is open (requests skip Redis).
    pub fn is_l2_circuit_open(&self) -> bool {
        self.shared.circuit.is_open()
    }

    /// Whether an L2 (Redis) is configured.
    pub fn has_l2(&self) -> bool {
        self.shared.l2.is_some()
    }

    /// The value in L1, without going to Redis. Takes any borrowed form of the key (`&str` for
    /// `String` keys), so a lookup need not allocate.
    pub fn get_local<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shared.lookup_l1(key, Instant::now())
    }

    /// The value in L1, else in L2 (which then fills L1).
    pub async fn get(&self, key: &K) -> Option<V> {
        if let Some(v) = self.shared.lookup_l1(key, Instant::now()) {
            return Some(v);
        }
        self.shared.lookup_l2(key).await
    }

    /// The cached value, or the loader's, stored with the default TTL. Concurrent calls for one
    /// key run one loader.
    pub async fn get_with(&self, key: K, loader: impl Future<Output = V>) -> V {
        let loaded = self
            .get_with_options(key, EntryOptions::default(), async { Ok::<_, std::convert::Infallible>(loader.await) });
        match loaded.await {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// The cached value, or the loader's, stored with these options. Concurrent calls for one
    /// key run one loader: the others wait for its value, for at most the coalesce timeout,
    /// then run their own loaders (and store what they load). A loader error is returned to
    /// its own caller only (and not cached); the callers that waited on it then run their own
    /// loaders. A value whose key or tags were invalidated while its loader ran is returned
    /// but not stored.
    pub async fn get_with_options<E>(
        &self,
        key: K,
        options: EntryOptions,
        loader: impl Future<Output = Result<V, E>>,
    ) -> Result<V, E> {
        let shared = &self.shared;
        if let Some(v) = shared.lookup_l1(&key, Instant::now()) {
            return Ok(v);
        }
        let leader = match shared.loads.join(&key) {
            Join::Leader(leader) => leader,
            Join::Follower(rx) => {
                bump(&shared.counters.l1.coalesced);
                match tokio::time::timeout(shared.coalesce_timeout, coalesce::wait(rx)).await {
                    Ok(Some(Some(v))) => return Ok(v),
                    Ok(_) => return loader.await,
                    Err(_) => {
                        bump(&shared.counters.coalesce_timeouts);
                        let token = shared.token();
                        let value = loader.await?;
                        shared.store(key, value.clone(), options, false, Admission::Filtered, Some(token));
                        return Ok(value);
                    }
                }
            }
        };
        // A load may have completed between the L1 miss and the join.
        if let Some(slot) = shared.l1.get(&key).filter(|s| shared.servable(s, Instant::now())) {
            leader.complete(Some(slot.value.clone()));
            return Ok(slot.value.clone());
        }
        if let Some(v) = shared.lookup_l2(&key).await {
            leader.complete(Some(v.clone()));
            return Ok(v);
        }
        let token = shared.token();
        let value = loader.await?;
        shared.store(key, value.clone(), options, false, Admission::Filtered, Some(token));
        leader.complete(Some(value.clone()));
        Ok(value)
    }

    /// Take a token before loading a value from its source (a database read, an origin call);
    /// hand it to [`Self::insert_loaded`]. The store is refused when the key or one of its tags
    /// is invalidated in between, so a load that read the old row cannot put it back after a
    /// concurrent write's purge.
    pub fn load_token(&self) -> LoadToken {
        self.shared.token()
    }

    /// Store what a load read, if nothing it depends on was invalidated since `token` was
    /// taken (checked here for L1 and again in Redis for L2). Other nodes are not told (they
    /// hold no newer copy). Returns whether L1 took it; the L2 write is queued.
    pub fn insert_loaded(&self, key: K, value: V, options: EntryOptions, token: LoadToken) -> bool {
        self.shared.store(key, value, options, false, Admission::Filtered, Some(token))
    }

    /// Store a value with the default TTL; other nodes drop their L1 copy, and loads of the key
    /// that began earlier are not stored. The L2 write is queued ([`Self::flush`] waits for it).
    pub async fn insert(&self, key: K, value: V) {
        self.shared.store(key, value, EntryOptions::default(), true, Admission::Filtered, None);
    }

    /// Store a value with these options; as [`Self::insert`].
    pub async fn insert_with(&self, key: K, value: V, options: EntryOptions) {
        self.shared.store(key, value, options, true, Admission::Filtered, None);
    }

    /// Wait until the L2 writes queued so far were sent (or dropped).
    pub async fn flush(&self) {
        let Some(writes) = &self.shared.writes else { return };
        let (done, sent) = oneshot::channel();
        if writes.send(WriteMsg::Flush(done)).await.is_ok() {
            let _ = sent.await;
        }
    }

    /// Remove a key from both levels and from every node's L1. Awaits the L2 removal (one
    /// bounded round trip), so a read after it sees no old value on any node. When Redis cannot
    /// take it, it is kept (bounded) and sent again once Redis answers.
    pub async fn remove(&self, key: &K) {
        let shared = &self.shared;
        let text = key.to_string();
        shared.note_invalidation(b'k', &text, None);
        shared.l1.invalidate(key);
        shared.invalidate_remote(b'k', text).await;
    }

    /// Remove every entry carrying `tag`, from both levels and from every node's L1. The L2
    /// purge is incremental (batches of 256 values per bounded round trip) and awaited; as
    /// [`Self::remove`], kept and sent again when Redis could not take it.
    pub async fn invalidate_tag(&self, tag: &str) {
        let shared = &self.shared;
        shared.note_invalidation(b't', tag, None);
        shared.purge_local_tag(tag);
        shared.invalidate_remote(b't', tag.to_owned()).await;
    }

    /// Drop this node's L1 (not L2, not the other nodes).
    pub fn clear_local(&self) {
        self.shared.l1.invalidate_all();
    }

    /// Add `delta` to the counter `key` and return the new value: atomic across nodes with L2
    /// (`INCRBY`), in-process otherwise or while Redis is gone. Counters live apart from values.
    pub async fn increment(&self, key: &K, delta: i64) -> i64 {
        let shared = &self.shared;
        if let Some(l2) = &shared.l2 {
            if let Some(attempt) = shared.circuit.try_acquire() {
                match l2.increment(&key.to_string(), delta).await {
                    Ok(v) => {
                        attempt.success();
                        return v;
                    }
                    Err(e) => {
                        attempt.failure();
                        shared.fallback("increment", &e);
                    }
                }
            }
        }
        let counter = shared.local_counters.get_with(key.clone(), || Arc::new(AtomicI64::new(0)));
        counter.fetch_add(delta, Ordering::AcqRel) + delta
    }

    /// Per-level figures.
    pub fn stats(&self) -> CacheStats {
        self.shared.l1.run_pending_tasks();
        self.shared.snapshot()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// [`Self::get_local`] with the caller's clock reading.
    pub(crate) fn get_local_at<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shared.lookup_l1(key, now)
    }

    /// The value in L1, not counted in the statistics (a second look after waiting).
    pub(crate) fn peek_local(&self, key: &str) -> Option<V>
    where
        K: std::borrow::Borrow<str>,
    {
        let shared = &self.shared;
        shared.l1.get(key).filter(|slot| shared.servable(slot, Instant::now())).map(|slot| slot.value.clone())
    }

    /// Whether there is an L2 to ask.
    pub(crate) fn has_remote(&self) -> bool {
        self.shared.l2.is_some()
    }

    /// The value in L2 only (fills L1 on a hit).
    pub(crate) async fn get_remote(&self, key: &K) -> Option<V> {
        self.shared.lookup_l2(key).await
    }

    /// Store a loaded value without telling the other nodes (a fill after a miss: they hold no
    /// newer copy), refused when an invalidation came after `token`.
    pub(crate) async fn fill(&self, key: K, value: V, options: EntryOptions, token: LoadToken) {
        self.shared.store(key, value, options, false, Admission::Always, Some(token));
    }

    /// Run moka's pending maintenance (evictions, size accounting) now.
    pub fn run_pending_tasks(&self) {
        self.shared.l1.run_pending_tasks();
    }
}
