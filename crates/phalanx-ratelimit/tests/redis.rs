//! The layer on Redis: the shared server for quotas, private ones (ports 17310–17329) for
//! hung, killed and counted servers.

mod common;

use std::time::{Duration, Instant};

use common::{from_client, json, ok_service, send, status, Metrics, PrivateRedis};
use fred::prelude::{ClientLike, Pool};
use futures_util::FutureExt;
use http::StatusCode;
use phalanx_core::StatusSource;
use phalanx_core::{
    redis::{RedisHandle, RedisSettings},
    testing::{redis_url, skip, unique_prefix},
    ClientKeyResolver, FailureMode,
};
use phalanx_ratelimit::{Clock, Policy, Quota, RateLimitLayer, RateLimitLayerBuilder, RedisLimitConfig};
use tower::{Layer, ServiceExt};

/// A connected handle (one per node, as each node is a process), or `None` after reporting the
/// test skipped.
async fn redis(test: &str, url: &str) -> Option<RedisHandle> {
    let settings = RedisSettings::from_url(url).with_command_timeout(std::time::Duration::from_millis(5_000));
    let handle = RedisHandle::connect(settings).unwrap();
    match tokio::time::timeout(Duration::from_secs(3), handle.pool().wait_for_connect()).await {
        Ok(Ok(())) => Some(handle),
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

/// A store on the layer's (manual) clock, so that the quota is deterministic.
fn store(prefix: &str) -> RedisLimitConfig {
    RedisLimitConfig::default().with_prefix(prefix).with_deadline(Duration::from_secs(2)).with_server_time(false)
}

/// The time now, as a start for manual clocks.
fn wall_clock() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap()
}

/// One request decided on its first poll, or a panic: the request path never waits on Redis.
fn decide_now(layer: &RateLimitLayer, client: &str) -> StatusCode {
    let res = layer.layer(ok_service()).oneshot(from_client(client)).now_or_never();
    res.expect("the decision waited on something").unwrap().status()
}

/// The bound the README states for one key: over `t`, `N` nodes allow at most
/// `burst + rate·t + N·L·(2 + ⌊t / τ⌋)`, `L` the lease, `τ` the burst's restore time.
fn upper_bound(burst: u64, rate_per_s: u64, t: Duration, nodes: u64, lease: u64) -> u64 {
    let tau = Duration::from_secs(burst) / rate_per_s as u32;
    burst + rate_per_s * t.as_millis() as u64 / 1000 + nodes * lease * (2 + (t.as_nanos() / tau.as_nanos()) as u64)
}

/// `nodes` layers on one Redis hammer one key (3 requests per node every 10 ms over 3 s,
/// against 100/s with a burst of 20: lease 2). Returns what each node allowed.
async fn hammer(test: &str, nodes: usize) -> Option<Vec<u64>> {
    let prefix = unique_prefix(test);
    let clock = Clock::manual(wall_clock());
    let mut layers = Vec::new();
    for _ in 0..nodes {
        let handle = redis(test, &redis_url()).await?;
        let layer = builder(Policy::new("p", Quota::per_second(100).with_burst(20)), &clock)
            .redis(handle)
            .redis_config(store(&prefix))
            .build()
            .unwrap();
        layers.push(layer);
    }
    let mut passed = vec![0u64; nodes];
    for step in 0..=300 {
        if step > 0 {
            clock.advance(Duration::from_millis(10));
        }
        for (layer, passed) in layers.iter().zip(&mut passed) {
            for _ in 0..3 {
                *passed += u64::from(decide_now(layer, "shared") == StatusCode::OK);
            }
        }
        // Both ask for the token restored meanwhile; take turns at being first.
        for i in 0..nodes {
            layers[(i + step) % nodes].sync().await;
        }
    }
    for layer in &layers {
        assert_eq!(layer.decisions("p", "fail_open"), 0);
    }
    Some(passed)
}

#[tokio::test]
async fn one_node_on_redis_stays_within_the_stated_bound() {
    let Some(passed) = hammer("rl-bound-1", 1).await else { return };
    let exact = 20 + 300;
    let total = passed[0];
    assert!(total <= upper_bound(20, 100, Duration::from_secs(3), 1, 2), "{total}");
    // Refills arrive within a step here, so little is left unused.
    assert!(total >= exact - 2 * 2, "{total}");
}

#[tokio::test]
async fn two_nodes_on_one_redis_enforce_one_global_quota_within_the_stated_bound() {
    let Some(passed) = hammer("rl-bound-2", 2).await else { return };
    let (total, exact) = (passed.iter().sum::<u64>(), 20 + 300);
    let bound = upper_bound(20, 100, Duration::from_secs(3), 2, 2);
    assert!(total <= bound, "allowed {total} > bound {bound} ({passed:?})");
    // Each node asked 903 times: without a shared quota they would have allowed 640.
    assert!(total >= exact * 9 / 10, "allowed {total} ({passed:?})");
    assert!(passed.iter().all(|p| *p > 20), "both nodes got leases: {passed:?}");
}

#[tokio::test]
async fn nodes_whose_clocks_disagree_share_one_quota_on_redis_time() {
    let test = "rl-skew";
    let prefix = unique_prefix(test);
    let (Some(redis_a), Some(redis_b)) = (redis(test, &redis_url()).await, redis(test, &redis_url()).await) else {
        return;
    };
    // Ten minutes apart, and neither moves: Redis's own clock decides.
    let node = |handle: RedisHandle, start: Duration| {
        builder(Policy::new("p", Quota::per_hour(40)), &Clock::manual(start))
            .redis(handle)
            .redis_config(RedisLimitConfig::default().with_prefix(prefix.as_str()))
            .build()
            .unwrap()
    };
    let (a, b) = (node(redis_a, wall_clock()), node(redis_b, wall_clock() + Duration::from_secs(600)));
    let mut passed = 0;
    for _ in 0..20 {
        for layer in [&a, &b] {
            for _ in 0..5 {
                passed += u64::from(decide_now(layer, "skewed") == StatusCode::OK);
            }
            layer.sync().await;
        }
    }
    // Burst 40, lease 4, two nodes, no time: at most 40 + 2·4·2.
    assert!((40 - 2 * 4..=56).contains(&passed), "{passed}");
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
        .filter(|(name, _)| !["info", "config|resetstat", "script|load"].contains(&name.as_str()))
        .collect()
}

#[tokio::test]
async fn decisions_send_nothing_and_syncs_are_a_fraction_of_them() {
    let test = "decisions_send_nothing";
    let Some(server) = PrivateRedis::start(17310) else { return skip(test, "redis-server could not be started") };
    let Some(handle) = redis(test, &server.url()).await else { return };
    let pool = handle.pool().clone();
    let clock = Clock::manual(wall_clock());
    let layer = builder(Policy::new("p", Quota::per_minute(6000).with_burst(100)), &clock)
        .redis(handle)
        .redis_config(store("rl").with_heartbeat(Duration::from_secs(3600)))
        .build()
        .unwrap();
    decide_now(&layer, "warm-up");
    layer.sync().await;
    let _: fred::types::Value = pool.next().custom(fred::cmd!("CONFIG"), vec!["RESETSTAT"]).await.unwrap();
    let mut decisions = 0;
    for round in 0..100 {
        clock.advance(Duration::from_millis(10));
        for key in 0..10 {
            assert_eq!(decide_now(&layer, &format!("c{key}")), StatusCode::OK, "round {round}");
            decisions += 1;
        }
        layer.sync().await;
    }
    let calls = command_calls(&pool).await;
    let count = |name: &str| calls.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
    // Only the lease script (with its own GET/SET) and the node's announcement reached Redis:
    // lease 10, refilled at half.
    let expected = ["evalsha", "get", "set", "zadd", "zremrangebyscore", "pexpire", "zcard", "time"];
    assert!(calls.iter().all(|(n, _)| expected.contains(&n.as_str())), "{calls:?}");
    let syncs = count("evalsha");
    assert!(syncs * 4 <= decisions + 4 * count("zadd"), "{syncs} syncs for {decisions} decisions: {calls:?}");
    assert!(syncs >= decisions / 10, "{syncs} syncs for {decisions} decisions");
}

#[tokio::test]
async fn fail_open_stays_below_a_thousandth_under_load() {
    let test = "fail_open_under_load";
    let Some(server) = PrivateRedis::start(17311) else { return skip(test, "redis-server could not be started") };
    let Some(handle) = redis(test, &server.url()).await else { return };
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_minute(600).with_burst(60)))
        .key_resolver(ClientKeyResolver::builder().header("x-client-id").build().unwrap())
        .redis(handle)
        .redis_config(RedisLimitConfig::default().with_prefix("rl"))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let layer = layer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..2500u32 {
                let client = format!("c{}", (i * 7 + worker) % 2000);
                let _ = decide_now(&layer, &client);
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = &layer;
    let total = s.decisions("p", "allowed") + s.decisions("p", "limited") + s.decisions("p", "fail_open");
    assert_eq!(total, 20_000);
    assert!(s.decisions("p", "fail_open") * 1000 <= total, "{}", s.decisions("p", "fail_open"));
}

