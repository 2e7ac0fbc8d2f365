//! `CircuitBreakerLayer` on axum routes, the registry's metrics and its `/status` section.

use std::{
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{body::Body, extract::State as Extract, http::StatusCode, routing::get, Router};
use http::{header, Request};
use http_body_util::BodyExt;
use phalanx_breaker::{BreakerConfig, BreakerRegistry, CircuitBreaker, CircuitBreakerLayer, State};
use phalanx_core::{problem::types, Deps, StatusRegistry, StatusSource};
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Upstream {
    status: Arc<AtomicU16>,
    calls: Arc<AtomicUsize>,
}

impl Upstream {
    fn set(&self, status: StatusCode) {
        self.status.store(status.as_u16(), Ordering::SeqCst);
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn handler(Extract(up): Extract<Upstream>) -> StatusCode {
    up.calls.fetch_add(1, Ordering::SeqCst);
    StatusCode::from_u16(up.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
}

fn config() -> BreakerConfig {
    BreakerConfig::default()
        .with_count_window(4)
        .with_minimum_number_of_calls(4)
        .with_permitted_calls_in_half_open(2)
        .with_wait_in_open(Duration::from_secs(30))
}

fn app(registry: &BreakerRegistry, up: &Upstream) -> Router {
    app_with(CircuitBreakerLayer::per_route(registry.clone()), up)
}

fn app_with(layer: CircuitBreakerLayer, up: &Upstream) -> Router {
    up.set(StatusCode::OK);
    Router::new()
        .route("/items/{id}", get(handler))
        .route("/other", get(handler))
        .route_layer(layer)
        .with_state(up.clone())
}

async fn get_status(app: &Router, path: &str) -> StatusCode {
    app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap().status()
}

#[tokio::test(start_paused = true)]
async fn open_route_answers_503_problem_with_retry_after_without_calling_the_handler() {
    let registry = BreakerRegistry::builder().config(config()).build().unwrap();
    let up = Upstream::default();
    let app = app(&registry, &up);

    up.set(StatusCode::INTERNAL_SERVER_ERROR);
    for id in 0..4 {
        assert_eq!(get_status(&app, &format!("/items/{id}")).await, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(registry.get("/items/{id}").unwrap().state(), State::Open, "one breaker per route template");
    assert_eq!(up.calls(), 4);

    tokio::time::advance(Duration::from_millis(10_500)).await;
    let res = app.clone().oneshot(Request::get("/items/9").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(res.headers()[header::RETRY_AFTER], "20", "the rest of the wait, rounded up");
    let doc: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(doc["type"], types::CIRCUIT_OPEN);
    assert_eq!(doc["breaker"], "/items/{id}");
    assert_eq!(doc["state"], "open");
    assert_eq!(up.calls(), 4, "the handler was not called");

    // Another route has its own breaker, still closed.
    assert_eq!(get_status(&app, "/other").await, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(up.calls(), 5);

    // After the wait, two healthy probes close the breaker again.
    up.set(StatusCode::OK);
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(get_status(&app, "/items/1").await, StatusCode::OK);
    assert_eq!(get_status(&app, "/items/2").await, StatusCode::OK);
    assert_eq!(registry.get("/items/{id}").unwrap().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn client_errors_do_not_trip_by_default() {
    let registry = BreakerRegistry::builder().config(config()).build().unwrap();
    let up = Upstream::default();
    let app = app(&registry, &up);
    up.set(StatusCode::NOT_FOUND);
    for _ in 0..10 {
        assert_eq!(get_status(&app, "/other").await, StatusCode::NOT_FOUND);
    }
    let breaker = registry.get("/other").unwrap();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().failure_rate, Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn a_fixed_breaker_guards_a_whole_router_and_inner_errors_fail() {
    let breaker = CircuitBreaker::new("db", config()).unwrap();
    let failing = tower::service_fn(|_req: Request<Body>| async {
        Err::<http::Response<Body>, _>(std::io::Error::other("connection reset"))
    });
    let svc = tower::Layer::layer(&CircuitBreakerLayer::new(breaker.clone()), failing);
    for _ in 0..4 {
        assert!(svc.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.is_err());
    }
    assert_eq!(breaker.state(), State::Open);
    let res = svc.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn a_slow_handler_cancelled_by_an_outer_timeout_counts_as_a_failure() {
    let breaker = CircuitBreaker::new("slow", config()).unwrap();
    let app: Router = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                StatusCode::OK
            }),
        )
        .layer(CircuitBreakerLayer::new(breaker.clone()));
    for _ in 0..4 {
        let call = app.clone().oneshot(Request::get("/").body(Body::empty()).unwrap());
        assert!(tokio::time::timeout(Duration::from_secs(1), call).await.is_err());
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.call_counts().failure, 4);
}

struct Metrics(phalanx_core::testing::TestMetrics);

impl Metrics {
    fn new() -> Self {
        Metrics(phalanx_core::testing::TestMetrics::new())
    }

    /// The value of the data point whose attributes are exactly `attrs`.
    fn value(&self, name: &str, attrs: &[(&str, &str)]) -> Option<u64> {
        let mut want: Vec<(String, String)> = attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        want.sort();
        self.0.points(name).into_iter().find(|p| p.attributes == want).map(|p| p.value as u64)
    }
}

#[tokio::test]
async fn registry_exports_state_and_calls_by_outcome_and_reports_status() {
    let metrics = Metrics::new();
    let registry = BreakerRegistry::builder().config(config()).meter(metrics.0.meter()).build().unwrap();
    let up = Upstream::default();
    let app = app(&registry, &up);
    assert_eq!(get_status(&app, "/other").await, StatusCode::OK);
    up.set(StatusCode::BAD_GATEWAY);
    for _ in 0..3 {
        get_status(&app, "/other").await;
    }
    assert_eq!(get_status(&app, "/other").await, StatusCode::SERVICE_UNAVAILABLE);

    use phalanx_core::names::{BREAKER_CALLS, BREAKER_STATE};
    let calls = |outcome| metrics.value(BREAKER_CALLS, &[("breaker", "/other"), ("outcome", outcome)]);
    assert_eq!(calls("success"), Some(1));
    assert_eq!(calls("failure"), Some(3));
    assert_eq!(calls("rejected"), Some(1));
    assert_eq!(calls("slow_success"), Some(0));
    assert_eq!(metrics.value(BREAKER_STATE, &[("breaker", "/other")]), Some(1));

    registry.get("/other").unwrap().force_open();
    assert_eq!(metrics.value(BREAKER_STATE, &[("breaker", "/other")]), Some(3));

    let report = registry.report();
    assert_eq!(registry.name(), "breakers");
    assert_eq!(report["/other"]["state"], "forced_open");
    assert_eq!(report["/other"]["calls"]["failure"], 3);
    assert!(report["/other"].get("failure_rate").is_some());
    let targets = registry.targets();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].met, Some(false));
}

#[test]
fn per_name_configuration_and_invalid_configuration() {
    let registry = BreakerRegistry::builder()
        .config(config())
        .config_for("payments:443", config().with_failure_rate_threshold(0.1))
        .build()
        .unwrap();
    assert_eq!(registry.get_or_create("payments:443").config().failure_rate_threshold, 0.1);
    assert_eq!(registry.get_or_create("other:80").config().failure_rate_threshold, 0.5);
    assert_eq!(registry.breakers().len(), 2);

    let err = BreakerRegistry::builder()
        .config(config())
        .config_for("bad", config().with_count_window(0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "config_for[\"bad\"].sliding_window", "{err}");
    let err = BreakerRegistry::builder().config(config().with_minimum_number_of_calls(0)).build().unwrap_err();
    assert_eq!(err.field(), "minimum_number_of_calls");
    let err = BreakerRegistry::from_config(&config().with_failure_rate_threshold(50.0), &Deps::new()).unwrap_err();
    assert_eq!(err.field(), "failure_rate_threshold");
    let err = CircuitBreakerLayer::builder().wait_in_open(Duration::ZERO).build().unwrap_err();
    assert_eq!(err.field(), "wait_in_open");
}

#[tokio::test(start_paused = true)]
async fn the_refusal_is_the_problem_document_and_follows_the_remaining_wait() {
    let breaker = CircuitBreaker::new("db", config()).unwrap();
    for _ in 0..4 {
        breaker.try_acquire().unwrap().failure();
    }
    let ok =
        tower::service_fn(|_req: Request<Body>| async { Ok::<_, std::io::Error>(http::Response::new(Body::empty())) });
    let svc = tower::Layer::layer(&CircuitBreakerLayer::new(breaker.clone()), ok);
    let refuse = || async {
        let res = svc.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    };
    let expected = |breaker: &CircuitBreaker| {
        let refused = breaker.try_acquire().unwrap_err();
        phalanx_breaker::open_problem(&refused).into_response::<Body>()
    };

    // Advances add up to 26 s of the 30 s wait.
    for elapsed in [0, 1, 5, 20] {
        tokio::time::advance(Duration::from_secs(elapsed)).await;
        let (parts, body) = refuse().await;
        let want = expected(&breaker);
        assert_eq!(parts.status, want.status());
        assert_eq!(parts.headers, *want.headers());
        assert_eq!(body, want.into_body().collect().await.unwrap().to_bytes());
    }
    tokio::time::advance(Duration::from_millis(3500)).await;
    let (parts, body) = refuse().await;
    assert_eq!(parts.headers[header::RETRY_AFTER], "1", "0.5 s left, rounded up");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["retry_after"], 1);
}

#[tokio::test(start_paused = true)]
async fn from_config_makes_a_breaker_per_route_and_the_layer_reports_status() {
    let config: BreakerConfig = toml::from_str(
        r#"
        sliding_window = { count = 4 }
        minimum_number_of_calls = 4
        wait_in_open = "30s"
        "#,
    )
    .unwrap();
    let metrics = Metrics::new();
    let layer = CircuitBreakerLayer::from_config(&config, &Deps::new().meter(metrics.0.meter())).unwrap();
    let status = StatusRegistry::new();
    status.register(layer.clone());
    let up = Upstream::default();
    let app = app_with(layer.clone(), &up);
    up.set(StatusCode::INTERNAL_SERVER_ERROR);
    for _ in 0..4 {
        assert_eq!(get_status(&app, "/items/1").await, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(get_status(&app, "/items/2").await, StatusCode::SERVICE_UNAVAILABLE);
    // Another route has a breaker of its own.
    up.set(StatusCode::OK);
    assert_eq!(get_status(&app, "/other").await, StatusCode::OK);

    let sections = status.sections();
    let (name, report) = &sections[0];
    assert_eq!(name, "breakers");
    assert_eq!(report["/items/{id}"]["state"], "open");
    assert_eq!(report["/items/{id}"]["failure_rate"], 1.0);
    assert_eq!(report["/other"]["state"], "closed");
    assert_eq!(layer.registry().unwrap().breakers().len(), 2);
    use phalanx_core::names::BREAKER_STATE;
    assert_eq!(metrics.value(BREAKER_STATE, &[("breaker", "/items/{id}")]), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_single_breaker_from_the_builder_guards_every_route() {
    let transitions = Arc::new(AtomicUsize::new(0));
    let seen = transitions.clone();
    let layer = CircuitBreakerLayer::builder()
        .count_window(4)
        .minimum_number_of_calls(4)
        .failure_rate_threshold(0.5)
        .wait_in_open(Duration::from_secs(30))
        .single("inventory")
        .on_state_change(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let up = Upstream::default();
    let app = app_with(layer.clone(), &up);
    up.set(StatusCode::BAD_GATEWAY);
    for path in ["/items/1", "/other", "/items/2", "/other"] {
        assert_eq!(get_status(&app, path).await, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(get_status(&app, "/other").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get_status(&app, "/items/3").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(transitions.load(Ordering::SeqCst), 1);
    let report = layer.report();
    assert_eq!(report.as_object().unwrap().len(), 1);
    assert_eq!(report["inventory"]["state"], "open");
}

#[tokio::test]
async fn load_shedding_refusals_from_a_layer_inside_never_open_the_route() {
    // A handler that always answers like an admission shed: 503 with the LoadShed marker.
    async fn shed() -> axum::response::Response {
        let mut res = phalanx_core::Problem::unavailable(types::OVERLOADED, Duration::from_secs(1))
            .into_response::<Body>()
            .map(Body::new);
        res.extensions_mut().insert(phalanx_core::problem::LoadShed);
        res
    }
    async fn unmarked_503() -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }
    let registry = BreakerRegistry::builder().config(config()).build().unwrap();
    let app = Router::new()
        .route("/shed", get(shed))
        .route("/failing", get(unmarked_503))
        .route_layer(CircuitBreakerLayer::per_route(registry.clone()));
    for _ in 0..10 {
        assert_eq!(get_status(&app, "/shed").await, StatusCode::SERVICE_UNAVAILABLE);
        get_status(&app, "/failing").await;
    }
    let shed = registry.get("/shed").unwrap();
    assert_eq!(shed.state(), State::Closed, "sheds are not failures");
    assert_eq!(shed.snapshot().calls.ignored, 10);
    assert_eq!(registry.get("/failing").unwrap().state(), State::Open, "an unmarked 503 still counts");
}
