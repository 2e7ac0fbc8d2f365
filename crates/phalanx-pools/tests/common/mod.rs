//! Test support shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use axum::{body::Body, Router};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use opentelemetry::KeyValue;
use tower::ServiceExt;

/// A local meter provider whose figures the test can read, by one label.
pub struct Metrics(phalanx_core::testing::TestMetrics);

impl Metrics {
    pub fn new() -> Self {
        Metrics(phalanx_core::testing::TestMetrics::new())
    }

    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        self.0.meter()
    }

    fn label(label: &KeyValue) -> (String, String) {
        (label.key.to_string(), label.value.to_string())
    }

    /// The value of a gauge for the data point carrying `label`.
    pub fn gauge(&self, name: &str, label: &KeyValue) -> Option<f64> {
        let (k, v) = Self::label(label);
        self.0.value(name, &[(&k, &v)])
    }

    /// The summed count of a histogram over data points carrying `label`.
    pub fn histogram_count(&self, name: &str, label: &KeyValue) -> u64 {
        let (k, v) = Self::label(label);
        self.0.count(name, &[(&k, &v)])
    }

    /// The summed value of a counter over data points carrying `label`.
    pub fn counter(&self, name: &str, label: &KeyValue) -> u64 {
        let (k, v) = Self::label(label);
        self.0.value(name, &[(&k, &v)]).unwrap_or(0.0) as u64
    }
}

/// One request through the router: status, headers, body, and how long it took.
pub async fn get(router: &Router, uri: &str) -> (StatusCode, HeaderMap, String, Duration) {
    let started = Instant::now();
    let res = router.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned(), started.elapsed())
}

/// A name no other test (or test run) uses.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{name}_{}_{nanos}", std::process::id())
}

/// A TCP forwarder in front of a real server that the test can take down (connections cut,
/// new ones closed at once) and bring back, without touching the shared server.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue;
                }
                let mut down = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up }
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}
