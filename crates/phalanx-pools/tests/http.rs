//! The Http client against a local upstream that counts the hits it receives.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::FromRef, routing::get, Router};
use common::{get as request, Metrics};
use http::StatusCode;
use opentelemetry::KeyValue;
use phalanx_breaker::{BreakerConfig, BreakerRegistry};
use phalanx_pools::{Http, HttpClient, HttpClientConfig, ATTR_SERVER_ADDRESS, HTTP_CLIENT_REQUEST_DURATION};

/// An upstream on a free port: `/fail` always 503, `/flaky` 503 twice then 200, `/ok` 200.
async fn upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let flaky = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&hits);
    let app = Router::new()
        .route(
            "/fail",
            get(|| async { StatusCode::SERVICE_UNAVAILABLE }).post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route(
            "/flaky",
            get(move || {
                let n = flaky.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .route("/ok", get(|| async { "upstream ok" }))
        .layer(axum::middleware::from_fn(move |req, next: axum::middleware::Next| {
            count.fetch_add(1, Ordering::SeqCst);
            next.run(req)
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

/// 3 retries per request, within a budget of 20 % of the requests plus a floor of 5 retries
/// (1 per second of a 5 s window, longer than any of these tests).
fn config() -> HttpClientConfig {
    HttpClientConfig::default().with_max_retries(3).with_retry_backoff(Duration::from_millis(1)).with_retry_budget(
        0.2,
        1,
        Duration::from_secs(5),
    )
}

#[tokio::test]
async fn retries_against_a_failing_upstream_never_exceed_the_budget() {
    let (addr, hits) = upstream().await;
    let client = HttpClient::builder().config(config()).build().await.unwrap();
    let requests = 100;
    for _ in 0..requests {
        let res = client.get(format!("http://{addr}/fail")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let hits = hits.load(Ordering::SeqCst);
    // Without a budget, 3 retries each would make 400 hits; the budget allows its floor (5)
    // plus 20 % of the requests.
    let ceiling = requests + 5 + requests / 5;
    assert!(hits <= ceiling, "{hits} upstream hits > budget ceiling {ceiling}");
    assert!(hits >= requests + requests / 5, "retries should use the budget: {hits} hits");
    let report = client.upstream_report(&addr.to_string()).unwrap();
    assert_eq!(report["requests"], hits);
    assert!(report["retries_denied"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn non_idempotent_requests_are_never_retried() {
    let (addr, hits) = upstream().await;
    let client = HttpClient::builder().config(config()).build().await.unwrap();
    for _ in 0..20 {
        let res = client.post(format!("http://{addr}/fail")).body("order").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 20);
    assert_eq!(client.upstream_report(&addr.to_string()).unwrap()["retries"], 0);
}

#[tokio::test]
async fn an_idempotent_request_is_retried_until_the_upstream_answers() {
    let (addr, hits) = upstream().await;
    let client = HttpClient::builder().config(config()).build().await.unwrap();
    let res = client.get(format!("http://{addr}/flaky")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refused_connection_is_retried_within_the_budget_and_counted_per_upstream() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = Metrics::new();
    let client = HttpClient::builder().config(config()).meter(metrics.meter()).build().await.unwrap();
    let err = client.get(format!("http://127.0.0.1:{port}/")).send().await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    let report = client.upstream_report(&format!("127.0.0.1:{port}")).unwrap();
    assert_eq!(report["requests"], 4, "1 attempt + 3 retries");
    assert_eq!(report["errors"], 4);
    assert_eq!(report["in_flight"], 0);
    let label = KeyValue::new(ATTR_SERVER_ADDRESS, "127.0.0.1");
    assert!(metrics.histogram_count(HTTP_CLIENT_REQUEST_DURATION, &label) >= 4);
}

#[tokio::test]
async fn an_open_breaker_stops_calls_and_its_refusals_are_not_retried() {
    let (addr, hits) = upstream().await;
    let breaker = BreakerConfig::default()
        .with_count_window(10)
        .with_minimum_number_of_calls(10)
        .with_failure_rate_threshold(0.5)
        .with_wait_in_open(Duration::from_secs(60));
    let registry = BreakerRegistry::builder().config(breaker).build().unwrap();
    let client = HttpClient::builder().config(config()).breaker(registry).build().await.unwrap();
    let url = format!("http://{addr}/fail");
    let mut opened = false;
    for _ in 0..20 {
        if let Err(err) = client.get(&url).send().await {
            assert!(matches!(err, reqwest_middleware::Error::Middleware(_)), "{err}");
            opened = true;
            break;
        }
    }
    assert!(opened, "the breaker should open on a failing upstream");
    let report = |key: &str| client.upstream_report(&addr.to_string()).unwrap()[key].as_u64().unwrap();
    let (hits_before, retries_before) = (hits.load(Ordering::SeqCst), report("retries"));
    assert!(hits_before >= 10);
    for _ in 0..10 {
        let err = client.get(&url).send().await.unwrap_err();
        assert!(matches!(err, reqwest_middleware::Error::Middleware(_)), "{err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), hits_before, "an open breaker lets nothing through");
    assert_eq!(report("retries"), retries_before, "a breaker refusal is not retried");
}

#[derive(Clone, FromRef)]
struct AppState {
    http: HttpClient,
    upstream: SocketAddr,
}

#[tokio::test]
async fn the_http_extractor_hands_out_the_shared_client() {
    let (addr, _) = upstream().await;
    let state = AppState { http: HttpClient::builder().config(config()).build().await.unwrap(), upstream: addr };
    let app = Router::new()
        .route(
            "/",
            get(|Http(client): Http, axum::extract::State(upstream): axum::extract::State<SocketAddr>| async move {
                client.get(format!("http://{upstream}/ok")).send().await.unwrap().text().await.unwrap()
            }),
        )
        .with_state(state);
    let (status, _, body, _) = request(&app, "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "upstream ok"));
}

/// An upstream replica that answers `/work` after `delay` (or 503 when `fail`), counting hits.
async fn replica(delay: Duration, fail: bool) -> (SocketAddr, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&hits);
    let app = Router::new().route(
        "/work",
        get(move || {
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                if fail {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

/// `requests` GETs of `http://replicas/work`, `concurrency` at a time.
async fn drive(client: &HttpClient, requests: usize, concurrency: usize) -> Vec<StatusCode> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < requests as u64 {
                let res = client.get("http://replicas/work").send().await.unwrap();
                statuses.push(res.status());
            }
            statuses
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn max_deviation(counts: &[u64]) -> f64 {
    let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    counts.iter().map(|&c| (c as f64 - mean).abs() / mean).fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_spreads_an_even_load_within_one_percent() {
    let mut addrs = Vec::new();
    let mut hits = Vec::new();
    for _ in 0..4 {
        let (a, h) = replica(Duration::from_millis(1), false).await;
        addrs.push(a.to_string());
        hits.push(h);
    }
    let client = HttpClient::builder().config(config()).upstream("replicas", addrs.clone()).build().await.unwrap();
    let statuses = drive(&client, 4000, 16).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    let counts: Vec<u64> = hits.iter().map(|h| h.load(Ordering::SeqCst)).collect();
    assert_eq!(counts.iter().sum::<u64>(), 4000);
    let dev = max_deviation(&counts);
    assert!(dev < 0.01, "shares {counts:?} deviate {:.2} % from the mean", dev * 100.0);
    // The client's own view agrees, and nothing is left in flight.
    let view = client.replicas("replicas").unwrap();
    assert_eq!(view.iter().map(|r| r.2).collect::<Vec<_>>(), counts);
    assert!(view.iter().all(|r| r.1 == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_gets_less() {
    let mut addrs = Vec::new();
    let mut hits = Vec::new();
    for i in 0..4 {
        let delay = if i == 0 { Duration::from_millis(40) } else { Duration::from_millis(2) };
        let (a, h) = replica(delay, false).await;
        addrs.push(a.to_string());
        hits.push(h);
    }
    let client = HttpClient::builder().config(config()).upstream("replicas", addrs).build().await.unwrap();
    drive(&client, 2000, 16).await;
    let counts: Vec<u64> = hits.iter().map(|h| h.load(Ordering::SeqCst)).collect();
    let fast_mean = counts[1..].iter().sum::<u64>() as f64 / 3.0;
    assert!(
        (counts[0] as f64) < fast_mean / 3.0,
        "the replica 20× slower still got {} against {fast_mean:.0} each for the others ({counts:?})",
        counts[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_replica_is_ejected_by_its_breaker() {
    let mut addrs = Vec::new();
    let mut hits = Vec::new();
    for i in 0..4 {
        let (a, h) = replica(Duration::from_millis(1), i == 0).await;
        addrs.push(a.to_string());
        hits.push(h);
    }
    let breaker = BreakerConfig::default()
        .with_count_window(10)
        .with_minimum_number_of_calls(5)
        .with_failure_rate_threshold(0.5)
        .with_wait_in_open(Duration::from_secs(60));
    let registry = BreakerRegistry::builder().config(breaker).build().unwrap();
    let client = HttpClient::builder()
        .config(config())
        .breaker(registry.clone())
        .upstream("replicas", addrs.clone())
        .build()
        .await
        .unwrap();
    let statuses = drive(&client, 400, 4).await;
    let failing = registry.get(&addrs[0]).expect("the failing replica has a breaker");
    assert_eq!(failing.state(), phalanx_breaker::State::Open);
    let ejected_at = hits[0].load(Ordering::SeqCst);
    // Retries on the other replicas answer almost every request.
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(ok >= 390, "{ok} of 400 succeeded");
    // Once open, the failing replica is not drawn any more.
    let statuses = drive(&client, 400, 4).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    assert_eq!(hits[0].load(Ordering::SeqCst), ejected_at, "an ejected replica got requests");
    for r in &registry.breakers() {
        if r.name() != addrs[0] {
            assert_eq!(r.state(), phalanx_breaker::State::Closed, "{}", r.name());
        }
    }
}

#[tokio::test]
async fn bad_replica_addresses_are_refused_at_build_time() {
    for bad in ["nohost", "host:notaport", ":80", "host:0"] {
        assert!(HttpClient::builder().config(config()).upstream("x", [bad]).build().await.is_err(), "{bad}");
    }
    let empty: [&str; 0] = [];
    assert!(HttpClient::builder().config(config()).upstream("x", empty).build().await.is_err());
}

#[tokio::test]
async fn invalid_settings_are_refused_naming_the_field() {
    let field = |r: Result<HttpClient, phalanx_pools::Error>| match r {
        Err(phalanx_pools::Error::Config(e)) => e.field().to_owned(),
        other => panic!("{other:?}"),
    };
    let ttl = Duration::from_secs(10);
    assert_eq!(field(HttpClient::builder().retry_budget(1.5, 1, ttl).build().await), "retry_budget_ratio");
    assert_eq!(
        field(HttpClient::builder().retry_budget(0.2, 1, Duration::from_secs(61)).build().await),
        "retry_budget_ttl"
    );
    assert_eq!(field(HttpClient::builder().request_timeout(Duration::ZERO).build().await), "request_timeout");
    assert_eq!(field(HttpClient::builder().upstream("quote", ["nohost"]).build().await), "upstreams.quote");
    let parsed: HttpClientConfig =
        serde_json::from_str(r#"{"request_timeout": "2s", "retry_backoff": "10ms", "retry_budget_ttl": "30s"}"#)
            .unwrap();
    assert_eq!((parsed.request_timeout, parsed.retry_backoff), (Duration::from_secs(2), Duration::from_millis(10)));
    let client = HttpClient::from_config(&parsed, &phalanx_core::Deps::new()).await.unwrap();
    assert_eq!(client.config().retry_budget_ttl, Duration::from_secs(30));
}
