//! [`CacheService`]: the request path.
//!
//! A fresh L1 hit is answered inside `call`, with a ready future and no allocation beyond the
//! header map's clone. Everything else (L2, revalidation, misses, unsafe methods) runs in one
//! boxed future (see [`ResponseFuture`]).

use std::{
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use phalanx_core::{LayerBody, Priority, Problem};
use tokio::time::Instant;
use tower_service::Service;

use super::{
    body::{buffer, Buffered, CacheBody, SplicedBody},
    directives::Directives,
    entry::{variant_key, CachedResponse},
    future::ResponseFuture,
    range::{self, Ranged},
    state::{key_tag, Outcome, Refusal, State},
};
use crate::{
    coalesce::{self, Join},
    stats::bump,
    tiered::{EntryOptions, LoadToken},
};

/// The service made by [`super::CacheLayer`].
#[derive(Clone)]
pub struct CacheService<S> {
    pub(crate) inner: S,
    pub(crate) state: Arc<State>,
}

impl<S> std::fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService").finish_non_exhaustive()
    }
}

/// How a stored response may be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Fresh,
    /// Stale, but the client accepts it (`max-stale`).
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: serve it, refresh in the background.
    StaleWhileRevalidate,
    /// Ask the origin first.
    Revalidate,
}

fn judge(entry: &CachedResponse, req: &Directives, now: Instant) -> Use {
    if req.no_cache || req.max_age.is_some_and(|max| entry.age(now) > max) {
        return Use::Revalidate;
    }
    if entry.is_fresh(now) {
        if req.min_fresh.is_some_and(|min| entry.fresh_left(now) < min) {
            return Use::Revalidate;
        }
        return Use::Fresh;
    }
    if entry.0.must_revalidate {
        return Use::Revalidate;
    }
    let staleness = entry.staleness(now);
    if req.max_stale.is_some_and(|max| staleness <= Duration::from_secs(max)) {
        return Use::StaleAccepted;
    }
    if !entry.0.stale_while_revalidate.is_zero() && staleness <= entry.0.stale_while_revalidate {
        return Use::StaleWhileRevalidate;
    }
    Use::Revalidate
}

/// The largest refusal body kept to share with waiting requests.
const MAX_REFUSAL_BODY: usize = 16 * 1024;

/// Refusals made under load (a shed, a rate limit, an exhausted pool, an open breaker): never
/// stored, never a reason to skip the cache.
fn is_transient(status: StatusCode) -> bool {
    matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS)
}

