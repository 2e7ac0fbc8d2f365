//! The demo's routes and the order of its layers.

use std::{sync::atomic::Ordering, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use fred::interfaces::KeysInterface;
use phalanx::{
    breaker::{CallNotPermitted, CircuitBreakerLayer},
    cache::EntryOptions,
    core::{problem::types, ClassifyLayer, Problem},
    metrics::StatusReport,
    pools::{Http, PoolRejection},
};
use serde::Deserialize;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::{RequestBodyTimeoutLayer, ResponseBodyTimeoutLayer, TimeoutLayer},
};

use crate::{
    config::DemoConfig,
    db::{self, Item, ItemUpdate},
    extract::{self, ApiJson, ApiPath, ApiQuery},
    state::{AppState, Layers, WriteAccess},
    upstream::Behaviour,
};

const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// The two routers the demo serves.
pub(crate) struct Routers {
    /// The API plus `/healthz` and `/readyz`: the public port.
    pub(crate) public: Router,
    /// `/metrics`, `/status`, `/upstream/control`, `/stats/writes`: the admin listener only.
    pub(crate) admin: Router,
}

pub(crate) fn router(state: AppState, layers: &Layers, config: &DemoConfig) -> Result<Routers, String> {
    let admission = |group: &str| {
        layers.admission.get(group).cloned().ok_or_else(|| format!("no [admission.{group}] in the configuration"))
    };
    // Innermost first: a per-route breaker, then admission (route layers added later wrap earlier ones).
    // Writes have a bulkhead of their own inside `items`: a database slow to commit holds at
    // most `[admission.writes]`'s few connections, and the reads keep the rest of the pool.
    let items = Router::new()
        .route("/items/{id}", get(get_item).put(axum::handler::Handler::layer(put_item, admission("writes")?)))
        .route("/items", get(list_items))
        .route("/payload/{bytes}", get(payload))
        .route_layer(CircuitBreakerLayer::per_route(layers.breakers.clone()))
        .route_layer(admission("items")?);
    // The client-side breaker of the upstream lives in the Http client.
    let upstream = Router::new().route("/upstream/quote", get(upstream_quote)).route_layer(admission("upstream")?);
    // Outermost first: classification, rate limits, then the response cache, so a fresh hit is
    // answered before admission and never waits for a slot.
    let api = items.merge(upstream).with_state(state.clone()).layer(
        ServiceBuilder::new()
            .layer(ClassifyLayer::new(layers.classifier.clone()))
            .layer(layers.ratelimit.clone())
            .layer(state.http_cache.clone()),
    );

    let probes = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz));
    let public = api
        .merge(probes.with_state(state.clone()))
        .fallback(extract::not_found)
        .method_not_allowed_fallback(extract::method_not_allowed);

    let mut status = StatusReport::new(layers.metrics.stats(), layers.status.clone());
    if let Some(scaling) = config.scaling {
        status = status.with_scaling(scaling).map_err(|e| e.to_string())?;
    }
    let admin = Router::new()
        .route("/upstream/control", get(get_upstream_control).post(set_upstream_control))
        .route("/stats/writes", get(write_count))
        .with_state(state)
        .merge(layers.exporter.router("/metrics"))
        .merge(status.router("/status"))
        .fallback(extract::not_found)
        .method_not_allowed_fallback(extract::method_not_allowed);

    // Outermost first: metrics see every public request, the rejections of the layers inside
    // included; the internal Cache-Tag header, read by the cache, never reaches a client.
    let outer = ServiceBuilder::new()
        .layer(layers.metrics.clone())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        // A request body that trickles in, or a response body a client does not read, holds a
        // connection no longer than the request timeout.
        .layer(RequestBodyTimeoutLayer::new(config.request_timeout))
        .layer(ResponseBodyTimeoutLayer::new(config.request_timeout))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout))
        .layer(CatchPanicLayer::custom(panic_problem))
        .layer(axum::middleware::map_response(strip_internal_headers));
    let admin_outer = ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout))
        .layer(CatchPanicLayer::custom(panic_problem));
    Ok(Routers { public: public.layer(outer), admin: admin.layer(admin_outer) })
}

async fn strip_internal_headers(mut res: Response) -> Response {
    res.headers_mut().remove(CACHE_TAG);
    res
}

/// A panic's message stays in the logs; the client gets a problem document.
fn panic_problem(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    problem(Problem::new(StatusCode::INTERNAL_SERVER_ERROR).with_detail("the request failed"))
}

/// A problem document as an axum response.
fn problem(p: Problem) -> Response {
    IntoResponse::into_response(p)
}

/// A query failed: the pool hears of it (a lost connection trips it, so the requests that
/// follow get their 503 at once), and the client gets a 503 with Retry-After.
fn database_unavailable(state: &AppState, e: sqlx::Error) -> Response {
    if !state.db.observe_error(&e) {
        tracing::warn!(error = %e, "database error");
    }
    problem(
        Problem::unavailable(types::DEPENDENCY_UNAVAILABLE, Duration::from_secs(1))
            .with_detail("the catalog database did not answer"),
    )
}

