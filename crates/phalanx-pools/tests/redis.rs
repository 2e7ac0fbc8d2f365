//! The Redis extractor against a real Redis: the shared one for plain use, a private
//! redis-server for kills and restarts.

mod common;

use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

use axum::{routing::get, Router};
use common::{get as request, unique, Metrics};
use fred::interfaces::{ClientLike, KeysInterface};
use http::StatusCode;
use opentelemetry::KeyValue;
use phalanx_core::{
    names,
    problem::types,
    redis::{RedisHandle, RedisSettings},
    testing::{redis_reachable, redis_url, skip, unique_prefix, RedisServer},
    Deps, StatusSource,
};
use phalanx_pools::{Health, HealthConfig, Redis, RedisPool, RedisPoolConfig, POOL_COMMAND_DURATION};

fn fast_health() -> HealthConfig {
    HealthConfig::default()
        .with_interval(Duration::from_millis(50))
        .with_timeout(Duration::from_millis(200))
        .with_unhealthy_after(2)
        .with_recover_after(2)
}

fn config(name: &str) -> RedisPoolConfig {
    RedisPoolConfig::default()
        .with_name(unique(name))
        .with_command_timeout(Duration::from_millis(500))
        .with_health(fast_health())
}

/// The shared handle a process would hold: two clients, quick reconnection.
fn handle(url: String) -> RedisHandle {
    let mut settings = RedisSettings::from_url(url).with_pool_size(2);
    settings.reconnect_max_delay = Duration::from_millis(200);
    RedisHandle::connect(settings).unwrap()
}

async fn pool(name: &str, url: String) -> RedisPool {
    RedisPool::from_config(&config(name), &Deps::new().redis(handle(url))).await.unwrap()
}

async fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "not {what} within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the server behind `pool` is there, probed over a plain TCP connection of its own (the
/// pool is what is under test); once it is, the pool must connect.
async fn ready(pool: &RedisPool, test: &str) -> bool {
    let url = pool.handle().settings().url.clone();
    if let Err(why) = redis_reachable(&url) {
        skip(test, format!("no Redis: {why}"));
        return false;
    }
    let connected = tokio::time::timeout(Duration::from_secs(3), pool.fred().wait_for_connect()).await;
    assert!(matches!(connected, Ok(Ok(()))), "Redis at {url} answers PING but the pool did not connect: {connected:?}");
    true
}

async fn ping(redis: &Redis) -> bool {
    redis.run(|c| async move { c.ping::<String>(None).await }).await.is_ok()
}

#[tokio::test]
async fn redis_extractor_runs_bounded_commands_and_records_their_latency() {
    let metrics = Metrics::new();
    let config = config("redis_plain");
    let pool = RedisPool::builder()
        .config(config.clone())
        .redis(handle(redis_url()))
        .meter(metrics.meter())
        .build()
        .await
        .unwrap();
    if !ready(&pool, "redis_extractor_runs_bounded_commands_and_records_their_latency").await {
        return;
    }
    let key = unique_prefix("pools-visits");
    let app = Router::new()
        .route(
            "/",
            get(move |redis: Redis| async move {
                let key = key.clone();
                redis.run(|c| async move { c.incr::<i64, _>(&key).await }).await.unwrap().to_string()
            }),
        )
        .with_state(pool.clone());
    for expected in ["1", "2", "3"] {
        let (status, _, body, _) = request(&app, "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, expected));
    }
    let label = KeyValue::new(names::attr::POOL, config.name.clone());
    assert_eq!(metrics.histogram_count(POOL_COMMAND_DURATION, &label), 3);
    assert_eq!(metrics.histogram_count(names::POOL_ACQUIRE_DURATION, &label), 3);
    assert_eq!(metrics.gauge(names::POOL_SIZE, &label), Some(2.0));
    let report = pool.report();
    assert_eq!(report["commands"]["count"], 3);
    assert_eq!(report["errors"], 0);
}

fn client_kill(port: u16) -> usize {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"CLIENT KILL TYPE normal\r\n").unwrap();
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).unwrap();
    let reply = std::str::from_utf8(&buf[..n]).unwrap();
    reply.trim_start_matches(':').trim().parse().unwrap_or_else(|_| panic!("CLIENT KILL replied {reply:?}"))
}

