//! The stale re-cache race: a load that read the old version before a concurrent write's purge
//! must not store it after the purge, in L1 or in L2.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::body::Body;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use phalanx_cache::{CacheLayer, EntryOptions, HttpStore, TieredCache};
use phalanx_core::{
    redis::{RedisHandle, RedisSettings},
    testing::{redis_url, require_redis, unique_prefix},
};
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_purge_during_a_slow_load_refuses_its_store_in_l1() {
    let cache: TieredCache<String, String> = TieredCache::builder().build().unwrap();
    let options = || EntryOptions::new().tag("item:1");
    let load = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with_options("row:1".into(), options(), async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, Infallible>("old".to_owned())
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The write lands and purges while the load is still reading the old row.
    cache.invalidate_tag("item:1").await;
    assert_eq!(load.await.unwrap().unwrap(), "old", "the loader's own caller gets what it read");
    assert_eq!(cache.get_local("row:1"), None, "but it is not stored");
    let now = cache.get_with("row:1".into(), async { "new".to_owned() }).await;
    assert_eq!(now, "new");
    assert_eq!(cache.stats().stores_refused, 1);

    // The same with the public token API, and with `remove` of the key.
    let token = cache.load_token();
    cache.remove(&"row:2".to_owned()).await;
    assert!(!cache.insert_loaded("row:2".into(), "old".into(), EntryOptions::new(), token));
    assert_eq!(cache.get_local("row:2"), None);
    let token = cache.load_token();
    assert!(cache.insert_loaded("row:2".into(), "new".into(), EntryOptions::new(), token));
    assert_eq!(cache.get_local("row:2").as_deref(), Some("new"));
}

#[tokio::test(start_paused = true)]
async fn a_put_during_a_slow_get_leaves_the_new_version_to_the_next_read() {
    let store: HttpStore = TieredCache::builder().build().unwrap();
    let version = Arc::new(AtomicUsize::new(1));
    let origin = {
        let version = version.clone();
        tower::service_fn(move |req: Request<Body>| {
            let version = version.clone();
            async move {
                if req.method() == http::Method::PUT {
                    version.fetch_add(1, Ordering::SeqCst);
                    return Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::new())));
                }
                // Reads the row, then takes its time answering.
                let read = version.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut r = Response::new(Full::new(bytes::Bytes::from(format!("v{read}"))));
                r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
                Ok(r)
            }
        })
    };
    let service = CacheLayer::builder().store(store).build().unwrap().layer(origin);
    let get = || Request::get("/items/1").body(Body::empty()).unwrap();
    let slow = tokio::spawn(service.clone().oneshot(get()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    service.clone().oneshot(Request::put("/items/1").body(Body::empty()).unwrap()).await.unwrap();
    let stale = slow.await.unwrap().unwrap();
    assert_eq!(stale.into_body().collect().await.unwrap().to_bytes(), "v1");
    let next = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(next.headers()["x-cache"], "MISS", "the response read before the PUT was not stored");
    assert_eq!(next.into_body().collect().await.unwrap().to_bytes(), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_another_node_during_a_load_refuses_the_l2_store() {
    if require_redis("a_purge_on_another_node_during_a_load_refuses_the_l2_store").is_none() {
        return;
    }
    let ns = unique_prefix("race_l2");
    let settings = RedisSettings::from_url(redis_url()).with_command_timeout(std::time::Duration::from_millis(500));
    let node = |id: &str| -> TieredCache<String, String> {
        TieredCache::builder()
            .redis(RedisHandle::connect(settings.clone()).unwrap())
            .namespace(ns.clone())
            .node_id(id)
            .build()
            .unwrap()
    };
    // `loader` and `writer` share an id, so the loader does not hear the writer's purge: only
    // Redis's check can refuse its store.
    let (loader, writer, reader) = (node("a"), node("a"), node("c"));
    // Generous: a CI machine busy with other test binaries can be slow to subscribe.
    for _ in 0..1000 {
        if loader.is_coherent() && writer.is_coherent() && reader.is_coherent() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        loader.is_coherent() && writer.is_coherent() && reader.is_coherent(),
        "Redis answers PING, yet the caches never became coherent"
    );
    let purged = tokio::sync::Notify::new();
    let load = loader.get_with_options("row:1".into(), EntryOptions::new().tag("item:1"), async {
        purged.notified().await;
        Ok::<_, Infallible>("old".to_owned())
    });
    let purge = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        writer.invalidate_tag("item:1").await;
        purged.notify_one();
    };
    let (loaded, ()) = tokio::join!(load, purge);
    assert_eq!(loaded.unwrap(), "old");
    loader.flush().await;
    assert_eq!(loader.stats().stores_refused, 1, "refused by Redis: {:?}", loader.stats());
    assert_eq!(reader.get(&"row:1".to_owned()).await, None, "L2 holds no old version");
    let now = reader.get_with("row:1".into(), async { "new".to_owned() }).await;
    assert_eq!(now, "new");
}
