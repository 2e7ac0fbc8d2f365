//! The [`Db`] extractor over an instrumented, bounded, self-healing sqlx pool ([`DbPool`]).
//!
//! ## Sizing (the defaults)
//!
//! A pool needs about as many connections as queries are in progress at once, which by
//! Little's law is `L = λ · W`: queries per second times the time one query holds its
//! connection. The demo's 10,000 users, each sending a request per second of think time, make
//! at most 10,000 requests/s; with the response cache answering ≥ 85 % of them, about 1,500
//! queries/s reach the database. An indexed point query on a local PostgreSQL holds its
//! connection ~2 ms (round trips included), so on average `1,500 × 0.002 = 3` connections are
//! busy. Arrivals are bursty (Poisson: the 99.9th percentile of in-progress queries at a mean of
//! 3 is 9) and a slow query or a checkpoint can double `W`, so the default `max_connections` is
//! **16**: room for the bursts and a 2× slowdown, while 4 pods × 16 stay below PostgreSQL's
//! default `max_connections` of 100. More connections than that would not make queries
//! faster, only make them queue inside PostgreSQL instead of here, where the wait is bounded.
//!
//! `min_connections` = 2 keeps a warm pair so the first requests after a quiet spell pay no
//! connection setup. `acquire_timeout` = 250 ms: a request that cannot get a connection within
//! that is better answered 503 at once (the client may retry elsewhere) than queued behind a
//! saturated database. `test_before_acquire` = true costs one round trip per acquisition but
//! is what makes the pool heal by itself: a connection killed on the server side
//! (`pg_terminate_backend`, a failover, a proxy timeout) is found dead and replaced before a
//! handler sees it. `idle_timeout` = 5 min and `max_lifetime` = 30 min close connections
//! before middleboxes or the server do it for us, and spread reconnections over time.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use opentelemetry::metrics::Meter;
use sqlx::{pool::PoolConnection, pool::PoolOptions, Connection, Database, Executor, Pool};
use tokio::time::Instant;

use crate::{
    health::{spawn_checker, Checked, Health, HealthConfig, HealthTracker},
    metrics::{GaugeSource, Occupancy, PoolMetrics},
    status::PoolReport,
    BuildError, PoolRejection,
};

/// Configuration of a [`DbPool`]. Serde form (all fields optional):
///
/// ```toml
/// name = "db"
/// url = "postgres://app@db:5432/app?application_name=phalanx"
/// min_connections = 2
/// max_connections = 16
/// acquire_timeout_ms = 250
/// idle_timeout_ms = 300000
/// max_lifetime_ms = 1800000
/// test_before_acquire = true
/// retry_after_ms = 1000
/// fail_fast_when_unhealthy = true
/// [health]
/// interval_ms = 1000
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbPoolConfig {
    /// The pool's name: the `pool` label of its metrics and its key in `/status`. Default: `db`.
    pub name: String,
    /// The database URL. Default: `sqlite://phalanx-demo.db?mode=rwc` (the embedded demo database).
    pub url: String,
    /// Connections kept open even when idle. Default: 2.
    pub min_connections: u32,
    /// The most connections the pool opens. Default: 16 (see the module docs for the sizing).
    pub max_connections: u32,
    /// The longest a request waits for a connection before a 503, in milliseconds. Default: 250.
    pub acquire_timeout_ms: u64,
    /// Close connections idle this long, in milliseconds; `None` never. Default: 300000 (5 min).
    pub idle_timeout_ms: Option<u64>,
    /// Close connections this old, in milliseconds; `None` never. Default: 1800000 (30 min).
    pub max_lifetime_ms: Option<u64>,
    /// Ping an idle connection before handing it out (replaces dead ones). Default: true.
    pub test_before_acquire: bool,
    /// The `Retry-After` of a 503, in milliseconds (sent rounded up to whole seconds). Default: 1000.
    pub retry_after_ms: u64,
    /// While the health check says unhealthy, answer 503 at once instead of waiting for the
    /// acquire timeout. Default: true.
    pub fail_fast_when_unhealthy: bool,
    /// The background health check (`SELECT 1`).
    pub health: HealthConfig,
}

