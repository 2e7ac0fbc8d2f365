//! What every layer's construction shares: the [`ConfigError`] a builder returns, and the
//! [`Deps`] that `XLayer::from_config(&XConfig, &Deps)` takes.
//!
//! Every Phalanx layer is built one of two ways, as in tower-http:
//!
//! - in code: `XLayer::builder().setting(..).meter(meter).build()?`;
//! - from a configuration file: `XLayer::from_config(&x_config, &deps)?`, where `deps` carries
//!   what a file cannot: the OpenTelemetry `Meter` and the shared Redis handle.
//!
//! ```
//! use phalanx_core::{ConfigError, Deps};
//!
//! let deps = Deps::new().meter(phalanx_core::default_meter());
//! let _meter = deps.meter_or_default();
//! let e = ConfigError::new("limit", "must be at least 1");
//! assert_eq!(e.to_string(), "invalid `limit`: must be at least 1");
//! assert_eq!(e.field(), "limit");
//! ```

use std::borrow::Cow;

use opentelemetry::metrics::Meter;

/// A setting that cannot work, named by its field, found when a layer is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct ConfigError {
    field: Cow<'static, str>,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// The field `field` is wrong because of `reason`.
    pub fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<Cow<'static, str>>) -> Self {
        ConfigError { field: field.into(), reason: reason.into() }
    }

    /// The field that was wrong (`limit`, `policies[2].window`, `redis.url`).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why it was wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The same error, its field prefixed by the enclosing section: `in_section("cache")` turns
    /// `ttl` into `cache.ttl`.
    pub fn in_section(self, section: &str) -> Self {
        ConfigError { field: format!("{section}.{}", self.field).into(), reason: self.reason }
    }
}

/// What `from_config` needs besides the configuration: the things a TOML file cannot hold.
/// Cheap to clone; build it once and pass it to every layer.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Deps {
    meter: Option<Meter>,
    #[cfg(feature = "redis")]
    redis: Option<crate::redis::RedisHandle>,
}

impl Deps {
    /// No meter (layers use [`crate::default_meter`]) and no Redis.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record through this meter.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Share this Redis handle (L2 cache, distributed rate limits, the Redis extractor).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, redis: crate::redis::RedisHandle) -> Self {
        self.redis = Some(redis);
        self
    }

    /// The meter given, if any.
    pub fn meter_ref(&self) -> Option<&Meter> {
        self.meter.as_ref()
    }

    /// The meter given, or [`crate::default_meter`].
    pub fn meter_or_default(&self) -> Meter {
        self.meter.clone().unwrap_or_else(crate::default_meter)
    }

    /// The Redis handle given, if any.
    #[cfg(feature = "redis")]
    pub fn redis_handle(&self) -> Option<&crate::redis::RedisHandle> {
        self.redis.as_ref()
    }
}
