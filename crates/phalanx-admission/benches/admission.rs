//! Per-request cost of the admission layer when it is not saturated, side by side with tower's
//! `ConcurrencyLimit` and the bare handler, in one run.
//!
//! `cargo bench -p phalanx-admission --bench admission -- --warm-up-time 1 --measurement-time 3`
// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{Request, Response};
use http_body_util::{Empty, Full};
use phalanx_admission::{AdmissionLayer, LimitConfig};
use phalanx_core::Priority;
use tower::{limit::ConcurrencyLimitLayer, service_fn, Layer, Service, ServiceExt};

fn request() -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    req.extensions_mut().insert(Priority::Normal);
    req
}

fn handler(
) -> impl Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone {
    service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

async fn one<S, B>(svc: &S)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    // A fresh clone per request, as axum does; the response (and its body) is dropped at once.
    let res = svc.clone().oneshot(request()).await.unwrap();
    drop(std::hint::black_box(res));
}

fn not_saturated(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut group = c.benchmark_group("admission_not_saturated");
    let bare = handler();
    let tower_limit = ConcurrencyLimitLayer::new(1000).layer(handler());
    let fixed = {
        let _guard = rt.enter();
        AdmissionLayer::builder().limit(LimitConfig::fixed(1000)).build().unwrap().layer(handler())
    };
    let gradient2 = {
        let _guard = rt.enter();
        AdmissionLayer::builder().limit(LimitConfig::gradient2(1000, 10, 2000)).build().unwrap().layer(handler())
    };
    group.bench_function(BenchmarkId::new("bare_handler", ""), |b| b.to_async(&rt).iter(|| one(&bare)));
    group.bench_function(BenchmarkId::new("tower_concurrency_limit", ""), |b| {
        b.to_async(&rt).iter(|| one(&tower_limit))
    });
    group.bench_function(BenchmarkId::new("phalanx_admission_fixed", ""), |b| b.to_async(&rt).iter(|| one(&fixed)));
    group.bench_function(BenchmarkId::new("phalanx_admission_gradient2", ""), |b| {
        b.to_async(&rt).iter(|| one(&gradient2))
    });
    group.finish();
}

criterion_group!(benches, not_saturated);
criterion_main!(benches);
