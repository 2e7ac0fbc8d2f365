//! Test support shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use phalanx_core::{LayerBody, PeerAddr};
use phalanx_ratelimit::RateLimitLayer;
use tower::{Layer, Service, ServiceExt};

/// The inner service: always 200 "ok".
pub fn ok_service(
) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone + Send + 'static
{
    tower::service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) })
}

/// A request from `client` (an `x-client-id` header) at peer 192.0.2.1.
pub fn from_client(client: &str) -> Request<()> {
    let mut req = Request::builder().uri("/").header("x-client-id", client).body(()).unwrap();
    req.extensions_mut().insert(PeerAddr("192.0.2.1:4000".parse::<SocketAddr>().unwrap()));
    req
}

/// One request through a fresh service of the layer.
pub async fn send(layer: &RateLimitLayer, req: Request<()>) -> Response<LayerBody<Full<Bytes>>> {
    layer.layer(ok_service()).oneshot(req).await.unwrap()
}

/// The status of one request.
pub async fn status(layer: &RateLimitLayer, req: Request<()>) -> StatusCode {
    send(layer, req).await.status()
}

/// The body of a response as JSON.
pub async fn json(res: Response<LayerBody<Full<Bytes>>>) -> serde_json::Value {
    let body = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// A local meter provider whose counters the test can read.
pub struct Metrics(phalanx_core::testing::TestMetrics);

impl Metrics {
    pub fn new() -> Self {
        Metrics(phalanx_core::testing::TestMetrics::new())
    }

    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        self.0.meter()
    }

    /// `phalanx.ratelimit.decisions` of one policy and outcome, and whether the points carried
    /// `shadow=true`.
    pub fn decisions(&self, policy: &str, outcome: &str) -> (u64, bool) {
        let points: Vec<_> = self
            .0
            .points(phalanx_core::names::RATELIMIT_DECISIONS)
            .into_iter()
            .filter(|p| p.has(&[("policy", policy), ("outcome", outcome)]))
            .collect();
        let total = points.iter().map(|p| p.value as u64).sum();
        (total, points.iter().any(|p| p.has(&[("shadow", "true")])))
    }
}

/// A private `redis-server` on a port of this crate's range, which the test may pause
/// (SIGSTOP: hung, connections open), resume, kill and restart. Killed on drop.
pub struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    /// Start one on `port` (each test its own); `None` when redis-server is missing.
    pub fn start(port: u16) -> Option<PrivateRedis> {
        let mut server = PrivateRedis { port, child: None };
        server.spawn().then_some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status();
            assert!(status.is_ok_and(|s| s.success()), "kill {signal} failed");
        }
    }

    /// Hang the server: it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Kill it (Redis is gone).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) -> bool {
        self.stop();
        self.spawn()
    }

    fn spawn(&mut self) -> bool {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                std::thread::sleep(std::time::Duration::from_millis(50));
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.stop();
        false
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
