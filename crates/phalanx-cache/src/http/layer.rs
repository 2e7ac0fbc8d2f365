//! CacheLayer: configuration, builder, purge API.

use std::{borrow::Cow, sync::Arc, time::Duration};

use tokio::time::Instant;

use http::{header, HeaderMap, HeaderName, Uri};
use opentelemetry::metrics::Meter;
use tower_layer::Layer;

use super::{
    entry::Rules,
    service::{CacheService, Outcome},
    CachedResponse,
};
use crate::{
    coalesce::Coalescer,
    stats::CacheStatus,
    tiered::{ConfigError, TieredCache},
};

/// The store an HTTP cache keeps its responses in: a [`TieredCache`] keyed by cache key.
/// Give it Redis to share responses (and purges) across nodes.
pub type HttpStore = TieredCache<String, CachedResponse>;

/// A function from the request to its cache key; `None`: do not cache this request.
pub type KeyFn = Arc<dyn Fn(&Uri, &HeaderMap) -> Option<String> + Send + Sync>;

/// CacheLayer configuration. Serde form (every field optional, defaults shown):
///
/// ```toml
/// default_ttl_ms = 0            # freshness for responses with no caching headers; 0: not stored
/// heuristic_freshness = false   # 10 % of the time since Last-Modified (RFC 9111 §4.2.2)
/// store_set_cookie = false      # store responses carrying Set-Cookie
/// max_body_bytes = 1048576      # larger bodies stream through, uncached
/// coalesce_timeout_ms = 5000    # how long a request waits for another's identical miss
/// pass_ttl_ms = 5000            # a key whose response may not be stored skips the cache this long
/// stale_retention_ms = 300000   # keep stale responses this long (revalidation, max-stale)
/// status_header = "x-cache"     # HIT | MISS | STALE | REVALIDATED
/// error_grace_ms = 30000        # serve stale this long when the origin refuses, fails or times out
/// origin_timeout_ms = 0         # with a stale copy at hand, wait this long for the origin; 0: no limit
/// single_host = false           # key by path and query only, not by scheme and authority
/// target_fields = ["phalanx-cache-control", "cdn-cache-control"]  # RFC 9213, most specific first
/// # key_query = ["page", "sort"] # only these query parameters make the key (default: the whole query)
/// unknown_query = "ignore"      # with key_query: "ignore" other parameters, or "reject" them (400)
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpCacheConfig {
    /// Freshness, in milliseconds, of a response that carries neither `Cache-Control` nor
    /// `Expires` (and has a status cacheable by default); 0: such responses are not stored.
    /// Default: 0.
    pub default_ttl_ms: u64,
    /// Use heuristic freshness (10 % of the age of `Last-Modified`, at most a day). Default: false.
    pub heuristic_freshness: bool,
    /// Store responses that set cookies. Default: false.
    pub store_set_cookie: bool,
    /// Bodies larger than this stream through uncached. Default: 1 MiB.
    pub max_body_bytes: usize,
    /// How long a request waits for a concurrent identical miss before calling the inner
    /// service itself, in milliseconds. Default: 5000.
    pub coalesce_timeout_ms: u64,
    /// After a response its headers forbid storing (regardless of the request: `no-store`,
    /// `private`, `Set-Cookie`, `Vary: *`, no freshness, or a body over the size cap), requests
    /// for the same key skip the cache for this long, in milliseconds: no lookup, no waiting
    /// behind another request's identical miss, no buffering. 0 turns this off. At most
    /// 100,000 keys are remembered. Default: 5000.
    pub pass_ttl_ms: u64,
    /// How long a response is kept past its freshness, for revalidation and for clients that
    /// accept stale responses, in milliseconds. Default: 300 000.
    pub stale_retention_ms: u64,
    /// The response header telling how the cache answered. Default: `x-cache`.
    pub status_header: String,
    /// How long past its freshness a stored response is served when the origin refuses
    /// (503, 429), fails (5xx, an error) or times out, even without `stale-if-error`
    /// (RFC 9111 §4.2.4: the origin is as good as disconnected), in milliseconds. Never for a
    /// response with `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage`.
    /// 0: only `stale-if-error` allows it. Default: 30 000.
    pub error_grace_ms: u64,
    /// When a stored response that may be served on error is at hand, wait at most this long for
    /// the origin, then serve the stored one (the origin call is dropped), in milliseconds.
    /// 0: no limit. Default: 0.
    pub origin_timeout_ms: u64,
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
}

