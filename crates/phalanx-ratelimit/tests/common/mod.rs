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
