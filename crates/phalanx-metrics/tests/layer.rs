//! MetricsLayer behaviour through `tower::ServiceExt`, read back from the Prometheus exporter.

use std::{convert::Infallible, time::Duration};

use axum::{body::Body, routing::get, Router};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use phalanx_core::StatusRegistry;
use phalanx_metrics::{LatencyTargets, MetricsConfig, MetricsLayer, PrometheusExporter, StatusReport};
use tower::ServiceExt;

fn exporter() -> PrometheusExporter {
    PrometheusExporter::new("metrics-test").unwrap()
}

fn app(metrics: &MetricsLayer) -> Router {
    Router::new()
        .route("/items/{id}", get(|| async { "item" }).put(|| async { StatusCode::NO_CONTENT }))
        .route("/boom", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }))
        .route("/stream", get(|| async { Body::new(OneThenPending::default()) }))
        .layer(metrics.clone())
}

/// A body that sends one chunk and then never ends: a stream the client abandons mid-way.
#[derive(Default)]
struct OneThenPending {
    sent: bool,
}

impl http_body::Body for OneThenPending {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.sent {
            std::task::Poll::Pending
        } else {
            self.sent = true;
            std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"first")))))
        }
    }
}

async fn send(app: &Router, method: &str, uri: &str) -> http::Response<Body> {
    let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    app.clone().oneshot(req).await.unwrap()
}

async fn drain(res: http::Response<Body>) {
    res.into_body().collect().await.unwrap();
}

