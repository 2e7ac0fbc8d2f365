//! Support for tests that talk to real services (feature `testing`).
//!
//! Tests read `REDIS_URL` / `DATABASE_URL` (defaulting to the local servers). Where a server
//! cannot be reached they print that they are skipped — unless `PHALANX_REQUIRE_SERVICES=1`,
//! which CI sets, so that there they fail instead.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Whether missing services fail the test run (`PHALANX_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("PHALANX_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Report a missing service: panics when services are required, else prints a skip line.
/// Returns so the caller can `return` from the test.
pub fn skip(test: &str, why: impl std::fmt::Display) {
    if services_required() {
        panic!("{test}: required service unavailable: {why}");
    }
    eprintln!("SKIPPED {test}: {why} (set PHALANX_REQUIRE_SERVICES=1 to fail instead)");
}

/// `REDIS_URL`, or `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `DATABASE_URL` when it names PostgreSQL, or `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A unique prefix for keys a test writes to a shared Redis, so parallel tests never collide.
pub fn unique_prefix(test: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("phx-test:{test}:{}:{nanos}:{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A local meter provider whose figures a test reads back: pass [`TestMetrics::meter`] to a
/// layer's builder, exercise the layer, then ask for a figure by instrument name and attributes.
#[derive(Debug)]
pub struct TestMetrics {
    provider: opentelemetry_sdk::metrics::SdkMeterProvider,
    exporter: opentelemetry_sdk::metrics::InMemoryMetricExporter,
}

/// One data point: its attributes (sorted `(key, value)` strings), its value (a sum, a gauge's
/// value, or a histogram's sum) and, for a histogram, its count.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The point's attributes, sorted by key.
    pub attributes: Vec<(String, String)>,
    /// The value; for a histogram, the sum of its measurements.
    pub value: f64,
    /// For a histogram, how many measurements; else 1.
    pub count: u64,
}

impl Point {
    /// Whether every `(key, value)` pair is among the point's attributes.
    pub fn has(&self, attributes: &[(&str, &str)]) -> bool {
        attributes.iter().all(|(k, v)| self.attributes.iter().any(|(pk, pv)| pk == k && pv == v))
    }
}

impl Default for TestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TestMetrics {
    /// A provider with an in-memory exporter, read on demand.
    pub fn new() -> Self {
        use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
        let exporter = InMemoryMetricExporter::default();
        let reader = PeriodicReader::builder(exporter.clone()).build();
        TestMetrics { provider: SdkMeterProvider::builder().with_reader(reader).build(), exporter }
    }

    /// A meter of this provider.
    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        use opentelemetry::metrics::MeterProvider;
        self.provider.meter("test")
    }

    /// Every data point of the instrument `name`, as collected now.
    pub fn points(&self, name: &str) -> Vec<Point> {
        use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
        fn attrs<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = kvs.map(|kv| (kv.key.to_string(), kv.value.to_string())).collect();
            v.sort();
            v
        }
        macro_rules! points_of {
            ($data:expr, $out:expr) => {
                match $data {
                    MetricData::Sum(s) => $out.extend(s.data_points().map(|p| Point {
                        attributes: attrs(p.attributes()),
                        value: p.value() as f64,
                        count: 1,
                    })),
                    MetricData::Gauge(g) => $out.extend(g.data_points().map(|p| Point {
                        attributes: attrs(p.attributes()),
                        value: p.value() as f64,
                        count: 1,
                    })),
                    MetricData::Histogram(h) => $out.extend(h.data_points().map(|p| Point {
                        attributes: attrs(p.attributes()),
                        value: p.sum() as f64,
                        count: p.count(),
                    })),
                    MetricData::ExponentialHistogram(_) => {}
                }
            };
        }
        self.exporter.reset();
        self.provider.force_flush().expect("flush the test meter provider");
        let collected = self.exporter.get_finished_metrics().expect("read the in-memory exporter");
        let mut out = Vec::new();
        for metric in collected.iter().flat_map(|r| r.scope_metrics()).flat_map(|s| s.metrics()) {
            if metric.name() != name {
                continue;
            }
            match metric.data() {
                AggregatedMetrics::F64(data) => points_of!(data, out),
                AggregatedMetrics::U64(data) => points_of!(data, out),
                AggregatedMetrics::I64(data) => points_of!(data, out),
            }
        }
        out
    }

    /// The summed value of the points of `name` carrying every given attribute; `None` when
    /// there is no such point.
    pub fn value(&self, name: &str, attributes: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<Point> = self.points(name).into_iter().filter(|p| p.has(attributes)).collect();
        (!matching.is_empty()).then(|| matching.iter().map(|p| p.value).sum())
    }

    /// The summed histogram count of the points of `name` carrying every given attribute.
    pub fn count(&self, name: &str, attributes: &[(&str, &str)]) -> u64 {
        self.points(name).into_iter().filter(|p| p.has(attributes)).map(|p| p.count).sum()
    }
}

/// A private `redis-server` child process on a free loopback port, for tests that stop and
/// restart Redis without disturbing the shared server. Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Start one; `None` (after [`skip`]-style reporting is left to the caller) when the
    /// `redis-server` binary is missing or does not come up within 5 s.
    pub fn start() -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let mut server = RedisServer { port, child: None };
        server.spawn().then_some(server)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill the server (Redis is "gone").
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port; `false` if it did not come up.
    pub fn restart(&mut self) -> bool {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if ping(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_metrics_read_back_sums_gauges_and_histograms() {
        let metrics = TestMetrics::new();
        let meter = metrics.meter();
        let counter = meter.u64_counter("c").build();
        let histogram = meter.f64_histogram("h").build();
        let up_down = meter.i64_up_down_counter("g").build();
        counter.add(2, &[opentelemetry::KeyValue::new("k", "a")]);
        counter.add(3, &[opentelemetry::KeyValue::new("k", "b")]);
        histogram.record(0.5, &[opentelemetry::KeyValue::new("k", "a")]);
        histogram.record(1.5, &[opentelemetry::KeyValue::new("k", "a")]);
        up_down.add(-4, &[]);
        assert_eq!(metrics.value("c", &[("k", "a")]), Some(2.0));
        assert_eq!(metrics.value("c", &[]), Some(5.0));
        assert_eq!(metrics.value("c", &[("k", "z")]), None);
        assert_eq!(metrics.count("h", &[("k", "a")]), 2);
        assert_eq!(metrics.value("h", &[("k", "a")]), Some(2.0));
        assert_eq!(metrics.value("g", &[]), Some(-4.0));
    }

    #[test]
    fn private_redis_server_stops_and_restarts() {
        let Some(mut server) = RedisServer::start() else {
            skip("private_redis_server_stops_and_restarts", "redis-server binary not found");
            return;
        };
        assert!(ping(server.port()));
        server.stop();
        assert!(!ping(server.port()));
        assert!(server.restart());
        assert!(ping(server.port()));
    }
}
