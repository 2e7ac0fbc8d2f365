//! A one-route axum service, as a user's first benchmark writes it: a handler answering a small
//! JSON body that shared caches may keep for ten minutes, served bare, behind the whole Phalanx
//! stack, or behind the peer stack assembled from other crates.
//!
//! The binary serves one [`Mode`] on a loopback port for an out-of-process load generator
//! (`scripts/stackbench/run.sh`); [`instruction_loop`] drives the same routers in process, with no
//! sockets, for instruction counts under callgrind (`STACK_LOOP` in `benches/stack.rs`).
//!
//! The whole stack, outermost first: `MetricsLayer`, tower-http `TimeoutLayer`, `ClassifyLayer`
//! (which resolves the client key from the peer address), `RateLimitLayer` (one policy, a high
//! quota, keyed by that address), `CacheLayer` (`TieredCache` defaults); then, as route layers,
//! `AdmissionLayer` (fixed limit 20,000) and a per-route `CircuitBreakerLayer`.
//!
//! The peer stack, outermost first: axum-prometheus, tower-http timeout, tower_governor (global
//! key), axum-response-cache; then, as route layers, tower `load_shed` + `concurrency_limit`.

use std::{net::SocketAddr, str::FromStr, sync::OnceLock, time::Duration};

use axum::{
    body::Body,
    error_handling::HandleErrorLayer,
    extract::ConnectInfo,
    http::{header, Request, StatusCode},
    response::IntoResponse,
    routing::get,
    BoxError, Router,
};
use phalanx_admission::{AdmissionLayer, LimitConfig};
use phalanx_breaker::CircuitBreakerLayer;
use phalanx_cache::{CacheLayer, HttpStore, TieredCache};
use phalanx_core::{Classifier, ClassifyLayer, ClientKeyResolver};
use phalanx_metrics::{MetricsLayer, PrometheusExporter};
use phalanx_ratelimit::{Policy, Quota, RateLimitLayer};
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;

/// The handler's body: a small JSON document.
pub const BODY: &str = r#"{"id":1,"name":"item-1","price_cents":8019,"stock":31}"#;

/// The one route.
pub const ROUTE: &str = "/items/{id}";

/// The request timeout of both stacks.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What serves the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// axum alone.
    Bare,
    /// The whole Phalanx stack; the handler's answers are cacheable, so requests after the first
    /// per URL are cache hits.
    Stack,
    /// The whole stack with a handler that answers `Cache-Control: no-store`: every request goes
    /// through every layer to the handler.
    StackMiss,
    /// The whole stack (cache hits) with the rate limiter's `RateLimit` fields off.
    StackNoRateLimitHeaders,
    /// The peer stack (cache hits).
    Peer,
    /// One layer alone in front of the handler, for per-layer costs.
    Layer(Single),
}

/// One layer alone in front of the cacheable handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Single {
    /// `MetricsLayer`.
    Metrics,
    /// tower-http `TimeoutLayer`.
    Timeout,
    /// `ClassifyLayer`, resolving the client key from the peer address.
    Classify,
    /// `RateLimitLayer` keyed by the peer address, `RateLimit` fields on.
    RateLimit,
    /// `RateLimitLayer` keyed by the peer address, `RateLimit` fields off.
    RateLimitNoHeaders,
    /// `CacheLayer`, every request a hit.
    CacheHit,
    /// `CacheLayer` in front of a `no-store` handler, every request passing through.
    CachePass,
    /// `AdmissionLayer` as a route layer.
    Admission,
    /// `CircuitBreakerLayer` as a route layer.
    Breaker,
    /// axum-prometheus.
    PeerMetrics,
    /// tower_governor, global key.
    PeerGovernor,
    /// axum-response-cache, every request a hit.
    PeerCache,
    /// tower `load_shed` + `concurrency_limit` as route layers.
    PeerLoadShed,
}