/// Answers after which a stale copy may stand in for the origin's (RFC 9111 §4.2.4, RFC 5861).
fn is_failure(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

const HIT: HeaderValue = HeaderValue::from_static("HIT");
const MISS: HeaderValue = HeaderValue::from_static("MISS");
const STALE: HeaderValue = HeaderValue::from_static("STALE");
const REVALIDATED: HeaderValue = HeaderValue::from_static("REVALIDATED");
/// How many fields the layers outside the cache may add to a hit without growing its header map.
const OUTER_FIELDS: usize = 6;

/// `Age` values 0..1024 made once, so a hit does not format (and allocate) one.
fn age_value(age: u64) -> HeaderValue {
    static AGES: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let ages = AGES.get_or_init(|| (0..1024u64).map(HeaderValue::from).collect());
    ages.get(age as usize).cloned().unwrap_or_else(|| HeaderValue::from(age))
}

impl State {
    /// Whether this stored response may be served in place of a refused, failed or timed-out
    /// origin answer: within `stale-if-error` or the layer's error grace, and never when its
    /// headers demand validation (RFC 9111 §4.2.4).
    fn may_serve_on_error(&self, entry: &CachedResponse, now: Instant) -> bool {
        !entry.0.must_revalidate && entry.staleness(now) <= entry.0.stale_if_error.max(self.error_grace)
    }

    /// Drop the fields no client may see.
    fn scrub(&self, headers: &mut HeaderMap) {
        for name in self.internal.iter() {
            headers.remove(name);
        }
    }

    fn refusal<B: Body>(&self, refusal: &Refusal, how: HeaderValue) -> Response<CacheBody<B>> {
        let mut response = Response::new(LayerBody::full(refusal.body.clone()));
        *response.status_mut() = refusal.status;
        *response.headers_mut() = refusal.headers.clone();
        self.marked(response, how)
    }

    /// The stored response this request selects, from L1 only.
    fn lookup_local(&self, key: &str, request: &HeaderMap, now: Instant) -> Option<CachedResponse> {
        let entry = self.store.get_local_at(key, now)?;
        if !entry.0.marker {
            return Some(entry);
        }
        self.store.get_local_at(&variant_key(key, &entry.0.vary, request), now)
    }

    /// The stored response this request selects, from L1 without counting (a second look).
    fn peek_local(&self, key: &str, request: &HeaderMap) -> Option<CachedResponse> {
        let entry = self.store.peek_local(key)?;
        if !entry.0.marker {
            return Some(entry);
        }
        self.store.peek_local(&variant_key(key, &entry.0.vary, request))
    }

    /// The stored response this request selects, from L2 (filling L1), after an L1 miss.
    async fn lookup_remote(&self, key: &str, request: &HeaderMap) -> Option<CachedResponse> {
        let entry = self.store.get_remote(&key.to_owned()).await?;
        if !entry.0.marker {
            return Some(entry);
        }
        let variant = variant_key(key, &entry.0.vary, request);
        match self.store.get_local(&variant) {
            Some(v) => Some(v),
            None => self.store.get_remote(&variant).await,
        }
    }

    /// Store a response under its key (and, when it varies, under its variant key with a
    /// marker at the key), tagged with the key's tag and its `Cache-Tag` / `Surrogate-Key`.
    async fn insert(&self, key: &str, request: &HeaderMap, entry: &CachedResponse, token: LoadToken) {
        let keep = entry.keep_for(self.stale_retention);
        let mut tags: Vec<Arc<str>> = vec![key_tag(key).into()];
        for name in ["cache-tag", "surrogate-key"] {
            for value in entry.0.headers.get_all(name) {
                let Ok(text) = value.to_str() else { continue };
                tags.extend(text.split([',', ' ']).map(str::trim).filter(|t| !t.is_empty()).map(Arc::from));
            }
        }
        let options = EntryOptions::new().ttl(keep).tags(tags);
        if entry.0.vary.is_empty() {
            self.store.fill(key.to_owned(), entry.clone(), options, token).await;
            return;
        }
        let marker = CachedResponse::marker(entry.0.vary.clone(), keep);
        let marker_options = EntryOptions::new().ttl(keep).tag(key_tag(key));
        self.store.fill(key.to_owned(), marker, marker_options, token).await;
        self.store.fill(variant_key(key, &entry.0.vary, request), entry.clone(), options, token).await;
    }

    /// The client's answer from a stored response: 304 when its own conditional matches.
    fn respond<B: Body>(
        &self,
        entry: &CachedResponse,
        method: &Method,
        request: &HeaderMap,
        now: Instant,
        how: HeaderValue,
    ) -> Response<CacheBody<B>> {
        let stored = &entry.0;
        let conditional = (request.contains_key(header::IF_NONE_MATCH)
            || request.contains_key(header::IF_MODIFIED_SINCE))
            && stored.status == StatusCode::OK
            && entry.matches_conditional(request);
        let ranged = if conditional { Ranged::Full } else { range::select(entry, request) };
        let (status, body) = match &ranged {
            _ if conditional => (StatusCode::NOT_MODIFIED, LayerBody::empty()),
            Ranged::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, LayerBody::empty()),
            Ranged::Part { .. } if method == Method::HEAD => (StatusCode::PARTIAL_CONTENT, LayerBody::empty()),
            Ranged::Full if method == Method::HEAD => (stored.status, LayerBody::empty()),
            Ranged::Part { start, end } => {
                (StatusCode::PARTIAL_CONTENT, LayerBody::full(stored.body.slice(*start..*end)))
            }
            Ranged::Full => (stored.status, LayerBody::full(stored.body.clone())),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        *headers = stored
            .served
            .get_or_init(|| {
                // Room for the fields the layers outside add to a hit (RateLimit, a trace id...):
                // a clone keeps the index table's size, so their inserts need no rehash.
                let mut served = HeaderMap::with_capacity(stored.headers.len() + 2 + OUTER_FIELDS);
                served.extend(stored.headers.iter().map(|(n, v)| (n.clone(), v.clone())));
                served.insert(header::AGE, HeaderValue::from_static("0"));
                served.insert(self.status_header.clone(), HIT);
                self.scrub(&mut served);
                served
            })
            .clone();
        if conditional {
            headers.remove(header::CONTENT_LENGTH);
        }
        match ranged {
            Ranged::Full => {}
            Ranged::Part { start, end } => {
                let total = stored.body.len();
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
                headers.insert(header::CONTENT_RANGE, range::content_range(start, end, total));
            }
            Ranged::Unsatisfiable => {
                headers.remove(header::CONTENT_LENGTH);
                headers.insert(header::CONTENT_RANGE, range::unsatisfied_range(stored.body.len()));
            }
        }
        headers.insert(header::AGE, age_value(entry.age(now)));
        headers.insert(self.status_header.clone(), how);
        response
    }

    fn marked<B>(&self, mut response: Response<B>, how: HeaderValue) -> Response<B> {
        self.scrub(response.headers_mut());
        response.headers_mut().insert(self.status_header.clone(), how);
        response
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody::Error: Send + 'static,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let state = Arc::clone(&self.state);
        match *request.method() {
            Method::GET | Method::HEAD => {}
            // Safe, and never stored.
            Method::OPTIONS | Method::TRACE => return ResponseFuture::boxed(Box::pin(pass(state, inner, request))),
            // Unsafe, or of unknown safety: both invalidate (RFC 9111 §4.4).
            _ => return ResponseFuture::boxed(Box::pin(unsafe_method(state, inner, request))),
        }
        if state.refuses_query(request.uri()) {
            let problem = Problem::new(StatusCode::BAD_REQUEST)
                .with_type("urn:phalanx:problem:unknown-query-parameter")
                .with_title("Unknown query parameter")
                .with_detail("this resource accepts only the query parameters it declares");
            return ResponseFuture::ready(problem.into_response());
        }
        let Some(key) = state.key(request.uri(), request.headers()) else {
            return ResponseFuture::boxed(Box::pin(pass(state, inner, request)));
        };
        let directives = if request.headers().contains_key(header::CACHE_CONTROL) {
            Directives::from_headers(request.headers())
        } else {
            Directives::default()
        };
        let now = Instant::now();
        let local = state.lookup_local(&key, request.headers(), now);
        if let Some(entry) = &local {
            if judge(entry, &directives, now) == Use::Fresh {
                bump(&state.store.counters().http.hits);
                let response = state.respond(entry, request.method(), request.headers(), now, HIT);
                return ResponseFuture::ready(response);
            }
        } else if !directives.only_if_cached && state.passes.as_ref().is_some_and(|p| p.skip(&key, now)) {
            // Nothing stored, and the last answer could not be: straight through.
            bump(&state.store.counters().http.misses);
            return ResponseFuture::boxed(Box::pin(pass_marked(state, inner, request)));
        }
        let key = key.into_owned();
        ResponseFuture::boxed(Box::pin(lookup(state, inner, request, key, directives, local)))
    }
}

/// Not cacheable: straight to the inner service (only the internal fields are removed).
async fn pass<S, ReqBody, ResBody>(
    state: Arc<State>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    let mut response = inner.call(request).await?;
    state.scrub(response.headers_mut());
    Ok(response.map(|b| LayerBody::inner(SplicedBody::new(b))))
}

/// A key whose last response could not be stored: straight to the inner service, marked a miss.
async fn pass_marked<S, ReqBody, ResBody>(
    state: Arc<State>,
    inner: S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    let response = pass(Arc::clone(&state), inner, request).await?;
    Ok(state.marked(response, MISS))
}

/// POST, PUT, PATCH, DELETE and methods of unknown safety: a non-error response invalidates the target URI and the same-origin
/// `Location` / `Content-Location` (RFC 9111 §4.4), on every node.
async fn unsafe_method<S, ReqBody, ResBody>(
    state: Arc<State>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let mut response = inner.call(request).await?;
    state.scrub(response.headers_mut());
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        let mut keys = Vec::with_capacity(3);
        keys.extend(state.key(&uri, &headers).map(|k| k.into_owned()));
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(target) = response.headers().get(name).and_then(|v| v.to_str().ok()) else { continue };
            let Ok(target) = target.parse::<Uri>() else { continue };
            if same_origin(&target, &uri, &headers) {
                keys.extend(state.key(&target, &headers).map(|k| k.into_owned()));
            }
        }
        keys.sort();
        keys.dedup();
        for key in keys {
            if let Some(passes) = &state.passes {
                passes.forget(&key);
            }
            state.store.invalidate_tag(&key_tag(&key)).await;
        }
    }
    Ok(response.map(|b| LayerBody::inner(SplicedBody::new(b))))
}