#[tokio::test]
async fn a_hung_redis_neither_delays_decisions_nor_fails_them_open_until_it_is_down() {
    let test = "hung_redis";
    let Some(server) = PrivateRedis::start(17312) else { return skip(test, "redis-server could not be started") };
    let Some(handle) = redis(test, &server.url()).await else { return };
    let store = RedisLimitConfig::default()
        .with_prefix("rl")
        .with_deadline(Duration::from_millis(50))
        .with_down_after(Duration::from_millis(800));
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_minute(6000).with_burst(200)))
        .key_resolver(ClientKeyResolver::builder().header("x-client-id").build().unwrap())
        .redis(handle)
        .redis_config(store)
        .build()
        .unwrap();
    for key in 0..50 {
        decide_now(&layer, &format!("k{key}"));
    }
    layer.sync().await;
    server.pause();
    // Hung for 400 ms: every decision on its first poll, from leases and credits.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(400) {
        assert_eq!(decide_now(&layer, &format!("k{}", n % 50)), StatusCode::OK);
        decide_now(&layer, &format!("new{n}"));
        n += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(layer.decisions("p", "fail_open"), 0, "a slow Redis fails no decision open by itself");
    // Hung past `down_after`: the fallback decides, still without waiting.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for key in 0..50 {
        assert_eq!(decide_now(&layer, &format!("k{key}")), StatusCode::OK);
    }
    assert!(layer.decisions("p", "fail_open") >= 50, "{}", layer.status_report());
    // Back: leases decide again.
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let before = layer.decisions("p", "fail_open");
        decide_now(&layer, "after");
        if layer.decisions("p", "fail_open") == before {
            break;
        }
        assert!(Instant::now() < deadline, "the fallback still decides 5 s after Redis came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Redis settings of [`two_nodes`]: a short heartbeat and down time.
fn failover() -> RedisLimitConfig {
    RedisLimitConfig::default()
        .with_prefix("rl")
        .with_deadline(Duration::from_millis(50))
        .with_heartbeat(Duration::from_millis(100))
        .with_down_after(Duration::from_millis(200))
}

/// Two nodes that have seen each other on a private Redis, with [`failover`] settings, then
/// `configure`d.
async fn two_nodes(
    test: &str,
    server: &PrivateRedis,
    quota: Quota,
    configure: impl Fn(RateLimitLayerBuilder) -> RateLimitLayerBuilder,
) -> Option<[RateLimitLayer; 2]> {
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let handle = redis(test, &server.url()).await?;
        let node = builder(Policy::new("p", quota), &Clock::default()).redis(handle).redis_config(failover());
        nodes.push(configure(node).build().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while nodes.iter().any(|n| n.nodes() != 2) {
        assert!(Instant::now() < deadline, "the nodes did not count each other");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(nodes.try_into().unwrap())
}

/// Wait until a node decides without Redis.
async fn wait_down(layer: &RateLimitLayer) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !layer.status_report()["redis"]["down"].as_bool().unwrap() {
        assert!(Instant::now() < deadline, "Redis was not declared down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

trait Report {
    fn status_report(&self) -> serde_json::Value;
}

impl Report for RateLimitLayer {
    fn status_report(&self) -> serde_json::Value {
        self.report()
    }
}

#[tokio::test]
async fn redis_gone_each_node_falls_back_to_its_share_of_the_quota_and_recovers() {
    let test = "redis_gone_share";
    let Some(mut server) = PrivateRedis::start(17313) else { return skip(test, "redis-server could not be started") };
    let Some([a, b]) = two_nodes(test, &server, Quota::per_hour(10), |b| b).await else { return };
    server.stop();
    wait_down(&a).await;
    wait_down(&b).await;
    let mut passed = 0;
    for layer in [&a, &b] {
        for _ in 0..20 {
            passed += u32::from(decide_now(layer, "x") == StatusCode::OK);
        }
    }
    // Two known nodes: each allows half of the burst of 10, together the quota, not twice it.
    assert_eq!(passed, 10);
    assert_eq!(a.decisions("p", "fail_open") + b.decisions("p", "fail_open"), 10);
    // Redis is back: the pools reconnect and the leases decide again ("y" is fresh).
    assert!(server.restart());
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.status_report()["redis"]["down"].as_bool().unwrap() {
        assert!(Instant::now() < deadline, "still down after Redis came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let allowed = a.decisions("p", "allowed");
    assert_eq!(decide_now(&a, "y"), StatusCode::OK);
    assert_eq!(a.decisions("p", "allowed"), allowed + 1);
}

#[tokio::test]
async fn redis_gone_fail_open_without_fallback_lets_everything_through() {
    let test = "redis_gone_fail_open_without_fallback";
    let Some(mut server) = PrivateRedis::start(17314) else { return skip(test, "redis-server could not be started") };
    let Some([a, _b]) =
        two_nodes(test, &server, Quota::per_hour(2), |b| b.redis_config(failover().with_fallback_local(false))).await
    else {
        return;
    };
    server.stop();
    wait_down(&a).await;
    for _ in 0..5 {
        let res = send(&a, from_client("a")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!res.headers().contains_key(&phalanx_ratelimit::RATELIMIT), "no state is known");
    }
    assert_eq!(a.decisions("p", "fail_open"), 5);
}

#[tokio::test]
async fn redis_gone_fail_closed_rejects_at_once() {
    let test = "redis_gone_fail_closed";
    let Some(mut server) = PrivateRedis::start(17315) else { return skip(test, "redis-server could not be started") };
    let metrics = Metrics::new();
    let Some([a, _b]) = two_nodes(test, &server, Quota::per_hour(2), |b| {
        b.redis_config(failover().with_failure_mode(FailureMode::Closed)).meter(metrics.meter())
    })
    .await
    else {
        return;
    };
    assert_eq!(status(&a, from_client("a")).await, StatusCode::OK);
    server.stop();
    wait_down(&a).await;
    let res = a.layer(ok_service()).oneshot(from_client("a")).now_or_never().unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
    assert_eq!(json(res).await["type"], phalanx_core::problem::types::DEPENDENCY_UNAVAILABLE);
    assert!(metrics.decisions("p", "fail_closed").0 >= 1);
}

#[tokio::test]
async fn server_time_is_the_default_and_reads_the_redis_clock() {
    let Some(handle) = redis("server_time_reads_the_redis_clock", &redis_url()).await else { return };
    let pool = handle.pool().clone();
    // A manual clock stuck at the epoch: the stored TAT shows whose clock the script used.
    let clock = Clock::manual(Duration::ZERO);
    let prefix = unique_prefix("rl-server-time");
    let store = RedisLimitConfig::default().with_prefix(prefix.clone());
    let layer =
        builder(Policy::new("p", Quota::per_hour(20)), &clock).redis(handle).redis_config(store).build().unwrap();
    assert_eq!(decide_now(&layer, "a"), StatusCode::OK);
    layer.sync().await;
    let tat: i64 = fred::prelude::KeysInterface::get(&pool, format!("{prefix}:{{id:a}}:p")).await.unwrap();
    let now_us = wall_clock().as_micros() as i64;
    // The credit (2) and a top-up of the lease (1): three tokens at 3 minutes each, from
    // Redis's now.
    assert!((tat - now_us - 3 * 180_000_000).abs() < 60_000_000, "tat {tat}, now {now_us}");
}

#[tokio::test]
async fn two_nodes_share_quotas_on_a_redis_cluster() {
    let test = "two_nodes_share_quotas_on_a_redis_cluster";
    let Some(cluster) = tokio::task::spawn_blocking(|| phalanx_core::testing::RedisCluster::start(3, 0)).await.unwrap()
    else {
        return skip(test, "redis-server/redis-cli not found or no cluster");
    };
    let clock = Clock::manual(wall_clock());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let settings =
            RedisSettings::from_url(cluster.url()).with_command_timeout(std::time::Duration::from_millis(2_000));
        let handle = RedisHandle::connect(settings).unwrap();
        handle.pool().wait_for_connect().await.unwrap();
        let store = store("rl").with_heartbeat(Duration::from_millis(100));
        nodes.push(
            builder(Policy::new("p", Quota::per_second(100).with_burst(20)), &clock)
                .redis(handle)
                .redis_config(store)
                .build()
                .unwrap(),
        );
    }
    // Thirty clients, whose keys fall on every master's slots; each script stays in its slot.
    let clients: Vec<String> = (0..30).map(|i| format!("client-{i}")).collect();
    let masters: std::collections::BTreeSet<u16> =
        clients.iter().filter_map(|c| cluster.master_of(&format!("rl:{{id:{c}}}:p"))).collect();
    assert_eq!(masters.len(), 3, "the clients' keys live on every master");
    let mut passed = vec![0u64; clients.len()];
    for step in 0..=100 {
        if step > 0 {
            clock.advance(Duration::from_millis(10));
        }
        for node in &nodes {
            for (client, passed) in clients.iter().zip(&mut passed) {
                for _ in 0..2 {
                    *passed += u64::from(decide_now(node, client) == StatusCode::OK);
                }
            }
        }
        for i in 0..2 {
            nodes[(i + step) % 2].sync().await;
        }
    }
    let bound = upper_bound(20, 100, Duration::from_secs(1), 2, 2);
    for (client, passed) in clients.iter().zip(&passed) {
        assert!(*passed <= bound && *passed >= 100, "{client}: {passed} allowed (bound {bound}, exact 120)");
    }
    for node in &nodes {
        let report = node.status_report();
        assert_eq!(report["redis"]["sync_rounds_failed"], 0, "{report}");
        assert_eq!(node.decisions("p", "fail_open"), 0);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while nodes.iter().any(|n| n.nodes() != 2) {
        assert!(Instant::now() < deadline, "the nodes did not count each other on the cluster");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
