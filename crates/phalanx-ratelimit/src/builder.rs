//! `RateLimitLayerBuilder`, and the two ways to a [`RateLimitLayer`]: the builder in code and
//! [`RateLimitLayer::from_config`] from a configuration file.

use std::sync::Arc;

use opentelemetry::metrics::Meter;
use phalanx_core::{
    identity::{ClientKeyConfig, KeySource},
    ClientKeyResolver, ConfigError, Deps, Tier,
};

#[cfg(feature = "redis")]
use crate::redis::RedisStore;
use crate::{
    clock::Clock,
    config::{RateLimitConfig, RedisLimitConfig},
    decision::Shared,
    layer::RateLimitLayer,
    local::{LocalStore, MAX_POLICIES},
    metrics::Metrics,
    quota::{policy_header_values, CompiledPolicy, Gcra, Policy},
};

impl RateLimitLayer {
    /// A builder with no policies, the default key resolver (peer IP, no trusted proxies), the
    /// in-process store, headers on and shadow mode off.
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            policies: Vec::new(),
            resolver: None,
            key_error: None,
            #[cfg(feature = "redis")]
            redis: None,
            redis_config: RedisLimitConfig::default(),
            shadow: false,
            headers: true,
            meter: None,
            clock: None,
        }
    }

    /// The layer a configuration file describes. `deps` gives the meter (default
    /// [`phalanx_core::default_meter`]) and, with feature `redis`, the process's shared Redis
    /// handle: with one the quotas are kept on Redis (settings from `config.redis`), without one
    /// in-process. Errors name the configuration field (`policies[0].window`, `redis.deadline`).
    pub fn from_config(config: &RateLimitConfig, deps: &Deps) -> Result<Self, ConfigError> {
        let mut builder = Self::builder()
            .key_config(config.key.clone())
            .shadow(config.shadow)
            .headers(config.headers)
            .redis_config(config.redis.clone())
            .meter(deps.meter_or_default());
        for policy in &config.policies {
            builder = builder.policy(policy.policy());
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = deps.redis_handle() {
            builder = builder.redis(redis.clone());
        }
        builder.build()
    }
}

/// Builder of a [`RateLimitLayer`], with consuming setters; from [`RateLimitLayer::builder`].
#[derive(Debug)]
pub struct RateLimitLayerBuilder {
    policies: Vec<Policy>,
    resolver: Option<ClientKeyResolver>,
    key_error: Option<ConfigError>,
    #[cfg(feature = "redis")]
    redis: Option<phalanx_core::redis::RedisHandle>,
    redis_config: RedisLimitConfig,
    shadow: bool,
    headers: bool,
    meter: Option<Meter>,
    clock: Option<Clock>,
}

impl RateLimitLayerBuilder {
    /// Add a policy; a request passes only if every policy allows it (at most eight).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// How to find the client key when no `ClientKey` is in the request extensions already
    /// (default: the peer IP, no trusted proxies).
    pub fn key_resolver(mut self, resolver: ClientKeyResolver) -> Self {
        self.resolver = Some(resolver);
        self.key_error = None;
        self
    }

    /// Like [`RateLimitLayerBuilder::key_resolver`], from the resolver's configuration. An
    /// invalid configuration fails at [`build`](Self::build) (field `key`).
    pub fn key_config(mut self, config: ClientKeyConfig) -> Self {
        match config.build() {
            Ok(resolver) => {
                self.resolver = Some(resolver);
                self.key_error = None;
            }
            Err(e) => self.key_error = Some(e.in_section("key")),
        }
        self
    }

