//! A stored HTTP response, its age and freshness (RFC 9111 §4.2), and its wire form for L2.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;

use super::directives::{parse_delta, split_list, Directives, MAX_DELTA_SECONDS};

/// A response held by the HTTP cache (or, for a URL whose responses vary, the marker naming the
/// request headers they vary on). Cheap to clone.
#[derive(Clone)]
pub struct CachedResponse(pub(crate) Arc<Stored>);

impl std::fmt::Debug for CachedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedResponse")
            .field("status", &self.0.status)
            .field("vary", &self.0.vary)
            .field("body_len", &self.0.body.len())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Stored {
    /// A marker: only `vary` means something; the responses live under variant keys.
    pub(crate) marker: bool,
    /// Lower-case names of the request headers the response varies on.
    pub(crate) vary: Box<[HeaderName]>,
    pub(crate) status: StatusCode,
    /// The response headers, without `Age` and hop-by-hop fields.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// When the response (or its last validation) was received.
    pub(crate) stored_at: Instant,
    /// Its age then (RFC 9111 §4.2.3: the larger of the apparent age from `Date` and the `Age`
    /// it came with plus the response delay), seconds, at most 2^31.
    pub(crate) initial_age: u64,
    /// Freshness lifetime; zero for `no-cache` responses.
    pub(crate) fresh_for: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    /// Never served stale without validation: `must-revalidate`, `proxy-revalidate`, `no-cache`
    /// or `s-maxage` (RFC 9111 §4.2.4, §5.2.2).
    pub(crate) must_revalidate: bool,
    /// `headers` plus `Age` and the status header, made on the first hit, so that a hit only
    /// clones it and overwrites two values in place (no growth of the map).
    pub(crate) served: std::sync::OnceLock<HeaderMap>,
}

impl CachedResponse {
    pub(crate) fn marker(vary: Box<[HeaderName]>, keep_for: Duration) -> Self {
        CachedResponse(Arc::new(Stored {
            marker: true,
            vary,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            stored_at: Instant::now(),
            initial_age: 0,
            fresh_for: keep_for,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
            served: std::sync::OnceLock::new(),
        }))
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The stored headers (no `Age`).
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.0.body
    }

    /// Current age in seconds (RFC 9111 §4.2.3).
    pub(crate) fn age(&self, now: Instant) -> u64 {
        self.0.initial_age.saturating_add(now.saturating_duration_since(self.0.stored_at).as_secs())
    }

    fn current_age(&self, now: Instant) -> Duration {
        Duration::from_secs(self.0.initial_age).saturating_add(now.saturating_duration_since(self.0.stored_at))
    }

