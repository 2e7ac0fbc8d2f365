//! The [`Redis`] extractor over a fred pool ([`RedisPool`]): RESP3, pipelined, reconnecting by
//! itself, with its latency and errors in the pool vocabulary.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use fred::{
    clients::{Client, Pool},
    error::Error as FredError,
    interfaces::{ClientLike, EventInterface},
    types::RespVersion,
};
use http::request::Parts;
use opentelemetry::metrics::Meter;
use phalanx_core::redis::{bounded, connect_in_background, RedisFailure, RedisSettings};
use tokio::time::Instant;

use crate::{
    health::{spawn_checker, Checked, Health, HealthConfig, HealthTracker},
    metrics::{GaugeSource, Occupancy, PoolMetrics},
    status::PoolReport,
    BuildError, PoolRejection,
};

/// Configuration of a [`RedisPool`]. Serde form (all fields optional):
///
/// ```toml
/// name = "redis"
/// url = "redis://127.0.0.1:6379"
/// pool_size = 4
/// command_timeout_ms = 20
/// connect_timeout_ms = 500
/// reconnect_max_delay_ms = 2000
/// acquire_timeout_ms = 100
/// retry_after_ms = 1000
/// fail_fast_when_unhealthy = true
/// [health]
/// interval_ms = 1000
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisPoolConfig {
    /// The pool's name: the `pool` label of its metrics and its key in `/status`. Default: `redis`.
    pub name: String,
    /// `redis://host:port/db`, `redis-cluster://…` or `rediss://…`. Default: `redis://127.0.0.1:6379`.
    pub url: String,
    /// Connections (each pipelines many commands). Default: 4.
    pub pool_size: usize,
    /// Deadline of one command through [`Redis::run`], in milliseconds. Default: 20.
    pub command_timeout_ms: u64,
    /// Deadline of one connection attempt, in milliseconds. Default: 500.
    pub connect_timeout_ms: u64,
    /// Longest wait between reconnection attempts (exponential from 50 ms, forever), in
    /// milliseconds. Default: 2000.
    pub reconnect_max_delay_ms: u32,
    /// How long a request waits for a connected client while all are reconnecting, in
    /// milliseconds. Default: 100.
    pub acquire_timeout_ms: u64,
    /// The `Retry-After` of a 503, in milliseconds (sent rounded up to whole seconds). Default: 1000.
    pub retry_after_ms: u64,
    /// While the health check says unhealthy, answer 503 at once. Default: true.
    pub fail_fast_when_unhealthy: bool,
    /// The background health check (`PING`).
    pub health: HealthConfig,
    /// PEM file of the certificate authorities a `rediss://` URL trusts (phalanx-core feature
    /// `tls`). Default: none (the system's roots).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for RedisPoolConfig {
    fn default() -> Self {
        let s = RedisSettings::default();
        RedisPoolConfig {
            name: "redis".into(),
            url: s.url,
            pool_size: s.pool_size,
            command_timeout_ms: s.command_timeout.as_millis() as u64,
            connect_timeout_ms: s.connect_timeout.as_millis() as u64,
            reconnect_max_delay_ms: s.reconnect_max_delay.as_millis() as u32,
            acquire_timeout_ms: 100,
            retry_after_ms: 1000,
            fail_fast_when_unhealthy: true,
            health: HealthConfig::default(),
            tls_ca_file: s.tls_ca_file,
        }
    }
}

impl RedisPoolConfig {
    /// The defaults with this URL.
    pub fn from_url(url: impl Into<String>) -> Self {
        RedisPoolConfig { url: url.into(), ..Self::default() }
    }

    fn settings(&self) -> RedisSettings {
        let mut settings = RedisSettings::from_url(self.url.clone())
            .with_pool_size(self.pool_size)
            .with_command_timeout(Duration::from_millis(self.command_timeout_ms))
            .with_connect_timeout(Duration::from_millis(self.connect_timeout_ms));
        settings.reconnect_max_delay = Duration::from_millis(u64::from(self.reconnect_max_delay_ms));
        settings.tls_ca_file = self.tls_ca_file.clone();
        settings
    }

    fn validate(&self) -> Result<(), BuildError> {
        let fail = |msg: &str| Err(BuildError::Config(format!("redis pool `{}`: {msg}", self.name)));
        if self.name.is_empty() {
            return fail("name must not be empty");
        }
        if self.pool_size == 0 {
            return fail("pool_size must be >= 1");
        }
        if self.command_timeout_ms == 0 || self.acquire_timeout_ms == 0 {
            return fail("command_timeout_ms and acquire_timeout_ms must be > 0");
        }
        self.health.validate(&self.name).map_err(BuildError::Config)
    }
}

