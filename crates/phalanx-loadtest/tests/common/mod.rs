//! A small service to run the load generator against, and a way to run the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// Where the test service listens.
#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) base_url: String,
    pub(crate) metrics_url: String,
    pub(crate) status_url: String,
}

/// Starts, on a runtime of its own, an API on one port (`/items/{id}`: 200 with `X-Cache`,
/// a 1 KiB body, and a 429 for ids ending in 7; `PUT` too) and an admin listener with
/// `/metrics` (the request counter the generator compares) and `/status`.
pub(crate) fn start_service() -> Service {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.block_on(async move {
            let served = Arc::new(AtomicU64::new(0));
            let counter = served.clone();
            let api = Router::new()
                .route(
                    "/items/{id}",
                    get(|UrlPath(id): UrlPath<u64>| async move {
                        let status = if id % 10 == 7 { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::OK };
                        (status, [("x-cache", if id % 2 == 0 { "HIT" } else { "MISS" })], vec![b'x'; 1024])
                            .into_response()
                    })
                    .put(|| async { "stored" }),
                )
                .route("/items", get(|| async { "[]" }))
                .layer(axum::middleware::from_fn(
                    move |request: axum::extract::Request, next: axum::middleware::Next| {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            next.run(request).await
                        }
                    },
                ));
            let metrics = served.clone();
            let started = std::time::Instant::now();
            let admin = Router::new()
                .route(
                    "/metrics",
                    get(move || {
                        let count = metrics.load(Ordering::SeqCst);
                        async move {
                            format!(
                                "# TYPE http_server_request_duration_seconds histogram\n\
                                 http_server_request_duration_seconds_count{{http_route=\"/items/{{id}}\"}} {count}\n"
                            )
                        }
                    }),
                )
                .route(
                    "/status",
                    get(move || async move {
                        axum::Json(serde_json::json!({
                            "status": "ok",
                            "uptime_ms": started.elapsed().as_millis() as u64,
                            "sections": { "test": { "healthy": true } }
                        }))
                    }),
                );
            let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let api_addr: SocketAddr = api_listener.local_addr().unwrap();
            let admin_addr: SocketAddr = admin_listener.local_addr().unwrap();
            sender
                .send(Service {
                    base_url: format!("http://{api_addr}"),
                    metrics_url: format!("http://{admin_addr}/metrics"),
                    status_url: format!("http://{admin_addr}/status"),
                })
                .unwrap();
            tokio::spawn(async move { axum::serve(admin_listener, admin).await.unwrap() });
            axum::serve(api_listener, api).await.unwrap();
        });
    });
    receiver.recv().unwrap()
}

/// A fresh directory under the target directory for one test's files.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the load generator for a short while against `service` with `extra` arguments.
pub(crate) fn run_loadtest<S: AsRef<std::ffi::OsStr>>(service: &Service, extra: &[S]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_phalanx-loadtest"))
        .args(["--users", "20", "--think", "50ms", "--warmup", "500ms", "--duration", "3s", "--seed", "3"])
        .args(["--metrics-url", &service.metrics_url, "--status-url", &service.status_url])
        .args(extra)
        .arg(&service.base_url)
        .output()
        .expect("the load generator runs");
    assert!(
        output.status.success(),
        "phalanx-loadtest failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