const SINGLES: [(&str, Single); 13] = [
    ("metrics", Single::Metrics),
    ("timeout", Single::Timeout),
    ("classify", Single::Classify),
    ("ratelimit", Single::RateLimit),
    ("ratelimit-no-headers", Single::RateLimitNoHeaders),
    ("cache-hit", Single::CacheHit),
    ("cache-pass", Single::CachePass),
    ("admission", Single::Admission),
    ("breaker", Single::Breaker),
    ("peer-metrics", Single::PeerMetrics),
    ("peer-governor", Single::PeerGovernor),
    ("peer-cache", Single::PeerCache),
    ("peer-loadshed", Single::PeerLoadShed),
];

impl Mode {
    /// Every mode's name, as [`FromStr`] reads it.
    pub fn names() -> Vec<String> {
        let mut names: Vec<String> =
            ["bare", "stack", "stack-miss", "stack-no-ratelimit-headers", "peer"].map(String::from).to_vec();
        names.extend(SINGLES.iter().map(|(name, _)| format!("layer-{name}")));
        names
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "bare" => Mode::Bare,
            "stack" => Mode::Stack,
            "stack-miss" => Mode::StackMiss,
            "stack-no-ratelimit-headers" => Mode::StackNoRateLimitHeaders,
            "peer" => Mode::Peer,
            other => {
                let single = other.strip_prefix("layer-").and_then(|n| SINGLES.iter().find(|(name, _)| *name == n));
                match single {
                    Some((_, single)) => Mode::Layer(*single),
                    None => return Err(format!("unknown mode {other:?}; one of {}", Mode::names().join(", "))),
                }
            }
        })
    }
}

async fn cacheable() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "public, max-age=600")], BODY)
}

async fn no_store() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], BODY)
}

fn route(cache: bool) -> Router {
    if cache {
        Router::new().route(ROUTE, get(cacheable))
    } else {
        Router::new().route(ROUTE, get(no_store))
    }
}

/// The process's one exporter: every Phalanx layer records into its meter.
fn meter() -> opentelemetry::metrics::Meter {
    static EXPORTER: OnceLock<PrometheusExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| PrometheusExporter::new("stackbench").expect("a Prometheus exporter")).meter()
}

fn metrics() -> Result<MetricsLayer, BoxError> {
    Ok(MetricsLayer::builder().meter(meter()).build()?)
}

fn timeout() -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, TIMEOUT)
}

fn classify() -> Result<ClassifyLayer, BoxError> {
    let peer = ClientKeyResolver::builder().peer_ip().build()?;
    Ok(ClassifyLayer::new(Classifier::builder().client_key(peer).build()))
}

fn ratelimit(headers: bool) -> Result<RateLimitLayer, BoxError> {
    Ok(RateLimitLayer::builder()
        .policy(Policy::new("per-client", Quota::per_second(1_000_000).with_burst(1_000_000)))
        .key_resolver(ClientKeyResolver::builder().peer_ip().build()?)
        .headers(headers)
        .meter(meter())
        .build()?)
}

fn cache() -> Result<CacheLayer, BoxError> {
    let store: HttpStore = TieredCache::builder().build()?;
    Ok(CacheLayer::builder().store(store).meter(meter()).build()?)
}

fn admission() -> Result<AdmissionLayer, BoxError> {
    Ok(AdmissionLayer::builder().name("items").limit(LimitConfig::fixed(20_000)).meter(meter()).build()?)
}

fn breaker() -> Result<CircuitBreakerLayer, BoxError> {
    Ok(CircuitBreakerLayer::builder().meter(meter()).build()?)
}

fn phalanx(cache_answers: bool, ratelimit_headers: bool) -> Result<Router, BoxError> {
    Ok(route(cache_answers).route_layer(ServiceBuilder::new().layer(admission()?).layer(breaker()?)).layer(
        ServiceBuilder::new()
            .layer(metrics()?)
            .layer(timeout())
            .layer(classify()?)
            .layer(ratelimit(ratelimit_headers)?)
            .layer(cache()?),
    ))
}

