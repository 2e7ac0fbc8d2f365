//! TieredCache configuration.

use std::time::Duration;

use phalanx_core::redis::RedisSettings;

/// TieredCache configuration, as read from the service's TOML. Serde form (every field
/// optional, defaults shown):
///
/// ```toml
/// max_bytes = 67108864          # L1 memory cap (weighed in encoded bytes)
/// default_ttl_ms = 60000        # TTL of an entry inserted without one
/// time_to_idle_ms = 0           # 0: entries do not expire for idleness
/// namespace = "phalanx:cache"   # Redis key prefix and pub/sub channel prefix
/// compress_above_bytes = 1024   # lz4 in L2 above this size; 0 disables compression
/// outage_l1_ttl_ms = 0          # opt-in bound on L1 age while invalidations may be missed
/// l2_read_timeout_ms = 20       # deadline of an L2 read on the request path
/// l2_circuit_failures = 3       # consecutive failed L2 round trips that open the L2 circuit
/// l2_circuit_open_ms = 1000     # how long it stays open before one probe goes through
/// l2_write_queue = 8192         # queued L2 stores; past it a store is dropped, counted
/// coalesce_timeout_ms = 5000    # how long a caller waits for another's load of the same key
/// # node_id = "pod-a"           # default: random
/// # [redis]                     # absent: L1 only
/// # url = "redis://127.0.0.1:6379"
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TieredConfig {
    /// L1 memory cap in bytes. Default: 64 MiB.
    pub max_bytes: u64,
    /// TTL of an entry inserted without one, in milliseconds. Default: 60 000.
    pub default_ttl_ms: u64,
    /// Idle time after which an L1 entry is dropped, in milliseconds; 0 disables. Default: 0.
    pub time_to_idle_ms: u64,
    /// Prefix of every Redis key and of the invalidation channel. Default: `phalanx:cache`.
    pub namespace: String,
    /// Values whose encoding is larger than this are lz4-compressed in L2; 0 disables.
    /// Default: 1024.
    pub compress_above_bytes: usize,
    /// Opt-in: while invalidations may be missed (the channel is not subscribed and
    /// reconciled), serve an L1 entry for at most this long after that began or after it was
    /// loaded, whichever is later. 0: entries are served to their TTL, and the node drops
    /// what it may have missed once the channel is back (see the crate README for the bound).
    /// Milliseconds. Default: 0.
    pub outage_l1_ttl_ms: u64,
    /// Deadline of an L2 read on the request path (at most the Redis command timeout), in
    /// milliseconds. Default: 20.
    pub l2_read_timeout_ms: u64,
    /// Consecutive failed or timed-out L2 round trips that open the L2 circuit. Default: 3.
    pub l2_circuit_failures: u32,
    /// How long the L2 circuit stays open before one probe may go through, in milliseconds.
    /// Default: 1000.
    pub l2_circuit_open_ms: u64,
    /// Capacity of the L2 write queue; a store that finds it full is dropped and counted.
    /// Default: 8192.
    pub l2_write_queue: usize,
    /// How long a caller waits for another caller's load of the same key before loading
    /// itself, in milliseconds. Default: 5000.
    pub coalesce_timeout_ms: u64,
    /// This node's id in invalidation messages (it ignores its own). Default: random.
    pub node_id: Option<String>,
    /// Redis for L2 and cross-node invalidation. Default: none (L1 only).
    pub redis: Option<RedisSettings>,
}

impl Default for TieredConfig {
    fn default() -> Self {
        TieredConfig {
            max_bytes: 64 * 1024 * 1024,
            default_ttl_ms: 60_000,
            time_to_idle_ms: 0,
            namespace: "phalanx:cache".into(),
            compress_above_bytes: 1024,
            outage_l1_ttl_ms: 0,
            l2_read_timeout_ms: 20,
            l2_circuit_failures: 3,
            l2_circuit_open_ms: 1000,
            l2_write_queue: 8192,
            coalesce_timeout_ms: 5000,
            node_id: None,
            redis: None,
        }
    }
}

impl TieredConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes == 0 {
            return Err(ConfigError::new("max_bytes must be greater than 0"));
        }
        if self.default_ttl_ms == 0 {
            return Err(ConfigError::new("default_ttl_ms must be greater than 0"));
        }
        if self.namespace.is_empty() {
            return Err(ConfigError::new("namespace must not be empty"));
        }
        if self.l2_read_timeout_ms == 0 || self.l2_write_queue == 0 || self.coalesce_timeout_ms == 0 {
            return Err(ConfigError::new(
                "l2_read_timeout_ms, l2_write_queue and coalesce_timeout_ms must be greater than 0",
            ));
        }
        if self.node_id.as_deref().is_some_and(|id| id.is_empty() || id.contains('\n')) {
            return Err(ConfigError::new("node_id must be non-empty and contain no newline"));
        }
        Ok(())
    }

    pub(crate) fn default_ttl(&self) -> Duration {
        Duration::from_millis(self.default_ttl_ms)
    }
}

/// A configuration the cache cannot be built from.
#[derive(Debug, Clone)]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        ConfigError(msg.into())
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid cache configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}
