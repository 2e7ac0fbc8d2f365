//! The Db extractor against SQLite (embedded), `sqlx::Any`, and a real PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use axum::{routing::get, Router};
use common::{get as request, unique, Metrics, Proxy};
use http::{header, StatusCode};
use opentelemetry::KeyValue;
use phalanx_core::StatusRegistry;
use phalanx_core::{
    names,
    problem::{types, PROBLEM_JSON},
    testing::{postgres_reachable, postgres_url, skip},
    StatusSource,
};
use phalanx_pools::{Db, DbPool, DbPoolConfig, Health, HealthConfig};
use sqlx::{Connection, Postgres};

fn pool_label(name: &str) -> KeyValue {
    KeyValue::new(names::attr::POOL, name.to_owned())
}

async fn answer_sqlite(mut db: Db<sqlx::Sqlite>) -> String {
    let n: i64 = sqlx::query_scalar("SELECT 41 + 1").fetch_one(&mut *db).await.unwrap();
    n.to_string()
}

async fn answer_any(mut db: Db) -> String {
    let n: i64 = sqlx::query_scalar("SELECT CAST(41 + 1 AS BIGINT)").fetch_one(&mut *db).await.unwrap();
    n.to_string()
}

async fn answer_pg(mut db: Db<Postgres>) -> String {
    let n: i32 = sqlx::query_scalar("SELECT 41 + 1").fetch_one(&mut *db).await.unwrap();
    n.to_string()
}

fn fast_health() -> HealthConfig {
    HealthConfig::default()
        .with_interval(Duration::from_millis(50))
        .with_timeout(Duration::from_millis(200))
        .with_unhealthy_after(2)
        .with_recover_after(2)
}

#[tokio::test]
async fn sqlite_pool_serves_a_handler_and_records_acquisitions_and_gauges() {
    let metrics = Metrics::new();
    let config = DbPoolConfig::default().with_name(unique("sqlite")).with_url("sqlite::memory:");
    let pool = DbPool::<sqlx::Sqlite>::builder().config(config.clone()).meter(metrics.meter()).build().await.unwrap();
    let app = Router::new().route("/", get(answer_sqlite)).with_state(pool.clone());
    for _ in 0..3 {
        let (status, _, body, _) = request(&app, "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "42"));
    }
    let label = pool_label(&config.name);
    assert_eq!(metrics.histogram_count(names::POOL_ACQUIRE_DURATION, &label), 3);
    assert_eq!(metrics.gauge(names::POOL_UTILIZATION, &label), Some(0.0));
    assert!(metrics.gauge(names::POOL_SIZE, &label).unwrap() >= 1.0);
    let report = pool.report();
    assert_eq!(report["acquisitions"], 3);
    assert_eq!(report["acquire_wait"]["count"], 3);
}

#[tokio::test]
async fn any_pool_runs_the_same_handler_code_on_sqlite() {
    sqlx::any::install_default_drivers();
    let pool = DbPool::<sqlx::Any>::builder().name(unique("any")).url("sqlite::memory:").build().await.unwrap();
    let app = Router::new().route("/", get(answer_any)).with_state(pool);
    let (status, _, body, _) = request(&app, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "42"));
}

