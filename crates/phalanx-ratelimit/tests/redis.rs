//! The layer on Redis: the shared server for quotas, a private one for failures.

mod common;

use std::time::{Duration, Instant};

use common::{from_client, json, send, status, Metrics};
use fred::prelude::{ClientLike, Pool};
use http::StatusCode;
use phalanx_core::{
    redis::{connect_in_background, RedisSettings},
    testing::{redis_url, skip, unique_prefix, RedisServer},
    ClientKeyResolver, FailureMode,
};
use phalanx_ratelimit::{Clock, Policy, Quota, RateLimitLayer, RateLimitLayerBuilder, RedisStore};

/// A connected pool, or `None` after reporting the test skipped.
async fn pool(test: &str, url: &str) -> Option<Pool> {
    // The pool's own command timeout stays out of the way: the store's deadline is under test.
    let settings = RedisSettings { command_timeout_ms: 5_000, ..RedisSettings::from_url(url) };
    let pool = settings.build_pool().unwrap();
    connect_in_background(&pool);
    match tokio::time::timeout(Duration::from_secs(3), pool.wait_for_connect()).await {
        Ok(Ok(())) => Some(pool),
        other => {
            skip(test, format!("Redis at {url} unreachable: {other:?}"));
            None
        }
    }
}

fn builder(policy: Policy, clock: &Clock) -> RateLimitLayerBuilder {
    RateLimitLayer::builder()
        .policy(policy)
        .key_resolver(ClientKeyResolver::builder().header("x-client-id").build().unwrap())
        .clock(clock.clone())
}

fn store(pool: Pool, prefix: &str) -> RedisStore {
    RedisStore::builder(pool).prefix(prefix).deadline(Duration::from_secs(2)).build().unwrap()
}

/// The time now, as a start for manual clocks.
fn wall_clock() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap()
}

#[tokio::test]
async fn exactly_burst_plus_rate_times_t_pass_on_redis() {
    let Some(pool) = pool("exactly_burst_plus_rate_times_t_pass_on_redis", &redis_url()).await else { return };
    // The layer's clock is passed into the script, so a manual clock makes Redis deterministic.
    let clock = Clock::manual(wall_clock());
    let prefix = unique_prefix("rl-exact");
    let layer = builder(Policy::new("p", Quota::per_second(10).with_burst(5)), &clock)
        .redis(store(pool, &prefix))
        .build()
        .unwrap();
    let mut passed = 0;
    for step in 0..=300 {
        if step > 0 {
            clock.advance(Duration::from_millis(10));
        }
        for _ in 0..3 {
            if status(&layer, from_client("a")).await == StatusCode::OK {
                passed += 1;
            }
        }
    }
    assert_eq!(passed, 5 + 10 * 3);
    assert!(layer.status().decisions("p", "limited") > 0);
    assert_eq!(layer.status().decisions("p", "fail_open"), 0);
}

#[tokio::test]
async fn two_nodes_on_one_redis_enforce_one_global_quota() {
    let url = redis_url();
    let (Some(pool_a), Some(pool_b)) = (pool("two_nodes", &url).await, pool("two_nodes", &url).await) else { return };
    let prefix = unique_prefix("rl-global");
    let start = wall_clock();
    let node = |pool: Pool| {
        builder(Policy::new("global", Quota::per_minute(600)), &Clock::manual(start))
            .redis(store(pool, &prefix))
            .build()
            .unwrap()
    };
    let (a, b) = (node(pool_a), node(pool_b));
    let burst = |layer: RateLimitLayer| async move {
        let mut tasks = Vec::new();
        for _ in 0..500 {
            let layer = layer.clone();
            tasks.push(tokio::spawn(async move { status(&layer, from_client("shared")).await }));
        }
        let mut passed = 0;
        for t in tasks {
            passed += usize::from(t.await.unwrap() == StatusCode::OK);
        }
        passed
    };
    let (passed_a, passed_b) = tokio::join!(burst(a.clone()), burst(b.clone()));
    assert_eq!(passed_a + passed_b, 600, "a {passed_a}, b {passed_b}");
    assert!(passed_a > 0 && passed_b > 0);
    assert_eq!(a.status().decisions("global", "fail_open") + b.status().decisions("global", "fail_open"), 0);
}

