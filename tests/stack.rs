//! The layers stacked as the demo stacks them, tested together: what one layer does must hold
//! with the others around it.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{body::Body, extract::Path, http::StatusCode, routing::get, Router};
use http::{header, Request, Response};
use http_body_util::BodyExt;
use phalanx::{
    admission::{AdmissionLayer, LimitConfig},
    breaker::CircuitBreakerLayer,
    cache::{CacheLayer, HttpStore, TieredCache},
    core::{
        redis::{RedisHandle, RedisSettings},
        Classifier, ClassifyLayer, ClientKeyResolver, Priority,
    },
    metrics::{MetricsLayer, PrometheusExporter},
    ratelimit::{Policy, Quota, RateLimitLayer},
};
use tokio::sync::Notify;
use tower::{ServiceBuilder, ServiceExt};

struct Node {
    app: Router,
    exporter: PrometheusExporter,
    handler_calls: Arc<AtomicUsize>,
    http_cache: CacheLayer,
    release_slow: Arc<Notify>,
}

/// The demo's order: metrics, classify, rate limit, cache, then per route admission and breaker.
fn node(store: HttpStore, per_minute: u32) -> Node {
    let exporter = PrometheusExporter::new("stack-test").unwrap();
    let meter = exporter.meter();
    let handler_calls = Arc::new(AtomicUsize::new(0));
    let release_slow = Arc::new(Notify::new());

    let admission = AdmissionLayer::builder()
        .name("stack")
        .limit(LimitConfig::fixed(1))
        .queue_timeout(Priority::Normal, Duration::from_millis(50))
        .meter(meter.clone())
        .build()
        .unwrap();
    let calls = handler_calls.clone();
    let slow = release_slow.clone();
    let routes = Router::new()
        .route(
            "/items/{id}",
            get(move |Path(id): Path<u32>| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    (
                        [
                            (header::CACHE_CONTROL, "public, max-age=60".to_owned()),
                            (header::HeaderName::from_static("cache-tag"), format!("item:{id}")),
                        ],
                        format!("item {id}"),
                    )
                }
            }),
        )
        .route(
            "/slow",
            get(move || {
                let slow = slow.clone();
                async move {
                    slow.notified().await;
                    "slow done"
                }
            }),
        )
        .route_layer(CircuitBreakerLayer::builder().build().unwrap())
        .route_layer(admission);

    let ratelimit = RateLimitLayer::builder()
        .policy(Policy::new("per-client", Quota::per_minute(per_minute)))
        .key_resolver(ClientKeyResolver::builder().header("x-client-id").peer_ip().build().unwrap())
        .meter(meter.clone())
        .build()
        .unwrap();
    let http_cache = CacheLayer::builder().store(store).meter(meter.clone()).build().unwrap();
    let app = routes.layer(
        ServiceBuilder::new()
            .layer(MetricsLayer::builder().meter(meter.clone()).build().unwrap())
            .layer(ClassifyLayer::new(Classifier::default()))
            .layer(ratelimit)
            .layer(http_cache.clone()),
    );
    Node { app, exporter, handler_calls, http_cache, release_slow }
}

fn local_store() -> HttpStore {
    TieredCache::builder().build().unwrap()
}

async fn fetch(app: &Router, uri: &str, client: &str) -> Response<Body> {
    let req = Request::get(uri).header("x-client-id", client).body(Body::empty()).unwrap();
    app.clone().oneshot(req).await.unwrap()
}

fn x_cache(res: &Response<Body>) -> String {
    res.headers().get("x-cache").map_or("-".into(), |v| v.to_str().unwrap().to_owned())
}

