//! [`TieredCache`]: application data in a moka L1 and (optionally) a Redis L2, with coalesced
//! loads, tags, and invalidation that reaches every node.
//!
//! - **L1** is a moka cache (TinyLFU admission), weighed in encoded bytes under
//!   [`TieredConfig::max_bytes`]; each entry has its own TTL and an optional idle time.
//! - **L2** (when [`TieredConfig::redis`] is set) holds the postcard encoding of the value,
//!   lz4-compressed above a size threshold, with its TTL kept by Redis and its tags beside it.
//! - **Loads**: [`TieredCache::get_with`] runs the loader once for concurrent misses of one key,
//!   across both levels; an L2 hit fills L1. Followers wait at most
//!   [`TieredConfig::coalesce_timeout_ms`], then load by themselves.
//! - **Redis is never request latency**: an L1 hit makes no Redis call; an L1 miss makes one
//!   (`MGET` of the value and the invalidation epoch) with [`TieredConfig::l2_read_timeout_ms`]
//!   as deadline, skipped at once while the L2 circuit is open. Stores (value, tag index and,
//!   for `insert`, the announcement) go to a bounded queue written by a background task in
//!   pipelined batches; a full queue drops the store, counted.
//! - **Stale re-cache race**: a load takes a [`LoadToken`] before reading its source; its store
//!   is refused, in L1 and in L2, when its key or one of its tags was invalidated after that.
//! - **Coherence**: `remove`, `insert` and `invalidate_tag` publish on the namespace's channel;
//!   every other node drops the key (or the tag's keys) from its L1. Each invalidation also
//!   increments an epoch in Redis and records it for the name's bucket, so a node whose
//!   subscription was lost drops, once subscribed again, only the L1 entries that may have
//!   missed an invalidation. Timeouts and outages never empty or shorten L1.

mod circuit;
mod config;
pub(crate) mod l2;

