//! Test handlers whose latency and capacity the tests control.
#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use phalanx_admission::AdmissionBody;
use phalanx_core::Priority;
use tokio::sync::Semaphore;
use tower::{service_fn, util::BoxCloneService, BoxError};

/// A server with `workers` workers and a service time the test can change: requests beyond
/// `workers` wait inside the handler, so latency grows with concurrency as in a real server.
#[derive(Clone)]
pub struct Capacity {
    workers: Arc<Semaphore>,
    service_ms: Arc<AtomicU64>,
}

impl Capacity {
    pub fn new(workers: usize, service_time: Duration) -> Self {
        Capacity {
            workers: Arc::new(Semaphore::new(workers)),
            service_ms: Arc::new(AtomicU64::new(service_time.as_millis() as u64)),
        }
    }

    pub fn set_service_time(&self, t: Duration) {
        self.service_ms.store(t.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn service(&self) -> Handler {
        let me = self.clone();
        BoxCloneService::new(service_fn(move |_req: Request<Empty<Bytes>>| {
            let me = me.clone();
            async move {
                let _worker = me.workers.acquire().await.expect("never closed");
                tokio::time::sleep(Duration::from_millis(me.service_ms.load(Ordering::Relaxed))).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        }))
    }
}

/// The test handlers' service type.
pub type Handler = BoxCloneService<Request<Empty<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// A request of this priority.
pub fn request(priority: Priority) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    req.extensions_mut().insert(priority);
    req
}

/// A request of this priority carrying an id the handler can record.
pub fn tagged(priority: Priority, id: &str) -> Request<Empty<Bytes>> {
    let mut req = request(priority);
    req.headers_mut().insert("x-id", id.parse().unwrap());
    req
}

/// Read a shed answer: its status, `reason` member and `Retry-After`.
pub async fn shed_reason<B>(res: Response<AdmissionBody<B>>) -> (StatusCode, String, Option<String>)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let status = res.status();
    let retry = res.headers().get(http::header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.map_err(Into::into).unwrap().to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    (status, doc["reason"].as_str().unwrap_or_default().to_owned(), retry)
}

/// A small deterministic generator (xorshift64*), so tests are repeatable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