/// `INFO commandstats` of a private server: (command, calls).
async fn command_calls(pool: &Pool) -> Vec<(String, u64)> {
    let info: String = pool.info(Some(fred::types::InfoKind::CommandStats)).await.unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "info" && name != "config|resetstat")
        .collect()
}

/// EVALSHA calls, after checking that nothing else was sent but the script's own GET and SET
/// (two policies: two of each per call that allowed, two GETs per call that denied).
async fn evalsha_calls(pool: &Pool) -> u64 {
    let calls = command_calls(pool).await;
    let count = |name: &str| calls.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
    assert!(calls.iter().all(|(n, _)| ["evalsha", "get", "set"].contains(&n.as_str())), "{calls:?}");
    assert_eq!(count("get"), 2 * count("evalsha"));
    count("evalsha")
}

#[tokio::test]
async fn one_round_trip_per_decision_and_limited_keys_stay_local() {
    let Some(server) = RedisServer::start() else {
        skip("one_round_trip_per_decision", "redis-server could not be started");
        return;
    };
    let Some(pool) = pool("one_round_trip_per_decision", &server.url()).await else { return };
    let clock = Clock::manual(wall_clock());
    let layer = builder(Policy::new("p", Quota::per_hour(10)), &clock)
        .policy(Policy::new("q", Quota::per_minute(100)))
        .redis(store(pool.clone(), "rl"))
        .build()
        .unwrap();
    // The first call loads the script.
    assert_eq!(status(&layer, from_client("warm-up")).await, StatusCode::OK);
    let _: fred::types::Value = pool.next().custom(fred::cmd!("CONFIG"), vec!["RESETSTAT"]).await.unwrap();
    for i in 0..20 {
        assert_eq!(status(&layer, from_client(&format!("c{i}"))).await, StatusCode::OK);
    }
    assert_eq!(evalsha_calls(&pool).await, 20);
    // Exhaust one key: its first denial asks Redis, the next ones are answered locally.
    for _ in 0..10 {
        status(&layer, from_client("c0")).await;
    }
    for _ in 0..50 {
        assert_eq!(status(&layer, from_client("c0")).await, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(evalsha_calls(&pool).await, 20 + 10);
    // Once it may pass again (6 minutes per request), Redis is asked again.
    clock.advance(Duration::from_secs(360));
    assert_eq!(status(&layer, from_client("c0")).await, StatusCode::OK);
    assert_eq!(evalsha_calls(&pool).await, 31);
}

fn failing_layer(
    server_pool: Pool,
    mode: FailureMode,
    fallback_local: bool,
    metrics: &Metrics,
    clock: &Clock,
) -> RateLimitLayer {
    let store = RedisStore::builder(server_pool).prefix("rl").deadline(Duration::from_millis(50)).build().unwrap();
    builder(Policy::new("p", Quota::per_hour(2)), clock)
        .redis(store)
        .failure_mode(mode)
        .fallback_local(fallback_local)
        .meter(metrics.meter())
        .build()
        .unwrap()
}

#[tokio::test]
async fn redis_gone_fail_open_falls_back_to_local_within_the_deadline_and_reconnects() {
    let test = "redis_gone_fail_open";
    let Some(mut server) = RedisServer::start() else { return skip(test, "redis-server could not be started") };
    let Some(pool) = pool(test, &server.url()).await else { return };
    let metrics = Metrics::new();
    let clock = Clock::manual(wall_clock());
    let layer = failing_layer(pool.clone(), FailureMode::Open, true, &metrics, &clock);
    assert_eq!(status(&layer, from_client("a")).await, StatusCode::OK);
    assert_eq!(metrics.decisions("p", "allowed").0, 1);

    server.stop();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        statuses.push(status(&layer, from_client("a")).await);
        assert!(started.elapsed() < Duration::from_millis(50 + 450), "bounded: {:?}", started.elapsed());
    }
    // The in-process limiter decides meanwhile, with its own quota of 2.
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    assert_eq!(metrics.decisions("p", "fail_open").0, 2);
    assert_eq!(metrics.decisions("p", "limited").0, 1);

    // Redis comes back: the pool reconnects by itself and Redis decides again ("b" is fresh).
    assert!(server.restart());
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.decisions("p", "allowed").0 < 2 {
        assert!(Instant::now() < deadline, "no decision from Redis after it came back");
        status(&layer, from_client("b")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_gone_fail_open_without_fallback_lets_everything_through() {
    let test = "redis_gone_fail_open_without_fallback";
    let Some(mut server) = RedisServer::start() else { return skip(test, "redis-server could not be started") };
    let Some(pool) = pool(test, &server.url()).await else { return };
    let metrics = Metrics::new();
    let layer = failing_layer(pool, FailureMode::Open, false, &metrics, &Clock::manual(wall_clock()));
    server.stop();
    for _ in 0..5 {
        let res = send(&layer, from_client("a")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!res.headers().contains_key(&phalanx_ratelimit::RATELIMIT), "no state is known");
    }
    assert_eq!(metrics.decisions("p", "fail_open").0, 5);
}

#[tokio::test]
async fn redis_gone_fail_closed_rejects_within_the_deadline() {
    let test = "redis_gone_fail_closed";
    let Some(mut server) = RedisServer::start() else { return skip(test, "redis-server could not be started") };
    let Some(pool) = pool(test, &server.url()).await else { return };
    let metrics = Metrics::new();
    let layer = failing_layer(pool, FailureMode::Closed, true, &metrics, &Clock::manual(wall_clock()));
    assert_eq!(status(&layer, from_client("a")).await, StatusCode::OK);
    server.stop();
    let started = Instant::now();
    let res = send(&layer, from_client("a")).await;
    assert!(started.elapsed() < Duration::from_millis(50 + 450), "bounded: {:?}", started.elapsed());
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
    assert_eq!(json(res).await["type"], phalanx_core::problem::types::DEPENDENCY_UNAVAILABLE);
    assert_eq!(metrics.decisions("p", "fail_closed").0, 1);
}

#[tokio::test]
async fn slow_redis_is_answered_at_the_deadline() {
    let test = "slow_redis_is_answered_at_the_deadline";
    let Some(server) = RedisServer::start() else { return skip(test, "redis-server could not be started") };
    let (Some(pool), Some(admin)) = (pool(test, &server.url()).await, pool(test, &server.url()).await) else { return };
    let metrics = Metrics::new();
    let layer = failing_layer(pool, FailureMode::Open, false, &metrics, &Clock::manual(wall_clock()));
    assert_eq!(status(&layer, from_client("a")).await, StatusCode::OK);
    // Every client's commands now wait two seconds.
    let _: fred::types::Value = admin.next().custom(fred::cmd!("CLIENT"), vec!["PAUSE", "2000", "ALL"]).await.unwrap();
    let started = Instant::now();
    assert_eq!(status(&layer, from_client("a")).await, StatusCode::OK);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(45) && waited < Duration::from_millis(50 + 450), "waited {waited:?}");
    assert_eq!(metrics.decisions("p", "fail_open").0, 1);
}

#[tokio::test]
async fn server_time_reads_the_redis_clock() {
    let Some(pool) = pool("server_time_reads_the_redis_clock", &redis_url()).await else { return };
    // A manual clock stuck at the epoch: the stored TAT shows whose clock the script used.
    let clock = Clock::manual(Duration::ZERO);
    let prefix = unique_prefix("rl-server-time");
    let store = RedisStore::builder(pool.clone())
        .prefix(prefix.clone())
        .deadline(Duration::from_secs(2))
        .server_time(true)
        .build()
        .unwrap();
    let layer = builder(Policy::new("p", Quota::per_hour(2)), &clock).redis(store).build().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status(&layer, from_client("a")).await);
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    assert_eq!(layer.status().decisions("p", "fail_open"), 0);
    let tat: i64 = fred::prelude::KeysInterface::get(&pool, format!("{prefix}:{{id:a}}:p")).await.unwrap();
    let now_us = wall_clock().as_micros() as i64;
    // Two requests at 30 minutes each, from Redis's now.
    assert!((tat - now_us - 3_600_000_000).abs() < 60_000_000, "tat {tat}, now {now_us}");
}