impl Default for DbPoolConfig {
    fn default() -> Self {
        DbPoolConfig {
            name: "db".into(),
            url: "sqlite://phalanx-demo.db?mode=rwc".into(),
            min_connections: 2,
            max_connections: 16,
            acquire_timeout_ms: 250,
            idle_timeout_ms: Some(300_000),
            max_lifetime_ms: Some(1_800_000),
            test_before_acquire: true,
            retry_after_ms: 1000,
            fail_fast_when_unhealthy: true,
            health: HealthConfig::default(),
        }
    }
}

impl DbPoolConfig {
    /// The defaults with this URL.
    pub fn from_url(url: impl Into<String>) -> Self {
        DbPoolConfig { url: url.into(), ..Self::default() }
    }

    fn validate(&self) -> Result<(), BuildError> {
        let fail = |msg: String| Err(BuildError::Config(format!("db pool `{}`: {msg}", self.name)));
        if self.name.is_empty() {
            return fail("name must not be empty".into());
        }
        if self.max_connections == 0 {
            return fail("max_connections must be >= 1".into());
        }
        if self.min_connections > self.max_connections {
            return fail(format!(
                "min_connections ({}) exceeds max_connections ({})",
                self.min_connections, self.max_connections
            ));
        }
        if self.acquire_timeout_ms == 0 {
            return fail("acquire_timeout_ms must be > 0".into());
        }
        self.health.validate(&self.name).map_err(BuildError::Config)
    }

    fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

/// An instrumented sqlx pool: bounded acquisition, gauges, an acquire-wait histogram, and a
/// background health check. Cheap to clone (clones share the pool); put it in the axum state
/// and take connections with the [`Db`] extractor.
///
/// Generic over the sqlx [`Database`]: `DbPool<sqlx::Any>` lets the same handlers run on
/// SQLite or PostgreSQL chosen by URL (call `sqlx::any::install_default_drivers()` first).
pub struct DbPool<DB: Database> {
    shared: Arc<DbShared<DB>>,
}

impl<DB: Database> Clone for DbPool<DB> {
    fn clone(&self) -> Self {
        DbPool { shared: Arc::clone(&self.shared) }
    }
}

impl<DB: Database> std::fmt::Debug for DbPool<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPool")
            .field("name", &self.shared.config.name)
            .field("occupancy", &self.occupancy())
            .field("health", &self.health())
            .finish()
    }
}

struct DbShared<DB: Database> {
    pool: Pool<DB>,
    config: DbPoolConfig,
    metrics: PoolMetrics,
    health: HealthTracker,
    opened: Arc<AtomicU64>,
    in_use: Arc<AtomicU64>,
    acquisitions: AtomicU64,
}

/// Builds a [`DbPool`]: [`DbPool::builder`].
#[derive(Debug)]
pub struct DbPoolBuilder<DB: Database> {
    config: DbPoolConfig,
    meter: Option<Meter>,
    connect_options: Option<<DB::Connection as Connection>::Options>,
}

impl<DB: Database> DbPoolBuilder<DB> {
    /// Record through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Connect with these options instead of parsing `config.url`.
    pub fn connect_options(mut self, options: <DB::Connection as Connection>::Options) -> Self {
        self.connect_options = Some(options);
        self
    }

