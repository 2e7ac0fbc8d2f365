//! Per-request cost of the admission layer when it is not saturated, side by side with tower's
//! `ConcurrencyLimit` and the bare handler, in one run.
//!
//! `cargo bench -p phalanx-admission --bench admission -- --warm-up-time 1 --measurement-time 3`
// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion};
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

/// ns per request of `n` requests in a row.
async fn per_request<S, B>(svc: &S, n: u32) -> f64
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    for _ in 0..n {
        one(svc).await;
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

/// The same comparison as alternating rounds, medians per service: on a shared, noisy machine
/// the ratio of medians of interleaved rounds is steadier than separate criterion runs.
fn interleaved_ratio() {
    const ROUNDS: usize = 21;
    const N: u32 = 50_000;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let bare = handler();
    let tower_limit = ConcurrencyLimitLayer::new(1000).layer(handler());
    let fixed = AdmissionLayer::builder().limit(LimitConfig::fixed(1000)).build().unwrap().layer(handler());
    let gradient2 =
        AdmissionLayer::builder().limit(LimitConfig::gradient2(1000, 10, 2000)).build().unwrap().layer(handler());
    let mut times: [Vec<f64>; 4] = Default::default();
    rt.block_on(async {
        for _ in 0..ROUNDS {
            times[0].push(per_request(&bare, N).await);
            times[1].push(per_request(&tower_limit, N).await);
            times[2].push(per_request(&fixed, N).await);
            times[3].push(per_request(&gradient2, N).await);
        }
    });
    let [bare, tower, fixed, gradient2] = times.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    println!(
        "interleaved medians of {ROUNDS} rounds x {N} requests: bare {bare:.0} ns, tower ConcurrencyLimit {tower:.0} ns, \
         AdmissionLayer fixed {fixed:.0} ns, gradient2 {gradient2:.0} ns per request; fixed / ConcurrencyLimit = {:.2}, \
         gradient2 / ConcurrencyLimit = {:.2}; overhead over bare: ConcurrencyLimit {:.0} ns, fixed {:.0} ns, \
         gradient2 {:.0} ns",
        fixed / tower,
        gradient2 / tower,
        tower - bare,
        fixed - bare,
        gradient2 - bare,
    );
}

criterion_group!(benches, not_saturated);

fn main() {
    benches();
    interleaved_ratio();
    Criterion::default().configure_from_args().final_summary();
}