#[tokio::test]
async fn client_kill_is_recovered_by_itself_and_the_errors_are_counted() {
    let Some(server) = RedisServer::start() else {
        skip("client_kill_is_recovered_by_itself_and_the_errors_are_counted", "redis-server not available");
        return;
    };
    let pool = pool("redis_kill", server.url()).await;
    assert!(ready(&pool, "client_kill").await);
    let redis = pool.acquire().await.unwrap();
    assert!(ping(&redis).await);
    // fred reports the first connection of each client as a (re)connection too.
    wait_for(|| pool.reconnects() >= 2, "both clients connected").await;
    let connected_before = pool.reconnects();
    let errors_before = pool.errors();

    let killed = client_kill(server.port());
    assert!(killed >= 2, "killed {killed} clients");
    let started = Instant::now();
    let mut failures = 0u64;
    loop {
        let redis = pool.acquire().await;
        if let Ok(redis) = redis {
            if ping(&redis).await {
                break;
            }
        }
        failures += 1;
        assert!(started.elapsed() < Duration::from_secs(5), "not recovered after 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for(|| pool.reconnects() >= connected_before + 2, "every client reconnected").await;
    // Every failure the callers saw is counted (connection errors fred reported come on top).
    let errors = pool.errors() - errors_before;
    assert!(errors >= failures, "errors {errors} < failures seen {failures}");
    assert!(errors >= 1, "the dropped connections are counted as errors");
    // A health check that ran while the clients were down may still mark the pool unhealthy for
    // one interval; the pool must come back by itself within a few.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match pool.acquire().await {
            Ok(redis) if ping(&redis).await => break,
            other => assert!(Instant::now() < deadline, "not usable again after 5 s: {:?}", other.err()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_restarted_redis_is_unhealthy_then_used_again_without_a_manual_step() {
    let Some(mut server) = RedisServer::start() else {
        skip("a_restarted_redis_is_unhealthy_then_used_again_without_a_manual_step", "redis-server not available");
        return;
    };
    let pool = pool("redis_restart", server.url()).await;
    assert!(ready(&pool, "restart").await);
    let app = Router::new()
        .route(
            "/",
            get(|redis: Redis| async move {
                if ping(&redis).await {
                    "pong"
                } else {
                    "failed"
                }
            }),
        )
        .with_state(pool.clone());
    assert_eq!(request(&app, "/").await.2, "pong");

    server.stop();
    let errors_before = pool.errors();
    wait_for(|| pool.health() == Health::Unhealthy, "unhealthy").await;
    let (status, _, body, took) = request(&app, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains(types::DEPENDENCY_UNAVAILABLE), "{body}");
    assert!(took < Duration::from_millis(50), "fail fast while unhealthy, took {took:?}");
    assert!(pool.errors() > errors_before);

    assert!(server.restart());
    wait_for(|| pool.health() == Health::Healthy, "healthy again").await;
    let (status, _, body, _) = request(&app, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "pong"));
}

#[tokio::test]
async fn a_pool_without_a_redis_handle_is_refused_naming_redis() {
    let err = RedisPool::builder().build().await.unwrap_err();
    match err {
        phalanx_pools::Error::Config(e) => assert_eq!(e.field(), "redis"),
        other => panic!("{other}"),
    }
    let err = RedisPool::from_config(&RedisPoolConfig::default(), &Deps::new()).await.unwrap_err();
    assert!(err.to_string().contains("redis"), "{err}");
    let parsed: RedisPoolConfig =
        serde_json::from_str(r#"{"acquire_timeout": "50ms", "health": {"timeout": "1s"}}"#).unwrap();
    assert_eq!(parsed.acquire_timeout, Duration::from_millis(50));
    assert_eq!(parsed.command_timeout, None);
}

#[tokio::test]
async fn the_pool_shares_the_handle_and_takes_its_command_timeout() {
    let shared = RedisHandle::unconnected(
        RedisSettings::from_url(redis_url()).with_command_timeout(Duration::from_millis(7)).with_pool_size(3),
    )
    .unwrap();
    let pool = RedisPool::builder().redis(shared.clone()).build().await.unwrap();
    // The same fred pool, not a second one.
    assert_eq!(pool.fred().size(), 3);
    assert!(std::ptr::eq(pool.fred(), shared.pool()));
    assert_eq!(pool.occupancy().max, 3);
    assert_eq!(pool.report()["max"], 3);
}

#[derive(Clone)]
struct OptionalState {
    redis: Option<RedisPool>,
}

impl axum::extract::FromRef<OptionalState> for Option<RedisPool> {
    fn from_ref(state: &OptionalState) -> Self {
        state.redis.clone()
    }
}

#[tokio::test]
async fn optional_redis_is_none_when_not_configured_or_gone() {
    async fn handler(redis: Option<Redis>) -> &'static str {
        match redis {
            Some(redis) if ping(&redis).await => "with redis",
            Some(_) => "redis failed",
            None => "without redis",
        }
    }
    let unconfigured = Router::new().route("/", get(handler)).with_state(OptionalState { redis: None });
    assert_eq!(request(&unconfigured, "/").await.2, "without redis");

    let Some(mut server) = RedisServer::start() else {
        skip("optional_redis_is_none_when_not_configured_or_gone", "redis-server not available");
        return;
    };
    let pool = pool("redis_optional", server.url()).await;
    assert!(ready(&pool, "optional").await);
    let app = Router::new().route("/", get(handler)).with_state(OptionalState { redis: Some(pool.clone()) });
    assert_eq!(request(&app, "/").await.2, "with redis");
    server.stop();
    wait_for(|| pool.health() == Health::Unhealthy, "unhealthy").await;
    let (status, _, body, _) = request(&app, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "without redis"));
}