/// The value of the first exposition line that starts with `prefix` and contains every `needle`.
fn sample(text: &str, prefix: &str, needles: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(prefix) && needles.iter().all(|n| l.contains(n)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .next()
}

#[tokio::test]
async fn counts_and_labels_are_right() {
    let exporter = exporter();
    let metrics = MetricsLayer::builder().meter(exporter.meter()).build().unwrap();
    let app = app(&metrics);
    for id in 0..3 {
        drain(send(&app, "GET", &format!("/items/{id}")).await).await;
    }
    drain(send(&app, "PUT", "/items/9").await).await;
    drain(send(&app, "GET", "/boom").await).await;

    let text = exporter.render();
    let count = |needles: &[&str]| sample(&text, "http_server_request_duration_seconds_count", needles);
    assert_eq!(
        count(&[r#"http_route="/items/{id}""#, r#"http_request_method="GET""#, r#"http_response_status_code="200""#]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        count(&[r#"http_route="/items/{id}""#, r#"http_request_method="PUT""#, r#"status_code="204""#]),
        Some(1.0)
    );
    assert_eq!(count(&[r#"http_route="/boom""#, r#"http_response_status_code="503""#]), Some(1.0));
    // Buckets fit for 0.5 ms … 10 s.
    assert!(text.contains(r#"le="0.0005""#) && text.contains(r#"le="10""#), "{text}");
    assert_eq!(sample(&text, "http_server_active_requests", &[r#"http_route="/items/{id}""#]), Some(0.0));
    assert_eq!(metrics.stats().active(), 0);
    assert_eq!(metrics.stats().recent().requests, 5);
}

#[tokio::test]
async fn ten_thousand_unknown_paths_make_one_series() {
    let exporter = exporter();
    let metrics = MetricsLayer::builder().meter(exporter.meter()).build().unwrap();
    let app = app(&metrics);
    for i in 0..10_000 {
        let res = send(&app, "GET", &format!("/no/such/path/{i}")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        drain(res).await;
    }
    // Invented methods collapse too.
    drain(send(&app, "BREW", "/coffee").await).await;

    let text = exporter.render();
    let series: Vec<&str> =
        text.lines().filter(|l| l.starts_with("http_server_request_duration_seconds_count")).collect();
    assert_eq!(series.len(), 2, "{series:#?}");
    assert_eq!(
        sample(&text, "http_server_request_duration_seconds_count", &[r#"http_route="unmatched""#, r#"method="GET""#]),
        Some(10_000.0)
    );
    assert!(sample(&text, "http_server_request_duration_seconds_count", &[r#"method="_OTHER""#]).is_some());
    assert!(!text.contains("/no/such/path"));
}

#[tokio::test]
async fn active_requests_return_to_zero_after_streaming_bodies_are_dropped_midway() {
    let exporter = exporter();
    let metrics = MetricsLayer::builder().meter(exporter.meter()).build().unwrap();
    let app = app(&metrics);
    let mut open = Vec::new();
    for _ in 0..5 {
        let res = send(&app, "GET", "/stream").await;
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first");
        open.push(body);
    }
    assert_eq!(metrics.stats().active(), 5);
    let text = exporter.render();
    assert_eq!(sample(&text, "http_server_active_requests", &[r#"http_route="/stream""#]), Some(5.0));
    // No duration is recorded while the bodies are still streaming.
    assert_eq!(sample(&text, "http_server_request_duration_seconds_count", &[r#"http_route="/stream""#]), None);

    drop(open);
    assert_eq!(metrics.stats().active(), 0);
    let text = exporter.render();
    assert_eq!(sample(&text, "http_server_active_requests", &[r#"http_route="/stream""#]), Some(0.0));
    assert_eq!(sample(&text, "http_server_request_duration_seconds_count", &[r#"http_route="/stream""#]), Some(5.0));
}

#[tokio::test(start_paused = true)]
async fn duration_runs_until_the_body_ends() {
    let exporter = exporter();
    let metrics = MetricsLayer::builder().meter(exporter.meter()).build().unwrap();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                "done"
            }),
        )
        .layer(metrics.clone());
    let res = send(&app, "GET", "/slow").await;
    tokio::time::advance(Duration::from_millis(200)).await;
    drain(res).await;
    let text = exporter.render();
    let sum = sample(&text, "http_server_request_duration_seconds_sum", &[r#"http_route="/slow""#]).unwrap();
    assert!((0.229..0.232).contains(&sum), "sum {sum}");
}

#[tokio::test]
async fn status_report_has_http_process_sections_and_targets() {
    struct Cache;
    impl phalanx_core::StatusSource for Cache {
        fn name(&self) -> &str {
            "cache"
        }
        fn report(&self) -> serde_json::Value {
            serde_json::json!({ "hit_ratio": 0.5 })
        }
        fn targets(&self) -> Vec<phalanx_core::TargetCheck> {
            vec![phalanx_core::TargetCheck::at_least("cache_hit_ratio", Some(0.5), 0.85)]
        }
    }
    let exporter = exporter();
    let targets = LatencyTargets::new().with_avg(Duration::from_millis(200)).with_p99(Duration::from_millis(500));
    let metrics = MetricsLayer::builder().meter(exporter.meter()).targets(targets).build().unwrap();
    let registry = StatusRegistry::new();
    registry.register(Cache);
    let status = StatusReport::new(metrics.stats(), registry);
    let app = Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .merge(status.router("/status"))
        .merge(exporter.router("/metrics"))
        .layer(metrics.clone());
    drain(send(&app, "GET", "/items/1").await).await;

    let res = send(&app, "GET", "/status").await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Bytes = res.into_body().collect().await.unwrap().to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["http"]["requests"], 1);
    assert!(doc["http"]["latency_ms"]["avg"].as_f64().unwrap() < 200.0);
    assert!(doc["process"]["rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(doc["cache"]["hit_ratio"], 0.5);
    let targets = doc["targets"].as_array().unwrap();
    let by_name = |n: &str| targets.iter().find(|t| t["name"] == n).unwrap().clone();
    assert_eq!(by_name("avg_latency_ms")["met"], true);
    assert_eq!(by_name("avg_latency_ms")["target"], "< 200");
    assert_eq!(by_name("p99_latency_ms")["target"], "< 500");
    assert_eq!(by_name("cache_hit_ratio")["met"], false);
    assert_eq!(doc["targets_met"], false);

    let res = send(&app, "GET", "/metrics").await;
    assert_eq!(res.headers()["content-type"], phalanx_metrics::PROMETHEUS_TEXT);
    let text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(text.contains(r#"http_route="/status""#), "{text}");
}

#[tokio::test]
async fn metrics_pass_promtool_check_when_available() {
    let exporter = exporter();
    let metrics = MetricsLayer::builder().meter(exporter.meter()).build().unwrap();
    let app = app(&metrics);
    drain(send(&app, "GET", "/items/1").await).await;
    let text = exporter.render();
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        if std::env::var("PHALANX_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("promtool is required (Debian package prometheus)");
        }
        eprintln!("SKIPPED metrics_pass_promtool_check_when_available: promtool not found");
        return;
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn no_latency_target_is_judged_unless_configured() {
    let metrics = MetricsLayer::new();
    let app = Router::new().route("/items/{id}", get(|| async { "item" })).layer(metrics.clone());
    drain(send(&app, "GET", "/items/1").await).await;
    let doc = StatusReport::new(metrics.stats(), StatusRegistry::new()).render();
    assert_eq!(doc["http"]["requests"], 1);
    assert_eq!(doc["targets"], serde_json::json!([]), "{doc}");
    assert_eq!(doc["targets_met"], true);

    // From a configuration file: the targets as duration strings, the meter from the deps.
    let config: MetricsConfig = toml::from_str("[targets]\np99 = \"250ms\"").unwrap();
    let deps = phalanx_core::Deps::new().meter(exporter().meter());
    let metrics = MetricsLayer::from_config(&config, &deps).unwrap();
    assert_eq!(metrics.stats().targets().p99, Some(Duration::from_millis(250)));
    let doc = StatusReport::new(metrics.stats(), StatusRegistry::new()).render();
    let targets = doc["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{doc}");
    assert_eq!(targets[0]["name"], "p99_latency_ms");
    assert_eq!(targets[0]["met"], serde_json::Value::Null, "no requests yet: not enough data");

    let bad = MetricsLayer::builder().targets(LatencyTargets::new().with_avg(Duration::ZERO)).build().unwrap_err();
    match bad {
        phalanx_metrics::Error::Config(e) => assert_eq!(e.field(), "targets.avg"),
        other => panic!("{other}"),
    }
}
