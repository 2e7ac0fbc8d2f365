//! Serde configuration of a [`RateLimitLayer`](crate::RateLimitLayer), built with
//! [`RateLimitLayer::from_config`](crate::RateLimitLayer::from_config).

use std::{collections::BTreeMap, time::Duration};

use phalanx_core::{identity::ClientKeyConfig, ConfigError, FailureMode, Tier};

use crate::quota::{Policy, Quota};

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
/// [redis]                 # used when `Deps` carries the shared Redis handle
/// prefix = "phalanx:rl"
/// deadline = "50ms"       # background round trips only
/// failure_mode = "open"   # or "closed", while Redis is down
/// fallback_local = true   # quota / known node count while Redis is down
/// server_time = true
/// lease_fraction = 0.1
/// heartbeat = "1s"
/// down_after = "1s"
/// max_queue = 65536
///
/// [[policies]]
/// name = "per-client"
/// limit = 1000
/// window = "60s"
/// burst = 100
/// tiers.premium = { limit = 10000, window = "60s", burst = 1000 }
/// tiers.throttled = { limit = 10, window = "60s" }
/// ```
///
/// In code, start from the default and use the `with_*` setters:
///
/// ```
/// use std::time::Duration;
/// use phalanx_ratelimit::{PolicyConfig, RateLimitConfig};
///
/// let config = RateLimitConfig::default()
///     .with_policy(PolicyConfig::new("per-client", 1000, Duration::from_secs(60)).with_burst(100))
///     .with_shadow(true);
/// assert_eq!(config.policies.len(), 1);
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
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
    /// The Redis store's settings, used when the layer is given the shared Redis handle.
    /// Default: [`RedisLimitConfig::default`].
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

impl RateLimitConfig {
    /// The same configuration with one more policy.
    pub fn with_policy(mut self, policy: PolicyConfig) -> Self {
        self.policies.push(policy);
        self
    }

    /// The same configuration with this client-key resolution.
    pub fn with_key(mut self, key: ClientKeyConfig) -> Self {
        self.key = key;
        self
    }

    /// The same configuration in shadow mode or not.
    pub fn with_shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// The same configuration with the `RateLimit` fields on or off.
    pub fn with_headers(mut self, headers: bool) -> Self {
        self.headers = headers;
        self
    }

    /// The same configuration with these Redis store settings.
    pub fn with_redis(mut self, redis: RedisLimitConfig) -> Self {
        self.redis = redis;
        self
    }
}

/// One named policy: a default quota and optional quotas per tier. `name`, `limit` and
/// `window` are required.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// The name, as shown in metrics and the `RateLimit` fields. Required.
    pub name: String,
    /// Requests per window. Required.
    pub limit: u32,
    /// The window, a whole number of seconds (`"60s"`, `"1h"`). Required.
    #[serde(with = "phalanx_core::duration")]
    pub window: Duration,
    /// Requests allowed at once. Default: `limit`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Quotas of particular tiers (`premium`, `standard`, `basic`, `throttled`); the others
    /// use the policy's quota. Default: none.
    #[serde(default)]
    pub tiers: BTreeMap<Tier, QuotaConfig>,
}

impl PolicyConfig {
    /// A policy `name` of `limit` requests per `window`, burst `limit`, no tier quotas.
    pub fn new(name: impl Into<String>, limit: u32, window: Duration) -> Self {
        PolicyConfig { name: name.into(), limit, window, burst: None, tiers: BTreeMap::new() }
    }

    /// The same policy allowing `burst` requests at once.
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The same policy with its own quota for `tier`.
    pub fn with_tier(mut self, tier: Tier, quota: QuotaConfig) -> Self {
        self.tiers.insert(tier, quota);
        self
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        let base = QuotaConfig { limit: self.limit, window: self.window, burst: self.burst };
        self.tiers.iter().fold(Policy::new(self.name.as_str(), base.quota()), |p, (tier, q)| p.tier(*tier, q.quota()))
    }
}