fn not_found(id: i64) -> Response {
    problem(Problem::new(StatusCode::NOT_FOUND).with_detail(format!("no item {id}")))
}

fn cache_headers(res: &mut Response, max_age: Duration, tag: &str, etag: Option<String>) {
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs())) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    if let Ok(v) = HeaderValue::from_str(tag) {
        headers.insert(CACHE_TAG, v);
    }
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        headers.insert(header::ETAG, v);
    }
}

fn item_tag(id: i64) -> String {
    format!("item:{id}")
}

enum LoadError {
    NotFound,
    Pool(PoolRejection),
    Database(sqlx::Error),
}

async fn get_item(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> Response {
    let options = EntryOptions::new().tag(item_tag(id));
    // Rows come from the TieredCache; a connection is taken only on a miss, and concurrent
    // misses for one row make one query.
    let loaded = state
        .rows
        .get_with_options(id, options, async {
            let mut conn = state.db.acquire().await.map_err(LoadError::Pool)?;
            match db::get_item(&mut conn, id).await {
                Ok(Some(item)) => Ok(item),
                Ok(None) => Err(LoadError::NotFound),
                Err(e) => Err(LoadError::Database(e)),
            }
        })
        .await;
    match loaded {
        Ok(item) => item_response(&state, item),
        Err(LoadError::NotFound) => not_found(id),
        Err(LoadError::Pool(rejection)) => rejection.into_response(),
        Err(LoadError::Database(e)) => database_unavailable(&state, e),
    }
}

fn item_response(state: &AppState, item: Item) -> Response {
    let etag = format!("\"{}-{}\"", item.id, item.version);
    let tag = item_tag(item.id);
    let mut res = Json(item).into_response();
    cache_headers(&mut res, state.item_max_age, &tag, Some(etag));
    res
}

#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    page: Option<i64>,
    per_page: Option<i64>,
}

async fn list_items(State(state): State<AppState>, ApiQuery(page): ApiQuery<Page>) -> Response {
    let number = page.page.unwrap_or(1);
    let per_page = page.per_page.unwrap_or(20);
    if !(1..=1_000_000).contains(&number) || !(1..=100).contains(&per_page) {
        return problem(
            Problem::new(StatusCode::BAD_REQUEST)
                .with_detail("page must be within 1..=1000000 and per_page within 1..=100"),
        );
    }
    let mut conn = match state.db.acquire().await {
        Ok(conn) => conn,
        Err(rejection) => return rejection.into_response(),
    };
    match db::list_items(&mut conn, number, per_page).await {
        Ok(items) => {
            let mut res = Json(items).into_response();
            // Pages are not purged on writes: they may lag a write by up to their max-age.
            cache_headers(&mut res, state.list_max_age, "items", None);
            res
        }
        Err(e) => database_unavailable(&state, e),
    }
}

async fn put_item(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    body: Result<ApiJson<ItemUpdate>, Response>,
) -> Response {
    // Who may write is decided before the body is looked at.
    match state.writers.check(&headers, &state.known_keys) {
        WriteAccess::Granted => {}
        WriteAccess::NoKey => {
            let challenge = HeaderValue::from_str(&format!("ApiKey header=\"{}\"", state.writers.header()))
                .unwrap_or(HeaderValue::from_static("ApiKey"));
            return problem(
                Problem::new(StatusCode::UNAUTHORIZED)
                    .with_detail("changing the catalog needs an API key with write permission")
                    .with_header(header::WWW_AUTHENTICATE, challenge),
            );
        }
        WriteAccess::ReadOnly => {
            return problem(Problem::new(StatusCode::FORBIDDEN).with_detail("this API key may not change the catalog"))
        }
    }
    let update = match body {
        Ok(ApiJson(update)) => update,
        Err(refusal) => return refusal,
    };
    if let Err(why) = update.validate() {
        return problem(Problem::new(StatusCode::UNPROCESSABLE_ENTITY).with_detail(why));
    }
    let mut conn = match state.db.acquire().await {
        Ok(conn) => conn,
        Err(rejection) => return rejection.into_response(),
    };
    let updated = db::update_item(&mut conn, id, &update).await;
    drop(conn);
    match updated {
        Ok(Some(item)) => {
            // The row and every stored response tagged with it go, on every node (through
            // Redis pub/sub when Redis is configured).
            let tag = item_tag(id);
            state.rows.invalidate_tag(&tag).await;
            state.http_cache.purge_tag(&tag).await;
            state.writes.add();
            item_response(&state, item)
        }
        Ok(None) => not_found(id),
        Err(e) => database_unavailable(&state, e),
    }
}

