//! Construction: [`TieredCache::builder`] and [`TieredCache::from_config`], and the one place a
//! TieredCache is assembled.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64},
        Arc,
    },
    time::{Duration, SystemTime},
};

use moka::{notification::RemovalCause, sync::Cache};
use opentelemetry::metrics::Meter;
use parking_lot::Mutex;
use phalanx_core::{ConfigError, Deps};
use tokio::time::Instant;

use super::{
    cache::TieredCache,
    circuit::Circuit,
    config::TieredCacheConfig,
    doorkeeper::Doorkeeper,
    shared::Shared,
    slot::{Slot, SlotExpiry},
    tags::{unindex, TagIndex},
    wire::BUCKETS,
    CacheKey, CacheValue, Hasher,
};
use crate::stats::{bump, register_instruments, Counters};

impl TieredCache<String, ()> {
    /// A builder with the defaults of [`TieredCacheConfig`]; `build` picks the key and value
    /// types.
    pub fn builder() -> TieredCacheBuilder {
        TieredCacheBuilder::default()
    }
}

impl<K: CacheKey, V: CacheValue> TieredCache<K, V> {
    /// Build from a configuration (e.g. read from TOML) and what the process shares: the meter
    /// and, when `config.l2` is on, the Redis handle of `deps` for L2 and invalidation.
    pub fn from_config(config: &TieredCacheConfig, deps: &Deps) -> Result<Self, ConfigError> {
        TieredCacheBuilder::from_parts(config.clone(), deps).build()
    }
}

/// Builds a [`TieredCache`] (see [`TieredCache::builder`]); every setting defaults as in
/// [`TieredCacheConfig`].
#[derive(Debug, Clone, Default)]
pub struct TieredCacheBuilder {
    config: TieredCacheConfig,
    meter: Option<Meter>,
    #[cfg(feature = "redis")]
    redis: Option<phalanx_core::redis::RedisHandle>,
}

impl TieredCacheBuilder {
    /// The builder `from_config` uses: this configuration, the meter of `deps`, and its Redis
    /// handle when `config.l2` is on.
    pub(crate) fn from_parts(config: TieredCacheConfig, deps: &Deps) -> Self {
        #[cfg(feature = "redis")]
        let redis = if config.l2 { deps.redis_handle().cloned() } else { None };
        TieredCacheBuilder {
            meter: deps.meter_ref().cloned(),
            #[cfg(feature = "redis")]
            redis,
            config,
        }
    }

    /// L1 memory cap in bytes.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.config.max_bytes = bytes;
        self
    }

    /// TTL of entries inserted without one.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = ttl;
        self
    }

    /// Drop L1 entries not read for this long.
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.config.time_to_idle = Some(idle);
        self
    }

    /// Redis key prefix and channel prefix.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// Use this Redis handle (the process's one pool and subscriber) for L2 and cross-node
    /// invalidation.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, redis: phalanx_core::redis::RedisHandle) -> Self {
        self.redis = Some(redis);
        self
    }

    /// lz4-compress L2 values larger than this (0: never).
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.config.compress_above_bytes = bytes;
        self
    }

    /// Opt in to serving L1 entries for at most this long past the later of their load and
    /// the moment invalidations may have started to be missed (by default: to their TTL,
    /// reconciled when the channel is back).
    pub fn outage_l1_ttl(mut self, ttl: Duration) -> Self {
        self.config.outage_l1_ttl = Some(ttl);
        self
    }

    /// Deadline of an L2 read on the request path.
    pub fn l2_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.l2_read_timeout = timeout;
        self
    }

    /// Consecutive failed L2 round trips that open the L2 circuit, and how long it stays open
    /// before one probe may go through.
    pub fn l2_circuit(mut self, failures: u32, open_for: Duration) -> Self {
        self.config.l2_circuit_failures = failures;
        self.config.l2_circuit_open_for = open_for;
        self
    }

    /// Capacity of the L2 write queue (stores past it are dropped, counted).
    pub fn l2_write_queue(mut self, capacity: usize) -> Self {
        self.config.l2_write_queue = capacity;
        self
    }

    /// How long a caller waits for another caller's load of the same key before loading itself.
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.config.coalesce_timeout = timeout;
        self
    }

    /// This node's id in invalidation messages.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.config.node_id = Some(id.into());
        self
    }

    /// Judge the hit ratio in `/status` against this fraction (default: no target).
    pub fn target_hit_ratio(mut self, ratio: f64) -> Self {
        self.config.target_hit_ratio = Some(ratio);
        self
    }

    /// Record metrics through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Build the cache. With Redis this must run inside a Tokio runtime (the listener and the
    /// writer are tasks); the handle connects in the background, so a Redis that is down does
    /// not stop the service from starting.
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
                    unindex(&listener_tags, &key, &slot.tags, slot.generation);
                }
            });
        if let Some(idle) = config.time_to_idle.filter(|idle| !idle.is_zero()) {
            l1 = l1.time_to_idle(idle);
        }
        let node_id: Arc<str> = match &config.node_id {
            Some(id) => id.as_str().into(),
            None => random_node_id().into(),
        };
        #[cfg(feature = "redis")]
        let l2 = self.redis.map(|redis| super::l2::L2::new(redis, &config.namespace, config.l2_read_timeout));
        #[cfg(not(feature = "redis"))]
        let l2: Option<super::l2::L2> = None;
        let (writes, queued) = match &l2 {
            Some(_) => {
                let (tx, rx) = tokio::sync::mpsc::channel(config.l2_write_queue);
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
            default_ttl: config.default_ttl,
            coalesce_timeout: config.coalesce_timeout,
            incoherent_max_age: config.outage_l1_ttl.unwrap_or(Duration::ZERO),
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
            circuit: Circuit::new(config.l2_circuit_failures, config.l2_circuit_open_for),
            writes,
            epoch,
            pending: Mutex::new(HashSet::new()),
            tasks: Mutex::new(Vec::new()),
            target_hit_ratio: config.target_hit_ratio,
            l2,
        });
        #[cfg(feature = "redis")]
        if let Some(queued) = queued {
            super::listener::start_listener(&shared);
            let writer = tokio::spawn(super::writer::run_writer(Arc::downgrade(&shared), queued));
            shared.tasks.lock().push(writer);
        }
        #[cfg(not(feature = "redis"))]
        drop(queued);
        register_instruments(&self.meter.unwrap_or_else(phalanx_core::default_meter), &shared);
        Ok(TieredCache { shared })
    }
}

fn random_node_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one((std::process::id(), SystemTime::now()));
    format!("{n:016x}")
}