    /// Keep the quotas in Redis through the process's shared handle, shared by every node using
    /// the same key prefix (see [`RateLimitLayerBuilder::redis_config`]). Decisions never wait
    /// on Redis: each node leases a slice of every active key's quota and decides locally.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, redis: phalanx_core::redis::RedisHandle) -> Self {
        self.redis = Some(redis);
        self
    }

    /// The Redis store's settings: key prefix, round-trip deadline, failure mode and fallback,
    /// lease fraction, heartbeat (default [`RedisLimitConfig::default`]). Used only with
    /// [`redis`](Self::redis), checked at build either way.
    pub fn redis_config(mut self, config: RedisLimitConfig) -> Self {
        self.redis_config = config;
        self
    }

    /// Decide and count, but never reject (default `false`).
    pub fn shadow(mut self, yes: bool) -> Self {
        self.shadow = yes;
        self
    }

    /// Add the `RateLimit-Policy` and `RateLimit` fields to responses (default `true`).
    pub fn headers(mut self, yes: bool) -> Self {
        self.headers = yes;
        self
    }

    /// Record metrics through this meter (default: [`phalanx_core::default_meter`]).
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Read the time from this clock (default: [`Clock::default`], which follows tokio's time
    /// when it is paused).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Build; fails on an invalid key configuration, without policies, with more than eight,
    /// with duplicate names, invalid quotas or invalid Redis settings. The error names the field
    /// as the configuration file spells it (`policies[1].limit`, `redis.lease_fraction`).
    pub fn build(self) -> Result<RateLimitLayer, ConfigError> {
        if let Some(error) = self.key_error {
            return Err(error);
        }
        if self.policies.is_empty() {
            return Err(ConfigError::new("policies", "a rate limit layer needs at least one policy"));
        }
        if self.policies.len() > MAX_POLICIES {
            return Err(ConfigError::new("policies", format!("at most {MAX_POLICIES} policies per layer")));
        }
        let policies = self
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| CompiledPolicy::compile(p, i))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, p) in policies.iter().enumerate() {
            if policies[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError::new(format!("policies[{i}].name"), format!("{:?} is defined twice", p.name)));
            }
        }
        self.redis_config.validate()?;
        let mut gcras = [[Gcra { emission_us: 1, tolerance_us: 1 }; MAX_POLICIES]; 4];
        for (tier, row) in gcras.iter_mut().enumerate() {
            for (i, p) in policies.iter().enumerate() {
                row[i] = p.by_tier[tier];
            }
        }
        let policy_header = policy_header_values(&policies);
        let tiered = Tier::ALL.iter().any(|&t| {
            gcras[t as usize] != gcras[Tier::default() as usize]
                || policy_header[t as usize] != policy_header[Tier::default() as usize]
        });
        let meter = self.meter.unwrap_or_else(phalanx_core::default_meter);
        let clock = self.clock.unwrap_or_default();
        let resolver = self.resolver.unwrap_or_default();
        // With the peer IP as first source, an IPv4 peer is keyed without spelling its key.
        let peer_ip_first = resolver.config().sources.first() == Some(&KeySource::PeerIp);
        #[cfg(feature = "redis")]
        let redis = self.redis.map(|handle| {
            let names: Vec<&str> = policies.iter().map(|p| &*p.name).collect();
            RedisStore::new(handle, &self.redis_config).start(&names, &gcras, clock.clone())
        });
        let shared = Arc::new_cyclic(|shared: &std::sync::Weak<Shared>| {
            let shared = shared.clone();
            let read = move || shared.upgrade().map(|s| s.snapshot().tally);
            Shared {
                metrics: Metrics::new(&meter, &policies, self.shadow, read),
                policy_header,
                tiered,
                policies: policies.into_boxed_slice(),
                gcras,
                peer_ip_first,
                resolver,
                local: LocalStore::new(),
                #[cfg(feature = "redis")]
                redis,
                failure_mode: self.redis_config.failure_mode,
                #[cfg(feature = "redis")]
                fallback_local: self.redis_config.fallback_local,
                shadow: self.shadow,
                headers: self.headers,
                clock,
            }
        });
        Ok(RateLimitLayer { shared })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn from_config_keeps_the_quotas_on_the_redis_handle_of_its_deps() {
        use std::time::Duration;

        use phalanx_core::StatusSource;

        use crate::config::PolicyConfig;

        // Never connected: the layer is built and decides from credits without a server.
        let settings = phalanx_core::redis::RedisSettings::from_url("redis://127.0.0.1:1");
        let handle = phalanx_core::redis::RedisHandle::unconnected(settings).unwrap();
        let config = RateLimitConfig::default()
            .with_policy(PolicyConfig::new("p", 10, Duration::from_secs(1)))
            .with_redis(RedisLimitConfig::default().with_prefix("test:rl"));
        let on_redis = RateLimitLayer::from_config(&config, &Deps::new().redis(handle)).unwrap();
        assert_eq!(on_redis.report()["store"], "redis");
        let local = RateLimitLayer::from_config(&config, &Deps::new()).unwrap();
        assert_eq!(local.report()["store"], "local");
    }

    #[test]
    fn a_bad_key_configuration_is_reported_as_the_key_field() {
        let mut key = ClientKeyConfig::default();
        key.sources.clear();
        let error = RateLimitLayer::builder()
            .policy(crate::quota::Policy::new("p", crate::quota::Quota::per_second(1)))
            .key_config(key)
            .build()
            .unwrap_err();
        assert_eq!(error.field(), "key.sources");
    }
}
