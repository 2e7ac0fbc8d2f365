//! [`CacheConfig`]: what a CacheLayer is built from, as read from the service's TOML.

use std::time::Duration;

use crate::tiered::TieredCacheConfig;

/// CacheLayer configuration. Serde form (every field optional, defaults shown):
///
/// ```toml
/// # default_ttl = "5s"          # freshness for responses with no caching headers; default: not stored
/// heuristic_freshness = false   # 10 % of the time since Last-Modified (RFC 9111 §4.2.2)
/// store_set_cookie = false      # store responses carrying Set-Cookie
/// max_body_bytes = 1048576      # larger bodies stream through, uncached
/// coalesce_timeout = "5s"       # how long a request waits for another's identical miss
/// pass_ttl = "5s"               # a key whose response may not be stored skips the cache this long; "0": off
/// stale_retention = "5m"        # keep stale responses this long (revalidation, max-stale)
/// status_header = "x-cache"     # HIT | MISS | STALE | REVALIDATED
/// error_grace = "30s"           # serve stale this long when the origin refuses, fails or times out
/// # origin_timeout = "500ms"    # with a stale copy at hand, wait this long for the origin; default: no limit
/// single_host = false           # key by path and query only, not by scheme and authority
/// target_fields = ["phalanx-cache-control", "cdn-cache-control"]  # RFC 9213, most specific first
/// # key_query = ["page", "sort"] # only these query parameters make the key (default: the whole query)
/// unknown_query = "ignore"      # with key_query: "ignore" other parameters, or "reject" them (400)
/// # target_hit_ratio = 0.85     # a /status target; default: none
///
/// [store]                       # the TieredCache the responses live in (TieredCacheConfig)
/// namespace = "phalanx:http"
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Freshness of a response that carries neither `Cache-Control` nor `Expires` (and has a
    /// status cacheable by default). Default: none, such responses are not stored.
    #[serde(with = "phalanx_core::duration::option")]
    pub default_ttl: Option<Duration>,
    /// Use heuristic freshness (10 % of the age of `Last-Modified`, at most a day). Default: false.
    pub heuristic_freshness: bool,
    /// Store responses that set cookies. Default: false.
    pub store_set_cookie: bool,
    /// Bodies larger than this stream through uncached. Default: 1 MiB.
    pub max_body_bytes: usize,
    /// How long a request waits for a concurrent identical miss before calling the inner
    /// service itself. Default: `"5s"`.
    #[serde(with = "phalanx_core::duration")]
    pub coalesce_timeout: Duration,
    /// After a response its headers forbid storing (regardless of the request: `no-store`,
    /// `private`, `Set-Cookie`, `Vary: *`, no freshness, or a body over the size cap), requests
    /// for the same key skip the cache for this long: no lookup, no waiting behind another
    /// request's identical miss, no buffering. Zero turns this off. At most 100,000 keys are
    /// remembered. Default: `"5s"`.
    #[serde(with = "phalanx_core::duration")]
    pub pass_ttl: Duration,
    /// How long a response is kept past its freshness, for revalidation and for clients that
    /// accept stale responses. Default: `"5m"`.
    #[serde(with = "phalanx_core::duration")]
    pub stale_retention: Duration,
    /// The response header telling how the cache answered. Default: `x-cache`.
    pub status_header: String,
    /// How long past its freshness a stored response is served when the origin refuses
    /// (503, 429), fails (5xx, an error) or times out, even without `stale-if-error`
    /// (RFC 9111 §4.2.4: the origin is as good as disconnected). Never for a response with
    /// `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage`. Zero: only
    /// `stale-if-error` allows it. Default: `"30s"`.
    #[serde(with = "phalanx_core::duration")]
    pub error_grace: Duration,
    /// When a stored response that may be served on error is at hand, wait at most this long for
    /// the origin, then serve the stored one (the origin call is dropped). Default: none (no
    /// limit).
    #[serde(with = "phalanx_core::duration::option")]
    pub origin_timeout: Option<Duration>,
    /// Key by path and query only (a service that answers one host whatever the `Host` says).
    /// Default: false, the key is the target URI (scheme, authority, path, query; RFC 9111 §2).
    pub single_host: bool,
    /// Targeted cache-control fields this cache obeys instead of `Cache-Control` (RFC 9213),
    /// most specific first. The ones other than `CDN-Cache-Control` are internal and removed
    /// from responses. Default: `["phalanx-cache-control", "cdn-cache-control"]`.
    pub target_fields: Vec<String>,
    /// Only these query parameters are part of the key (sorted, so their order does not matter
    /// either); `None`: the whole query is. Default: `None`.
    pub key_query: Option<Vec<String>>,
    /// What to do with query parameters not in `key_query`. Default: `ignore`.
    pub unknown_query: UnknownQuery,
    /// The `/status` target for the HTTP hit ratio, a fraction (0.85 is 85 %). Default: none.
    pub target_hit_ratio: Option<f64>,
    /// The store the responses live in, built by `from_config` with the Deps' meter and Redis
    /// handle. Default: [`TieredCacheConfig`]'s defaults with namespace `phalanx:http` (a
    /// `[store]` table starts from `TieredCacheConfig`'s own defaults: give it a `namespace`).
    pub store: TieredCacheConfig,
}

