//! [`RedisPoolConfig`]: what a [`RedisPool`](crate::RedisPool) adds to the shared handle.

use std::time::Duration;

use phalanx_core::ConfigError;

use crate::health::HealthConfig;

/// Configuration of a [`RedisPool`](crate::RedisPool). Where Redis is and how its connections
/// behave belong to the shared [`RedisHandle`](phalanx_core::redis::RedisHandle)'s
/// [`RedisSettings`](phalanx_core::redis::RedisSettings); this holds what the extractor adds.
/// Serde form (all fields optional):
///
/// ```toml
/// name = "redis"
/// command_timeout = "20ms"     # absent: the handle's command timeout
/// acquire_timeout = "100ms"
/// retry_after = "1s"
/// fail_fast_when_unhealthy = true
/// [health]
/// interval = "1s"
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisPoolConfig {
    /// The pool's name: the `pool` label of its metrics and its `/status` section.
    /// Default: `redis`.
    pub name: String,
    /// Deadline of one round trip through [`Redis::run`](crate::Redis::run). Default: none,
    /// the handle's [`command_timeout`](phalanx_core::redis::RedisSettings::command_timeout).
    #[serde(with = "phalanx_core::duration::option")]
    pub command_timeout: Option<Duration>,
    /// How long a request waits for a connected client while all are reconnecting.
    /// Default: `"100ms"`.
    #[serde(with = "phalanx_core::duration")]
    pub acquire_timeout: Duration,
    /// The `Retry-After` of a 503 (sent rounded up to whole seconds). Default: `"1s"`.
    #[serde(with = "phalanx_core::duration")]
    pub retry_after: Duration,
    /// While the health check says unhealthy, answer 503 at once. Default: true.
    pub fail_fast_when_unhealthy: bool,
    /// A `/status` target: `pool.<name>.utilization` (in use / max) at most this fraction.
    /// Default: none (no utilization target; the health target is always there).
    pub utilization_target: Option<f64>,
    /// The background health check (`PING`). Default: [`HealthConfig::default`].
    pub health: HealthConfig,
}

impl Default for RedisPoolConfig {
    fn default() -> Self {
        RedisPoolConfig {
            name: "redis".into(),
            command_timeout: None,
            acquire_timeout: Duration::from_millis(100),
            retry_after: Duration::from_secs(1),
            fail_fast_when_unhealthy: true,
            utilization_target: None,
            health: HealthConfig::default(),
        }
    }
}

impl RedisPoolConfig {
    /// The same configuration with this name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same configuration with this round-trip deadline instead of the handle's.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = Some(timeout);
        self
    }

    /// The same configuration with this acquire timeout.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
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

    /// The same configuration with a `/status` utilization target (a fraction).
    pub fn with_utilization_target(mut self, target: f64) -> Self {
        self.utilization_target = Some(target);
        self
    }

    /// The same configuration with this health check.
    pub fn with_health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.command_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new("command_timeout", "must be more than 0"));
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