use std::{
    collections::{HashMap, HashSet},
    fmt::Display,
    future::Future,
    hash::Hash,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Weak,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use moka::{notification::RemovalCause, sync::Cache, Expiry};
use opentelemetry::metrics::Meter;
use parking_lot::Mutex;
use phalanx_core::redis::{connect_in_background, RedisFailure};
use serde::{de::DeserializeOwned, Serialize};
use tokio::{
    sync::{broadcast::error::RecvError, mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use circuit::Circuit;
pub use config::{ConfigError, TieredConfig};
use l2::{bucket, decode_message, decode_stored, encode_stored, Invalidation, StoreOp, StoreOutcome, BUCKETS, L2};

use crate::{
    coalesce::{self, Coalescer, Join},
    stats::{bump, register_instruments, CacheStats, CacheStatus, Counters, StatsProbe},
};

/// What a key must be: hashable for L1, and written as text (its `Display`, read back with
/// `FromStr`) in Redis keys and invalidation messages. `String`, integers and the like qualify.
pub trait CacheKey: Hash + Eq + Clone + Send + Sync + Display + FromStr + 'static {}
impl<T: Hash + Eq + Clone + Send + Sync + Display + FromStr + 'static> CacheKey for T {}

/// What a value must be: cheap enough to clone (wrap big values in `Arc`) and serde-encodable
/// (postcard, a compact binary format, in L2; the encoded length is the L1 weight).
pub trait CacheValue: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> CacheValue for T {}

/// TTL and tags of one entry.
#[derive(Debug, Clone, Default)]
pub struct EntryOptions {
    ttl: Option<Duration>,
    tags: Vec<Arc<str>>,
}

impl EntryOptions {
    /// Default TTL, no tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// This entry's TTL (instead of the cache's default).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Add a tag (surrogate key): [`TieredCache::invalidate_tag`] removes every entry carrying it.
    pub fn tag(mut self, tag: impl Into<Arc<str>>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Add several tags.
    pub fn tags<T: Into<Arc<str>>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }
}

/// One L1 entry.
struct Slot<V> {
    value: V,
    loaded_at: Instant,
    expires_at: Instant,
    /// How long moka keeps it (its own clock); freshness is judged on `expires_at`.
    keep_for: Duration,
    tags: Box<[Arc<str>]>,
    weight: u32,
    generation: u64,
}

struct SlotExpiry;

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

/// TinyLFU's doorkeeper: while L1 is full, a key is admitted only on its third load within a
/// sample period, so keys seen once or twice do not push out popular ones. moka's own TinyLFU
/// sketch is sized from the entry count at half capacity when a weigher is set (about a quarter
/// of the entries), so its frequencies age too fast; this restores the filtering on skewed
/// traffic (see `benches/zipf.rs`). Bloom filters with two hashes, one per earlier sighting,
/// cleared after `4 × entries` first sightings.
struct Doorkeeper {
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

    fn new() -> Self {
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
    fn seen_before<K: Hash>(&self, key: &K, entries: u64) -> bool {
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

/// Whether a fill of L1 goes through the doorkeeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Through the doorkeeper while L1 is full.
    Filtered,
    /// Always (the HTTP layer's coalesced followers look for the leader's entry in L1).
    Always,
}

/// tag → (key → generation of the slot that carried the tag).
type TagIndex<K> = Mutex<HashMap<Arc<str>, HashMap<K, u64>>>;

/// The tables' hasher: keys come from clients (paths, headers), so it is seeded at random, and
/// it is much cheaper than SipHash.
type Hasher = foldhash::quality::RandomState;

/// Taken before a load reads its source, handed to the store of what it loaded: the store is
/// refused (in L1 and in L2) when the key or one of its tags was invalidated after the token
/// was taken, on this node or, through Redis, on any node. See [`TieredCache::load_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadToken {
    /// This node's invalidation clock when the load began.
    local: u64,
    /// A lower bound of the Redis invalidation epoch when the load began (the highest this
    /// node had seen): lower only refuses more.
    remote: u64,
}

/// What a fill of L1 is checked against.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// A loaded value: refused after any invalidation of its names since this clock.
    Load(u64),
    /// A value read from L2 at `epoch`: refused after an invalidation since `since` that the
    /// read did not already see.
    Read { since: u64, epoch: u64 },
}

/// A message to the background writer.
enum WriteMsg {
    Store(StoreOp),
    /// Answer once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
}

struct Shared<K, V> {
    l1: Cache<K, Arc<Slot<V>>, Hasher>,
    tags: Arc<TagIndex<K>>,
    counters: Arc<Counters>,
    loads: Arc<Coalescer<K, Option<V>>>,
    local_counters: Cache<K, Arc<AtomicI64>, Hasher>,
    l2: Option<L2>,
    circuit: Circuit,
    writes: Option<mpsc::Sender<WriteMsg>>,
    node_id: Arc<str>,
    default_ttl: Duration,
    coalesce_timeout: Duration,
    /// 0: L1 entries are served to their TTL while invalidations may be missed.
    incoherent_max_age: Duration,
    compress_above: usize,
    generation: AtomicU64,
    doorkeeper: Doorkeeper,
    max_bytes: u64,
    /// This node's invalidation clock; per name bucket, the clock of its last invalidation
    /// here and the highest Redis epoch of its invalidations (`u64::MAX`: unknown).
    clock: AtomicU64,
    invalidated: Box<[AtomicU64]>,
    invalidated_epoch: Box<[AtomicU64]>,
    /// Per name bucket, the highest Redis epoch of its invalidations applied here (known
    /// epochs only): a reconcile drops what is in buckets Redis has newer epochs for.
    applied_epoch: Box<[AtomicU64]>,
    /// The highest Redis epoch seen (reads, messages, own invalidations).
    remote_epoch: AtomicU64,
    /// Milliseconds since `epoch` + 1 at which invalidations may have started to be missed; 0
    /// while the channel is subscribed and reconciled (or there is no L2).
    incoherent_since: AtomicU64,
    /// Whether the invalidation channel is subscribed on a live connection.
    subscribed: AtomicBool,
    epoch: Instant,
    /// Invalidations Redis could not take, sent again once it answers.
    pending: Mutex<HashSet<(u8, String)>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Invalidations kept for replay while Redis cannot take them; past this, dropped (counted),
/// and other nodes' copies are bounded by their TTL.
const MAX_PENDING: usize = 10_000;

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

/// A two-level cache for application data. Cheap to clone; clones share everything.
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
    shared: Arc<Shared<K, V>>,
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

/// Builds a [`TieredCache`].
#[derive(Debug, Clone, Default)]
pub struct TieredCacheBuilder {
    config: TieredConfig,
    meter: Option<Meter>,
}

impl TieredCacheBuilder {
    /// L1 memory cap in bytes.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.config.max_bytes = bytes;
        self
    }

    /// TTL of entries inserted without one.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl_ms = ttl.as_millis() as u64;
        self
    }

    /// Drop L1 entries not read for this long.
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.config.time_to_idle_ms = idle.as_millis() as u64;
        self
    }

    /// Redis key prefix and channel prefix.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// Use Redis for L2 and cross-node invalidation.
    pub fn redis(mut self, settings: phalanx_core::redis::RedisSettings) -> Self {
        self.config.redis = Some(settings);
        self
    }

    /// lz4-compress L2 values larger than this (0: never).
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.config.compress_above_bytes = bytes;
        self
    }

    /// Opt in to serving L1 entries for at most this long past the later of their load and
    /// the moment invalidations may have started to be missed (zero, the default: to their
    /// TTL, reconciled when the channel is back).
    pub fn outage_l1_ttl(mut self, ttl: Duration) -> Self {
        self.config.outage_l1_ttl_ms = ttl.as_millis() as u64;
        self
    }

    /// Deadline of an L2 read on the request path.
    pub fn l2_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.l2_read_timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// Consecutive failed L2 round trips that open the L2 circuit, and how long it stays open
    /// before one probe may go through.
    pub fn l2_circuit(mut self, failures: u32, open_for: Duration) -> Self {
        self.config.l2_circuit_failures = failures;
        self.config.l2_circuit_open_ms = open_for.as_millis() as u64;
        self
    }

    /// Capacity of the L2 write queue (stores past it are dropped, counted).
    pub fn l2_write_queue(mut self, capacity: usize) -> Self {
        self.config.l2_write_queue = capacity;
        self
    }

    /// How long a caller waits for another caller's load of the same key before loading itself.
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.config.coalesce_timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// This node's id in invalidation messages.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.config.node_id = Some(id.into());
        self
    }

    /// Record metrics through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Build the cache. With Redis configured this must run inside a Tokio runtime: the
    /// connections are made (and remade) in the background, so a Redis that is down does not
    /// stop the service from starting.
    pub fn build<K: CacheKey, V: CacheValue>(self) -> Result<TieredCache<K, V>, ConfigError> {
        let config = self.config;
        config.validate()?;
        let tags: Arc<TagIndex<K>> = Arc::default();
        let counters: Arc<Counters> = Arc::default();
        let listener_tags = Arc::clone(&tags);
        let listener_counters = Arc::clone(&counters);
        let mut l1 = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_k: &K, slot: &Arc<Slot<V>>| slot.weight)
            .expire_after(SlotExpiry)
            .eviction_listener(move |key: Arc<K>, slot: Arc<Slot<V>>, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    bump(&listener_counters.l1.evictions);
                }
                if !slot.tags.is_empty() {
                    unindex(&listener_tags, &key, &slot);
                }
            });
        if config.time_to_idle_ms > 0 {
            l1 = l1.time_to_idle(Duration::from_millis(config.time_to_idle_ms));
        }
        let node_id: Arc<str> = match &config.node_id {
            Some(id) => id.as_str().into(),
            None => random_node_id().into(),
        };
        let l2 = match &config.redis {
            Some(settings) => {
                let pool = settings.build_pool().map_err(|e| ConfigError::new(format!("redis: {e}")))?;
                let subscriber = settings
                    .builder()
                    .and_then(|b| b.build_subscriber_client())
                    .map_err(|e| ConfigError::new(format!("redis: {e}")))?;
                let deadline = settings.command_timeout;
                let read_deadline = Duration::from_millis(config.l2_read_timeout_ms).min(deadline);
                Some(L2::new(pool, subscriber, &config.namespace, deadline, read_deadline))
            }
            None => None,
        };
        let (writes, queued) = match &l2 {
            Some(_) => {
                let (tx, rx) = mpsc::channel(config.l2_write_queue);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let epoch = Instant::now();
        let shared = Arc::new(Shared {
            l1: l1.build_with_hasher(Hasher::default()),
            tags,
            counters,
            loads: Arc::default(),
            local_counters: Cache::builder().max_capacity(100_000).build_with_hasher(Hasher::default()),
            node_id,
            default_ttl: config.default_ttl(),
            coalesce_timeout: Duration::from_millis(config.coalesce_timeout_ms),
            incoherent_max_age: Duration::from_millis(config.outage_l1_ttl_ms),
            compress_above: config.compress_above_bytes,
            generation: AtomicU64::new(1),
            doorkeeper: Doorkeeper::new(),
            max_bytes: config.max_bytes,
            clock: AtomicU64::new(0),
            invalidated: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            invalidated_epoch: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            applied_epoch: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            remote_epoch: AtomicU64::new(0),
            // Until the channel is first subscribed, invalidations may be missed.
            incoherent_since: AtomicU64::new(if l2.is_some() { 1 } else { 0 }),
            subscribed: AtomicBool::new(false),
            circuit: Circuit::new(config.l2_circuit_failures, Duration::from_millis(config.l2_circuit_open_ms)),
            writes,
            epoch,
            pending: Mutex::new(HashSet::new()),
            tasks: Mutex::new(Vec::new()),
            l2,
        });
        if let Some(queued) = queued {
            start_listener(&shared);
            let writer = tokio::spawn(run_writer(Arc::downgrade(&shared), queued));
            shared.tasks.lock().push(writer);
        }
        register_instruments(&self.meter.unwrap_or_else(phalanx_core::default_meter), &shared);
        Ok(TieredCache { shared })
    }
}