/// What a cache whose key takes only some query parameters does with the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownQuery {
    /// Leave them out of the key (the request still reaches the handler with them).
    #[default]
    Ignore,
    /// Answer 400 (problem+json) without calling the handler.
    Reject,
}

/// The fields no client sees: surrogate keys are this cache's business.
pub(crate) const INTERNAL_FIELDS: [HeaderName; 2] =
    [HeaderName::from_static("cache-tag"), HeaderName::from_static("surrogate-key")];

impl Default for HttpCacheConfig {
    fn default() -> Self {
        HttpCacheConfig {
            default_ttl_ms: 0,
            heuristic_freshness: false,
            store_set_cookie: false,
            max_body_bytes: 1024 * 1024,
            coalesce_timeout_ms: 5000,
            pass_ttl_ms: 5000,
            stale_retention_ms: 300_000,
            status_header: "x-cache".into(),
            error_grace_ms: 30_000,
            origin_timeout_ms: 0,
            single_host: false,
            target_fields: vec!["phalanx-cache-control".into(), "cdn-cache-control".into()],
            key_query: None,
            unknown_query: UnknownQuery::Ignore,
        }
    }
}

pub(crate) struct State {
    pub(crate) store: HttpStore,
    pub(crate) rules: Rules,
    pub(crate) max_body: usize,
    pub(crate) coalesce_timeout: Duration,
    pub(crate) stale_retention: Duration,
    pub(crate) status_header: HeaderName,
    pub(crate) key_fn: Option<KeyFn>,
    pub(crate) error_grace: Duration,
    pub(crate) origin_timeout: Option<Duration>,
    pub(crate) single_host: bool,
    /// Sorted; `None`: the whole query is part of the key.
    pub(crate) key_query: Option<Box<[String]>>,
    pub(crate) unknown_query: UnknownQuery,
    /// Removed from every response: [`INTERNAL_FIELDS`] and the Phalanx target fields.
    pub(crate) internal: Box<[HeaderName]>,
    pub(crate) loads: Arc<Coalescer<String, Outcome>>,
    /// Keys whose last response may not be stored, with the time until which they skip the
    /// cache; `None` when `pass_ttl_ms` is 0.
    pub(crate) passes: Option<Passes>,
}

/// Keys that skip the cache for a while (the time is checked on `tokio::time`, so paused-time
/// tests control it; the table's own expiry only bounds its memory).
pub(crate) struct Passes {
    until: moka::sync::Cache<String, Instant, foldhash::quality::RandomState>,
    ttl: Duration,
}

/// The most keys remembered as passes: a flood of distinct uncacheable paths costs bounded memory.
const MAX_PASSES: u64 = 100_000;

impl Passes {
    fn new(ttl: Duration) -> Self {
        let until = moka::sync::Cache::builder()
            .max_capacity(MAX_PASSES)
            .time_to_live(ttl)
            .build_with_hasher(foldhash::quality::RandomState::default());
        Passes { until, ttl }
    }

    /// Whether requests for this key skip the cache now.
    pub(crate) fn skip(&self, key: &str, now: Instant) -> bool {
        self.until.get(key).is_some_and(|until| until > now)
    }

    /// Requests for this key skip the cache for a while.
    pub(crate) fn remember(&self, key: &str, now: Instant) {
        self.until.insert(key.to_owned(), now + self.ttl);
    }

    /// Requests for this key use the cache again.
    pub(crate) fn forget(&self, key: &str) {
        self.until.invalidate(key);
    }
}

impl State {
    /// The cache key of a request: the target URI (RFC 9111 §2) with the authority from the URI
    /// or `Host`, lower-cased, and the query reduced to `key_query`; the path and query only
    /// with `single_host` or when no authority is known. Borrowed from the URI when it can be.
    pub(crate) fn key<'a>(&self, uri: &'a Uri, headers: &HeaderMap) -> Option<Cow<'a, str>> {
        if let Some(f) = &self.key_fn {
            return f(uri, headers).map(Cow::Owned);
        }
        let path_and_query: Cow<'a, str> = match (&self.key_query, uri.query()) {
            (Some(allowed), Some(query)) => Cow::Owned(keyed_query(uri.path(), query, allowed)),
            (Some(_), None) => Cow::Borrowed(uri.path()),
            (None, _) => Cow::Borrowed(uri.path_and_query().map_or("/", |pq| pq.as_str())),
        };
        let authority = if self.single_host {
            None
        } else {
            uri.authority().map(|a| a.as_str()).or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        };
        let Some(authority) = authority else { return Some(path_and_query) };
        let scheme = uri.scheme_str().unwrap_or("http");
        let mut key = String::with_capacity(scheme.len() + 3 + authority.len() + path_and_query.len());
        key.push_str(scheme);
        key.push_str("://");
        key.extend(authority.chars().map(|c| c.to_ascii_lowercase()));
        key.push_str(&path_and_query);
        Some(Cow::Owned(key))
    }

    /// Whether the request's query has a parameter this cache refuses (`unknown_query = reject`).
    pub(crate) fn refuses_query(&self, uri: &Uri) -> bool {
        let (Some(allowed), UnknownQuery::Reject, Some(query)) = (&self.key_query, self.unknown_query, uri.query())
        else {
            return false;
        };
        query_pairs(query).any(|(name, _)| allowed.binary_search_by(|a| a.as_str().cmp(name)).is_err())
    }
}

