//! [`DbPoolConfig`]: what a [`DbPool`](crate::DbPool) is built from.

use std::time::Duration;

use phalanx_core::ConfigError;

use crate::health::HealthConfig;

/// Configuration of a [`DbPool`](crate::DbPool). Serde form (every field optional except
/// `url`, which has no default):
///
/// ```toml
/// name = "db"
/// url = "postgres://app@db:5432/app?application_name=phalanx"
/// min_connections = 2
/// max_connections = 16
/// acquire_timeout = "250ms"
/// idle_timeout = "5m"
/// max_lifetime = "30m"
/// test_before_acquire = true
/// retry_after = "1s"
/// fail_fast_when_unhealthy = true
/// connect_at_start = false
/// [health]
/// interval = "1s"
/// ```
///
/// In code, start from [`DbPoolConfig::default`] and the `with_*` setters, or use
/// [`DbPool::builder`](crate::DbPool::builder).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DbPoolConfig {
    /// The pool's name: the `pool` label of its metrics and its `/status` section.
    /// Default: `db`.
    pub name: String,
    /// The database URL (`postgres://…`, `sqlite://…`). Default: none; building a pool without
    /// a URL (or [`connect_options`](crate::DbPoolBuilder::connect_options)) fails naming `url`.
    pub url: Option<String>,
    /// Connections kept open even when idle. Default: 2.
    pub min_connections: u32,
    /// The most connections the pool opens. Default: 16 (see the crate docs for the sizing).
    pub max_connections: u32,
    /// The longest a request waits for a connection before a 503. Default: `"250ms"`.
    #[serde(with = "phalanx_core::duration")]
    pub acquire_timeout: Duration,
    /// Close connections idle this long; `None` or `"0"`: never. Default: `"5m"`.
    #[serde(with = "phalanx_core::duration::option")]
    pub idle_timeout: Option<Duration>,
    /// Close connections this old; `None` or `"0"`: never. Default: `"30m"`.
    #[serde(with = "phalanx_core::duration::option")]
    pub max_lifetime: Option<Duration>,
    /// Ping an idle connection before handing it out (replaces dead ones). Default: true.
    pub test_before_acquire: bool,
    /// The `Retry-After` of a 503 (sent rounded up to whole seconds). Default: `"1s"`.
    #[serde(with = "phalanx_core::duration")]
    pub retry_after: Duration,
    /// While the health check says unhealthy, answer 503 at once instead of waiting for the
    /// acquire timeout. Default: true.
    pub fail_fast_when_unhealthy: bool,
    /// Make `build().await` wait (up to `acquire_timeout`) for a first connection and fail
    /// with [`Error::Db`](crate::Error::Db) when none comes. Default: false (the pool connects
    /// lazily, so a service starts while its database is down).
    pub connect_at_start: bool,
    /// A `/status` target: `pool.<name>.utilization` (in use / max) at most this fraction.
    /// Default: none (no utilization target; the health target is always there).
    pub utilization_target: Option<f64>,
    /// The background health check (`SELECT 1`). Default: [`HealthConfig::default`].
    pub health: HealthConfig,
    /// Statements run on every new connection before the pool hands it out, in order (for
    /// example SQLite's `PRAGMA synchronous = NORMAL`, which with a write-ahead log syncs at
    /// checkpoints instead of at every commit). A failing statement fails that connection.
    /// They come from the service's own configuration, never from a client. Default: none.
    pub after_connect: Vec<String>,
}

impl Default for DbPoolConfig {
    fn default() -> Self {
        DbPoolConfig {
            name: "db".into(),
            url: None,
            min_connections: 2,
            max_connections: 16,
            acquire_timeout: Duration::from_millis(250),
            idle_timeout: Some(Duration::from_secs(5 * 60)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            test_before_acquire: true,
            retry_after: Duration::from_secs(1),
            fail_fast_when_unhealthy: true,
            connect_at_start: false,
            utilization_target: None,
            health: HealthConfig::default(),
            after_connect: Vec::new(),
        }
    }
}

impl DbPoolConfig {
    /// The same configuration with this name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same configuration with this database URL.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The same configuration keeping at least `n` connections open.
    pub fn with_min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }

    /// The same configuration opening at most `n` connections.
    pub fn with_max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// The same configuration with this acquire timeout.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The same configuration closing connections idle this long (`None` or zero: never).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The same configuration closing connections this old (`None` or zero: never).
    pub fn with_max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The same configuration with `test_before_acquire` set.
    pub fn with_test_before_acquire(mut self, test: bool) -> Self {
        self.test_before_acquire = test;
        self
    }

    /// The same configuration with this `Retry-After`.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The same configuration with `fail_fast_when_unhealthy` set.
    pub fn with_fail_fast_when_unhealthy(mut self, fail_fast: bool) -> Self {
        self.fail_fast_when_unhealthy = fail_fast;
        self
    }

    /// The same configuration with `connect_at_start` set.
    pub fn with_connect_at_start(mut self, connect: bool) -> Self {
        self.connect_at_start = connect;
        self
    }

    /// The same configuration with a `/status` utilization target (a fraction).
    pub fn with_utilization_target(mut self, target: f64) -> Self {
        self.utilization_target = Some(target);
        self
    }

    /// The same configuration with these statements run on every new connection.
    pub fn with_after_connect<I: IntoIterator<Item = S>, S: Into<String>>(mut self, statements: I) -> Self {
        self.after_connect = statements.into_iter().map(Into::into).collect();
        self
    }

    /// The same configuration with this health check.
    pub fn with_health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    /// Every setting that cannot work, as the first field found wrong. `needs_url`: no
    /// connect options were given, so the URL is required.
    pub(crate) fn validate(&self, needs_url: bool) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if needs_url && self.url.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::new("url", "no database URL: set `url` (postgres://…, sqlite://…)"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::new("max_connections", "must be at least 1"));
        }
        if self.min_connections > self.max_connections {
            return Err(ConfigError::new(
                "min_connections",
                format!("{} exceeds max_connections ({})", self.min_connections, self.max_connections),
            ));
        }
        if self.acquire_timeout.is_zero() {
            return Err(ConfigError::new("acquire_timeout", "must be more than 0"));
        }
        if self.utilization_target.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
            return Err(ConfigError::new("utilization_target", "must be a fraction above 0 (0.9 is 90 %)"));
        }
        self.health.validate()
    }
}