async fn write_count(State(state): State<AppState>) -> Response {
    let Some(pool) = &state.redis else {
        return problem(
            Problem::new(StatusCode::NOT_FOUND).with_detail("writes are counted only when Redis is configured"),
        );
    };
    let redis = match pool.acquire().await {
        Ok(redis) => redis,
        Err(rejection) => return rejection.into_response(),
    };
    match redis.run(|c| async move { c.get::<Option<i64>, _>(crate::write_count::WRITES_KEY).await }).await {
        Ok(n) => Json(serde_json::json!({ "writes": n.unwrap_or(0) })).into_response(),
        Err(e) => {
            // Redis's error text stays in the logs.
            tracing::warn!(error = %e, "reading the write count failed");
            problem(
                Problem::unavailable(types::DEPENDENCY_UNAVAILABLE, Duration::from_secs(1))
                    .with_detail("the write count is unavailable"),
            )
        }
    }
}

/// The largest body `GET /payload/{bytes}` answers with.
pub(crate) const MAX_PAYLOAD: u64 = 1024 * 1024;

/// `GET /payload/{bytes}`: a body of that many bytes, for measuring how response size weighs
/// on latency and throughput (the load generator's `mixes/payload-*.toml`). Cacheable like
/// the items; a body above the HTTP cache's `max_body_bytes` passes through it unstored.
async fn payload(State(state): State<AppState>, ApiPath(bytes): ApiPath<u64>) -> Response {
    payload_response(bytes, state.item_max_age)
}

pub(crate) fn payload_response(bytes: u64, max_age: Duration) -> Response {
    static BODY: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    if bytes > MAX_PAYLOAD {
        return problem(
            Problem::new(StatusCode::BAD_REQUEST).with_detail(format!("a payload is at most {MAX_PAYLOAD} bytes")),
        );
    }
    let body = BODY.get_or_init(|| {
        // Printable, not all one byte: what a body of that size looks like on the wire.
        let line = b"phalanx demo payload 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n";
        line.iter().copied().cycle().take(MAX_PAYLOAD as usize).collect::<Vec<u8>>().into()
    });
    let mut res = ([(header::CONTENT_TYPE, "application/octet-stream")], body.slice(..bytes as usize)).into_response();
    cache_headers(&mut res, max_age, "payload", Some(format!("\"payload-{bytes}\"")));
    res
}

async fn upstream_quote(State(state): State<AppState>, Http(client): Http) -> Response {
    match client.get(format!("{}/quote", state.upstream_url)).send().await {
        Ok(res) if res.status().is_success() => match read_limited(res, MAX_UPSTREAM_BODY).await {
            Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            None => problem(
                Problem::new(StatusCode::BAD_GATEWAY)
                    .with_type(types::DEPENDENCY_UNAVAILABLE)
                    .with_detail("the upstream's answer was cut short or too large"),
            ),
        },
        Ok(res) => {
            // The upstream's own error body is its business: the client gets one shape.
            let status = res.status();
            tracing::debug!(%status, "upstream refused");
            problem(
                Problem::new(StatusCode::BAD_GATEWAY)
                    .with_type(types::DEPENDENCY_UNAVAILABLE)
                    .with_detail(format!("the upstream answered {}", status.as_u16())),
            )
        }
        Err(reqwest_middleware::Error::Middleware(e)) if e.downcast_ref::<CallNotPermitted>().is_some() => {
            let open = e.downcast_ref::<CallNotPermitted>().expect("checked above");
            problem(
                Problem::unavailable(types::CIRCUIT_OPEN, open.retry_after)
                    .with_detail(format!("the upstream's circuit breaker '{}' is {}", open.breaker, open.state)),
            )
        }
        Err(e) => {
            // The error names the upstream's URL: it stays in the logs.
            tracing::warn!(error = %e, "upstream call failed");
            problem(
                Problem::new(StatusCode::BAD_GATEWAY)
                    .with_type(types::DEPENDENCY_UNAVAILABLE)
                    .with_detail("the upstream did not answer"),
            )
        }
    }
}

/// The largest upstream answer relayed to a client.
const MAX_UPSTREAM_BODY: usize = 64 * 1024;

/// The body of an upstream answer, or `None` when it fails or grows past `limit`.
async fn read_limited(mut res: reqwest::Response, limit: usize) -> Option<bytes::Bytes> {
    if res.content_length().is_some_and(|n| n > limit as u64) {
        return None;
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = res.chunk().await.ok()? {
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body.freeze())
}

async fn get_upstream_control(State(state): State<AppState>) -> Response {
    match &state.upstream_control {
        Some(control) => Json(control.get()).into_response(),
        None => no_local_upstream(),
    }
}

async fn set_upstream_control(State(state): State<AppState>, ApiJson(behaviour): ApiJson<Behaviour>) -> Response {
    match &state.upstream_control {
        Some(control) => match control.set(behaviour) {
            Ok(now) => Json(now).into_response(),
            Err(why) => problem(Problem::new(StatusCode::UNPROCESSABLE_ENTITY).with_detail(why)),
        },
        None => no_local_upstream(),
    }
}

fn no_local_upstream() -> Response {
    problem(Problem::new(StatusCode::CONFLICT).with_detail("the demo calls a configured upstream, not its own"))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready").into_response()
    } else {
        problem(
            Problem::unavailable(types::DEPENDENCY_UNAVAILABLE, Duration::from_secs(5))
                .with_title("Draining")
                .with_detail("this instance is shutting down"),
        )
    }
}