    /// Build the pool and start its health check. Connections open lazily (and
    /// `min_connections` in the background), so this succeeds while the database is down.
    /// Must be called within a Tokio runtime.
    pub fn build(self) -> Result<DbPool<DB>, BuildError>
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        let DbPoolBuilder { config, meter, connect_options } = self;
        config.validate()?;
        let meter = meter.unwrap_or_else(phalanx_core::default_meter);
        let opened = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&opened);
        let options = PoolOptions::<DB>::new()
            .min_connections(config.min_connections)
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout())
            .idle_timeout(config.idle_timeout_ms.map(Duration::from_millis))
            .max_lifetime(config.max_lifetime_ms.map(Duration::from_millis))
            .test_before_acquire(config.test_before_acquire)
            .after_connect(move |_conn, _meta| {
                counter.fetch_add(1, Ordering::Relaxed);
                Box::pin(async { Ok(()) })
            });
        let pool = match connect_options {
            Some(opts) => options.connect_lazy_with(opts),
            None => options
                .connect_lazy(&config.url)
                .map_err(|e| BuildError::Config(format!("db pool `{}`: invalid url: {e}", config.name)))?,
        };
        let shared = Arc::new(DbShared {
            pool,
            metrics: PoolMetrics::new(&meter, &config.name),
            health: HealthTracker::new(config.health.clone()),
            config,
            opened,
            in_use: Arc::new(AtomicU64::new(0)),
            acquisitions: AtomicU64::new(0),
        });
        shared.metrics.register_gauges(&meter, &shared);
        spawn_checker(&shared);
        Ok(DbPool { shared })
    }
}

impl<DB: Database> DbPool<DB> {
    /// A builder for a pool with this configuration.
    pub fn builder(config: DbPoolConfig) -> DbPoolBuilder<DB> {
        DbPoolBuilder { config, meter: None, connect_options: None }
    }

    /// A pool with this configuration, recording through the default meter.
    pub fn new(config: DbPoolConfig) -> Result<Self, BuildError>
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        Self::builder(config).build()
    }

    /// A connection within the acquire timeout, or the 503 to send instead.
    pub async fn acquire(&self) -> Result<Db<DB>, PoolRejection> {
        let s = &*self.shared;
        if s.config.fail_fast_when_unhealthy && s.health.state() == Health::Unhealthy {
            s.metrics.error("unavailable");
            return Err(self.unavailable("failing health checks".into()));
        }
        let started = Instant::now();
        let result = s.pool.acquire().await;
        let waited = started.elapsed();
        match result {
            Ok(conn) => {
                s.acquisitions.fetch_add(1, Ordering::Relaxed);
                s.metrics.acquired(waited);
                s.in_use.fetch_add(1, Ordering::Relaxed);
                Ok(Db { conn, _held: Held(Arc::clone(&s.in_use)) })
            }
            Err(sqlx::Error::PoolTimedOut) if s.pool.size() < s.config.max_connections => {
                // There was room to open a connection and still none came: the database is slow
                // or unreachable, which more waiting would not fix.
                s.metrics.error("unavailable");
                Err(self.unavailable(format!("no connection could be opened within {} ms", waited.as_millis())))
            }
            Err(sqlx::Error::PoolTimedOut) => {
                s.metrics.acquire_timed_out(waited);
                s.health.note_pressure();
                Err(PoolRejection::Exhausted { pool: s.config.name.clone(), waited, retry_after: self.retry_after() })
            }
            Err(e) => {
                s.metrics.error("error");
                Err(self.unavailable(e.to_string()))
            }
        }
    }

    fn retry_after(&self) -> Duration {
        Duration::from_millis(self.shared.config.retry_after_ms)
    }

    fn unavailable(&self, detail: String) -> PoolRejection {
        tracing::warn!(pool = %self.shared.config.name, %detail, "database unavailable");
        PoolRejection::Unavailable { pool: self.shared.config.name.clone(), detail, retry_after: self.retry_after() }
    }

    /// The sqlx pool underneath. Connections used through it directly are not counted in
    /// `in_use` nor in the acquire metrics: take them with [`DbPool::acquire`] or [`Db`].
    pub fn sqlx(&self) -> &Pool<DB> {
        &self.shared.pool
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Its configuration.
    pub fn config(&self) -> &DbPoolConfig {
        &self.shared.config
    }

    /// How full it is now.
    pub fn occupancy(&self) -> Occupancy {
        self.shared.occupancy()
    }

    /// Its health now.
    pub fn health(&self) -> Health {
        self.shared.health.state()
    }

    /// Acquisitions that timed out so far.
    pub fn timeouts(&self) -> u64 {
        self.shared.metrics.timeouts_total()
    }

    /// Failed acquisitions (other than timeouts) so far.
    pub fn errors(&self) -> u64 {
        self.shared.metrics.errors_total()
    }

    /// Connections opened so far (replacements of dead ones included).
    pub fn connections_opened(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }
}