#[tokio::test]
async fn invalid_configuration_fails_at_build_time_with_the_field_named() {
    let field = |e: phalanx_pools::Error| match e {
        phalanx_pools::Error::Config(c) => c.field().to_owned(),
        other => panic!("not a configuration error: {other}"),
    };
    let sqlite = || DbPool::<sqlx::Sqlite>::builder().url("sqlite::memory:");
    let err = sqlite().min_connections(5).max_connections(2).build().await.unwrap_err();
    assert_eq!(field(err), "min_connections");
    let err = sqlite().acquire_timeout(Duration::ZERO).build().await.unwrap_err();
    assert_eq!(field(err), "acquire_timeout");
    let err = sqlite().health(HealthConfig::default().with_interval(Duration::ZERO)).build().await.unwrap_err();
    assert_eq!(field(err), "health.interval");
    // No URL by default: the library has no database of its own to fall back on.
    assert_eq!(DbPoolConfig::default().url, None);
    // Nor a target of its own: without `utilization_target` only the health target is reported.
    assert_eq!(DbPoolConfig::default().utilization_target, None);
    let err = sqlite().utilization_target(0.0).build().await.unwrap_err();
    assert_eq!(field(err), "utilization_target");
    let err = DbPool::<sqlx::Sqlite>::builder().build().await.unwrap_err();
    assert_eq!(field(err), "url");
    let err = DbPool::<sqlx::Postgres>::builder().url("postgres://host:notaport/db").build().await.unwrap_err();
    assert_eq!(field(err), "url");

    let parsed: DbPoolConfig = serde_json::from_str(
        r#"{"url": "sqlite::memory:", "max_connections": 8, "acquire_timeout": "1s", "health": {"interval": "200ms"}}"#,
    )
    .unwrap();
    assert_eq!((parsed.max_connections, parsed.min_connections), (8, 2));
    assert_eq!((parsed.acquire_timeout, parsed.health.interval), (Duration::from_secs(1), Duration::from_millis(200)));
    assert!(serde_json::from_str::<DbPoolConfig>(r#"{"acquire_timeout": 250}"#).is_err(), "a bare number is refused");
    let pool = DbPool::<sqlx::Sqlite>::from_config(&parsed, &phalanx_core::Deps::new()).await.unwrap();
    assert_eq!(pool.config().max_connections, 8);
}

#[tokio::test]
async fn connect_at_start_fails_the_build_when_the_database_is_unreachable() {
    // A port nothing listens on: refused at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("postgres://nobody@127.0.0.1:{port}/none");
    let lazy = DbPool::<Postgres>::builder().url(&url).min_connections(0).build().await;
    assert!(lazy.is_ok(), "a lazy pool starts while its database is down");
    let eager = DbPool::<Postgres>::builder().url(&url).min_connections(0).connect_at_start(true).build().await;
    assert!(matches!(eager, Err(phalanx_pools::Error::Db(_))), "{eager:?}");
}

/// PostgreSQL when reachable, probed over plain TCP; `None` after reporting the skip.
async fn postgres(test: &str) -> Option<String> {
    let url = postgres_url();
    match postgres_reachable(&url) {
        Ok(()) => Some(url),
        Err(why) => {
            skip(test, format!("no PostgreSQL: {why}"));
            None
        }
    }
}

/// A PostgreSQL URL whose connections carry `application_name = app`, so a test can find
/// (and terminate) exactly its own pool's backends on the shared server.
fn with_application_name(url: &str, app: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={app}")
}

#[tokio::test]
async fn saturated_postgres_pool_answers_503_within_the_acquire_timeout() {
    let Some(url) = postgres("saturated_postgres_pool_answers_503_within_the_acquire_timeout").await else { return };
    let metrics = Metrics::new();
    let name = unique("pg_saturated");
    let pool = DbPool::<Postgres>::builder()
        .url(with_application_name(&url, &name))
        .name(&name)
        .min_connections(0)
        .max_connections(3)
        .acquire_timeout(Duration::from_millis(200))
        .health(fast_health())
        .utilization_target(0.9)
        .meter(metrics.meter())
        .build()
        .await
        .unwrap();
    let app = Router::new().route("/", get(answer_pg)).with_state(pool.clone());
    assert_eq!(request(&app, "/").await.0, StatusCode::OK);

    // Hold every connection: the pool is saturated.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.acquire().await.unwrap());
    }
    let occupancy = pool.occupancy();
    assert_eq!((occupancy.in_use, occupancy.size, occupancy.max), (held.len() as u64, 3, 3));
    assert_eq!(pool.report()["utilization"], 1.0);
    let target = pool.targets().into_iter().find(|t| t.name.ends_with(".utilization")).unwrap();
    assert_eq!((target.value, target.met), (Some(1.0), Some(false)), "the configured target is missed");
    assert_eq!(metrics.gauge(names::POOL_UTILIZATION, &pool_label(&name)), Some(1.0));
    assert_eq!(metrics.gauge(names::POOL_IN_USE, &pool_label(&name)), Some(3.0));

    // Concurrent requests all get a fast 503: within the acquire timeout + 10 %.
    let started = Instant::now();
    let answers = futures_join(&app, 8).await;
    let limit = Duration::from_millis(220);
    for (status, headers, body, took) in answers {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(took <= limit, "503 took {took:?}");
        assert!(took >= Duration::from_millis(190), "answered before the acquire timeout: {took:?}");
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["type"], types::POOL_EXHAUSTED);
        assert_eq!(doc["pool"], name.as_str());
    }
    assert!(started.elapsed() <= limit + Duration::from_millis(50));
    assert_eq!(pool.timeouts(), 8);
    assert_eq!(metrics.counter(names::POOL_ACQUIRE_TIMEOUTS, &pool_label(&name)), 8);
    assert_eq!(pool.health(), Health::Degraded);
    // Health checks that find no free connection see a busy database, not a dead one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(pool.health(), Health::Degraded, "a saturated pool is degraded, never unhealthy");

    // Released connections serve again at once.
    drop(held);
    let (status, _, body, _) = request(&app, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "42"));
}