/// A quota: `limit` per `window`, `burst` at once. `limit` and `window` are required.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QuotaConfig {
    /// Requests per window. Required.
    pub limit: u32,
    /// The window, a whole number of seconds (`"60s"`). Required.
    #[serde(with = "phalanx_core::duration")]
    pub window: Duration,
    /// Requests allowed at once. Default: `limit`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl QuotaConfig {
    /// `limit` requests per `window`, burst `limit`.
    pub fn new(limit: u32, window: Duration) -> Self {
        QuotaConfig { limit, window, burst: None }
    }

    /// The same quota allowing `burst` requests at once.
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        Quota::new(self.limit, self.window).with_burst(self.burst.unwrap_or(self.limit))
    }
}

/// Settings of the Redis store (used with feature `redis` when the layer has the shared
/// Redis handle; ignored by an in-process layer, but still checked at build).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisLimitConfig {
    /// Key prefix; nodes sharing quotas share it. Default: `"phalanx:rl"`.
    pub prefix: String,
    /// The longest one background round trip may take (requests never wait for it).
    /// Default: `"50ms"`.
    #[serde(with = "phalanx_core::duration")]
    pub deadline: Duration,
    /// What to do while Redis is down. Default: `open`.
    pub failure_mode: FailureMode,
    /// When failing open, decide in-process with each quota divided by the last known node
    /// count. Default: `true`.
    pub fallback_local: bool,
    /// Use the Redis server's clock inside the scripts (`TIME`), so node clocks may disagree;
    /// `false` passes the layer's clock instead (deterministic tests). Default: `true`.
    pub server_time: bool,
    /// The share of each policy's burst a node leases at once (and may spend on credit for a
    /// key it has not synchronised yet), in (0, 1]. Larger leases cost fewer round trips and
    /// widen the error bound. Default: `0.1` (at least one token).
    pub lease_fraction: f64,
    /// How often the node announces itself and counts the nodes; an announcement lives three
    /// periods. Default: `"1s"`.
    #[serde(with = "phalanx_core::duration")]
    pub heartbeat: Duration,
    /// How long Redis must fail before the fallback decides; until then nodes decide from their
    /// leases and credits. Default: `"1s"`.
    #[serde(with = "phalanx_core::duration")]
    pub down_after: Duration,
    /// Keys waiting for a synchronisation at most; more are dropped with a count. Default: 65536.
    pub max_queue: usize,
}

impl Default for RedisLimitConfig {
    fn default() -> Self {
        RedisLimitConfig {
            prefix: "phalanx:rl".into(),
            deadline: Duration::from_millis(50),
            failure_mode: FailureMode::Open,
            fallback_local: true,
            server_time: true,
            lease_fraction: 0.1,
            heartbeat: Duration::from_secs(1),
            down_after: Duration::from_secs(1),
            max_queue: 65_536,
        }
    }
}

impl RedisLimitConfig {
    /// The same settings with this key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same settings with this round-trip deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The same settings with this failure mode.
    pub fn with_failure_mode(mut self, mode: FailureMode) -> Self {
        self.failure_mode = mode;
        self
    }

    /// The same settings with the in-process fallback on or off.
    pub fn with_fallback_local(mut self, yes: bool) -> Self {
        self.fallback_local = yes;
        self
    }

    /// The same settings reading Redis's clock in the scripts, or not.
    pub fn with_server_time(mut self, yes: bool) -> Self {
        self.server_time = yes;
        self
    }

    /// The same settings with this lease fraction.
    pub fn with_lease_fraction(mut self, fraction: f64) -> Self {
        self.lease_fraction = fraction;
        self
    }

    /// The same settings with this heartbeat period.
    pub fn with_heartbeat(mut self, period: Duration) -> Self {
        self.heartbeat = period;
        self
    }

    /// The same settings with this time before Redis counts as down.
    pub fn with_down_after(mut self, after: Duration) -> Self {
        self.down_after = after;
        self
    }

    /// The same settings with this queue bound.
    pub fn with_max_queue(mut self, keys: usize) -> Self {
        self.max_queue = keys;
        self
    }

