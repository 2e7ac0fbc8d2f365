//! Cost of a cache hit, per request, side by side: phalanx CacheLayer, axum-response-cache and
//! hitbox-tower (moka backend) in front of the same handler, plus the bare handler.
//!
//! `cargo bench -p phalanx-cache --bench http_hit -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // criterion_group! makes an undocumented function

use std::{convert::Infallible, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, Service, ServiceExt};

const BODY: &str = r#"{"id":1,"name":"item 1","price":1999,"tags":["a","b","c"]}"#;

fn response<B: From<Bytes>>() -> Response<B> {
    let mut r = Response::new(B::from(Bytes::from_static(BODY.as_bytes())));
    r.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    r.headers_mut().insert(header::CACHE_CONTROL, "public, max-age=3600".parse().unwrap());
    r
}

async fn hit<S, ReqB, ResB>(svc: &S, req: Request<ReqB>) -> usize
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: std::fmt::Debug,
    ResB: http_body::Body,
    ResB::Error: std::fmt::Debug,
{
    let response = svc.clone().oneshot(req).await.unwrap();
    response.into_body().collect().await.unwrap().to_bytes().len()
}

fn get() -> Request<Body> {
    Request::get("/items/1").body(Body::empty()).unwrap()
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("cache_hit");

    let bare = service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(response::<Full<Bytes>>()) });
    group.bench_function("bare_handler", |b| b.to_async(&rt).iter(|| async { hit(&bare, get()).await }));

    let phalanx = rt.block_on(async {
        let layer = phalanx_cache::CacheLayer::builder().build().unwrap();
        let svc = layer.layer(bare);
        assert_eq!(hit(&svc, get()).await, BODY.len());
        let warm = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(warm.headers()["x-cache"], "HIT");
        svc
    });
    group.bench_function("phalanx", |b| b.to_async(&rt).iter(|| async { hit(&phalanx, get()).await }));

    let arc = rt.block_on(async {
        let inner = service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(response::<Body>()) });
        let svc = axum_response_cache::CacheLayer::with_lifespan(Duration::from_secs(3600)).layer(inner);
        assert_eq!(hit(&svc, get()).await, BODY.len());
        svc
    });
    group.bench_function("axum_response_cache", |b| b.to_async(&rt).iter(|| async { hit(&arc, get()).await }));

    let hitbox = rt.block_on(async {
        use hitbox::policy::PolicyConfig;
        use hitbox_http::{
            extractors::{path::PathExtractor, Method},
            predicates::{NeutralRequestPredicate, NeutralResponsePredicate},
            BufferedBody,
        };
        use hitbox_moka::MokaBackend;
        type ReqB = Full<Bytes>;
        let inner =
            service_fn(|_req: Request<BufferedBody<ReqB>>| async { Ok::<_, Infallible>(response::<Full<Bytes>>()) });
        let config = hitbox::Config::builder()
            .request_predicate(NeutralRequestPredicate::<ReqB>::new())
            .response_predicate(NeutralResponsePredicate::<Full<Bytes>>::new())
            .extractor(Method::new().path("/items/{id}"))
            .policy(PolicyConfig::builder().ttl(Duration::from_secs(3600)).build())
            .build();
        let layer = hitbox_tower::Cache::builder()
            .backend(MokaBackend::builder().max_entries(10_000).build())
            .config(config)
            .build();
        let svc = layer.layer(inner);
        let req = || Request::get("/items/1").body(Full::new(Bytes::new())).unwrap();
        assert_eq!(hit(&svc, req()).await, BODY.len());
        let warm = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(warm.headers()["x-cache-status"], "HIT");
        svc
    });
    let hitbox_req = || Request::get("/items/1").body(Full::new(Bytes::new())).unwrap();
    group.bench_function("hitbox", |b| b.to_async(&rt).iter(|| async { hit(&hitbox, hitbox_req()).await }));
    group.finish();
}

criterion_group!(cache_hit, benches);
criterion_main!(cache_hit);