async fn futures_join(app: &Router, n: usize) -> Vec<(StatusCode, http::HeaderMap, String, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { request(&app, "/").await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn terminated_backends_are_replaced_without_a_manual_step() {
    let Some(url) = postgres("terminated_backends_are_replaced_without_a_manual_step").await else { return };
    let name = unique("pg_terminated");
    let pool = DbPool::<Postgres>::builder()
        .url(with_application_name(&url, &name))
        .name(&name)
        .min_connections(2)
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(200))
        .health(fast_health())
        .build()
        .await
        .unwrap();
    let app = Router::new().route("/", get(answer_pg)).with_state(pool.clone());
    // Open a few connections and leave them idle in the pool.
    let held: Vec<_> = futures_acquire(&pool, 3).await;
    drop(held);
    assert_eq!(request(&app, "/").await.0, StatusCode::OK);
    let opened_before = pool.connections_opened();

    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t",
    )
    .bind(&name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed >= 2, "terminated {killed} backends");

    let started = Instant::now();
    let mut failures = 0;
    loop {
        let (status, _, body, _) = request(&app, "/").await;
        if status == StatusCode::OK {
            assert_eq!(body, "42");
            break;
        }
        failures += 1;
        assert!(started.elapsed() < Duration::from_secs(5), "no recovery after 5 s ({failures} failures)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(pool.connections_opened() > opened_before, "dead connections were replaced");
    // Every later request succeeds too: no dead connection is left in the pool.
    for _ in 0..10 {
        assert_eq!(request(&app, "/").await.0, StatusCode::OK);
    }
    let _ = admin.close().await;
}

async fn futures_acquire(pool: &DbPool<Postgres>, n: usize) -> Vec<Db<Postgres>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(pool.acquire().await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_database_that_goes_away_is_unhealthy_fails_fast_and_recovers_when_back() {
    let Some(url) = postgres("a_database_that_goes_away_is_unhealthy_fails_fast_and_recovers_when_back").await else {
        return;
    };
    let (proxy, proxied) = behind_proxy(&url).await;
    let name = unique("pg_down");
    let pool = DbPool::<Postgres>::builder()
        .url(proxied)
        .name(&name)
        .min_connections(1)
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(200))
        .health(fast_health())
        .build()
        .await
        .unwrap();
    let status = StatusRegistry::new();
    status.register(pool.clone());
    let app = Router::new().route("/", get(answer_pg)).with_state(pool.clone());
    assert_eq!(request(&app, "/").await.0, StatusCode::OK);

    proxy.set_up(false);
    wait_for(|| pool.health() == Health::Unhealthy, "unhealthy").await;
    let (code, _, body, took) = request(&app, "/").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < Duration::from_millis(50), "unhealthy pool should fail fast, took {took:?}");
    assert!(body.contains(types::DEPENDENCY_UNAVAILABLE), "{body}");
    assert_eq!(status.targets().iter().find(|t| t.name.ends_with(".health")).unwrap().met, Some(false));
    let sections = status.sections();
    assert_eq!(sections[0].0, name, "the section is named by the pool");
    assert_eq!(sections[0].1["health"]["state"], "unhealthy");

    proxy.set_up(true);
    wait_for(|| pool.health() == Health::Healthy, "healthy again").await;
    let (code, _, body, _) = request(&app, "/").await;
    assert_eq!((code, body.as_str()), (StatusCode::OK, "42"));
}

/// postgres://user@host:port/db → the same URL through a proxy the test can cut.
async fn behind_proxy(url: &str) -> (Proxy, String) {
    let after_scheme = url.split_once("://").unwrap().1;
    let authority_start = after_scheme.find('@').map_or(0, |i| i + 1);
    let authority = after_scheme[authority_start..].split(['/', '?']).next().unwrap();
    let target = tokio::net::lookup_host(authority).await.unwrap().next().unwrap();
    let proxy = Proxy::start(target).await;
    let proxied = url.replacen(authority, &proxy.addr.to_string(), 1);
    (proxy, proxied)
}

async fn wait_for(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "not {what} within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn any_pool_runs_the_same_handler_code_on_postgres() {
    let Some(url) = postgres("any_pool_runs_the_same_handler_code_on_postgres").await else { return };
    sqlx::any::install_default_drivers();
    let name = unique("pg_any");
    let pool = DbPool::<sqlx::Any>::builder()
        .url(with_application_name(&url, &name))
        .name(&name)
        .min_connections(0)
        .max_connections(2)
        .health(fast_health())
        .build()
        .await
        .unwrap();
    let app = Router::new().route("/", get(answer_any)).with_state(pool.clone());
    let (status, _, body, _) = request(&app, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "42"));
    // The background `SELECT 1` passes through the Any driver too.
    wait_for(|| pool.report()["health"]["checks"].as_u64() >= Some(2), "two health checks").await;
    assert_eq!(pool.report()["health"]["failed_checks"], 0);
    assert_eq!(pool.health(), Health::Healthy);
}