/// The query's `name[=value]` members, empty ones skipped. Names are compared as sent
/// (percent-encoded): a client spelling a name differently only misses the cache.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// `path?` and the allowed parameters of `query`, sorted by name (stable for repeats).
fn keyed_query(path: &str, query: &str, allowed: &[String]) -> String {
    let mut kept: Vec<(&str, &str)> =
        query_pairs(query).filter(|(name, _)| allowed.binary_search_by(|a| a.as_str().cmp(name)).is_ok()).collect();
    kept.sort_by(|a, b| a.0.cmp(b.0));
    let mut key = String::with_capacity(path.len() + 1 + query.len());
    key.push_str(path);
    for (i, (name, value)) in kept.iter().enumerate() {
        key.push(if i == 0 { '?' } else { '&' });
        key.push_str(name);
        key.push('=');
        key.push_str(value);
    }
    key
}

/// The tag every entry stored under a key (and its variants) carries, so the key can be purged
/// with all its variants in one tag purge, on every node.
pub(crate) fn key_tag(key: &str) -> String {
    format!("key:{key}")
}

/// A Tower layer caching HTTP responses as a shared cache (RFC 9111). Cheap to clone; clones
/// (and the services they make) share the store.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use phalanx_cache::CacheLayer;
///
/// let cache = CacheLayer::builder().default_ttl(Duration::from_secs(5)).build().unwrap();
/// let app: Router = Router::new()
///     .route("/items/{id}", get(|| async { "item" }))
///     .layer(cache.clone());
/// # let _ = app;
/// cache.purge_tag("item:1").await;
/// # }
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    pub(crate) state: Arc<State>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer").field("store", &self.state.store).finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService { inner, state: Arc::clone(&self.state) }
    }
}

impl CacheLayer {
    /// A builder with the defaults of [`HttpCacheConfig`].
    pub fn builder() -> CacheLayerBuilder {
        CacheLayerBuilder::default()
    }

    /// Build from a configuration struct over this store.
    pub fn from_config(config: HttpCacheConfig, store: HttpStore) -> Result<Self, ConfigError> {
        CacheLayerBuilder { config, store: Some(store), key_fn: None, meter: None }.build()
    }

    /// The store (to share it with another CacheLayer, e.g. one per route).
    pub fn store(&self) -> &HttpStore {
        &self.state.store
    }

    /// Remove the responses stored under this cache key (all variants), on every node.
    pub async fn purge(&self, key: &str) {
        if let Some(passes) = &self.state.passes {
            passes.forget(key);
        }
        self.state.store.invalidate_tag(&key_tag(key)).await;
    }

    /// Remove every response that carried this tag in `Cache-Tag` or `Surrogate-Key`, on every
    /// node.
    pub async fn purge_tag(&self, tag: &str) {
        self.state.store.invalidate_tag(tag).await;
    }

    /// The `/status` section (name `cache`, target `cache_hit_ratio >= 0.85`, judged on the
    /// HTTP hit ratio).
    pub fn status(&self) -> CacheStatus {
        self.state.store.status()
    }
}

/// Builds a [`CacheLayer`].
#[derive(Default)]
pub struct CacheLayerBuilder {
    config: HttpCacheConfig,
    store: Option<HttpStore>,
    key_fn: Option<KeyFn>,
    meter: Option<Meter>,
}

impl std::fmt::Debug for CacheLayerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayerBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

