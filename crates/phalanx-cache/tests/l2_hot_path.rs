//! Redis commands per request, counted by a private redis-server (`INFO commandstats`): an L1
//! hit makes none, an L1 miss one (`MGET` of the value and the epoch); stores are sent by the
//! background writer, off the request path.

use std::{collections::HashMap, convert::Infallible, time::Duration};

use axum::body::Body;
use fred::prelude::{ClientLike, Config, Pool};
use http::{Request, Response};
use http_body_util::Full;
use phalanx_cache::{CacheLayer, HttpStore, TieredCache};
use phalanx_core::{
    redis::{RedisHandle, RedisSettings},
    testing::{skip, unique_prefix, RedisServer},
};
use tower::{Layer, ServiceExt};

/// Calls per command since the last reset, without the counting client's own.
async fn commands(admin: &Pool) -> HashMap<String, u64> {
    let info: String = admin.next().custom(fred::cmd!("INFO"), vec!["commandstats"]).await.unwrap();
    let mut calls = HashMap::new();
    for line in info.lines() {
        let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        if name == "info" || name.starts_with("config") {
            continue;
        }
        let n = rest.split(',').find_map(|f| f.strip_prefix("calls=")).and_then(|n| n.parse().ok()).unwrap_or(0);
        calls.insert(name.to_owned(), n);
    }
    calls
}

async fn reset(admin: &Pool) {
    let _: () = admin.next().custom(fred::cmd!("CONFIG"), vec!["RESETSTAT"]).await.unwrap();
}

/// Commands Redis also counts when a script calls them: the store script's.
const IN_SCRIPTS: [&str; 7] = ["set", "get", "hget", "zremrangebyscore", "zadd", "pttl", "pexpire"];

/// Commands sent by clients (round trips, or pipelined commands), not those run by scripts.
fn total(calls: &HashMap<String, u64>) -> u64 {
    let scripts = calls.get("eval").copied().unwrap_or(0);
    calls.iter().filter(|(name, _)| scripts == 0 || !IN_SCRIPTS.contains(&name.as_str())).map(|(_, n)| n).sum()
}

async fn coherent<V: phalanx_cache::CacheValue>(cache: &TieredCache<String, V>) {
    for _ in 0..300 {
        if cache.is_coherent() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("private Redis is up, the cache must subscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l1_hit_makes_no_redis_call_and_an_l1_miss_exactly_one() {
    let Some(server) = RedisServer::start() else {
        skip("an_l1_hit_makes_no_redis_call_and_an_l1_miss_exactly_one", "no redis-server binary");
        return;
    };
    let admin = Pool::new(Config::from_url(&server.url()).unwrap(), None, None, None, 1).unwrap();
    admin.init().await.unwrap();
    let ns = unique_prefix("hot_path");
    let settings = RedisSettings::from_url(server.url()).with_command_timeout(std::time::Duration::from_millis(500));
    let node = |id: &str| -> TieredCache<String, String> {
        TieredCache::builder()
            .redis(RedisHandle::connect(settings.clone()).unwrap())
            .namespace(ns.clone())
            .node_id(id)
            .build()
            .unwrap()
    };
    let (a, b) = (node("a"), node("b"));
    coherent(&a).await;
    coherent(&b).await;
    b.insert("shared".into(), "from b".into()).await;
    b.flush().await;
    a.get_with("hot".into(), async { "hot".to_owned() }).await;
    a.flush().await;

    reset(&admin).await;
    for _ in 0..1000 {
        assert_eq!(a.get_with("hot".into(), async { unreachable!("an L1 hit") }).await, "hot");
    }
    let hits = commands(&admin).await;
    assert_eq!(total(&hits), 0, "1000 L1 hits: {hits:?}");

    // An L1 miss that L2 answers: one MGET.
    assert_eq!(a.get(&"shared".into()).await.as_deref(), Some("from b"));
    let l2_hit = commands(&admin).await;
    assert_eq!((total(&l2_hit), l2_hit.get("mget")), (1, Some(&1)), "{l2_hit:?}");

    // An L1 and L2 miss: one MGET on the request path; the store is the writer's.
    reset(&admin).await;
    assert_eq!(a.get_with("cold".into(), async { "cold".to_owned() }).await, "cold");
    a.flush().await;
    let miss = commands(&admin).await;
    assert_eq!(miss.get("mget"), Some(&1), "{miss:?}");
    assert_eq!(miss.get("eval"), Some(&1), "one store script, sent by the writer: {miss:?}");
    assert_eq!(total(&miss), 2, "{miss:?}");
    eprintln!("per request: L1 hit 0 commands; L1 miss, L2 hit 1 (mget); L1+L2 miss 1 (mget) + 1 queued eval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_hit_makes_no_redis_call() {
    let Some(server) = RedisServer::start() else {
        skip("an_http_hit_makes_no_redis_call", "no redis-server binary");
        return;
    };
    let admin = Pool::new(Config::from_url(&server.url()).unwrap(), None, None, None, 1).unwrap();
    admin.init().await.unwrap();
    let store: HttpStore = TieredCache::builder()
        .redis(
            RedisHandle::connect(
                RedisSettings::from_url(server.url()).with_command_timeout(std::time::Duration::from_millis(500)),
            )
            .unwrap(),
        )
        .namespace(unique_prefix("http_hot_path"))
        .build()
        .unwrap();
    coherent(&store).await;
    let origin = tower::service_fn(|_req: Request<Body>| async {
        let mut r = Response::new(Full::new(bytes::Bytes::from_static(b"body")));
        r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
        Ok::<_, Infallible>(r)
    });
    let service = CacheLayer::builder().store(store.clone()).build().unwrap().layer(origin);
    let get = || Request::get("/items/1").body(Body::empty()).unwrap();
    reset(&admin).await;
    let first = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(first.headers()["x-cache"], "MISS");
    store.flush().await;
    let miss = commands(&admin).await;
    assert_eq!((miss.get("mget"), miss.get("eval"), total(&miss)), (Some(&1), Some(&1), 2), "{miss:?}");
    reset(&admin).await;
    for _ in 0..200 {
        let hit = service.clone().oneshot(get()).await.unwrap();
        assert_eq!(hit.headers()["x-cache"], "HIT");
    }
    let hits = commands(&admin).await;
    assert_eq!(total(&hits), 0, "200 HTTP hits: {hits:?}");
}