#[tokio::test]
async fn a_connection_that_breaks_while_opening_trips_the_pool_so_the_next_requests_fail_fast() {
    let Some(url) =
        postgres("a_connection_that_breaks_while_opening_trips_the_pool_so_the_next_requests_fail_fast").await
    else {
        return;
    };
    let (proxy, proxied) = behind_proxy(&url).await;
    let name = unique("pg_trip");
    // The background check runs once a minute: only a request can find the outage first.
    let slow_checks = HealthConfig::default().with_interval(Duration::from_secs(60));
    let pool = DbPool::<Postgres>::builder()
        .url(proxied)
        .name(&name)
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(300))
        .health(slow_checks)
        .build()
        .await
        .unwrap();
    let app = Router::new().route("/", get(answer_pg)).with_state(pool.clone());
    assert_eq!(request(&app, "/").await.0, StatusCode::OK);

    proxy.set_up(false);
    let (code, _, body, _) = request(&app, "/").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(pool.health(), Health::Unhealthy, "the failed acquisition trips the pool");
    for _ in 0..5 {
        let (code, headers, body, took) = request(&app, "/").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(headers.contains_key(header::RETRY_AFTER));
        assert!(body.contains(types::DEPENDENCY_UNAVAILABLE), "{body}");
        assert!(took < Duration::from_millis(50), "a tripped pool answers at once, took {took:?}");
    }
}

#[tokio::test]
async fn a_connection_error_reported_by_a_query_trips_the_pool_and_a_query_error_does_not() {
    let Some(url) = postgres("a_connection_error_reported_by_a_query_trips_the_pool_and_a_query_error_does_not").await
    else {
        return;
    };
    let name = unique("pg_observe");
    let slow_checks = HealthConfig::default().with_interval(Duration::from_secs(60));
    let pool = DbPool::<Postgres>::builder()
        .url(with_application_name(&url, &name))
        .name(&name)
        .max_connections(2)
        .health(slow_checks)
        .build()
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let wrong = sqlx::query("SELEC 1").execute(&mut *conn).await.unwrap_err();
    assert!(!pool.observe_error(&wrong), "a syntax error says nothing about the database: {wrong}");
    assert_eq!(pool.health(), Health::Healthy);

    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();
    let gone = sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap_err();
    assert!(pool.observe_error(&gone), "a terminated backend is a connection failure: {gone}");
    assert_eq!(pool.health(), Health::Unhealthy);
    let _ = admin.close().await;
}

#[tokio::test]
async fn a_check_stuck_behind_live_traffic_is_pressure_not_an_outage() {
    let name = unique("sqlite_queue");
    // Two connections, forty tasks that keep them busy: the check waits in the same queue as
    // the requests and times out, while the requests keep getting connections.
    let health = HealthConfig::default()
        .with_interval(Duration::from_millis(50))
        .with_timeout(Duration::from_millis(10))
        .with_unhealthy_after(2);
    let config = DbPoolConfig::default()
        .with_name(name)
        .with_url("sqlite::memory:")
        .with_acquire_timeout(Duration::from_secs(5))
        .with_health(health);
    let pool = DbPool::<sqlx::Sqlite>::builder().config(config).max_connections(2).build().await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (pool, stop) = (pool.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let conn = pool.acquire().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(conn);
            }
        }));
    }
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        assert_ne!(
            pool.health(),
            Health::Unhealthy,
            "a busy pool is not a database that went away: {:?}",
            StatusSource::report(&pool)["health"]
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(pool.timeouts() == 0 && pool.errors() == 0);
}

#[tokio::test]
async fn after_connect_statements_run_on_every_new_connection() {
    let pool = DbPool::<sqlx::Sqlite>::builder()
        .url("sqlite::memory:")
        .name(unique("sqlite_after_connect"))
        .max_connections(2)
        .after_connect(["PRAGMA synchronous = OFF", "PRAGMA cache_size = -4096"])
        .build()
        .await
        .unwrap();
    let mut a = pool.acquire().await.unwrap();
    let mut b = pool.acquire().await.unwrap();
    for conn in [&mut a, &mut b] {
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut **conn).await.unwrap();
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&mut **conn).await.unwrap();
        assert_eq!((synchronous, cache), (0, -4096), "both statements ran on this connection");
    }

    // A statement that fails fails the connection, not silently.
    let broken = DbPool::<sqlx::Sqlite>::builder()
        .url("sqlite::memory:")
        .name(unique("sqlite_after_connect_broken"))
        .acquire_timeout(Duration::from_millis(200))
        .after_connect(["PRAGMA no_such_thing = (("])
        .build()
        .await
        .unwrap();
    assert!(broken.acquire().await.is_err());
}