/// Builds inside a Tokio runtime (it spawns its upkeep task).
fn peer_metrics() -> axum_prometheus::PrometheusMetricLayer<'static> {
    // The handle renders `/metrics`; the bench serves none, so it is dropped.
    let (layer, _handle) = axum_prometheus::PrometheusMetricLayer::pair();
    layer
}

/// tower_governor with one global bucket: a cell per nanosecond, a burst of a million.
macro_rules! peer_governor {
    () => {
        tower_governor::GovernorLayer::<_, _, Body>::new(
            tower_governor::governor::GovernorConfigBuilder::default()
                .key_extractor(tower_governor::key_extractor::GlobalKeyExtractor)
                .per_nanosecond(1)
                .burst_size(1_000_000)
                .finish()
                .expect("a valid governor configuration"),
        )
    };
}

/// axum-response-cache keeping every answer for ten minutes.
macro_rules! peer_cache {
    () => {
        axum_response_cache::CacheLayer::with_lifespan(Duration::from_secs(600))
    };
}

async fn shed(_: BoxError) -> StatusCode {
    StatusCode::SERVICE_UNAVAILABLE
}

fn peer_shed(router: Router) -> Router {
    router.route_layer(ServiceBuilder::new().layer(HandleErrorLayer::new(shed)).load_shed().concurrency_limit(20_000))
}

fn peer() -> Router {
    peer_shed(route(true)).layer(
        ServiceBuilder::new().layer(peer_metrics()).layer(timeout()).layer(peer_governor!()).layer(peer_cache!()),
    )
}

/// The router of a mode. Call it inside a Tokio runtime.
pub fn app(mode: Mode) -> Result<Router, BoxError> {
    Ok(match mode {
        Mode::Bare => route(true),
        Mode::Stack => phalanx(true, true)?,
        Mode::StackMiss => phalanx(false, true)?,
        Mode::StackNoRateLimitHeaders => phalanx(true, false)?,
        Mode::Peer => peer(),
        Mode::Layer(single) => match single {
            Single::Metrics => route(true).layer(metrics()?),
            Single::Timeout => route(true).layer(timeout()),
            Single::Classify => route(true).layer(classify()?),
            Single::RateLimit => route(true).layer(ratelimit(true)?),
            Single::RateLimitNoHeaders => route(true).layer(ratelimit(false)?),
            Single::CacheHit => route(true).layer(cache()?),
            Single::CachePass => route(false).layer(cache()?),
            Single::Admission => route(true).route_layer(admission()?),
            Single::Breaker => route(true).route_layer(breaker()?),
            Single::PeerMetrics => route(true).layer(peer_metrics()),
            Single::PeerGovernor => route(true).layer(peer_governor!()),
            Single::PeerCache => route(true).layer(peer_cache!()),
            Single::PeerLoadShed => peer_shed(route(true)),
        },
    })
}

/// `requests` requests through `mode`'s router in process, no sockets, on a current-thread
/// runtime; request `i` asks for `/items/{i % 1000}` from peer address number `i % addresses`
/// (`addresses` 1: all from one client). Every answer must be a 200 with the whole body.
pub fn instruction_loop(mode: Mode, requests: u32, addresses: u32) -> Result<(), BoxError> {
    use tower::ServiceExt;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // axum-prometheus spawns its upkeep task when built.
    let router = {
        let _runtime = runtime.enter();
        app(mode)?
    };
    let addresses = addresses.max(1);
    runtime.block_on(async {
        for i in 0..requests {
            let mut req = Request::get(format!("/items/{}", i % 1000)).body(Body::empty())?;
            let n = i % addresses;
            let peer = SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 4000));
            req.extensions_mut().insert(ConnectInfo(peer));
            let Ok(res) = router.clone().oneshot(req).await;
            if res.status() != StatusCode::OK {
                return Err(format!("request {i}: status {}", res.status()).into());
            }
            let body = axum::body::to_bytes(res.into_body(), usize::MAX).await?;
            if body.len() != BODY.len() {
                return Err(format!("request {i}: a body of {} bytes", body.len()).into());
            }
        }
        Ok(())
    })
}
