//! [`MetricsBody`]: the response body that ends a request's accounting, and the guard it holds.

use std::sync::{atomic::Ordering::Relaxed, Arc};

use opentelemetry::KeyValue;
use phalanx_core::{names::attr, BodyGuard, GuardedBody};
use tokio::time::Instant;

use crate::layer::{RouteEntry, Shared};

/// Response body of [`crate::MetricsService`]: the inner body, holding the request's
/// [`RequestGuard`] until it finishes, fails or is dropped, so a request's duration and active
/// count run until its last byte.
pub type MetricsBody<B> = GuardedBody<B, RequestGuard>;

/// One request's accounting, held by its response body ([`MetricsBody`]) and ended when it is
/// dropped: in the response future if no response came, else when the body ends, fails or is
/// dropped.
pub struct RequestGuard {
    shared: Arc<Shared>,
    entry: Arc<RouteEntry>,
    start: Instant,
    status: Option<u16>,
    body_failed: bool,
}

impl std::fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestGuard")
            .field("route", &self.entry.labels[0].value)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl BodyGuard for RequestGuard {
    fn body_failed(&mut self) {
        // The client did not get the response it was promised: an error for /status.
        self.body_failed = true;
    }
}

impl RequestGuard {
    pub(crate) fn set_status(&mut self, status: u16) {
        self.status = Some(status);
    }

    pub(crate) fn start(shared: Arc<Shared>, entry: Arc<RouteEntry>) -> Self {
        entry.active.fetch_add(1, Relaxed);
        shared.active_now.fetch_add(1, Relaxed);
        RequestGuard { shared, entry, start: Instant::now(), status: None, body_failed: false }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        let [route, method] = &self.entry.labels;
        let outcome = match self.status {
            Some(code) => KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(code)),
            // No response was produced: the client went away or the service failed.
            None => KeyValue::new(attr::ERROR_TYPE, "_OTHER"),
        };
        self.shared.duration.record(elapsed.as_secs_f64(), &[route.clone(), method.clone(), outcome]);
        self.entry.active.fetch_sub(1, Relaxed);
        self.shared.active_now.fetch_sub(1, Relaxed);
        let failed = self.body_failed || self.status.is_none_or(|c| c >= 500);
        self.shared.window.record(now, elapsed, failed);
    }
}