fn random_node_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one((std::process::id(), SystemTime::now()));
    format!("{n:016x}")
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn unindex<K: Hash + Eq>(tags: &TagIndex<K>, key: &K, slot: &Slot<impl Sized>) {
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

/// Stores sent per pipelined round trip.
const WRITE_BATCH: usize = 64;

/// Drain the write queue: batches of stores, one pipelined round trip each, skipped (counted as
/// dropped) while the L2 circuit is open. Ends when the cache is dropped.
async fn run_writer<K: CacheKey, V: CacheValue>(weak: Weak<Shared<K, V>>, mut queue: mpsc::Receiver<WriteMsg>) {
    let mut received = Vec::with_capacity(WRITE_BATCH);
    let mut stores = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut received, WRITE_BATCH).await > 0 {
        let Some(shared) = weak.upgrade() else { break };
        for msg in received.drain(..) {
            match msg {
                WriteMsg::Store(op) => stores.push(op),
                WriteMsg::Flush(done) => {
                    shared.write_stores(&mut stores).await;
                    let _ = done.send(());
                }
            }
        }
        shared.write_stores(&mut stores).await;
    }
}

/// Subscribe to the invalidation channel on every (re)connection, reconcile L1 with the
/// invalidations it may have missed, and apply what other nodes publish. The task holds the
/// cache weakly and is aborted when the cache is dropped.
fn start_listener<K: CacheKey, V: CacheValue>(shared: &Arc<Shared<K, V>>) {
    let Some(l2) = &shared.l2 else { return };
    let subscriber = l2.subscriber.clone();
    let channel = l2.channel.clone();
    let mut reconnects = fred::prelude::EventInterface::reconnect_rx(&subscriber);
    let mut messages = fred::prelude::EventInterface::message_rx(&subscriber);
    let mut errors = fred::prelude::EventInterface::error_rx(&subscriber);
    connect_in_background(&l2.pool);
    connect_in_background(&subscriber);
    shared.circuit.set_ready(false);
    let weak: Weak<Shared<K, V>> = Arc::downgrade(shared);
    let pool = l2.pool.clone();
    let ready = weak.clone();
    let connected = tokio::spawn(async move {
        // Every client of the pool up (on a cluster: with its slot map); retried on error.
        while fred::prelude::ClientLike::wait_for_connect(&pool).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(shared) = ready.upgrade() {
            shared.circuit.set_ready(true);
        }
    });
    shared.tasks.lock().push(connected);
    let task = tokio::spawn(async move {
        // While subscribed but not yet reconciled (Redis did not answer), try again this often.
        let mut retry = tokio::time::interval(Duration::from_millis(500));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = reconnects.recv() => {
                    if matches!(event, Err(RecvError::Closed)) { break; }
                    let subscribed = fred::prelude::PubsubInterface::subscribe(&subscriber, channel.as_str()).await;
                    let Some(shared) = weak.upgrade() else { break };
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
                }
                message = messages.recv() => {
                    let Some(shared) = weak.upgrade() else { break };
                    match message {
                        Ok(message) => {
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

impl<K: CacheKey, V: CacheValue> Shared<K, V> {
    fn coherent(&self) -> bool {
        self.incoherent_since.load(Ordering::Acquire) == 0
    }

    fn mark_incoherent(&self) {
        if self.l2.is_none() {
            return;
        }
        let since = self.epoch.elapsed().as_millis() as u64 + 1;
        let _ = self.incoherent_since.compare_exchange(0, since, Ordering::AcqRel, Ordering::Relaxed);
    }

    fn note_epoch(&self, epoch: u64) {
        self.remote_epoch.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Redis's current epoch, as a read just returned it. Lower than one seen before: Redis lost
    /// its data (a restart without persistence), so the epochs start again; forget the old ones,
    /// or tokens and reconciliation would compare against numbers that no longer exist.
    fn current_epoch(&self, epoch: u64) {
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
    fn note_invalidation(&self, kind: u8, name: &str, epoch: Option<u64>) {
        self.note_bucket(bucket(kind, name) as usize, epoch);
    }

    /// An invalidation of bucket `b` at `epoch` is applied here (nothing to refuse: it is done).
    fn applied(&self, b: usize, epoch: u64) {
        if let Some(applied) = self.applied_epoch.get(b) {
            applied.fetch_max(epoch, Ordering::AcqRel);
        }
    }

    fn note_bucket(&self, b: usize, epoch: Option<u64>) {
        let now = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        if let (Some(local), Some(remote)) = (self.invalidated.get(b), self.invalidated_epoch.get(b)) {
            remote.fetch_max(epoch.unwrap_or(u64::MAX), Ordering::SeqCst);
            local.fetch_max(now, Ordering::SeqCst);
        }
    }

    fn token(&self) -> LoadToken {
        LoadToken { local: self.clock.load(Ordering::SeqCst), remote: self.remote_epoch.load(Ordering::Acquire) }
    }

    /// Whether the key or a tag was invalidated on this node after the check's token (and,
    /// for a value read from L2, at an epoch the read did not already see).
    fn refuses(&self, check: Check, key: &K, tags: &[Arc<str>]) -> bool {
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

    /// Once subscribed again (or after lost messages): ask Redis which name buckets were
    /// invalidated after the last epoch heard, drop the L1 entries in them, and trust L1 again.
    /// One round trip; L1 is walked only when something was missed.
    async fn reconcile(&self) -> bool {
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

    fn purge_local_tag(&self, tag: &str) {
        let keys: Vec<K> = self.tags.lock().remove(tag).map(|m| m.into_keys().collect()).unwrap_or_default();
        for key in keys {
            self.l1.invalidate(&key);
        }
    }

    fn fallback(&self, op: &str, err: &RedisFailure) {
        bump(&self.counters.fallbacks);
        tracing::debug!(op, error = %err, "cache L2 unavailable; answered from L1 and the loader");
    }

    /// Whether an L1 slot may be served now.
    fn servable(&self, slot: &Slot<V>, now: Instant) -> bool {
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

    fn lookup_l1<Q>(&self, key: &Q, now: Instant) -> Option<V>
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
    fn fill_l1(
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
            let mut index = self.tags.lock();
            for tag in slot.tags.iter() {
                index.entry(Arc::clone(tag)).or_default().insert(key.clone(), generation);
            }
        }
        self.l1.insert(key, slot);
        true
    }

    /// The value in L2 (one round trip, bounded by the read deadline; none while the circuit is
    /// open). A hit fills L1, unless the key was invalidated while the read was in flight.
    async fn lookup_l2(&self, key: &K) -> Option<V> {
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
    fn store(
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

    /// Record an invalidation in Redis, unlink what it covers and publish it. When Redis cannot
    /// take it now, keep it (at most [`MAX_PENDING`], then counted as dropped) for
    /// [`Self::replay_pending`].
    async fn invalidate_remote(&self, kind: u8, name: String) {
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
    async fn replay_pending(&self) {
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

    /// Send queued stores (the writer's side).
    async fn write_stores(&self, stores: &mut Vec<StoreOp>) {
        if stores.is_empty() {
            return;
        }
        let Some(l2) = &self.l2 else { return };
        let Some(attempt) = self.circuit.try_acquire() else {
            self.counters.l2_writes_dropped.fetch_add(stores.len() as u64, Ordering::Relaxed);
            stores.clear();
            return;
        };
        match l2.store_batch(stores, &self.node_id).await {
            Ok(outcomes) => {
                attempt.success();
                for (op, outcome) in stores.iter().zip(outcomes) {
                    match outcome {
                        StoreOutcome::Refused => bump(&self.counters.stores_refused),
                        StoreOutcome::Written(0) => {}
                        StoreOutcome::Written(epoch) => {
                            self.note_epoch(epoch);
                            self.applied(bucket(b'k', &op.key) as usize, epoch);
                        }
                    }
                }
            }
            Err(e) => {
                attempt.failure();
                self.fallback("set", &e);
                self.counters.l2_writes_dropped.fetch_add(stores.len() as u64, Ordering::Relaxed);
            }
        }
        stores.clear();
    }
}

impl TieredCache<String, ()> {
    /// A builder with the defaults of [`TieredConfig`].
    pub fn builder() -> TieredCacheBuilder {
        TieredCacheBuilder::default()
    }
}

impl<K: CacheKey, V: CacheValue> TieredCache<K, V> {
    /// Build from a configuration struct (e.g. read from TOML).
    pub fn from_config(config: TieredConfig, meter: Option<Meter>) -> Result<Self, ConfigError> {
        TieredCacheBuilder { config, meter }.build()
    }

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

    /// The `/status` section (name `cache`, target `cache_hit_ratio >= 0.85`).
    pub fn status(&self) -> CacheStatus {
        let weak = Arc::downgrade(&self.shared);
        CacheStatus::new("cache", Arc::new(move || weak.upgrade().map(|s| s.snapshot()).unwrap_or_default()))
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
