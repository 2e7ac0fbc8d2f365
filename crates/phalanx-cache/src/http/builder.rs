//! Construction: [`CacheLayer::builder`] and [`CacheLayer::from_config`], and the one place a
//! CacheLayer is assembled.

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, Uri};
use opentelemetry::metrics::Meter;
use phalanx_core::{ConfigError, Deps};

use super::{
    config::{CacheConfig, UnknownQuery},
    entry::Rules,
    layer::CacheLayer,
    state::{HttpStore, KeyFn, Passes, State, INTERNAL_FIELDS},
};
use crate::tiered::TieredCacheBuilder;

impl CacheLayer {
    /// A builder with the defaults of [`CacheConfig`].
    pub fn builder() -> CacheLayerBuilder {
        CacheLayerBuilder::default()
    }

    /// Build from a configuration (e.g. read from TOML): the layer builds its store from
    /// `config.store`, with the meter of `deps` and, when `config.store.l2` is on, its Redis
    /// handle. To share one store between layers, use [`Self::builder`] and
    /// [`CacheLayerBuilder::store`].
    pub fn from_config(config: &CacheConfig, deps: &Deps) -> Result<Self, ConfigError> {
        CacheLayerBuilder::from_parts(config.clone(), deps).build()
    }
}

/// Builds a [`CacheLayer`] (see [`CacheLayer::builder`]); every setting defaults as in
/// [`CacheConfig`].
///
/// The store is either given ([`store`](Self::store): one store shared by several layers, or
/// with the data cache's settings) or built at `build` time from the configuration's `store`
/// section, with this builder's [`meter`](Self::meter) and `redis` handle.
#[derive(Default)]
pub struct CacheLayerBuilder {
    config: CacheConfig,
    store: Option<HttpStore>,
    key_fn: Option<KeyFn>,
    meter: Option<Meter>,
    #[cfg(feature = "redis")]
    redis: Option<phalanx_core::redis::RedisHandle>,
}

impl std::fmt::Debug for CacheLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("key_fn", &self.key_fn.is_some())
            .finish_non_exhaustive()
    }
}

impl CacheLayerBuilder {
    /// The builder `from_config` uses: this configuration, the meter of `deps`, and its Redis
    /// handle when `config.store.l2` is on.
    pub(crate) fn from_parts(config: CacheConfig, deps: &Deps) -> Self {
        #[cfg(feature = "redis")]
        let redis = if config.store.l2 { deps.redis_handle().cloned() } else { None };
        CacheLayerBuilder {
            meter: deps.meter_ref().cloned(),
            #[cfg(feature = "redis")]
            redis,
            config,
            store: None,
            key_fn: None,
        }
    }

    /// Keep responses in this store (default: one built from the configuration's `store`
    /// section, namespace `phalanx:http`, L1 only unless `redis` is set).
    pub fn store(mut self, store: HttpStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Give the store this builder makes an L2 on this Redis handle (the process's one pool and
    /// subscriber). Ignored when [`store`](Self::store) is given.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, redis: phalanx_core::redis::RedisHandle) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Freshness for responses with no caching headers (a per-route default when the layer
    /// wraps one route).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = Some(ttl);
        self
    }

    /// Compute cache keys with this function (default: the target URI, see
    /// [`single_host`](Self::single_host) and [`key_query`](Self::key_query)).
    pub fn key_fn(mut self, f: impl Fn(&Uri, &HeaderMap) -> Option<String> + Send + Sync + 'static) -> Self {
        self.key_fn = Some(Arc::new(f));
        self
    }

    /// Key by path and query only, ignoring scheme and authority (`Host`): for a service that
    /// answers one host whatever the request names.
    pub fn single_host(mut self, on: bool) -> Self {
        self.config.single_host = on;
        self
    }

    /// Only these query parameters are part of the key; what becomes of the others is
    /// [`unknown_query`](Self::unknown_query) (ignored by default). So `?r=<random>` cannot make
    /// a new entry per request.
    pub fn key_query<I: IntoIterator<Item = S>, S: Into<String>>(mut self, params: I) -> Self {
        self.config.key_query = Some(params.into_iter().map(Into::into).collect());
        self
    }

    /// Ignore (default) or reject (400) query parameters not named by [`key_query`](Self::key_query).
    pub fn unknown_query(mut self, policy: UnknownQuery) -> Self {
        self.config.unknown_query = policy;
        self
    }

    /// Serve a stored response up to this long past its freshness when the origin refuses,
    /// fails or times out (`Duration::ZERO`: only with `stale-if-error`).
    pub fn error_grace(mut self, grace: Duration) -> Self {
        self.config.error_grace = grace;
        self
    }

    /// With a stored response that may be served on error at hand, wait at most this long
    /// for the origin (default: no limit).
    pub fn origin_timeout(mut self, timeout: Duration) -> Self {
        self.config.origin_timeout = Some(timeout);
        self
    }

    /// The targeted cache-control fields obeyed instead of `Cache-Control` (RFC 9213), most
    /// specific first (default: `Phalanx-Cache-Control`, then `CDN-Cache-Control`).
    pub fn target_fields<I: IntoIterator<Item = S>, S: Into<String>>(mut self, fields: I) -> Self {
        self.config.target_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Allow heuristic freshness.
    pub fn heuristic_freshness(mut self, on: bool) -> Self {
        self.config.heuristic_freshness = on;
        self
    }

    /// Store responses that set cookies.
    pub fn store_set_cookie(mut self, on: bool) -> Self {
        self.config.store_set_cookie = on;
        self
    }

    /// Larger bodies stream through uncached.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.config.max_body_bytes = bytes;
        self
    }

    /// How long a request waits for a concurrent identical miss.
    pub fn coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.config.coalesce_timeout = timeout;
        self
    }

