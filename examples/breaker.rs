//! A circuit breaker around a route and around the outbound calls it makes.
//!
//! An in-process upstream (or the one at `UPSTREAM_URL`) answers `/work`; it can be told to
//! fail or to slow down. `/call` calls it through a reqwest client with `BreakerMiddleware`
//! (one breaker per upstream `host:port`), and `/orders/{id}` is guarded by
//! `CircuitBreakerLayer` (one breaker per route template). `/status` shows every breaker.
//!
//! ```text
//! cargo run --example breaker                 # serve on 127.0.0.1:3000 (PORT to change)
//! curl -X POST 'localhost:3000/upstream?fail=true'
//! for i in $(seq 12); do curl -s localhost:3000/call; echo; done   # opens after 10 calls
//! curl -s localhost:3000/status
//! curl -X POST 'localhost:3000/upstream?fail=false'; sleep 5
//! for i in $(seq 3); do curl -s localhost:3000/call; echo; done    # probes close it
//!
//! cargo run --example breaker -- --script     # the same story, told by itself, then exit
//! ```

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use phalanx::{
    breaker::{open_problem, BreakerMiddleware, BreakerRegistry, CallNotPermitted, CircuitBreakerLayer},
    core::StatusSource,
};
use reqwest_middleware::ClientWithMiddleware;

/// How the in-process upstream behaves.
#[derive(Clone, Default)]
struct Upstream {
    failing: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

#[derive(serde::Deserialize)]
struct UpstreamControl {
    fail: Option<bool>,
    delay_ms: Option<u64>,
}

async fn upstream_work(State(up): State<Upstream>) -> StatusCode {
    let delay = up.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if up.failing.load(Ordering::Relaxed) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

#[derive(Clone)]
struct App {
    client: ClientWithMiddleware,
    upstream_url: String,
    upstream: Upstream,
    breakers: BreakerRegistry,
}

/// Calls the upstream behind the per-host breaker.
async fn call(State(app): State<App>) -> Response {
    match app.client.get(&app.upstream_url).send().await {
        Ok(res) if res.status().is_success() => "upstream ok".into_response(),
        Ok(res) => (StatusCode::BAD_GATEWAY, format!("upstream answered {}", res.status())).into_response(),
        Err(reqwest_middleware::Error::Middleware(err)) if err.is::<CallNotPermitted>() => {
            let refused = err.downcast_ref::<CallNotPermitted>().expect("checked above");
            IntoResponse::into_response(open_problem(refused))
        }
        Err(err) => (StatusCode::BAD_GATEWAY, format!("upstream unreachable: {err}")).into_response(),
    }
}

async fn control(State(app): State<App>, Query(q): Query<UpstreamControl>) -> String {
    if let Some(fail) = q.fail {
        app.upstream.failing.store(fail, Ordering::Relaxed);
    }
    if let Some(ms) = q.delay_ms {
        app.upstream.delay_ms.store(ms, Ordering::Relaxed);
    }
    format!(
        "upstream failing={} delay_ms={}\n",
        app.upstream.failing.load(Ordering::Relaxed),
        app.upstream.delay_ms.load(Ordering::Relaxed)
    )
}

async fn status(State(app): State<App>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ app.breakers.name(): app.breakers.report() }))
}

/// A route whose handler fails while the upstream is failing, guarded by its own breaker.
async fn order(State(app): State<App>) -> StatusCode {
    if app.upstream.failing.load(Ordering::Relaxed) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

#[tokio::main]
async fn main() {
    let breakers = BreakerRegistry::builder()
        .count_window(20)
        .minimum_number_of_calls(10)
        .failure_rate_threshold(0.5)
        .slow_call_rate_threshold(0.8)
        .slow_call_duration(Duration::from_millis(500))
        .permitted_calls_in_half_open(3)
        .wait_in_open(Duration::from_secs(5))
        .on_state_change(|t| println!("breaker '{}': {} -> {}", t.breaker, t.from, t.to))
        .build()
        .expect("valid breaker configuration");

    // The in-process upstream, unless UPSTREAM_URL names another.
    let upstream = Upstream::default();
    let upstream_url = match std::env::var("UPSTREAM_URL") {
        Ok(url) => url,
        Err(_) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
            let addr = listener.local_addr().unwrap();
            let app = Router::new().route("/work", get(upstream_work)).with_state(upstream.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}/work")
        }
    };

    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BreakerMiddleware::new(breakers.clone()))
        .build();
    let state = App { client, upstream_url, upstream, breakers: breakers.clone() };
    let app = Router::new()
        .route("/orders/{id}", get(order))
        .route_layer(CircuitBreakerLayer::per_route(breakers.clone()))
        .route("/call", get(call))
        .route("/upstream", post(control))
        .route("/status", get(status))
        .with_state(state);

    let scripted = std::env::args().any(|a| a == "--script");
    let port = if scripted { 0 } else { std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000) };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    println!("listening on http://{addr}");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    if scripted {
        script(&format!("http://{addr}")).await;
        server.abort();
    } else {
        server.await.unwrap().unwrap();
    }
}

/// Fail the upstream until the breaker opens, heal it, wait, and let the probes close it.
async fn script(base: &str) {
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let req = http.get(format!("{base}{path}"));
        async move {
            let res = req.send().await.expect("the example answers");
            (res.status(), res.text().await.unwrap_or_default())
        }
    };
    let post = |path: &str| http.post(format!("{base}{path}")).send();

    post("/upstream?fail=true").await.unwrap();
    for i in 1..=12 {
        let (status, body) = get("/call").await;
        println!("call {i:>2}: {status} {}", body.chars().take(90).collect::<String>());
    }
    println!("status: {}", get("/status").await.1);

    post("/upstream?fail=false").await.unwrap();
    println!("upstream healed; waiting out the open state");
    tokio::time::sleep(Duration::from_millis(5100)).await;
    for i in 1..=4 {
        let (status, body) = get("/call").await;
        println!("probe {i}: {status} {body}");
    }
    println!("status: {}", get("/status").await.1);
}