    /// How long past its freshness lifetime it is (zero while fresh).
    pub(crate) fn staleness(&self, now: Instant) -> Duration {
        self.current_age(now).saturating_sub(self.0.fresh_for)
    }

    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        self.current_age(now) < self.0.fresh_for
    }

    /// Seconds of freshness left.
    pub(crate) fn fresh_left(&self, now: Instant) -> u64 {
        self.0.fresh_for.saturating_sub(self.current_age(now)).as_secs()
    }

    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.0.headers.get(header::ETAG)
    }

    pub(crate) fn last_modified(&self) -> Option<&HeaderValue> {
        self.0.headers.get(header::LAST_MODIFIED)
    }

    /// Whether a client's conditional request (`If-None-Match`, else `If-Modified-Since`) is
    /// satisfied by this response, so it may be answered 304.
    pub(crate) fn matches_conditional(&self, request: &HeaderMap) -> bool {
        if let Some(inm) = request.get(header::IF_NONE_MATCH) {
            let Some(etag) = self.etag().and_then(|e| e.to_str().ok()) else { return false };
            let Ok(list) = inm.to_str() else { return false };
            return split_list(list).any(|candidate| candidate == "*" || weak_eq(candidate, etag));
        }
        if let (Some(ims), Some(lm)) = (request.get(header::IF_MODIFIED_SINCE), self.last_modified()) {
            if let (Some(ims), Some(lm)) = (parse_date(ims), parse_date(lm)) {
                return lm <= ims;
            }
        }
        false
    }

    /// This response refreshed by a 304: the 304's headers replace the stored ones of the same
    /// name (RFC 9111 §4.3.4), and freshness restarts from now.
    pub(crate) fn refreshed(&self, not_modified: &HeaderMap, rules: &Rules, sent: Instant) -> Option<CachedResponse> {
        let mut headers = self.0.headers.clone();
        let connection = connection_names(not_modified);
        for name in not_modified.keys() {
            if name == header::CONTENT_LENGTH || is_hop_by_hop(name) || name == header::AGE || connection.contains(name)
            {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let directives = Directives::for_response(&headers, &rules.targets);
        let lifetime = rules.freshness(self.0.status, &headers, &directives)?;
        Some(CachedResponse(Arc::new(Stored {
            marker: false,
            vary: self.0.vary.clone(),
            status: self.0.status,
            headers,
            body: self.0.body.clone(),
            stored_at: Instant::now(),
            initial_age: initial_age(not_modified, sent),
            fresh_for: lifetime.fresh_for,
            stale_while_revalidate: lifetime.stale_while_revalidate,
            stale_if_error: lifetime.stale_if_error,
            must_revalidate: lifetime.must_revalidate,
            served: std::sync::OnceLock::new(),
        })))
    }

    /// How long storage should keep it: freshness plus the windows in which a stale copy is
    /// still of use (revalidation, `max-stale`, `stale-while-revalidate`, `stale-if-error`).
    pub(crate) fn keep_for(&self, stale_retention: Duration) -> Duration {
        let s = &self.0;
        let extra = s.stale_while_revalidate.max(s.stale_if_error).max(stale_retention);
        s.fresh_for
            .saturating_add(extra)
            .saturating_sub(Duration::from_secs(s.initial_age))
            .clamp(Duration::from_millis(1), Duration::from_secs(MAX_DELTA_SECONDS))
    }
}

fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

pub(crate) fn parse_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The `Age` a response came with (RFC 9111 §5.1): of a list, the first member; a value that is
/// not a non-negative integer is ignored (0); a huge one saturates at 2^31.
pub(crate) fn age_header(headers: &HeaderMap) -> u64 {
    let Some(value) = headers.get(header::AGE).and_then(|v| v.to_str().ok()) else { return 0 };
    let first = value.split(',').next().unwrap_or("").trim_matches([' ', '\t']);
    parse_delta(first).unwrap_or(0)
}

/// The age of a response just received (RFC 9111 §4.2.3): the larger of its apparent age (now
/// less its `Date`, never negative) and its `Age` plus the time the request took.
pub(crate) fn initial_age(headers: &HeaderMap, sent: Instant) -> u64 {
    let response_delay = Instant::now().saturating_duration_since(sent).as_secs();
    let corrected = age_header(headers).saturating_add(response_delay);
    let apparent = headers
        .get(header::DATE)
        .and_then(parse_date)
        .and_then(|date| SystemTime::now().duration_since(date).ok())
        .map_or(0, |d| d.as_secs());
    apparent.max(corrected).min(MAX_DELTA_SECONDS)
}

/// The fields the `Connection` header names: hop-by-hop for this message (RFC 9110 §7.6.1), so
/// never stored (RFC 9111 §3.1).
pub(crate) fn connection_names(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split_list)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}

/// The freshness figures of a response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    pub(crate) fresh_for: Duration,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) must_revalidate: bool,
}

/// What the layer's configuration says about storing and freshness.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) heuristic: bool,
    pub(crate) store_set_cookie: bool,
    /// Targeted cache-control fields (RFC 9213) this cache obeys, most specific first.
    pub(crate) targets: Vec<HeaderName>,
}

/// Status codes a cache may store without explicit freshness (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

