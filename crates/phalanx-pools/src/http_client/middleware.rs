//! The client's own middlewares: retries within the budget, and per-host metrics.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use http::{Extensions, Method, StatusCode};
use opentelemetry::{
    metrics::{Histogram, Meter, UpDownCounter},
    KeyValue,
};
use phalanx_core::names::{attr, DURATION_BUCKETS_SECONDS};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};
use tokio::time::Instant;
use tower::retry::budget::Budget;

use super::{
    HttpShared, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT, HTTP_CLIENT_ACTIVE_REQUESTS, HTTP_CLIENT_REQUEST_DURATION,
};
use crate::metrics::LatencyStats;

/// `error.type`: why an attempt got no response.
const ATTR_ERROR_TYPE: &str = phalanx_core::names::attr::ERROR_TYPE;

#[derive(Debug)]
pub(crate) struct Instruments {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
}

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        Instruments {
            duration: meter
                .f64_histogram(HTTP_CLIENT_REQUEST_DURATION)
                .with_unit("s")
                .with_description("Duration of outbound HTTP requests (each attempt)")
                .with_boundaries(DURATION_BUCKETS_SECONDS.to_vec())
                .build(),
            active: meter
                .i64_up_down_counter(HTTP_CLIENT_ACTIVE_REQUESTS)
                .with_description("Outbound HTTP requests in flight")
                .build(),
        }
    }
}

/// Figures of one upstream `host:port`.
#[derive(Debug)]
pub(crate) struct HostStats {
    address: KeyValue,
    port: KeyValue,
    requests: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    retries: AtomicU64,
    retries_denied: AtomicU64,
    duration: LatencyStats,
}

impl HostStats {
    pub(crate) fn new(url: &reqwest::Url) -> Self {
        HostStats {
            address: KeyValue::new(ATTR_SERVER_ADDRESS, url.host_str().unwrap_or("unknown").to_owned()),
            port: KeyValue::new(ATTR_SERVER_PORT, i64::from(url.port_or_known_default().unwrap_or(0))),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retries_denied: AtomicU64::new(0),
            duration: LatencyStats::new(),
        }
    }

    pub(crate) fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
            "retries_denied": self.retries_denied.load(Ordering::Relaxed),
            "duration": self.duration.report(),
        })
    }
}

/// GET, HEAD, OPTIONS, TRACE, PUT and DELETE may be sent twice with the effect of once
/// (RFC 9110 §9.2.2); POST and PATCH may not.
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Whether an attempt's outcome is worth another try: no response because the connection
/// failed or the attempt timed out, or an upstream that says it is momentarily unable. Errors
/// raised by other middleware (an open breaker) are not.
fn is_retryable(result: &Result<Response>) -> bool {
    match result {
        Ok(res) => matches!(
            res.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
        Err(reqwest_middleware::Error::Reqwest(e)) => e.is_connect() || e.is_timeout(),
        Err(reqwest_middleware::Error::Middleware(_)) => false,
    }
}

/// Retries idempotent requests within the shared retry budget (tower's `TpsBudget`).
pub(crate) struct RetryMiddleware {
    shared: Arc<HttpShared>,
}

impl RetryMiddleware {
    pub(crate) fn new(shared: Arc<HttpShared>) -> Self {
        RetryMiddleware { shared }
    }
}

#[async_trait::async_trait]
impl Middleware for RetryMiddleware {
    async fn handle(&self, mut req: Request, extensions: &mut Extensions, next: Next<'_>) -> Result<Response> {
        let config = &self.shared.config;
        let budget = &self.shared.budget;
        budget.deposit();
        let idempotent = is_idempotent(req.method());
        let mut retries = 0;
        loop {
            // A request whose body is a stream cannot be copied, and so is never retried.
            let copy = (idempotent && retries < config.max_retries).then(|| req.try_clone()).flatten();
            let result = next.clone().run(req, &mut *extensions).await;
            let Some(again) = copy else { return result };
            if !is_retryable(&result) {
                return result;
            }
            let stats = self.shared.upstream(again.url());
            if !budget.withdraw() {
                stats.retries_denied.fetch_add(1, Ordering::Relaxed);
                return result;
            }
            drop(result);
            stats.retries.fetch_add(1, Ordering::Relaxed);
            let backoff = config.retry_backoff.saturating_mul(1 << retries.min(16));
            tokio::time::sleep(backoff).await;
            retries += 1;
            req = again;
        }
    }
}

/// Records each attempt per host: `http.client.request.duration`, `http.client.active_requests`.
pub(crate) struct MetricsMiddleware {
    shared: Arc<HttpShared>,
}

impl MetricsMiddleware {
    pub(crate) fn new(shared: Arc<HttpShared>) -> Self {
        MetricsMiddleware { shared }
    }
}

/// Counts an attempt in flight until it ends or is dropped (a cancelled request).
struct Active<'a> {
    stats: &'a HostStats,
    active: &'a UpDownCounter<i64>,
    attrs: [KeyValue; 3],
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.active.add(-1, &self.attrs);
    }
}

fn method_label(method: &Method) -> String {
    match *method {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::DELETE | Method::PATCH | Method::OPTIONS => {
            method.as_str().to_owned()
        }
        _ => "_OTHER".to_owned(),
    }
}

#[async_trait::async_trait]
impl Middleware for MetricsMiddleware {
    async fn handle(&self, req: Request, extensions: &mut Extensions, next: Next<'_>) -> Result<Response> {
        let stats = self.shared.upstream(req.url());
        let instruments = &self.shared.instruments;
        let attrs = [
            stats.address.clone(),
            stats.port.clone(),
            KeyValue::new(attr::HTTP_REQUEST_METHOD, method_label(req.method())),
        ];
        stats.requests.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        instruments.active.add(1, &attrs);
        let active = Active { stats: &stats, active: &instruments.active, attrs: attrs.clone() };
        let started = Instant::now();
        let result = next.run(req, extensions).await;
        let took = started.elapsed();
        drop(active);
        let outcome = match &result {
            Ok(res) => {
                if res.status().is_server_error() {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(res.status().as_u16()))
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                let kind = match e {
                    reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => "timeout",
                    reqwest_middleware::Error::Reqwest(e) if e.is_connect() => "connect",
                    reqwest_middleware::Error::Reqwest(_) => "request",
                    reqwest_middleware::Error::Middleware(_) => "middleware",
                };
                KeyValue::new(ATTR_ERROR_TYPE, kind)
            }
        };
        let [address, port, method] = attrs;
        instruments.duration.record(took.as_secs_f64(), &[address, port, method, outcome]);
        stats.duration.record(took);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_and_idempotent_methods_are_retried() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE, Method::PUT, Method::DELETE] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
