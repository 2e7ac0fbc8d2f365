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

/// `STACK_LOOP=<mode> valgrind --tool=callgrind <bench binary>`: 100,000 requests (or
/// `STACK_REQUESTS`) through the one-route service of `crates/phalanx-stackbench` in process, no
/// sockets, from 1,000 peer addresses (or `STACK_ADDRESSES`; 1 is one client): where the stack's CPU goes,
/// counted in instructions that the machine's noise cannot move. Modes: `bare`, `stack` (cache
/// hits), `stack-miss` (pass-through), `stack-no-ratelimit-headers`, `peer`, and each layer alone,
/// `layer-<metrics|timeout|classify|ratelimit|ratelimit-no-headers|cache-hit|cache-pass|admission|breaker>`
/// and the peer layers `layer-peer-<metrics|governor|cache|loadshed>`. `stack-hits` is `stack`.
fn instruction_loop(which: &str) {
    let which = if which == "stack-hits" { "stack" } else { which };
    let mode: phalanx_stackbench::Mode = which.parse().unwrap_or_else(|e| panic!("{e}"));
    let number = |name: &str, default: u32| std::env::var(name).ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    phalanx_stackbench::instruction_loop(mode, number("STACK_REQUESTS", 100_000), number("STACK_ADDRESSES", 1000))
        .expect("every answer a 200 with the whole body");
}

fn main() {
    if let Ok(which) = std::env::var("STACK_LOOP") {
        return instruction_loop(&which);
    }
    let exporter = PrometheusExporter::new("bench").expect("exporter");
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