impl Rules {
    /// Freshness of a response this cache may store, or `None` when it may not be stored
    /// for lack of any freshness information.
    pub(crate) fn freshness(&self, status: StatusCode, headers: &HeaderMap, d: &Directives) -> Option<Lifetime> {
        let secs = |s: u64| Duration::from_secs(s.min(MAX_DELTA_SECONDS));
        let explicit = if let Some(s) = d.s_maxage {
            Some(secs(s))
        } else if let Some(m) = d.max_age {
            Some(secs(m))
        } else if let Some(expires) = headers.get(header::EXPIRES) {
            // An invalid Expires means "already expired" (RFC 9111 §5.3).
            let expires = parse_date(expires).unwrap_or(SystemTime::UNIX_EPOCH);
            let date = headers.get(header::DATE).and_then(parse_date).unwrap_or_else(SystemTime::now);
            Some(expires.duration_since(date).unwrap_or_default().min(secs(MAX_DELTA_SECONDS)))
        } else {
            None
        };
        let fresh_for = match explicit {
            Some(f) => f,
            None if !heuristically_cacheable(status) && !d.public => return None,
            None => {
                let heuristic = self.heuristic.then(|| heuristic_freshness(headers)).flatten();
                let no_caching_headers = !headers.contains_key(header::CACHE_CONTROL);
                match (heuristic, self.default_ttl) {
                    (Some(h), _) => h,
                    (None, Some(ttl)) if no_caching_headers => ttl,
                    _ if d.no_cache || d.public => Duration::ZERO,
                    _ => return None,
                }
            }
        };
        Some(Lifetime {
            fresh_for: if d.no_cache { Duration::ZERO } else { fresh_for },
            stale_while_revalidate: d.stale_while_revalidate.map_or(Duration::ZERO, secs),
            stale_if_error: d.stale_if_error.map_or(Duration::ZERO, secs),
            // s-maxage implies proxy-revalidate for a shared cache (RFC 9111 §5.2.2.10); no-cache
            // forbids any use without validation (§5.2.2.4).
            must_revalidate: d.must_revalidate || d.s_maxage.is_some() || d.no_cache,
        })
    }