    /// Fails on an empty prefix, a zero deadline or heartbeat, a lease fraction outside
    /// (0, 1] or an empty queue; fields are named `redis.<field>`.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: &'static str| Err(ConfigError::new(field, reason));
        if self.prefix.is_empty() {
            return invalid("redis.prefix", "must not be empty");
        }
        if self.deadline.is_zero() {
            return invalid("redis.deadline", "must be above zero");
        }
        if self.heartbeat.is_zero() {
            return invalid("redis.heartbeat", "must be above zero");
        }
        if !(self.lease_fraction > 0.0 && self.lease_fraction <= 1.0) {
            return invalid("redis.lease_fraction", "must be in (0, 1]");
        }
        if self.max_queue == 0 {
            return invalid("redis.max_queue", "must hold at least one key");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use phalanx_core::Deps;

    use super::*;
    use crate::RateLimitLayer;

    const EXAMPLE: &str = r#"
        [key]
        sources = [{ header = "x-client-id" }, "peer_ip"]

        [redis]
        deadline = "3ms"
        failure_mode = "closed"
        heartbeat = "2s"

        [[policies]]
        name = "per-client"
        limit = 1000
        window = "60s"
        burst = 100
        tiers.premium = { limit = 10000, window = "1m", burst = 1000 }
        tiers.throttled = { limit = 10, window = "60s" }

        [[policies]]
        name = "per-client-burst"
        limit = 20
        window = "1s"
    "#;

    #[test]
    fn toml_form_parses_and_builds() {
        let config: RateLimitConfig = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(config.redis.deadline, Duration::from_millis(3));
        assert_eq!(config.redis.heartbeat, Duration::from_secs(2));
        assert_eq!(config.redis.failure_mode, FailureMode::Closed);
        let policy = config.policies[0].policy();
        assert_eq!(policy.quota(Tier::Premium), Quota::per_minute(10_000).with_burst(1000));
        assert_eq!(policy.quota(Tier::Throttled), Quota::per_minute(10));
        assert_eq!(policy.quota(Tier::Standard), Quota::per_minute(1000).with_burst(100));
        assert!(RateLimitLayer::from_config(&config, &Deps::new()).is_ok());
    }

    #[test]
    fn the_setters_make_what_the_toml_form_makes() {
        let config = RateLimitConfig::default()
            .with_policy(
                PolicyConfig::new("p", 1000, Duration::from_secs(60))
                    .with_burst(100)
                    .with_tier(Tier::Premium, QuotaConfig::new(10_000, Duration::from_secs(60)).with_burst(1000)),
            )
            .with_redis(RedisLimitConfig::default().with_deadline(Duration::from_millis(3)));
        let policy = config.policies[0].policy();
        assert_eq!(policy.quota(Tier::Premium), Quota::per_minute(10_000).with_burst(1000));
        assert_eq!(policy.quota(Tier::Basic), Quota::per_minute(1000).with_burst(100));
        assert!(RateLimitLayer::from_config(&config, &Deps::new()).is_ok());
    }

    #[test]
    fn invalid_configs_fail_at_build_naming_the_field() {
        let field = |config: &RateLimitConfig| {
            RateLimitLayer::from_config(config, &Deps::new()).unwrap_err().field().to_owned()
        };
        assert_eq!(field(&RateLimitConfig::default()), "policies");
        let zero: RateLimitConfig =
            toml::from_str("[[policies]]\nname = \"p\"\nlimit = 0\nwindow = \"60s\"\n").unwrap();
        assert_eq!(field(&zero), "policies[0].limit");
        let fraction = RateLimitConfig::default()
            .with_policy(PolicyConfig::new("p", 1, Duration::from_secs(1)))
            .with_redis(RedisLimitConfig::default().with_lease_fraction(1.5));
        assert_eq!(field(&fraction), "redis.lease_fraction");
        let half: RateLimitConfig =
            toml::from_str("[[policies]]\nname = \"p\"\nlimit = 1\nwindow = \"1s\"\ntiers.basic = { limit = 1, window = \"1500ms\" }\n")
                .unwrap();
        assert_eq!(field(&half), "policies[0].tiers.basic.window");
        assert!(toml::from_str::<RateLimitConfig>(
            "[[policies]]\nname = \"p\"\nlimit = 1\nwindow = \"1s\"\ntiers.gold = { limit = 1, window = \"1s\" }\n"
        )
        .is_err());
        // A bare number is no duration, and the old unit-suffixed names are gone.
        assert!(toml::from_str::<RateLimitConfig>("[[policies]]\nname = \"p\"\nlimit = 1\nwindow = 60\n").is_err());
        assert!(toml::from_str::<RateLimitConfig>("[redis]\ndeadline_ms = 50\n").is_err());
    }
}