    /// How long a key whose response may not be stored skips the cache (`Duration::ZERO`: never).
    pub fn pass_ttl(mut self, ttl: Duration) -> Self {
        self.config.pass_ttl = ttl;
        self
    }

    /// How long responses are kept past their freshness.
    pub fn stale_retention(mut self, keep: Duration) -> Self {
        self.config.stale_retention = keep;
        self
    }

    /// The response header naming how the cache answered.
    pub fn status_header(mut self, name: &str) -> Self {
        self.config.status_header = name.into();
        self
    }

    /// Judge the HTTP hit ratio in `/status` against this fraction (default: no target).
    pub fn target_hit_ratio(mut self, ratio: f64) -> Self {
        self.config.target_hit_ratio = Some(ratio);
        self
    }

    /// Meter of the store this builder makes (ignored when a store is given: it has its own).
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Build the layer (and its store, unless one was given).
    pub fn build(self) -> Result<CacheLayer, ConfigError> {
        let c = self.config;
        let status_header = HeaderName::from_bytes(c.status_header.as_bytes())
            .map_err(|_| ConfigError::new("status_header", format!("{:?} is not a header name", c.status_header)))?;
        if c.coalesce_timeout.is_zero() {
            return Err(ConfigError::new("coalesce_timeout", "must be greater than 0"));
        }
        if c.target_hit_ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return Err(ConfigError::new("target_hit_ratio", "must be a fraction between 0 and 1"));
        }
        let mut targets = Vec::with_capacity(c.target_fields.len());
        for name in &c.target_fields {
            let lower = name.to_ascii_lowercase();
            targets.push(
                HeaderName::from_bytes(lower.as_bytes())
                    .map_err(|_| ConfigError::new("target_fields", format!("{name:?} is not a header name")))?,
            );
        }
        let mut internal: Vec<HeaderName> = INTERNAL_FIELDS.to_vec();
        internal.extend(targets.iter().filter(|t| t.as_str() != "cdn-cache-control").cloned());
        let key_query = c.key_query.map(|mut params| {
            params.sort();
            params.dedup();
            params.into_boxed_slice()
        });
        if key_query.is_none() && c.unknown_query == UnknownQuery::Reject {
            return Err(ConfigError::new("unknown_query", "`reject` needs key_query"));
        }
        let store = match self.store {
            Some(store) => store,
            None => {
                let mut b = TieredCacheBuilder::from_parts(c.store, &Deps::new());
                if let Some(meter) = self.meter {
                    b = b.meter(meter);
                }
                #[cfg(feature = "redis")]
                if let Some(redis) = self.redis {
                    b = b.redis(redis);
                }
                b.build().map_err(|e| e.in_section("store"))?
            }
        };
        Ok(CacheLayer {
            state: Arc::new(State {
                store,
                rules: Rules {
                    default_ttl: c.default_ttl.filter(|ttl| !ttl.is_zero()),
                    heuristic: c.heuristic_freshness,
                    store_set_cookie: c.store_set_cookie,
                    targets,
                },
                max_body: c.max_body_bytes,
                coalesce_timeout: c.coalesce_timeout,
                stale_retention: c.stale_retention,
                status_header,
                key_fn: self.key_fn,
                error_grace: c.error_grace,
                origin_timeout: c.origin_timeout.filter(|t| !t.is_zero()),
                single_host: c.single_host,
                key_query,
                unknown_query: c.unknown_query,
                internal: internal.into_boxed_slice(),
                loads: Arc::default(),
                passes: (!c.pass_ttl.is_zero()).then(|| Passes::new(c.pass_ttl)),
                target_hit_ratio: c.target_hit_ratio,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Uri;

    #[test]
    fn the_settings_deserialize_and_are_checked_at_build_time() {
        let config: CacheConfig = serde_json::from_str(
            r#"{"key_query": ["page"], "unknown_query": "reject", "target_fields": ["Edge-Control"],
                "error_grace": "0", "origin_timeout": "500ms", "single_host": true,
                "store": {"namespace": "t:http", "max_bytes": 4096}}"#,
        )
        .unwrap();
        assert_eq!(config.unknown_query, UnknownQuery::Reject);
        assert_eq!(config.store.max_bytes, 4096);
        let layer = CacheLayer::from_config(&config, &Deps::new()).unwrap();
        assert_eq!(layer.state.rules.targets, vec![HeaderName::from_static("edge-control")]);
        assert_eq!(layer.state.origin_timeout, Some(Duration::from_millis(500)));
        assert!(layer.state.refuses_query(&Uri::from_static("/x?page=1&r=2")));
        assert!(!layer.state.refuses_query(&Uri::from_static("/x?page=1")));
        let no_params = CacheConfig { key_query: None, ..config.clone() };
        let e = CacheLayer::from_config(&no_params, &Deps::new()).unwrap_err();
        assert_eq!(e.field(), "unknown_query", "reject needs key_query");
        let bad = CacheConfig { target_fields: vec!["not a name".into()], ..config.clone() };
        assert_eq!(CacheLayer::from_config(&bad, &Deps::new()).unwrap_err().field(), "target_fields");
        let bad_store = CacheConfig { store: config.store.clone().with_max_bytes(0), ..config };
        assert_eq!(CacheLayer::from_config(&bad_store, &Deps::new()).unwrap_err().field(), "store.max_bytes");
        assert!(serde_json::from_str::<CacheConfig>(r#"{"coalesce_timeout_ms": 5000}"#).is_err(), "old names refused");
    }
}