async fn body_text(res: Response<Body>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn a_fresh_hit_is_answered_before_admission_and_a_miss_is_shed_when_full() {
    let node = node(local_store(), 1000);
    let first = fetch(&node.app, "/items/1", "c1").await;
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(body_text(first).await, "item 1");

    // Hold the only admission slot.
    let app = node.app.clone();
    let slow = tokio::spawn(async move { body_text(fetch(&app, "/slow", "c2").await).await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let hit = fetch(&node.app, "/items/1", "c1").await;
    assert_eq!(hit.status(), StatusCode::OK);
    assert_eq!(x_cache(&hit), "HIT");

    let shed = fetch(&node.app, "/items/2", "c1").await;
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(shed.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(shed.headers()[header::CONTENT_TYPE], "application/problem+json");
    assert!(body_text(shed).await.contains("urn:phalanx:problem:overloaded"));

    node.release_slow.notify_one();
    assert_eq!(slow.await.unwrap(), "slow done");
    assert_eq!(node.handler_calls.load(Ordering::SeqCst), 1, "the hit and the shed request never reached the handler");
}

#[tokio::test]
async fn rejections_are_answers_that_metrics_count() {
    let node = node(local_store(), 2);
    for _ in 0..2 {
        let res = fetch(&node.app, "/items/9", "greedy").await;
        assert_eq!(res.status(), StatusCode::OK);
        body_text(res).await;
    }
    let limited = fetch(&node.app, "/items/9", "greedy").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("ratelimit"));
    assert!(limited.headers().contains_key(header::RETRY_AFTER));
    assert!(body_text(limited).await.contains("urn:phalanx:problem:rate-limited"));
    // Another client is not affected.
    let other = fetch(&node.app, "/items/9", "modest").await;
    assert_eq!(other.status(), StatusCode::OK);
    body_text(other).await;

    let text = node.exporter.render();
    let limited_series = text
        .lines()
        .find(|l| l.starts_with("http_server_request_duration_seconds_count") && l.contains(r#"status_code="429""#))
        .unwrap_or_else(|| panic!("no 429 series in\n{text}"));
    assert!(limited_series.contains(r#"http_route="/items/{id}""#));
    assert!(limited_series.ends_with(" 1"));
    assert!(text.contains("phalanx_ratelimit_decisions"), "{text}");
}

#[tokio::test]
async fn two_nodes_on_one_redis_share_responses_and_purges() {
    let url = phalanx_core::testing::redis_url();
    // Whether Redis is there is asked over a plain connection: sharing through it is under test.
    if let Err(why) = phalanx_core::testing::redis_reachable(&url) {
        phalanx_core::testing::skip("two_nodes_on_one_redis_share_responses_and_purges", format!("no Redis: {why}"));
        return;
    }
    let namespace = phalanx_core::testing::unique_prefix("stack-two-nodes");
    // Two nodes: one Redis handle each, as two processes would have.
    let store = || -> HttpStore {
        let redis = RedisHandle::connect(RedisSettings::from_url(url.clone())).unwrap();
        TieredCache::builder().namespace(namespace.clone()).redis(redis).build().unwrap()
    };
    let store_a = store();
    let (a, b) = (node(store_a.clone(), 1000), node(store(), 1000));
    // Wait until both nodes have connected: a response stored by A (its L2 write queued, then
    // flushed) is found by B. Redis answers, so this must happen within the 3 s.
    let mut connected = false;
    for attempt in 0..60 {
        let uri = format!("/items/{}", 1000 + attempt);
        fetch(&a.app, &uri, "warm-up").await;
        store_a.flush().await;
        if x_cache(&fetch(&b.app, &uri, "warm-up").await) == "HIT" {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected, "Redis at {url} answers PING, yet node B never found node A's response in L2");
    b.handler_calls.store(0, Ordering::SeqCst);

    assert_eq!(x_cache(&fetch(&a.app, "/items/5", "c").await), "MISS");
    store_a.flush().await;
    // Node B finds node A's response in L2.
    let from_l2 = fetch(&b.app, "/items/5", "c").await;
    assert_eq!(x_cache(&from_l2), "HIT");
    assert_eq!(body_text(from_l2).await, "item 5");
    assert_eq!(b.handler_calls.load(Ordering::SeqCst), 0);

    // A purge on node A reaches node B.
    a.http_cache.purge_tag("item:5").await;
    let mut purged = false;
    for _ in 0..20 {
        if x_cache(&fetch(&b.app, "/items/5", "c").await) == "MISS" {
            purged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(purged, "node B still served the purged response");
    assert_eq!(b.handler_calls.load(Ordering::SeqCst), 1);
}
