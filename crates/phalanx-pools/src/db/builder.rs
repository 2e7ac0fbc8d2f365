//! [`DbPoolBuilder`]: `DbPool::builder()…build().await?`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry::metrics::Meter;
use phalanx_core::ConfigError;
use sqlx::{pool::PoolOptions, Connection, Database, Executor};

use super::{pool::DbShared, DbPool, DbPoolConfig};
use crate::{
    health::{spawn_checker, HealthConfig, HealthTracker},
    metrics::PoolMetrics,
    Error,
};

/// Builds a [`DbPool`]: [`DbPool::builder`]. Every setting defaults as in [`DbPoolConfig`];
/// only the URL (or [`connect_options`](Self::connect_options)) must be given.
pub struct DbPoolBuilder<DB: Database> {
    config: DbPoolConfig,
    meter: Option<Meter>,
    connect_options: Option<<DB::Connection as Connection>::Options>,
}

impl<DB: Database> std::fmt::Debug for DbPoolBuilder<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPoolBuilder")
            .field("config", &self.config)
            .field("connect_options", &self.connect_options.is_some())
            .finish_non_exhaustive()
    }
}

impl<DB: Database> Default for DbPoolBuilder<DB> {
    fn default() -> Self {
        DbPoolBuilder { config: DbPoolConfig::default(), meter: None, connect_options: None }
    }
}

impl<DB: Database> DbPoolBuilder<DB> {
    /// Start from this configuration (every setting of it replaces the builder's).
    pub fn config(mut self, config: DbPoolConfig) -> Self {
        self.config = config;
        self
    }

    /// The pool's name: the `pool` label of its metrics and its `/status` section.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The database URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = Some(url.into());
        self
    }

    /// Connect with these options instead of parsing the URL.
    pub fn connect_options(mut self, options: <DB::Connection as Connection>::Options) -> Self {
        self.connect_options = Some(options);
        self
    }

    /// Connections kept open even when idle.
    pub fn min_connections(mut self, n: u32) -> Self {
        self.config.min_connections = n;
        self
    }

    /// The most connections the pool opens.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.config.max_connections = n;
        self
    }

    /// The longest a request waits for a connection before a 503.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.config.acquire_timeout = timeout;
        self
    }

    /// Close connections idle this long (`None` or zero: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Close connections this old (`None` or zero: never).
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.config.max_lifetime = lifetime;
        self
    }

    /// Ping an idle connection before handing it out.
    pub fn test_before_acquire(mut self, test: bool) -> Self {
        self.config.test_before_acquire = test;
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

    /// Wait in `build().await` for a first connection (see [`DbPoolConfig::connect_at_start`]).
    pub fn connect_at_start(mut self, connect: bool) -> Self {
        self.config.connect_at_start = connect;
        self
    }

    /// A `/status` target: utilization at most this fraction (default: none).
    pub fn utilization_target(mut self, target: f64) -> Self {
        self.config.utilization_target = Some(target);
        self
    }

    /// Statements run on every new connection before it is handed out (see
    /// [`DbPoolConfig::after_connect`]).
    pub fn after_connect<I: IntoIterator<Item = S>, S: Into<String>>(mut self, statements: I) -> Self {
        self.config.after_connect = statements.into_iter().map(Into::into).collect();
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

    /// Build the pool and start its health check. Connections open lazily (and
    /// `min_connections` in the background), so this succeeds while the database is down,
    /// unless [`connect_at_start`](Self::connect_at_start) asks to wait for a first one.
    /// Must be called within a Tokio runtime.
    pub async fn build(self) -> Result<DbPool<DB>, Error>
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        let DbPoolBuilder { config, meter, connect_options } = self;
        config.validate(connect_options.is_none())?;
        let connect_options = match connect_options {
            Some(options) => options,
            None => {
                let url = config.url.as_deref().unwrap_or_default();
                url.parse::<<DB::Connection as Connection>::Options>()
                    .map_err(|e| ConfigError::new("url", format!("not a database URL: {e}")))?
            }
        };
        let meter = meter.unwrap_or_else(phalanx_core::default_meter);
        let opened = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&opened);
        let statements: Arc<[String]> = config.after_connect.clone().into();
        let never_if_zero = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        let options = PoolOptions::<DB>::new()
            .min_connections(config.min_connections)
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .idle_timeout(never_if_zero(config.idle_timeout))
            .max_lifetime(never_if_zero(config.max_lifetime))
            .test_before_acquire(config.test_before_acquire)
            .after_connect(move |conn, _meta| {
                counter.fetch_add(1, Ordering::Relaxed);
                let statements = Arc::clone(&statements);
                Box::pin(async move {
                    for statement in statements.iter() {
                        // Operator configuration, not client input.
                        conn.execute(sqlx::AssertSqlSafe(statement.as_str())).await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect_lazy_with(connect_options);
        if config.connect_at_start {
            drop(pool.acquire().await.map_err(Error::Db)?);
        }
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
