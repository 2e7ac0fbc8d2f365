//! [`TieredCacheConfig`]: what a TieredCache is built from, as read from the service's TOML.

use std::time::Duration;

use phalanx_core::ConfigError;

/// TieredCache configuration. Serde form (every field optional, defaults shown):
///
/// ```toml
/// max_bytes = 67108864          # L1 memory cap (weighed in encoded bytes)
/// default_ttl = "60s"           # TTL of an entry inserted without one
/// # time_to_idle = "10m"        # default: entries do not expire for idleness
/// namespace = "phalanx:cache"   # Redis key prefix and pub/sub channel prefix
/// compress_above_bytes = 1024   # lz4 in L2 above this size; 0 disables compression
/// # outage_l1_ttl = "30s"       # opt-in bound on L1 age while invalidations may be missed
/// l2 = true                     # use the shared Redis handle (Deps) for L2, when there is one
/// l2_read_timeout = "20ms"      # deadline of an L2 read on the request path
/// l2_circuit_failures = 3       # consecutive failed L2 round trips that open the L2 circuit
/// l2_circuit_open_for = "1s"    # how long it stays open before one probe goes through
/// l2_write_queue = 8192         # queued L2 stores; past it a store is dropped, counted
/// coalesce_timeout = "5s"       # how long a caller waits for another's load of the same key
/// # node_id = "pod-a"           # default: random
/// # target_hit_ratio = 0.85     # a /status target; default: none
/// ```
///
/// Redis is not configured here: the process opens one
/// `phalanx_core::redis::RedisHandle` and hands it over in
/// [`Deps`](phalanx_core::Deps) (or [`TieredCacheBuilder::redis`](super::TieredCacheBuilder)).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TieredCacheConfig {
    /// L1 memory cap in bytes. Default: 64 MiB.
    pub max_bytes: u64,
    /// TTL of an entry inserted without one. Default: `"60s"`.
    #[serde(with = "phalanx_core::duration")]
    pub default_ttl: Duration,
    /// Idle time after which an L1 entry is dropped. Default: none (no idle expiry).
    #[serde(with = "phalanx_core::duration::option")]
    pub time_to_idle: Option<Duration>,
    /// Prefix of every Redis key and of the invalidation channel. Give every cache of a process
    /// its own. Default: `phalanx:cache`.
    pub namespace: String,
    /// Values whose encoding is larger than this are lz4-compressed in L2; 0 disables.
    /// Default: 1024.
    pub compress_above_bytes: usize,
    /// Opt-in: while invalidations may be missed (the channel is not subscribed and
    /// reconciled), serve an L1 entry for at most this long after that began or after it was
    /// loaded, whichever is later. None: entries are served to their TTL, and the node drops
    /// what it may have missed once the channel is back (see the crate README for the bound).
    /// Default: none.
    #[serde(with = "phalanx_core::duration::option")]
    pub outage_l1_ttl: Option<Duration>,
    /// Use the Redis handle of [`Deps`](phalanx_core::Deps) for L2 and cross-node invalidation
    /// when it carries one (false: this cache stays L1 only). Needs feature `redis`; ignored
    /// without it. Default: true.
    pub l2: bool,
    /// Deadline of an L2 read on the request path (at most the Redis command timeout).
    /// Default: `"20ms"`.
    #[serde(with = "phalanx_core::duration")]
    pub l2_read_timeout: Duration,
    /// Consecutive failed or timed-out L2 round trips that open the L2 circuit. Default: 3.
    pub l2_circuit_failures: u32,
    /// How long the L2 circuit stays open before one probe may go through. Default: `"1s"`.
    #[serde(with = "phalanx_core::duration")]
    pub l2_circuit_open_for: Duration,
    /// Capacity of the L2 write queue; a store that finds it full is dropped and counted.
    /// Default: 8192.
    pub l2_write_queue: usize,
    /// How long a caller waits for another caller's load of the same key before loading
    /// itself. Default: `"5s"`.
    #[serde(with = "phalanx_core::duration")]
    pub coalesce_timeout: Duration,
    /// This node's id in invalidation messages (it ignores its own). Default: random.
    pub node_id: Option<String>,
    /// The `/status` target for the hit ratio, a fraction (0.85 is 85 %). Default: none (the
    /// section reports the ratio but judges nothing).
    pub target_hit_ratio: Option<f64>,
}