/// A fred pool with bounded round trips, gauges, latency and error counts, and a health check.
/// Cheap to clone; put it in the axum state and take handles with the [`Redis`] extractor.
///
/// Every client speaks RESP3 and pipelines (fred writes commands from many tasks onto one
/// connection without waiting for replies). Clients fail commands at once while disconnected
/// and reconnect forever with exponential backoff, so a Redis that goes away costs errors,
/// not waiting, and is used again as soon as it is back.
#[derive(Clone)]
pub struct RedisPool {
    shared: Arc<RedisShared>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("name", &self.shared.config.name)
            .field("occupancy", &self.shared.occupancy())
            .field("health", &self.shared.health.state())
            .finish()
    }
}

struct RedisShared {
    pool: Pool,
    config: RedisPoolConfig,
    metrics: PoolMetrics,
    health: HealthTracker,
    in_flight: AtomicU64,
    acquisitions: AtomicU64,
    reconnects: AtomicU64,
    connection_errors: AtomicU64,
}

impl Drop for RedisShared {
    fn drop(&mut self) {
        // The clients' connection tasks outlive their handles until told to quit.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            rt.spawn(async move {
                let _ = pool.quit().await;
            });
        }
    }
}

/// Builds a [`RedisPool`]: [`RedisPool::builder`].
#[derive(Debug)]
pub struct RedisPoolBuilder {
    config: RedisPoolConfig,
    meter: Option<Meter>,
}

impl RedisPoolBuilder {
    /// Record through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Build the pool, start connecting in the background and start the health check. Succeeds
    /// while Redis is down. Must be called within a Tokio runtime.
    pub fn build(self) -> Result<RedisPool, BuildError> {
        let RedisPoolBuilder { config, meter } = self;
        config.validate()?;
        let meter = meter.unwrap_or_else(phalanx_core::default_meter);
        let mut builder = config
            .settings()
            .builder()
            .map_err(|e| BuildError::Config(format!("redis pool `{}`: {e}", config.name)))?;
        builder.with_config(|c| c.version = RespVersion::RESP3);
        let pool = builder.build_pool(config.pool_size).map_err(|e| BuildError::Client(e.to_string()))?;
        let shared = Arc::new(RedisShared {
            pool,
            metrics: PoolMetrics::new(&meter, &config.name),
            health: HealthTracker::new(config.health.clone()),
            config,
            in_flight: AtomicU64::new(0),
            acquisitions: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
        });
        for client in shared.pool.clients() {
            let weak = Arc::downgrade(&shared);
            let _reconnects = client.on_reconnect(move |_server| {
                if let Some(s) = Weak::upgrade(&weak) {
                    s.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                async { Ok(()) }
            });
            let weak = Arc::downgrade(&shared);
            let _errors = client.on_error(move |(error, _server)| {
                if let Some(s) = Weak::upgrade(&weak) {
                    tracing::debug!(pool = %s.config.name, %error, "redis connection error");
                    s.connection_errors.fetch_add(1, Ordering::Relaxed);
                    s.metrics.error("connection");
                }
                async { Ok(()) }
            });
        }
        connect_in_background(&shared.pool);
        shared.metrics.register_gauges(&meter, &shared);
        spawn_checker(&shared);
        Ok(RedisPool { shared })
    }
}

impl RedisPool {
    /// A builder for a pool with this configuration.
    pub fn builder(config: RedisPoolConfig) -> RedisPoolBuilder {
        RedisPoolBuilder { config, meter: None }
    }

    /// A pool with this configuration, recording through the default meter.
    pub fn new(config: RedisPoolConfig) -> Result<Self, BuildError> {
        Self::builder(config).build()
    }

    /// A handle on a connected client; while every client is reconnecting, waits up to the
    /// acquire timeout for one, then gives the 503 to send instead.
    pub async fn acquire(&self) -> Result<Redis, PoolRejection> {
        let s = &*self.shared;
        let retry_after = Duration::from_millis(s.config.retry_after_ms);
        let unavailable = |detail: &str| {
            s.metrics.error("unavailable");
            PoolRejection::Unavailable { pool: s.config.name.clone(), detail: detail.into(), retry_after }
        };
        if s.config.fail_fast_when_unhealthy && s.health.state() == Health::Unhealthy {
            return Err(unavailable("failing health checks"));
        }
        let started = Instant::now();
        let mut client = s.pool.next_connected();
        if !client.is_connected() {
            let timeout = Duration::from_millis(s.config.acquire_timeout_ms);
            if tokio::time::timeout(timeout, client.wait_for_connect()).await.is_err() {
                s.metrics.acquire_timed_out(started.elapsed());
                return Err(unavailable("no connected client within the acquire timeout"));
            }
            client = s.pool.next_connected();
        }
        s.acquisitions.fetch_add(1, Ordering::Relaxed);
        s.metrics.acquired(started.elapsed());
        Ok(Redis { client: client.clone(), shared: Arc::clone(&self.shared) })
    }

