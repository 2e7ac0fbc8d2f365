//! [`RedisPoolBuilder`]: `RedisPool::builder().redis(handle)…build().await?`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use fred::interfaces::{ClientLike, EventInterface};
use opentelemetry::metrics::Meter;
use phalanx_core::{redis::RedisHandle, ConfigError};

use super::{pool::RedisShared, RedisPool, RedisPoolConfig};
use crate::{
    health::{spawn_checker, HealthConfig, HealthTracker},
    metrics::PoolMetrics,
    Error,
};

/// Builds a [`RedisPool`]: [`RedisPool::builder`]. The shared [`RedisHandle`] must be given;
/// every other setting defaults as in [`RedisPoolConfig`].
#[derive(Debug, Default)]
pub struct RedisPoolBuilder {
    config: RedisPoolConfig,
    redis: Option<RedisHandle>,
    meter: Option<Meter>,
}

impl RedisPoolBuilder {
    /// Start from this configuration (every setting of it replaces the builder's).
    pub fn config(mut self, config: RedisPoolConfig) -> Self {
        self.config = config;
        self
    }

    /// Use the process's shared Redis connections.
    pub fn redis(mut self, handle: RedisHandle) -> Self {
        self.redis = Some(handle);
        self
    }

    /// The pool's name: the `pool` label of its metrics and its `/status` section.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Deadline of one round trip through [`Redis::run`](crate::Redis::run), instead of the
    /// handle's command timeout.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.config.command_timeout = Some(timeout);
        self
    }

    /// How long a request waits for a connected client while all are reconnecting.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.config.acquire_timeout = timeout;
        self
    }

    /// The `Retry-After` of a 503.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.config.retry_after = after;
        self
    }

    /// While unhealthy, answer 503 at once.
    pub fn fail_fast_when_unhealthy(mut self, fail_fast: bool) -> Self {
        self.config.fail_fast_when_unhealthy = fail_fast;
        self
    }

    /// A `/status` target: utilization at most this fraction (default: none).
    pub fn utilization_target(mut self, target: f64) -> Self {
        self.config.utilization_target = Some(target);
        self
    }

    /// The background health check.
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.config.health = health;
        self
    }

    /// Record through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Build the pool over the handle's clients and start the health check. Succeeds while
    /// Redis is down (the handle connects in the background). Must be called within a Tokio
    /// runtime. Fails naming `redis` when no handle was given.
    pub async fn build(self) -> Result<RedisPool, Error> {
        let RedisPoolBuilder { config, redis, meter } = self;
        config.validate()?;
        let handle = redis.ok_or_else(|| {
            ConfigError::new("redis", "no Redis handle: pass one with `.redis(handle)` or in `Deps::redis`")
        })?;
        let meter = meter.unwrap_or_else(phalanx_core::default_meter);
        let command_timeout = config.command_timeout.unwrap_or_else(|| handle.command_timeout());
        // Clients the handle connected before this pool listened count as connections made.
        let connected = handle.pool().clients().iter().filter(|c| c.is_connected()).count() as u64;
        let shared = Arc::new(RedisShared {
            metrics: PoolMetrics::new(&meter, &config.name),
            health: HealthTracker::new(config.health.clone()),
            handle,
            command_timeout,
            config,
            in_flight: AtomicU64::new(0),
            acquisitions: AtomicU64::new(0),
            reconnects: AtomicU64::new(connected),
            connection_errors: AtomicU64::new(0),
            listeners: parking_lot::Mutex::new(Vec::new()),
        });
        let mut listeners = Vec::new();
        for client in shared.handle.pool().clients() {
            let weak = Arc::downgrade(&shared);
            listeners.push(client.on_reconnect(move |_server| {
                if let Some(s) = Weak::upgrade(&weak) {
                    s.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                async { Ok(()) }
            }));
            let weak = Arc::downgrade(&shared);
            listeners.push(client.on_error(move |(error, _server)| {
                if let Some(s) = Weak::upgrade(&weak) {
                    tracing::debug!(pool = %s.config.name, %error, "redis connection error");
                    s.connection_errors.fetch_add(1, Ordering::Relaxed);
                    s.metrics.error("connection");
                }
                async { Ok(()) }
            }));
        }
        *shared.listeners.lock() = listeners;
        shared.metrics.register_gauges(&meter, &shared);
        spawn_checker(&shared);
        Ok(RedisPool { shared })
    }
}
