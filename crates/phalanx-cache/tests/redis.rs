//! TieredCache against a real Redis: two nodes sharing L2 and invalidations, and a Redis that
//! goes away and comes back.

use std::time::{Duration, Instant};

use phalanx_cache::{EntryOptions, TieredCache};
use phalanx_core::{
    redis::{RedisHandle, RedisSettings},
    testing::{redis_url, require_redis, skip, unique_prefix, RedisServer},
};

type Node = TieredCache<String, String>;

fn node(url: &str, namespace: &str, id: &str) -> Node {
    let settings = RedisSettings::from_url(url).with_command_timeout(std::time::Duration::from_millis(200));
    TieredCache::builder()
        .redis(RedisHandle::connect(settings).unwrap())
        .namespace(namespace)
        .node_id(id)
        .build()
        .unwrap()
}

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

async fn coherent(nodes: &[&Node]) -> bool {
    let started = Instant::now();
    // Generous: a CI machine busy with other test binaries can be slow to subscribe.
    while started.elapsed() < Duration::from_secs(10) {
        if nodes.iter().all(|n| n.is_coherent()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_l2_and_see_each_others_invalidations() {
    if require_redis("two_nodes_share_l2_and_see_each_others_invalidations").is_none() {
        return;
    }
    let ns = unique_prefix("two_nodes");
    let a = node(&redis_url(), &ns, "a");
    let b = node(&redis_url(), &ns, "b");
    assert!(coherent(&[&a, &b]).await, "Redis answers PING, yet the caches never became coherent");
    let k = "k".to_owned();
    // Shared L2: what A stores, B reads (and keeps in its L1).
    a.insert(k.clone(), "v1".into()).await;
    // Stores leave the request path: a background writer sends them.
    a.flush().await;
    assert_eq!(b.get(&k).await.as_deref(), Some("v1"));
    assert_eq!(b.stats().l2.hits, 1);
    assert_eq!(b.get_local(&k).as_deref(), Some("v1"));
    // A new value on A drops B's L1 copy.
    a.insert(k.clone(), "v2".into()).await;
    a.flush().await;
    let took = until("insert reaches B", Duration::from_secs(1), || b.get_local(&k).is_none()).await;
    eprintln!("insert invalidation reached the other node in {took:?}");
    assert_eq!(b.get(&k).await.as_deref(), Some("v2"));
    // A tag purge on B reaches A's L1 and clears L2.
    let t = "tagged".to_owned();
    b.insert_with(t.clone(), "x".into(), EntryOptions::new().tag("group")).await;
    b.flush().await;
    assert_eq!(a.get(&t).await.as_deref(), Some("x"));
    b.invalidate_tag("group").await;
    let took = until("tag purge reaches A", Duration::from_secs(1), || a.get_local(&t).is_none()).await;
    eprintln!("tag purge reached the other node in {took:?}");
    assert!(took < Duration::from_millis(100), "tag purge took {took:?} on loopback");
    assert_eq!(a.get(&t).await, None, "L2 purged too");
    // remove
    a.remove(&k).await;
    until("remove reaches B", Duration::from_secs(1), || b.get_local(&k).is_none()).await;
    assert_eq!(b.get(&k).await, None);
    // Loads through get_with are coalesced across levels: B finds A's load in L2.
    let loaded = a.get_with("row".into(), async { "from db".to_owned() }).await;
    a.flush().await;
    let seen = b.get_with("row".into(), async { unreachable!("B must find it in L2") }).await;
    assert_eq!((loaded.as_str(), seen.as_str()), ("from db", "from db"));
    // Counters are shared (INCRBY).
    assert_eq!(a.increment(&"n".into(), 2).await, 2);
    assert_eq!(b.increment(&"n".into(), 3).await, 5);
    assert_eq!(a.stats().fallbacks + b.stats().fallbacks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_gone_mid_test_costs_no_error_and_l2_is_used_again_when_it_returns() {
    let Some(mut server) = RedisServer::start() else {
        skip("redis_gone_mid_test_costs_no_error_and_l2_is_used_again_when_it_returns", "no redis-server binary");
        return;
    };
    let ns = unique_prefix("outage");
    let cache = node(&server.url(), &ns, "solo");
    assert!(coherent(&[&cache]).await, "private Redis is up");
    let a = "a".to_owned();
    cache.get_with(a.clone(), async { "A".to_owned() }).await;

    server.stop();
    // Reads, writes, purges and counters go on without Redis.
    let b = cache.get_with("b".into(), async { "B".to_owned() }).await;
    assert_eq!(b, "B");
    cache.insert("c".into(), "C".into()).await;
    cache.remove(&"c".into()).await;
    cache.invalidate_tag("t").await;
    assert_eq!(cache.increment(&"n".into(), 1).await, 1);
    cache.flush().await;
    let stats = cache.stats();
    assert!(stats.fallbacks + stats.l2_short_circuits >= 4, "each failed or skipped round trip is counted: {stats:?}");
    // L1 keeps what it knows: the outage neither empties nor shortens it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get_local(&a).as_deref(), Some("A"), "L1 is not shortened by an outage");

    assert!(server.restart());
    assert!(coherent(&[&cache]).await, "reconnects, resubscribes and reconciles by itself");
    // Nothing was invalidated meanwhile: nothing is dropped.
    assert_eq!(cache.get_local(&a).as_deref(), Some("A"), "L1 is not dropped on reconnect");
    // The subscriber is back; the command pool reconnects on its own schedule and the L2
    // circuit lets one probe through per second, so give it a few tries.
    let before = cache.stats().l2;
    let mut served = None;
    for _ in 0..50 {
        cache.insert("d".into(), "D".into()).await;
        cache.flush().await;
        cache.clear_local();
        served = cache.get(&"d".into()).await;
        if served.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.as_deref(), Some("D"));
    assert_eq!(cache.stats().l2.hits, before.hits + 1, "L2 is used again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_caches_on_two_nodes_share_responses_and_a_put_purges_both() {
    use std::{
        convert::Infallible,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
    };

    use axum::body::Body;
    use http::{Request, Response};
    use http_body_util::Full;
    use phalanx_cache::{CacheLayer, HttpStore};
    use tower::{Layer, ServiceExt};

    if require_redis("http_caches_on_two_nodes_share_responses_and_a_put_purges_both").is_none() {
        return;
    }
    let ns = unique_prefix("http_two_nodes");
    let store = |id: &str| -> HttpStore {
        TieredCache::builder()
            .redis(
                RedisHandle::connect(
                    RedisSettings::from_url(redis_url()).with_command_timeout(std::time::Duration::from_millis(200)),
                )
                .unwrap(),
            )
            .namespace(ns.clone())
            .node_id(id)
            .build()
            .unwrap()
    };
    let (store_a, store_b) = (store("a"), store("b"));
    let started = Instant::now();
    while !(store_a.is_coherent() && store_b.is_coherent()) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Redis answers PING, yet the caches never became coherent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = {
        let calls = calls.clone();
        tower::service_fn(move |_req: Request<Body>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut r = Response::new(Full::new(bytes::Bytes::from(format!("v{n}"))));
                r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
                Ok::<_, Infallible>(r)
            }
        })
    };
    let writer_a = store_a.clone();
    let a = CacheLayer::builder().store(store_a).build().unwrap().layer(origin.clone());
    let b = CacheLayer::builder().store(store_b).build().unwrap().layer(origin);
    let x_cache = |r: &Response<_>| r.headers()["x-cache"].to_str().unwrap().to_owned();
    let get = || Request::get("/items/1").body(Body::empty()).unwrap();

    assert_eq!(x_cache(&a.clone().oneshot(get()).await.unwrap()), "MISS");
    writer_a.flush().await;
    assert_eq!(x_cache(&b.clone().oneshot(get()).await.unwrap()), "HIT", "from the shared L2");
    assert_eq!(x_cache(&a.clone().oneshot(get()).await.unwrap()), "HIT");
    let put = Request::put("/items/1").body(Body::empty()).unwrap();
    b.clone().oneshot(put).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(x_cache(&a.clone().oneshot(get()).await.unwrap()), "MISS", "node A's L1 was purged by B's PUT");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_sharing_one_handle_each_hear_their_own_channel_even_when_built_after_it_connected() {
    let test = "caches_sharing_one_handle_each_hear_their_own_channel_even_when_built_after_it_connected";
    if require_redis(test).is_none() {
        return;
    }
    let settings = RedisSettings::from_url(redis_url()).with_command_timeout(Duration::from_millis(200));
    // One handle per "process": one pool and one subscriber for both of its caches.
    let here = RedisHandle::connect(settings.clone()).unwrap();
    let there = RedisHandle::connect(settings).unwrap();
    let up = tokio::time::timeout(Duration::from_secs(3), async {
        fred::prelude::ClientLike::wait_for_connect(here.pool()).await.is_ok()
            && fred::prelude::ClientLike::wait_for_connect(here.subscriber()).await.is_ok()
    });
    assert!(matches!(up.await, Ok(true)), "Redis answers PING, yet the handle did not connect");
    // Built after the handle connected: no connection event will come for these.
    let (ns_rows, ns_http) = (unique_prefix("shared_rows"), unique_prefix("shared_http"));
    let build = |handle: &RedisHandle, ns: &str, id: &str| -> Node {
        TieredCache::builder().redis(handle.clone()).namespace(ns).node_id(id).build().unwrap()
    };
    let rows_here = build(&here, &ns_rows, "here");
    let http_here = build(&here, &ns_http, "here");
    let rows_there = build(&there, &ns_rows, "there");
    assert!(coherent(&[&rows_here, &http_here, &rows_there]).await, "subscribed without a connection event");
    let k = "k".to_owned();
    rows_here.insert(k.clone(), "old row".into()).await;
    http_here.insert(k.clone(), "a response".into()).await;
    rows_there.insert(k.clone(), "new row".into()).await;
    until("the rows channel reaches the rows cache", Duration::from_secs(1), || rows_here.get_local(&k).is_none())
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(http_here.get_local(&k).as_deref(), Some("a response"), "another channel's message is not applied");
}

#[tokio::test]
async fn from_config_takes_the_deps_handle_unless_l2_is_off() {
    use phalanx_cache::{CacheConfig, CacheLayer, TieredCacheConfig};
    // Not connected: building needs no server.
    let handle = RedisHandle::unconnected(RedisSettings::from_url(redis_url())).unwrap();
    let deps = phalanx_core::Deps::new().redis(handle);
    let config = TieredCacheConfig::default().with_namespace(unique_prefix("deps"));
    let on: Node = TieredCache::from_config(&config, &deps).unwrap();
    assert!(on.has_l2() && !on.is_coherent() && on.is_l2_circuit_open(), "L2 skipped until connected");
    let off: Node = TieredCache::from_config(&config.clone().with_l2(false), &deps).unwrap();
    assert!(!off.has_l2() && off.is_coherent());
    let layer = CacheLayer::from_config(&CacheConfig::default(), &deps).unwrap();
    assert!(layer.store().has_l2());
    let local = CacheConfig::default().with_store(TieredCacheConfig::default().with_l2(false));
    assert!(!CacheLayer::from_config(&local, &deps).unwrap().store().has_l2());
    assert!(!CacheLayer::from_config(&CacheConfig::default(), &phalanx_core::Deps::new()).unwrap().store().has_l2());
}