impl<DB: Database> GaugeSource for DbShared<DB> {
    fn occupancy(&self) -> Occupancy {
        let size = u64::from(self.pool.size());
        let in_use = self.in_use.load(Ordering::Relaxed);
        let idle = (self.pool.num_idle() as u64).min(size.saturating_sub(in_use));
        Occupancy { size, idle, in_use, max: u64::from(self.config.max_connections) }
    }

    fn health(&self) -> Health {
        self.health.state()
    }
}

impl<DB: Database> Checked for DbShared<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn tracker(&self) -> &HealthTracker {
        &self.health
    }

    async fn check(self: Arc<Self>) -> Result<(), String> {
        let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
        conn.execute("SELECT 1").await.map(drop).map_err(|e| e.to_string())
    }

    fn saturated(&self) -> bool {
        self.in_use.load(Ordering::Relaxed) >= u64::from(self.config.max_connections)
    }
}

impl<DB: Database> PoolReport for DbPool<DB> {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn report(&self) -> serde_json::Value {
        let s = &*self.shared;
        let o = s.occupancy();
        serde_json::json!({
            "kind": "sql",
            "size": o.size,
            "idle": o.idle,
            "in_use": o.in_use,
            "max": o.max,
            "min": s.config.min_connections,
            "utilization": o.utilization(),
            "utilization_of_open": o.utilization_of_open(),
            "acquisitions": s.acquisitions.load(Ordering::Relaxed),
            "acquire_timeout_ms": s.config.acquire_timeout_ms,
            "acquire_wait": s.metrics.acquire.report(),
            "timeouts": s.metrics.timeouts_total(),
            "errors": s.metrics.errors_total(),
            "connections_opened": s.opened.load(Ordering::Relaxed),
            "health": s.health.snapshot(),
        })
    }

    fn utilization(&self) -> f64 {
        self.occupancy().utilization()
    }

    fn health(&self) -> Health {
        self.shared.health.state()
    }
}

/// A pooled connection, taken from the [`DbPool`] in the axum state within its acquire
/// timeout; otherwise the handler is not called and the client gets a 503 ([`PoolRejection`]).
/// Derefs to the driver's connection, so `query.fetch_one(&mut *db)` works.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use phalanx_pools::{Db, DbPool, DbPoolConfig};
///
/// async fn count(mut db: Db<sqlx::Sqlite>) -> String {
///     let n: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *db).await.unwrap_or(0);
///     n.to_string()
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = DbPool::<sqlx::Sqlite>::new(DbPoolConfig::from_url("sqlite::memory:"))?;
/// let app: Router = Router::new().route("/count", get(count)).with_state(pool);
/// # Ok(()) }
/// ```
pub struct Db<DB: Database = sqlx::Any> {
    conn: PoolConnection<DB>,
    _held: Held,
}

/// Counts a connection as in use while a [`Db`] holds it.
struct Held(Arc<AtomicU64>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<DB: Database> Db<DB> {
    /// The sqlx pool connection (returned to the pool when dropped). From here on it no longer
    /// counts as in use in the pool's figures.
    pub fn into_inner(self) -> PoolConnection<DB> {
        self.conn
    }
}

impl<DB: Database> std::fmt::Debug for Db<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl<DB: Database> std::ops::Deref for Db<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<DB: Database> std::ops::DerefMut for Db<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<DB, S> FromRequestParts<S> for Db<DB>
where
    DB: Database,
    DbPool<DB>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = PoolRejection;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        DbPool::<DB>::from_ref(state).acquire().await
    }
}
