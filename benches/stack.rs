//! The whole Phalanx stack against bare axum on the same handler, over loopback HTTP/1.1 in one
//! run (rounds alternate between the servers): what the layers cost together.
//!
//! - `stack/pass-through`: the handler sets no caching headers, so every request goes through
//!   every layer to the handler (metrics, classify, rate limit, cache miss path, admission,
//!   breaker).
//! - `stack/cache-hits`: the handler allows caching; after the first request per id, answers come
//!   from the CacheLayer.
//!
//! `cargo bench --bench stack`

mod common;

use axum::{http::header, routing::get, Router};
use phalanx_admission::{AdmissionLayer, LimitConfig};
use phalanx_breaker::{BreakerConfig, BreakerRegistry, CircuitBreakerLayer};
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

fn stacked(routes: Router, exporter: &PrometheusExporter) -> Router {
    let meter = exporter.meter();
    let admission = AdmissionLayer::builder()
        .name("bench")
        .limit(LimitConfig::fixed(10_000))
        .meter(meter.clone())
        .build()
        .expect("admission");
    let ratelimit = RateLimitLayer::builder()
        .policy(Policy::new("per-client", Quota::per_second(1_000_000)))
        .key_resolver(ClientKeyResolver::default())
        .meter(meter.clone())
        .build()
        .expect("rate limit");
    let store: HttpStore = TieredCache::builder().build().expect("store");
    let cache = CacheLayer::builder().store(store).meter(meter.clone()).build().expect("cache");
    routes
        .route_layer(CircuitBreakerLayer::per_route(BreakerRegistry::new(BreakerConfig::default())))
        .route_layer(admission)
        .layer(
            ServiceBuilder::new()
                .layer(MetricsLayer::with_meter(&meter))
                .layer(ClassifyLayer::new(Classifier::default()))
                .layer(ratelimit)
                .layer(cache),
        )
}

fn main() {
    let exporter = PrometheusExporter::new("bench").expect("exporter");
    common::http_ratio("stack/pass-through", 9, plain(), stacked(plain(), &exporter));
    common::http_ratio("stack/cache-hits", 9, cacheable(), stacked(cacheable(), &exporter));
}
