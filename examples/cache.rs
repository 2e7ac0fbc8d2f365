//! The two cache levels of Phalanx in one axum app: a TieredCache for database rows, a
//! CacheLayer for HTTP responses, and a PUT that invalidates both by tag.
//!
//! ```text
//! cargo run --example cache            # L1 only
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example cache   # with L2 and cross-node purges
//! ```

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, Request},
    response::IntoResponse,
    routing::get,
    Router,
};
use phalanx_cache::{CacheLayer, EntryOptions, HttpStore, TieredCache};
use phalanx_core::redis::{RedisHandle, RedisSettings};
use tower::ServiceExt;

#[derive(Clone)]
struct App {
    rows: TieredCache<u64, String>,
    http: CacheLayer,
    db_reads: Arc<AtomicUsize>,
}

async fn get_item(State(app): State<App>, Path(id): Path<u64>) -> impl IntoResponse {
    let options = EntryOptions::new().ttl(Duration::from_secs(300)).tag(format!("item:{id}"));
    let row = app
        .rows
        .get_with_options(id, options, async {
            app.db_reads.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::convert::Infallible>(format!("{{\"id\":{id},\"name\":\"item {id}\"}}"))
        })
        .await
        .unwrap_or_else(|never| match never {});
    (
        [
            (header::CACHE_CONTROL, "public, max-age=30".to_owned()),
            (header::HeaderName::from_static("cache-tag"), format!("item:{id}")),
        ],
        row,
    )
}

async fn put_item(State(app): State<App>, Path(id): Path<u64>) -> impl IntoResponse {
    // The row and every stored response tagged with it go, on every node.
    app.rows.invalidate_tag(&format!("item:{id}")).await;
    app.http.purge_tag(&format!("item:{id}")).await;
    "updated"
}

fn store<K: phalanx_cache::CacheKey, V: phalanx_cache::CacheValue>(
    namespace: &str,
    redis: Option<&RedisHandle>,
) -> TieredCache<K, V> {
    let mut builder = TieredCache::builder().namespace(namespace);
    if let Some(redis) = redis {
        builder = builder.redis(redis.clone());
    }
    builder.build().expect("cache configuration")
}

#[tokio::main]
async fn main() {
    // One Redis handle (one pool, one subscriber) for both caches.
    let redis = std::env::var("REDIS_URL")
        .ok()
        .map(|url| RedisHandle::connect(RedisSettings::from_url(url)).expect("redis settings"));
    let http_store: HttpStore = store("demo:http", redis.as_ref());
    let http = CacheLayer::builder().store(http_store).build().expect("cache layer");
    let app = App { rows: store("demo:rows", redis.as_ref()), http: http.clone(), db_reads: Arc::default() };
    let router = Router::new().route("/items/{id}", get(get_item).put(put_item)).layer(http).with_state(app.clone());

    for (method, uri) in [("GET", "/items/1"), ("GET", "/items/1"), ("PUT", "/items/1"), ("GET", "/items/1")] {
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let x_cache = response.headers().get("x-cache").map_or("-", |v| v.to_str().unwrap_or("?")).to_owned();
        println!("{method} {uri} -> {} X-Cache: {x_cache}", response.status());
    }
    println!("database reads: {}", app.db_reads.load(Ordering::Relaxed));
    println!("stats: {:?}", app.http.stats());
}