fn same_origin(target: &Uri, request: &Uri, headers: &HeaderMap) -> bool {
    let Some(authority) = target.authority() else { return true };
    let own =
        request.authority().map(|a| a.as_str()).or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()));
    own.is_some_and(|own| own.eq_ignore_ascii_case(authority.as_str()))
}

/// Past the L1 fast path: L2, freshness decisions, coalescing, the inner call.
async fn lookup<S, ReqBody, ResBody>(
    state: Arc<State>,
    inner: S,
    request: Request<ReqBody>,
    key: String,
    directives: Directives,
    local: Option<CachedResponse>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody::Error: Send + 'static,
{
    let counters = state.store.counters();
    // The rarer awaits below are boxed: this future is itself boxed once per miss, and keeping
    // the L2 round trip, coalescing and the stores out of its frame keeps that move small.
    let entry = match local {
        Some(entry) => Some(entry),
        None if state.store.has_remote() => Box::pin(state.lookup_remote(&key, request.headers())).await,
        None => None,
    };
    let now = Instant::now();
    if let Some(entry) = &entry {
        match judge(entry, &directives, now) {
            Use::Fresh => {
                bump(&counters.http.hits);
                return Ok(state.respond(entry, request.method(), request.headers(), now, HIT));
            }
            Use::StaleAccepted => {
                bump(&counters.http.stale);
                return Ok(state.respond(entry, request.method(), request.headers(), now, STALE));
            }
            Use::StaleWhileRevalidate => {
                bump(&counters.http.stale);
                spawn_refresh(&state, inner, &request, &key, entry);
                return Ok(state.respond(entry, request.method(), request.headers(), now, STALE));
            }
            Use::Revalidate => {}
        }
    }
    if directives.only_if_cached {
        bump(&counters.http.misses);
        let mut response = Response::new(LayerBody::empty());
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        return Ok(state.marked(response, MISS));
    }
    if request.method() == Method::HEAD {
        // A HEAD response has no body to store; HEAD is served from stored GET responses only.
        bump(&counters.http.misses);
        let response = Box::pin(pass(Arc::clone(&state), inner, request)).await?;
        return Ok(state.marked(response, MISS));
    }
    match state.loads.join(&key) {
        Join::Leader(leader) => {
            // A load may have completed between our lookup and the join.
            if let Some(fresh) =
                state.peek_local(&key, request.headers()).filter(|e| judge(e, &directives, now) == Use::Fresh)
            {
                bump(&counters.http.hits);
                return Ok(state.respond(&fresh, request.method(), request.headers(), now, HIT));
            }
            let mut outcome = Outcome::Done;
            let response = fetch(&state, inner, request, &key, &directives, entry, &mut outcome).await;
            leader.complete(outcome);
            response
        }
        Join::Follower(rx) => {
            // Waiting is the point under overload too: a cold key makes one origin call, and
            // its refusal, if it is one, answers the others.
            let outcome = Box::pin(tokio::time::timeout(state.coalesce_timeout, coalesce::wait(rx))).await;
            let now = Instant::now();
            if let Some(fresh) =
                state.peek_local(&key, request.headers()).filter(|e| judge(e, &directives, now) == Use::Fresh)
            {
                bump(&counters.http.coalesced);
                bump(&counters.http.hits);
                return Ok(state.respond(&fresh, request.method(), request.headers(), now, HIT));
            }
            // The leader failed, or took longer than the wait (as good as a timeout): a stored
            // copy that may stand in for a failed origin does, rather than a second origin call.
            let (failed, refusal) = match outcome {
                Err(_elapsed) => (true, None),
                Ok(Some(Outcome::Failed(refusal))) => (true, refusal),
                Ok(_) => (false, None),
            };
            if failed {
                if let Some(stale) = entry.as_ref().filter(|e| state.may_serve_on_error(e, now)) {
                    bump(&counters.http.coalesced);
                    bump(&counters.http.stale);
                    return Ok(state.respond(stale, request.method(), request.headers(), now, STALE));
                }
                if let Some(refusal) = refusal.filter(|r| Priority::of(request.extensions()) <= r.priority) {
                    bump(&counters.http.coalesced);
                    bump(&counters.http.misses);
                    return Ok(state.refusal(&refusal, MISS));
                }
            }
            // The leader's response could not be shared (or took too long): ask ourselves.
            let mut ignored = Outcome::Done;
            Box::pin(fetch(&state, inner, request, &key, &directives, entry, &mut ignored)).await
        }
    }
}

/// Serve stale now and refresh in the background, once: only if no load of this key is in
/// flight.
fn spawn_refresh<S, ReqBody, ResBody>(
    state: &Arc<State>,
    mut inner: S,
    request: &Request<ReqBody>,
    key: &str,
    entry: &CachedResponse,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody::Error: Send + 'static,
{
    let Join::Leader(leader) = state.loads.join(&key.to_owned()) else { return };
    let mut refresh = Request::new(ReqBody::default());
    *refresh.uri_mut() = request.uri().clone();
    *refresh.headers_mut() = request.headers().clone();
    // The refresh wants the whole response, to store it.
    refresh.headers_mut().remove(header::RANGE);
    refresh.headers_mut().remove(header::IF_RANGE);
    *refresh.version_mut() = request.version();
    // What routing put there (axum's path parameters, matched route) and what outer layers
    // added: the handler needs them as much for the refresh as for the request.
    *refresh.extensions_mut() = request.extensions().clone();
    let state = Arc::clone(state);
    let key = key.to_owned();
    let entry = entry.clone();
    tokio::spawn(async move {
        if futures_util::future::poll_fn(|cx| inner.poll_ready(cx)).await.is_err() {
            return;
        }
        let mut outcome = Outcome::Done;
        let _ = fetch(&state, inner, refresh, &key, &Directives::default(), Some(entry), &mut outcome).await;
        leader.complete(outcome);
    });
}

/// Ask the inner service — conditionally when a stale response with validators is at hand —
/// and store what may be stored. `outcome` tells the waiting requests what became of it.
async fn fetch<S, ReqBody, ResBody>(
    state: &State,
    mut inner: S,
    request: Request<ReqBody>,
    key: &str,
    directives: &Directives,
    stale: Option<CachedResponse>,
    outcome: &mut Outcome,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Unpin,
{
    let counters = state.store.counters();
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let client_headers = parts.headers.clone();
    let priority = Priority::of(&parts.extensions);
    let mut forwarded = Request::from_parts(parts, body);
    // The cache wants a complete response to store; it answers the client's own condition itself.
    let headers = forwarded.headers_mut();
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
    if let Some(stale) = &stale {
        if let Some(etag) = stale.etag() {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = stale.last_modified() {
            headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
    }
    // Taken before the origin is asked: a purge during the call refuses the store.
    let token = state.store.load_token();
    let sent = Instant::now();
    let stand_in = |now: Instant| stale.as_ref().filter(|s| state.may_serve_on_error(s, now)).cloned();
    let call = inner.call(forwarded);
    let called = match state.origin_timeout.zip(stand_in(sent)) {
        Some((limit, fallback)) => match Box::pin(tokio::time::timeout(limit, call)).await {
            Ok(called) => called,
            Err(_) => {
                // No answer in time: the stored copy stands in (the origin call is dropped).
                *outcome = Outcome::Failed(None);
                bump(&counters.http.stale);
                return Ok(state.respond(&fallback, &method, &client_headers, Instant::now(), STALE));
            }
        },
        None => call.await,
    };
    let now = Instant::now();
    let response = match called {
        Ok(response) => response,
        Err(error) => {
            *outcome = Outcome::Failed(None);
            if let Some(stale) = stand_in(now) {
                bump(&counters.http.stale);
                return Ok(state.respond(&stale, &method, &client_headers, now, STALE));
            }
            return Err(error);
        }
    };
    let status = response.status();
    if let Some(old) = &stale {
        if status == StatusCode::NOT_MODIFIED {
            bump(&counters.http.stale);
            let Some(refreshed) = old.refreshed(response.headers(), &state.rules, sent) else {
                // Still valid, but no longer storable as it stands: serve it this once.
                return Ok(state.respond(old, &method, &client_headers, now, REVALIDATED));
            };
            Box::pin(state.insert(key, &client_headers, &refreshed, token)).await;
            return Ok(state.respond(&refreshed, &method, &client_headers, Instant::now(), REVALIDATED));
        }
    }
    if is_failure(status) {
        if let Some(stale) = stand_in(now) {
            *outcome = Outcome::Failed(None);
            bump(&counters.http.stale);
            return Ok(state.respond(&stale, &method, &client_headers, now, STALE));
        }
    }
    bump(&counters.http.misses);
    let (parts, body) = response.into_parts();
    if is_transient(parts.status) {
        // Never stored, never a pass: the next request tries again. A small 503 is kept for the
        // requests waiting on this load.
        *outcome = Outcome::Failed(None);
        if parts.status != StatusCode::SERVICE_UNAVAILABLE {
            return Ok(state.marked(Response::from_parts(parts, LayerBody::inner(SplicedBody::new(body))), MISS));
        }
        let body = match Box::pin(buffer(body, MAX_REFUSAL_BODY)).await {
            Buffered::Complete(bytes) => {
                let refusal = Arc::new(Refusal { priority, status: parts.status, headers: parts.headers, body: bytes });
                *outcome = Outcome::Failed(Some(Arc::clone(&refusal)));
                return Ok(state.refusal(&refusal, MISS));
            }
            Buffered::PassOn(body) => body,
        };
        return Ok(state.marked(Response::from_parts(parts, LayerBody::inner(body)), MISS));
    }
    // Whether this request alone keeps the response out (its own `no-store` or
    // `Authorization`, a range or conditional answer), or the origin is in trouble (a 5xx),
    // rather than the response itself.
    let request_refuses = directives.no_store
        || client_headers.contains_key(header::AUTHORIZATION)
        || matches!(parts.status, StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED)
        || parts.status.is_server_error();
    let remember_pass = || {
        if let (Some(passes), false) = (&state.passes, request_refuses) {
            passes.remember(key, Instant::now());
        }
    };
    let Some(admitted) = state.rules.admit(&client_headers, directives, parts.status, &parts.headers) else {
        // Not storable, as its headers already tell: streamed through, never buffered.
        remember_pass();
        let body = LayerBody::inner(SplicedBody::new(body));
        return Ok(state.marked(Response::from_parts(parts, body), MISS));
    };
    let complete = match buffer(body, state.max_body).await {
        Buffered::Complete(bytes) => bytes,
        Buffered::PassOn(body) => {
            remember_pass();
            return Ok(state.marked(Response::from_parts(parts, LayerBody::inner(body)), MISS));
        }
    };
    let entry = admitted.store(parts.status, &parts.headers, complete, sent);
    Box::pin(state.insert(key, &client_headers, &entry, token)).await;
    Ok(state.respond(&entry, &method, &client_headers, Instant::now(), MISS))
}