    /// The fred pool underneath.
    pub fn fred(&self) -> &Pool {
        &self.shared.pool
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Its configuration.
    pub fn config(&self) -> &RedisPoolConfig {
        &self.shared.config
    }

    /// Connections and commands in flight now.
    pub fn occupancy(&self) -> Occupancy {
        self.shared.occupancy()
    }

    /// Its health now.
    pub fn health(&self) -> Health {
        self.shared.health.state()
    }

    /// Failures counted so far: failed or timed-out commands, connection errors, and requests
    /// refused while unavailable.
    pub fn errors(&self) -> u64 {
        self.shared.metrics.errors_total()
    }

    /// Connections established so far, the first of each client included.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }
}

impl GaugeSource for RedisShared {
    /// `size` counts connected clients, `in_use` the commands in flight through [`Redis::run`];
    /// a pipelined connection carries many, so utilization above 1 is possible and means
    /// commands are queuing in the pipelines.
    fn occupancy(&self) -> Occupancy {
        let size = self.pool.clients().iter().filter(|c| c.is_connected()).count() as u64;
        let in_use = self.in_flight.load(Ordering::Relaxed);
        Occupancy { size, idle: size.saturating_sub(in_use), in_use, max: self.config.pool_size as u64 }
    }

    fn health(&self) -> Health {
        self.health.state()
    }
}

impl Checked for RedisShared {
    fn tracker(&self) -> &HealthTracker {
        &self.health
    }

    async fn check(self: Arc<Self>) -> Result<(), String> {
        let client = self.pool.next_connected();
        client.ping::<()>(None).await.map_err(|e| e.to_string())
    }
}

impl PoolReport for RedisPool {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn report(&self) -> serde_json::Value {
        let s = &*self.shared;
        let o = s.occupancy();
        serde_json::json!({
            "kind": "redis",
            "connected": o.size,
            "size": o.size,
            "max": o.max,
            "in_flight": o.in_use,
            "utilization": o.utilization(),
            "acquisitions": s.acquisitions.load(Ordering::Relaxed),
            "acquire_wait": s.metrics.acquire.report(),
            "commands": s.metrics.command.report(),
            "timeouts": s.metrics.timeouts_total(),
            "errors": s.metrics.errors_total(),
            "connection_errors": s.connection_errors.load(Ordering::Relaxed),
            "connects": s.reconnects.load(Ordering::Relaxed),
            "health": s.health.snapshot(),
        })
    }

    fn utilization(&self) -> f64 {
        self.shared.occupancy().utilization()
    }

    fn health(&self) -> Health {
        self.shared.health.state()
    }
}

/// A handle on a connected client of the [`RedisPool`] in the axum state. Run commands through
/// [`Redis::run`] (bounded by the command timeout, timed, errors counted); it also derefs to
/// the fred [`Client`] for anything else.
///
/// ```no_run
/// use fred::interfaces::KeysInterface;
/// use phalanx_pools::Redis;
///
/// async fn visits(redis: Redis) -> String {
///     match redis.run(|c| async move { c.incr::<i64, _>("visits").await }).await {
///         Ok(n) => n.to_string(),
///         Err(_) => "unknown".into(),
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Redis {
    client: Client,
    shared: Arc<RedisShared>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("pool", &self.shared.config.name).finish_non_exhaustive()
    }
}

struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Redis {
    /// Run a round trip (a command, or a pipeline) within the pool's command timeout; its
    /// latency is recorded and a failure counted (`timeout` or `error`).
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        let s = &*self.shared;
        s.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&s.in_flight);
        let started = Instant::now();
        let result = bounded(Duration::from_millis(s.config.command_timeout_ms), f(self.client.clone())).await;
        s.metrics.round_trip(started.elapsed());
        match &result {
            Ok(_) => {}
            Err(RedisFailure::Timeout) => s.metrics.error("timeout"),
            Err(RedisFailure::Error(_)) => s.metrics.error("error"),
        }
        result
    }

    /// The fred client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl std::ops::Deref for Redis {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl<S> FromRequestParts<S> for Redis
where
    RedisPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = PoolRejection;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        RedisPool::from_ref(state).acquire().await
    }
}

/// `Option<Redis>`: for handlers that use Redis when they can (a counter, a cache) and do
/// without it otherwise. `None` when the state holds no pool (`Option<RedisPool>` is `None`:
/// Redis not configured) or when no client could be had in time (the failure is still counted).
impl<S> OptionalFromRequestParts<S> for Redis
where
    Option<RedisPool>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        match Option::<RedisPool>::from_ref(state) {
            Some(pool) => Ok(pool.acquire().await.ok()),
            None => Ok(None),
        }
    }
}
