//! Serde configuration of a [`RateLimitLayer`](crate::RateLimitLayer).

use std::{collections::BTreeMap, time::Duration};

use fred::clients::Pool;
use opentelemetry::metrics::Meter;
use phalanx_core::{identity::ClientKeyConfig, FailureMode, Tier};

use crate::{BuildError, Policy, Quota, RateLimitLayer, RedisStore};

/// The TOML form of a rate limiter. Every field has a default; a missing `policies` list is an
/// error at build time.
///
/// ```toml
/// shadow = false          # decide and count, never reject
/// headers = true          # RateLimit-Policy / RateLimit on responses
///
/// [key]                   # phalanx_core::identity::ClientKeyConfig
/// sources = [{ api_key = "x-api-key" }, { header = "x-client-id" }, "peer_ip"]
/// trusted_proxies = ["10.0.0.0/8"]
///
/// [redis]                 # used when the service has a Redis pool
/// prefix = "phalanx:rl"
/// deadline_ms = 50        # background round trips only
/// failure_mode = "open"   # or "closed", while Redis is down
/// fallback_local = true   # quota / known node count while Redis is down
/// server_time = true
/// lease_fraction = 0.1
/// heartbeat_ms = 1000
/// down_after_ms = 1000
/// max_queue = 65536
///
/// [[policies]]
/// name = "per-client"
/// limit = 1000
/// window_secs = 60
/// burst = 100
/// tiers.premium = { limit = 10000, window_secs = 60, burst = 1000 }
/// tiers.throttled = { limit = 10, window_secs = 60 }
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Policies; a request passes only when all allow. Default: none (an error at build).
    pub policies: Vec<PolicyConfig>,
    /// How the client key is found when no `ClientKey` is in the request already.
    /// Default: the peer IP, no trusted proxies.
    pub key: ClientKeyConfig,
    /// Decide and count, never reject. Default: `false`.
    pub shadow: bool,
    /// Add `RateLimit-Policy` and `RateLimit` to responses. Default: `true`.
    pub headers: bool,
    /// The Redis store's settings, used when a pool is given to [`RateLimitConfig::build`].
    pub redis: RedisLimitConfig,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            policies: Vec::new(),
            key: ClientKeyConfig::default(),
            shadow: false,
            headers: true,
            redis: RedisLimitConfig::default(),
        }
    }
}

/// One named policy: a default quota and optional quotas per tier.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The name, as shown in metrics and the `RateLimit` fields.
    pub name: String,
    /// Requests per window.
    pub limit: u32,
    /// The window in whole seconds.
    pub window_secs: u64,
    /// Requests allowed at once. Default: `limit`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Quotas of particular tiers (`premium`, `standard`, `basic`, `throttled`); the others
    /// use the policy's quota. Default: none.
    #[serde(default)]
    pub tiers: BTreeMap<Tier, QuotaConfig>,
}

/// A quota: `limit` per `window_secs`, `burst` at once.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per window.
    pub limit: u32,
    /// The window in whole seconds.
    pub window_secs: u64,
    /// Requests allowed at once. Default: `limit`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl QuotaConfig {
    fn quota(&self) -> Quota {
        let quota = Quota::new(self.limit, Duration::from_secs(self.window_secs));
        quota.with_burst(self.burst.unwrap_or(self.limit))
    }
}

impl PolicyConfig {
    /// The policy.
    pub fn policy(&self) -> Policy {
        let base = QuotaConfig { limit: self.limit, window_secs: self.window_secs, burst: self.burst };
        self.tiers.iter().fold(Policy::new(self.name.as_str(), base.quota()), |p, (tier, q)| p.tier(*tier, q.quota()))
    }
}