/// What a cache whose key takes only some query parameters does with the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum UnknownQuery {
    /// Leave them out of the key (the request still reaches the handler with them).
    #[default]
    Ignore,
    /// Answer 400 (problem+json) without calling the handler.
    Reject,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            default_ttl: None,
            heuristic_freshness: false,
            store_set_cookie: false,
            max_body_bytes: 1024 * 1024,
            coalesce_timeout: Duration::from_secs(5),
            pass_ttl: Duration::from_secs(5),
            stale_retention: Duration::from_secs(300),
            status_header: "x-cache".into(),
            error_grace: Duration::from_secs(30),
            origin_timeout: None,
            single_host: false,
            target_fields: vec!["phalanx-cache-control".into(), "cdn-cache-control".into()],
            key_query: None,
            unknown_query: UnknownQuery::Ignore,
            target_hit_ratio: None,
            store: TieredCacheConfig::default().with_namespace("phalanx:http"),
        }
    }
}

impl CacheConfig {
    /// The defaults (as [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// With this freshness for responses with no caching headers.
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Using heuristic freshness or not.
    pub fn with_heuristic_freshness(mut self, on: bool) -> Self {
        self.heuristic_freshness = on;
        self
    }

    /// Storing responses that set cookies or not.
    pub fn with_store_set_cookie(mut self, on: bool) -> Self {
        self.store_set_cookie = on;
        self
    }

    /// With this body size cap.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Waiting at most this long for a concurrent identical miss.
    pub fn with_coalesce_timeout(mut self, timeout: Duration) -> Self {
        self.coalesce_timeout = timeout;
        self
    }

    /// Skipping the cache this long for a key whose response may not be stored (zero: never).
    pub fn with_pass_ttl(mut self, ttl: Duration) -> Self {
        self.pass_ttl = ttl;
        self
    }

    /// Keeping responses this long past their freshness.
    pub fn with_stale_retention(mut self, keep: Duration) -> Self {
        self.stale_retention = keep;
        self
    }

    /// With this status header name.
    pub fn with_status_header(mut self, name: impl Into<String>) -> Self {
        self.status_header = name.into();
        self
    }

    /// Serving stale this long past freshness when the origin refuses, fails or times out.
    pub fn with_error_grace(mut self, grace: Duration) -> Self {
        self.error_grace = grace;
        self
    }

    /// Waiting at most this long for the origin when a stale copy may stand in.
    pub fn with_origin_timeout(mut self, timeout: Duration) -> Self {
        self.origin_timeout = Some(timeout);
        self
    }

    /// Keying by path and query only, or not.
    pub fn with_single_host(mut self, on: bool) -> Self {
        self.single_host = on;
        self
    }

    /// With these targeted cache-control fields, most specific first.
    pub fn with_target_fields<I: IntoIterator<Item = S>, S: Into<String>>(mut self, fields: I) -> Self {
        self.target_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Keying by these query parameters only.
    pub fn with_key_query<I: IntoIterator<Item = S>, S: Into<String>>(mut self, params: I) -> Self {
        self.key_query = Some(params.into_iter().map(Into::into).collect());
        self
    }

    /// Ignoring or rejecting query parameters not in `key_query`.
    pub fn with_unknown_query(mut self, policy: UnknownQuery) -> Self {
        self.unknown_query = policy;
        self
    }

    /// Judging the HTTP hit ratio in `/status` against this fraction.
    pub fn with_target_hit_ratio(mut self, ratio: f64) -> Self {
        self.target_hit_ratio = Some(ratio);
        self
    }

    /// With this store configuration.
    pub fn with_store(mut self, store: TieredCacheConfig) -> Self {
        self.store = store;
        self
    }
}