impl Default for TieredCacheConfig {
    fn default() -> Self {
        TieredCacheConfig {
            max_bytes: 64 * 1024 * 1024,
            default_ttl: Duration::from_secs(60),
            time_to_idle: None,
            namespace: "phalanx:cache".into(),
            compress_above_bytes: 1024,
            outage_l1_ttl: None,
            l2: true,
            l2_read_timeout: Duration::from_millis(20),
            l2_circuit_failures: 3,
            l2_circuit_open_for: Duration::from_secs(1),
            l2_write_queue: 8192,
            coalesce_timeout: Duration::from_secs(5),
            node_id: None,
            target_hit_ratio: None,
        }
    }
}

impl TieredCacheConfig {
    /// The defaults (as [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// With this L1 memory cap in bytes.
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// With this TTL for entries inserted without one.
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Dropping L1 entries not read for this long.
    pub fn with_time_to_idle(mut self, idle: Duration) -> Self {
        self.time_to_idle = Some(idle);
        self
    }

    /// With this Redis key and channel prefix.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// lz4-compressing L2 values larger than this (0: never).
    pub fn with_compress_above_bytes(mut self, bytes: usize) -> Self {
        self.compress_above_bytes = bytes;
        self
    }

    /// Serving L1 entries for at most this long while invalidations may be missed.
    pub fn with_outage_l1_ttl(mut self, ttl: Duration) -> Self {
        self.outage_l1_ttl = Some(ttl);
        self
    }

    /// Using the Deps' Redis handle for L2 (true) or staying L1 only (false).
    pub fn with_l2(mut self, on: bool) -> Self {
        self.l2 = on;
        self
    }

    /// With this deadline for an L2 read on the request path.
    pub fn with_l2_read_timeout(mut self, timeout: Duration) -> Self {
        self.l2_read_timeout = timeout;
        self
    }

    /// Opening the L2 circuit after this many consecutive failed round trips.
    pub fn with_l2_circuit_failures(mut self, failures: u32) -> Self {
        self.l2_circuit_failures = failures;
        self
    }

    /// Keeping the L2 circuit open this long before one probe.
    pub fn with_l2_circuit_open_for(mut self, open_for: Duration) -> Self {
        self.l2_circuit_open_for = open_for;
        self
    }

    /// With this L2 write queue capacity.
    pub fn with_l2_write_queue(mut self, capacity: usize) -> Self {
        self.l2_write_queue = capacity;
        self
    }

    /// Waiting at most this long for another caller's load of the same key.
    pub fn with_coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.coalesce_timeout = timeout;
        self
    }

    /// With this node id in invalidation messages.
    pub fn with_node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// Judging the hit ratio in `/status` against this fraction.
    pub fn with_target_hit_ratio(mut self, ratio: f64) -> Self {
        self.target_hit_ratio = Some(ratio);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes == 0 {
            return Err(ConfigError::new("max_bytes", "must be greater than 0"));
        }
        if self.default_ttl.is_zero() {
            return Err(ConfigError::new("default_ttl", "must be greater than 0"));
        }
        if self.namespace.is_empty() {
            return Err(ConfigError::new("namespace", "must not be empty"));
        }
        if self.l2_read_timeout.is_zero() {
            return Err(ConfigError::new("l2_read_timeout", "must be greater than 0"));
        }
        if self.l2_write_queue == 0 {
            return Err(ConfigError::new("l2_write_queue", "must be greater than 0"));
        }
        if self.coalesce_timeout.is_zero() {
            return Err(ConfigError::new("coalesce_timeout", "must be greater than 0"));
        }
        if self.node_id.as_deref().is_some_and(|id| id.is_empty() || id.contains('\n')) {
            return Err(ConfigError::new("node_id", "must be non-empty and contain no newline"));
        }
        if self.target_hit_ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return Err(ConfigError::new("target_hit_ratio", "must be a fraction between 0 and 1"));
        }
        Ok(())
    }
}