/// Settings of the Redis store.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisLimitConfig {
    /// Key prefix; nodes sharing quotas share it. Default: `phalanx:rl`.
    pub prefix: String,
    /// The longest one background round trip may take, in milliseconds (requests never wait
    /// for it). Default: 50.
    pub deadline_ms: u64,
    /// What to do while Redis is down. Default: `open`.
    pub failure_mode: FailureMode,
    /// When failing open, decide in-process with each quota divided by the last known node
    /// count. Default: `true`.
    pub fallback_local: bool,
    /// Use the Redis server's clock inside the scripts. Default: `true`.
    pub server_time: bool,
    /// The share of each policy's burst a node leases at once (and may spend on credit for a
    /// key it has not synchronised yet). Default: 0.1 (at least one token).
    pub lease_fraction: f64,
    /// How often the node announces itself and counts the nodes, in milliseconds. Default: 1000.
    pub heartbeat_ms: u64,
    /// How long Redis must fail before the fallback decides, in milliseconds. Default: 1000.
    pub down_after_ms: u64,
    /// Keys waiting for a synchronisation at most. Default: 65536.
    pub max_queue: usize,
}

impl Default for RedisLimitConfig {
    fn default() -> Self {
        RedisLimitConfig {
            prefix: "phalanx:rl".into(),
            deadline_ms: 50,
            failure_mode: FailureMode::Open,
            fallback_local: true,
            server_time: true,
            lease_fraction: 0.1,
            heartbeat_ms: 1000,
            down_after_ms: 1000,
            max_queue: 65_536,
        }
    }
}

impl RateLimitConfig {
    /// Build the layer: in-process without a pool, on Redis with one. `meter` defaults to
    /// [`phalanx_core::default_meter`].
    pub fn build(&self, redis: Option<Pool>, meter: Option<Meter>) -> Result<RateLimitLayer, BuildError> {
        let mut builder = RateLimitLayer::builder()
            .key_config(self.key.clone())
            .shadow(self.shadow)
            .headers(self.headers)
            .failure_mode(self.redis.failure_mode)
            .fallback_local(self.redis.fallback_local);
        for policy in &self.policies {
            builder = builder.policy(policy.policy());
        }
        if let Some(pool) = redis {
            let store = RedisStore::builder(pool)
                .prefix(self.redis.prefix.clone())
                .deadline(Duration::from_millis(self.redis.deadline_ms))
                .server_time(self.redis.server_time)
                .lease_fraction(self.redis.lease_fraction)
                .heartbeat(Duration::from_millis(self.redis.heartbeat_ms))
                .down_after(Duration::from_millis(self.redis.down_after_ms))
                .max_queue(self.redis.max_queue)
                .build()?;
            builder = builder.redis(store);
        }
        if let Some(meter) = meter {
            builder = builder.meter(meter);
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [key]
        sources = [{ header = "x-client-id" }, "peer_ip"]

        [redis]
        deadline_ms = 3
        failure_mode = "closed"

        [[policies]]
        name = "per-client"
        limit = 1000
        window_secs = 60
        burst = 100
        tiers.premium = { limit = 10000, window_secs = 60, burst = 1000 }
        tiers.throttled = { limit = 10, window_secs = 60 }

        [[policies]]
        name = "per-client-burst"
        limit = 20
        window_secs = 1
    "#;

    #[test]
    fn toml_form_parses_and_builds() {
        let config: RateLimitConfig = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(config.redis.deadline_ms, 3);
        assert_eq!(config.redis.failure_mode, FailureMode::Closed);
        let policy = config.policies[0].policy();
        assert_eq!(policy.quota(Tier::Premium), Quota::per_minute(10_000).with_burst(1000));
        assert_eq!(policy.quota(Tier::Throttled), Quota::per_minute(10));
        assert_eq!(policy.quota(Tier::Standard), Quota::per_minute(1000).with_burst(100));
        assert!(config.build(None, None).is_ok());
    }

    #[test]
    fn invalid_configs_fail_at_build() {
        assert!(RateLimitConfig::default().build(None, None).is_err());
        let zero: RateLimitConfig =
            toml::from_str("[[policies]]\nname = \"p\"\nlimit = 0\nwindow_secs = 60\n").unwrap();
        assert!(zero.build(None, None).is_err());
        assert!(toml::from_str::<RateLimitConfig>(
            "[[policies]]\nname = \"p\"\nlimit = 1\nwindow_secs = 1\ntiers.gold = { limit = 1, window_secs = 1 }\n"
        )
        .is_err());
    }
}
