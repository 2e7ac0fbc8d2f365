//! Test support shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use axum::{body::Body, Router};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use opentelemetry::{metrics::MeterProvider, KeyValue};
use opentelemetry_sdk::metrics::{
    data::{AggregatedMetrics, MetricData, ResourceMetrics},
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
};
use tower::ServiceExt;

/// A local meter provider whose figures the test can read.
pub struct Metrics {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Metrics {
    pub fn new() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let reader = PeriodicReader::builder(exporter.clone()).build();
        Metrics { provider: SdkMeterProvider::builder().with_reader(reader).build(), exporter }
    }

    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        self.provider.meter("test")
    }

    fn collect(&self) -> Vec<ResourceMetrics> {
        self.exporter.reset();
        self.provider.force_flush().unwrap();
        self.exporter.get_finished_metrics().unwrap()
    }

    /// The value of an f64 gauge for the data point carrying `label`.
    pub fn gauge(&self, name: &str, label: &KeyValue) -> Option<f64> {
        let all = self.collect();
        let mut found = None;
        for m in all.iter().flat_map(|r| r.scope_metrics()).flat_map(|s| s.metrics()).filter(|m| m.name() == name) {
            if let AggregatedMetrics::F64(MetricData::Gauge(g)) = m.data() {
                for p in g.data_points() {
                    if p.attributes().any(|a| a == label) {
                        found = Some(p.value());
                    }
                }
            }
        }
        found
    }

    /// The summed count of an f64 histogram over data points carrying `label`.
    pub fn histogram_count(&self, name: &str, label: &KeyValue) -> u64 {
        let all = self.collect();
        let mut count = 0;
        for m in all.iter().flat_map(|r| r.scope_metrics()).flat_map(|s| s.metrics()).filter(|m| m.name() == name) {
            if let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() {
                count += h.data_points().filter(|p| p.attributes().any(|a| a == label)).map(|p| p.count()).sum::<u64>();
            }
        }
        count
    }

    /// The summed value of a u64 counter over data points carrying `label`.
    pub fn counter(&self, name: &str, label: &KeyValue) -> u64 {
        let all = self.collect();
        let mut total = 0;
        for m in all.iter().flat_map(|r| r.scope_metrics()).flat_map(|s| s.metrics()).filter(|m| m.name() == name) {
            if let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() {
                total += s.data_points().filter(|p| p.attributes().any(|a| a == label)).map(|p| p.value()).sum::<u64>();
            }
        }
        total
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
