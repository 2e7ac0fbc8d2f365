//! The state every CacheService shares: settings resolved at build time, the store, the
//! coalescer and the passes; the cache key of a request; what a coalescing leader tells the
//! requests waiting on it.

use std::{borrow::Cow, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, StatusCode, Uri};
use tokio::time::Instant;

use super::{config::UnknownQuery, entry::Rules, CachedResponse};
use crate::{coalesce::Coalescer, tiered::TieredCache};

/// The store an HTTP cache keeps its responses in: a [`TieredCache`] keyed by cache key.
/// Give it Redis to share responses (and purges) across nodes.
pub type HttpStore = TieredCache<String, CachedResponse>;

/// A function from the request to its cache key; `None`: do not cache this request.
pub type KeyFn = Arc<dyn Fn(&Uri, &HeaderMap) -> Option<String> + Send + Sync>;

/// The fields no client sees: surrogate keys are this cache's business.
pub(crate) const INTERNAL_FIELDS: [HeaderName; 2] =
    [HeaderName::from_static("cache-tag"), HeaderName::from_static("surrogate-key")];

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
    /// cache; `None` when `pass_ttl` is zero.
    pub(crate) passes: Option<Passes>,
    /// The `/status` hit-ratio target, if any.
    pub(crate) target_hit_ratio: Option<f64>,
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
    pub(crate) fn new(ttl: Duration) -> Self {
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

/// What a leader tells the requests that waited for its load.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// Look in storage: the response was stored, or there is nothing to share.
    Done,
    /// The origin refused, failed or timed out, and nothing was stored: serve the stale copy at
    /// hand if it may be served on error, else the origin's refusal when the leader could keep
    /// it, rather than each asking an origin that is refusing.
    Failed(Option<Arc<Refusal>>),
}

/// A 503 small enough to hand to every request waiting on the same load. (A 429 is not shared:
/// it may be about one client.) Shared only with requests of no higher priority than the one it
/// answered: a shed is a judgement of that request's class, and a critical follower of a shed
/// normal leader asks admission itself.
pub(crate) struct Refusal {
    pub(crate) priority: phalanx_core::Priority,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}
