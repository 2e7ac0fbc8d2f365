//! What the MetricsLayer costs per request, against the same axum router without it.
//!
//! Two measures, each side by side in one run:
//! - `metrics/oneshot`: one request through `tower::ServiceExt::oneshot` (the layer's own cost);
//! - `metrics/http`: keep-alive HTTP/1.1 over loopback, 16 connections, rounds alternating
//!   bare and instrumented servers; prints the throughput ratio (the README's figure).
//!
//! `cargo bench --bench metrics`

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use axum::{body::Body, routing::get, Router};
use criterion::{criterion_group, Criterion};
use http_body_util::BodyExt;
use hyper::Request;
use phalanx_metrics::{MetricsLayer, PrometheusExporter};
use tower::ServiceExt;

fn routes() -> Router {
    Router::new().route("/items/{id}", get(|| async { r#"{"id":1,"name":"item-1"}"# }))
}

fn instrumented(exporter: &PrometheusExporter) -> Router {
    routes().layer(MetricsLayer::builder().meter(exporter.meter()).build().expect("metrics"))
}

fn oneshot(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let exporter = PrometheusExporter::new("bench").unwrap();
    let bare = routes();
    let with_metrics = instrumented(&exporter);
    let mut group = c.benchmark_group("metrics/oneshot");
    for (name, app) in [("bare", bare), ("metrics_layer", with_metrics)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let app = app.clone();
                async move {
                    let req = Request::get("/items/7").body(Body::empty()).unwrap();
                    let res = app.oneshot(req).await.unwrap();
                    res.into_body().collect().await.unwrap().to_bytes()
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = oneshot
}

fn main() {
    benches();
    let exporter = PrometheusExporter::new("bench").unwrap();
    common::http_ratio("metrics/http", 9, routes(), instrumented(&exporter));
    Criterion::default().configure_from_args().final_summary();
}