    /// Whether a response with this status and these headers may be stored (RFC 9111 §3) and
    /// carries usable freshness, decided before its body is read: a response that may not is
    /// streamed through untouched.
    pub(crate) fn admit(
        &self,
        request: &HeaderMap,
        request_directives: &Directives,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Admitted> {
        if request_directives.no_store || status == StatusCode::PARTIAL_CONTENT || status == StatusCode::NOT_MODIFIED {
            return None;
        }
        if status.is_informational() {
            return None;
        }
        let d = Directives::for_response(headers, &self.targets);
        if d.no_store || d.private {
            return None;
        }
        if request.contains_key(header::AUTHORIZATION) && !(d.public || d.s_maxage.is_some() || d.must_revalidate) {
            return None;
        }
        if headers.contains_key(header::SET_COOKIE) && !self.store_set_cookie {
            return None;
        }
        let vary = vary_names(headers)?;
        let lifetime = self.freshness(status, headers, &d)?;
        Some(Admitted { vary, lifetime })
    }
}

/// A response [`Rules::admit`] lets into the cache, waiting for its body.
pub(crate) struct Admitted {
    vary: Box<[HeaderName]>,
    lifetime: Lifetime,
}

impl Admitted {
    /// The entry to store once the whole body is at hand.
    pub(crate) fn store(self, status: StatusCode, headers: &HeaderMap, body: Bytes, sent: Instant) -> CachedResponse {
        let Admitted { vary, lifetime } = self;
        let mut stored_headers = HeaderMap::with_capacity(headers.len());
        let connection = connection_names(headers);
        for (name, value) in headers {
            if is_hop_by_hop(name) || name == header::AGE || connection.contains(name) {
                continue;
            }
            stored_headers.append(name.clone(), value.clone());
        }
        stored_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        CachedResponse(Arc::new(Stored {
            marker: false,
            vary,
            status,
            headers: stored_headers,
            body,
            stored_at: Instant::now(),
            initial_age: initial_age(headers, sent),
            fresh_for: lifetime.fresh_for,
            stale_while_revalidate: lifetime.stale_while_revalidate,
            stale_if_error: lifetime.stale_if_error,
            must_revalidate: lifetime.must_revalidate,
            served: std::sync::OnceLock::new(),
        }))
    }
}

/// 10 % of the time since `Last-Modified`, at most a day.
fn heuristic_freshness(headers: &HeaderMap) -> Option<Duration> {
    let last_modified = parse_date(headers.get(header::LAST_MODIFIED)?)?;
    let date = headers.get(header::DATE).and_then(parse_date).unwrap_or_else(SystemTime::now);
    let since = date.duration_since(last_modified).ok()?;
    Some((since / 10).min(Duration::from_secs(86_400)))
}

/// The request headers a response varies on (sorted, lower-case); `None` for `Vary: *`, which
/// never matches and so is not stored.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Box<[HeaderName]>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::VARY) {
        let text = value.to_str().ok()?;
        for name in split_list(text) {
            if name == "*" {
                return None;
            }
            names.push(HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names.into_boxed_slice())
}

/// The key of the variant of `base` that this request selects.
pub(crate) fn variant_key(base: &str, vary: &[HeaderName], request: &HeaderMap) -> String {
    let mut key = String::with_capacity(base.len() + 32);
    key.push_str(base);
    for name in vary {
        key.push('\n');
        key.push_str(name.as_str());
        key.push(':');
        let mut first = true;
        for value in request.get_all(name) {
            if !first {
                key.push(',');
            }
            first = false;
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    key
}

/// The L2 form.
#[derive(Serialize, Deserialize)]
struct Wire {
    marker: bool,
    vary: Vec<String>,
    status: u16,
    headers: Vec<(String, Bytes)>,
    body: Bytes,
    stored_unix_ms: u64,
    initial_age: u64,
    fresh_for_ms: u64,
    swr_s: u64,
    sie_s: u64,
    must_revalidate: bool,
}

impl Serialize for CachedResponse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let s = &self.0;
        let resident = Instant::now().saturating_duration_since(s.stored_at);
        let stored_wall = SystemTime::now().checked_sub(resident).unwrap_or(SystemTime::UNIX_EPOCH);
        Wire {
            marker: s.marker,
            vary: s.vary.iter().map(|n| n.as_str().to_owned()).collect(),
            status: s.status.as_u16(),
            headers: s
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            body: s.body.clone(),
            stored_unix_ms: stored_wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            initial_age: s.initial_age,
            fresh_for_ms: s.fresh_for.as_millis() as u64,
            swr_s: s.stale_while_revalidate.as_secs(),
            sie_s: s.stale_if_error.as_secs(),
            must_revalidate: s.must_revalidate,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CachedResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let w = Wire::deserialize(deserializer)?;
        let mut headers = HeaderMap::with_capacity(w.headers.len());
        for (name, value) in w.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(D::Error::custom)?;
            let value = HeaderValue::from_maybe_shared(value).map_err(D::Error::custom)?;
            headers.append(name, value);
        }
        let vary = w
            .vary
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(D::Error::custom)?;
        let stored_wall =
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(w.stored_unix_ms)).unwrap_or_else(SystemTime::now);
        let resident = SystemTime::now().duration_since(stored_wall).unwrap_or_default();
        let now = Instant::now();
        Ok(CachedResponse(Arc::new(Stored {
            marker: w.marker,
            vary: vary.into_boxed_slice(),
            status: StatusCode::from_u16(w.status).map_err(D::Error::custom)?,
            headers,
            body: w.body,
            stored_at: now.checked_sub(resident).unwrap_or(now),
            // L2 is shared: its figures are bounded like an origin's.
            initial_age: w.initial_age.min(MAX_DELTA_SECONDS),
            fresh_for: Duration::from_millis(w.fresh_for_ms).min(Duration::from_secs(MAX_DELTA_SECONDS)),
            stale_while_revalidate: Duration::from_secs(w.swr_s.min(MAX_DELTA_SECONDS)),
            stale_if_error: Duration::from_secs(w.sie_s.min(MAX_DELTA_SECONDS)),
            must_revalidate: w.must_revalidate,
            served: std::sync::OnceLock::new(),
        })))
    }
}