impl CacheLayerBuilder {
    /// Keep responses in this store (default: an L1-only store of 64 MiB).
    pub fn store(mut self, store: HttpStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Freshness for responses with no caching headers (a per-route default when the layer
    /// wraps one route).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl_ms = duration_ms(ttl);
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
        self.config.error_grace_ms = duration_ms(grace);
        self
    }

    /// With a stored response that may be served on error at hand, wait at most this long
    /// for the origin (`Duration::ZERO`: no limit).
    pub fn origin_timeout(mut self, timeout: Duration) -> Self {
        self.config.origin_timeout_ms = duration_ms(timeout);
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
        self.config.coalesce_timeout_ms = duration_ms(timeout);
        self
    }

    /// How long a key whose response may not be stored skips the cache (`Duration::ZERO`: never).
    pub fn pass_ttl(mut self, ttl: Duration) -> Self {
        self.config.pass_ttl_ms = duration_ms(ttl);
        self
    }

    /// How long responses are kept past their freshness.
    pub fn stale_retention(mut self, keep: Duration) -> Self {
        self.config.stale_retention_ms = duration_ms(keep);
        self
    }

    /// The response header naming how the cache answered.
    pub fn status_header(mut self, name: &str) -> Self {
        self.config.status_header = name.into();
        self
    }

    /// Meter of the default store (ignored when a store is given: it has its own).
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Build the layer.
    pub fn build(self) -> Result<CacheLayer, ConfigError> {
        let c = self.config;
        let status_header = HeaderName::from_bytes(c.status_header.as_bytes())
            .map_err(|_| ConfigError::new(format!("status_header {:?} is not a header name", c.status_header)))?;
        if c.coalesce_timeout_ms == 0 {
            return Err(ConfigError::new("coalesce_timeout_ms must be greater than 0"));
        }
        let mut targets = Vec::with_capacity(c.target_fields.len());
        for name in &c.target_fields {
            let lower = name.to_ascii_lowercase();
            targets.push(
                HeaderName::from_bytes(lower.as_bytes())
                    .map_err(|_| ConfigError::new(format!("target_fields: {name:?} is not a header name")))?,
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
            return Err(ConfigError::new("unknown_query = reject needs key_query"));
        }
        let store = match self.store {
            Some(store) => store,
            None => {
                let mut b = TieredCache::builder().namespace("phalanx:http");
                if let Some(meter) = self.meter {
                    b = b.meter(meter);
                }
                b.build()?
            }
        };
        Ok(CacheLayer {
            state: Arc::new(State {
                store,
                rules: Rules {
                    default_ttl: (c.default_ttl_ms > 0).then(|| Duration::from_millis(c.default_ttl_ms)),
                    heuristic: c.heuristic_freshness,
                    store_set_cookie: c.store_set_cookie,
                    targets,
                },
                max_body: c.max_body_bytes,
                coalesce_timeout: Duration::from_millis(c.coalesce_timeout_ms),
                stale_retention: Duration::from_millis(c.stale_retention_ms),
                status_header,
                key_fn: self.key_fn,
                error_grace: Duration::from_millis(c.error_grace_ms),
                origin_timeout: (c.origin_timeout_ms > 0).then(|| Duration::from_millis(c.origin_timeout_ms)),
                single_host: c.single_host,
                key_query,
                unknown_query: c.unknown_query,
                internal: internal.into_boxed_slice(),
                loads: Arc::default(),
                passes: (c.pass_ttl_ms > 0).then(|| Passes::new(Duration::from_millis(c.pass_ttl_ms))),
            }),
        })
    }
}

/// Milliseconds of a duration, saturating.
fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<HttpCacheConfig> for CacheLayerBuilder {
    fn from(config: HttpCacheConfig) -> Self {
        CacheLayerBuilder { config, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_settings_deserialize_and_are_checked_at_build_time() {
        let config: HttpCacheConfig = serde_json::from_str(
            r#"{"key_query": ["page"], "unknown_query": "reject", "target_fields": ["Edge-Control"],
                "error_grace_ms": 0, "origin_timeout_ms": 500, "single_host": true}"#,
        )
        .unwrap();
        assert_eq!(config.unknown_query, UnknownQuery::Reject);
        let layer = CacheLayerBuilder::from(config.clone()).build().unwrap();
        assert_eq!(layer.state.rules.targets, vec![HeaderName::from_static("edge-control")]);
        assert_eq!(layer.state.origin_timeout, Some(Duration::from_millis(500)));
        assert!(layer.state.refuses_query(&Uri::from_static("/x?page=1&r=2")));
        assert!(!layer.state.refuses_query(&Uri::from_static("/x?page=1")));
        let no_params = HttpCacheConfig { key_query: None, ..config.clone() };
        assert!(CacheLayerBuilder::from(no_params).build().is_err(), "reject needs key_query");
        let bad = HttpCacheConfig { target_fields: vec!["not a name".into()], ..config };
        assert!(CacheLayerBuilder::from(bad).build().is_err());
    }
}
