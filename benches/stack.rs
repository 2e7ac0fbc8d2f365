//! The whole Phalanx stack against bare axum on the same handler, over loopback HTTP/1.1 in one
//! run (rounds alternate between the servers): what the layers cost together.
//!
//! - `stack/pass-through`: the handler sets no caching headers, so every request goes through
//!   every layer to the handler (metrics, classify, rate limit, cache miss path, admission,
//!   breaker).
//! - `stack/cache-hits`: the handler allows caching; after the first request per id, answers come
//!   from the CacheLayer.
//!
//! - `layer/*`: each layer alone against bare axum.
//!
//! `cargo bench --bench stack`

mod common;

use axum::{http::header, routing::get, Router};
use phalanx_admission::{AdmissionLayer, LimitConfig};
use phalanx_breaker::CircuitBreakerLayer;
use phalanx_cache::{CacheLayer, HttpStore, TieredCache};
use phalanx_core::{Classifier, ClassifyLayer, ClientKeyResolver};
use phalanx_metrics::{MetricsLayer, PrometheusExporter};
use phalanx_ratelimit::{Policy, Quota, RateLimitLayer};
use tower::ServiceBuilder;

const BODY: &str = r#"{"id":1,"name":"item-1","price_cents":8019,"stock":31}"#;

fn plain() -> Router {
    Router::new().route("/items/{id}", get(|| async { BODY }))
}

fn cacheable() -> Router {
    Router::new().route("/items/{id}", get(|| async { ([(header::CACHE_CONTROL, "public, max-age=600")], BODY) }))
}

fn meter_of(exporter: &PrometheusExporter) -> opentelemetry::metrics::Meter {
    exporter.meter()
}

fn admission(exporter: &PrometheusExporter) -> AdmissionLayer {
    AdmissionLayer::builder()
        .name("bench")
        .limit(LimitConfig::fixed(10_000))
        .meter(meter_of(exporter))
        .build()
        .expect("admission")
}

fn ratelimit(exporter: &PrometheusExporter) -> RateLimitLayer {
    RateLimitLayer::builder()
        .policy(Policy::new("per-client", Quota::per_second(1_000_000)))
        .key_resolver(ClientKeyResolver::default())
        .meter(meter_of(exporter))
        .build()
        .expect("rate limit")
}

fn cache(exporter: &PrometheusExporter) -> CacheLayer {
    let store: HttpStore = TieredCache::builder().build().expect("store");
    CacheLayer::builder().store(store).meter(meter_of(exporter)).build().expect("cache")
}

fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder().build().expect("the default breaker configuration is valid")
}

fn stacked(routes: Router, exporter: &PrometheusExporter) -> Router {
    routes.route_layer(breaker()).route_layer(admission(exporter)).layer(
        ServiceBuilder::new()
            .layer(MetricsLayer::builder().meter(meter_of(exporter)).build().expect("metrics"))
            .layer(ClassifyLayer::new(Classifier::default()))
            .layer(ratelimit(exporter))
            .layer(cache(exporter)),
    )
}

/// `STACK_LOOP=<bare|stack|stack-hits> valgrind --tool=callgrind <bench binary>`: 100,000 requests
/// (or `STACK_REQUESTS`) through the router in process, no sockets: where the stack's CPU goes,
/// counted in instructions that the machine's noise cannot move.
fn instruction_loop(which: &str, exporter: &PrometheusExporter) {
    use tower::ServiceExt;
    let router = match which {
        "bare" => plain(),
        "stack" => stacked(plain(), exporter),
        "stack-hits" => stacked(cacheable(), exporter),
        other => panic!("unknown router {other:?}"),
    };
    let requests: u32 = std::env::var("STACK_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        for i in 0..requests {
            let mut req = axum::http::Request::get(format!("/items/{}", i % 1000))
                .body(axum::body::Body::empty())
                .expect("request");
            let peer = std::net::SocketAddr::from(([10, 0, (i >> 8) as u8 % 4, i as u8], 4000));
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let res = router.clone().oneshot(req).await.expect("infallible");
            assert_eq!(res.status(), 200);
            let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body");
            assert_eq!(body.len(), BODY.len());
        }
    });
}

fn main() {
    let exporter = PrometheusExporter::new("bench").expect("exporter");
    if let Ok(which) = std::env::var("STACK_LOOP") {
        return instruction_loop(&which, &exporter);
    }
    common::http_ratio("stack/pass-through", 9, plain(), stacked(plain(), &exporter));
    common::http_ratio("stack/cache-hits", 9, cacheable(), stacked(cacheable(), &exporter));
    // Each layer alone on the pass-through handler: where the stack's cost goes.
    common::http_ratio(
        "layer/metrics",
        5,
        plain(),
        plain().layer(MetricsLayer::builder().meter(meter_of(&exporter)).build().expect("metrics")),
    );
    common::http_ratio("layer/classify", 5, plain(), plain().layer(ClassifyLayer::new(Classifier::default())));
    common::http_ratio("layer/ratelimit", 5, plain(), plain().layer(ratelimit(&exporter)));
    common::http_ratio("layer/cache-miss", 5, plain(), plain().layer(cache(&exporter)));
    common::http_ratio("layer/cache-hit", 5, cacheable(), cacheable().layer(cache(&exporter)));
    common::http_ratio("layer/admission", 5, plain(), plain().route_layer(admission(&exporter)));
    common::http_ratio("layer/breaker", 5, plain(), plain().route_layer(breaker()));
}
