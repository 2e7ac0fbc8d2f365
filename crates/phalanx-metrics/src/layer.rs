//! `MetricsLayer`: OpenTelemetry HTTP server metrics for every request.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicI64, Ordering::Relaxed},
        Arc,
    },
    task::{ready, Context, Poll},
};

use axum::extract::MatchedPath;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::{
    metrics::{AsyncInstrument, Histogram, Meter, ObservableUpDownCounter},
    KeyValue, StringValue,
};
use parking_lot::RwLock;
use phalanx_core::names::{self, attr};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::window::{RecentWindow, WindowSummary};

/// Distinct (route, method) label sets kept ready-made; past this they are built per request.
/// Routes are matched templates, so a real service stays far below it.
const MAX_INTERNED: usize = 4096;

pub(crate) struct Shared {
    duration: Histogram<f64>,
    active_now: AtomicI64,
    window: RecentWindow,
    routes: Arc<RouteTable>,
    /// Kept so the callback that reports active requests lives as long as the layer.
    _active: ObservableUpDownCounter<i64>,
}

/// Ready-made label sets per route, one slot per method label, each with its active count.
/// Active requests are counted here with one atomic add and reported through an observable
/// instrument at collection time, instead of two synchronous instrument updates per request.
#[derive(Default)]
struct RouteTable {
    entries: RwLock<HashMap<Box<str>, MethodSlots, foldhash::quality::RandomState>>,
}

type MethodSlots = [Option<Arc<RouteEntry>>; METHOD_LABELS];

/// One route and method: its labels and requests in flight.
struct RouteEntry {
    labels: [KeyValue; 2],
    active: AtomicI64,
}

impl RouteTable {
    fn entry(&self, route: &str, method: &Method) -> Arc<RouteEntry> {
        let (index, method_name) = method_label(method);
        if let Some(found) = self.entries.read().get(route).and_then(|slots| slots[index].clone()) {
            return found;
        }
        let mut entries = self.entries.write();
        // Past the bound (only reachable with thousands of route templates) routes share one entry.
        let route = if entries.len() < MAX_INTERNED || entries.contains_key(route) { route } else { OVERFLOW_ROUTE };
        let slots = entries.entry(route.into()).or_default();
        slots[index]
            .get_or_insert_with(|| {
                Arc::new(RouteEntry {
                    labels: [
                        KeyValue::new(attr::HTTP_ROUTE, StringValue::from(Arc::<str>::from(route))),
                        KeyValue::new(attr::HTTP_REQUEST_METHOD, method_name),
                    ],
                    active: AtomicI64::new(0),
                })
            })
            .clone()
    }

    fn observe(&self, observer: &dyn AsyncInstrument<i64>) {
        for slots in self.entries.read().values() {
            for entry in slots.iter().flatten() {
                observer.observe(entry.active.load(Relaxed), &entry.labels);
            }
        }
    }
}

/// The route label shared by requests beyond [`MAX_INTERNED`] distinct route templates.
const OVERFLOW_ROUTE: &str = "_overflow";

const METHOD_LABELS: usize = 10;

/// The method label and its slot: the standard methods by name, anything else `_OTHER`
/// (semantic conventions), so invented methods cannot grow the series count.
fn method_label(method: &Method) -> (usize, &'static str) {
    match *method {
        Method::GET => (0, "GET"),
        Method::POST => (1, "POST"),
        Method::PUT => (2, "PUT"),
        Method::DELETE => (3, "DELETE"),
        Method::HEAD => (4, "HEAD"),
        Method::OPTIONS => (5, "OPTIONS"),
        Method::PATCH => (6, "PATCH"),
        Method::CONNECT => (7, "CONNECT"),
        Method::TRACE => (8, "TRACE"),
        _ => (9, "_OTHER"),
    }
}

/// A handle on the layer's figures, for `/status` and tests. Cheap to clone.
#[derive(Clone)]
pub struct HttpStats {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HttpStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStats").field("active", &self.active()).finish()
    }
}

impl HttpStats {
    /// Requests whose response has not finished yet.
    pub fn active(&self) -> i64 {
        self.shared.active_now.load(Relaxed)
    }

    /// Rate, latency and error figures over the recent window (about ten seconds).
    pub fn recent(&self) -> WindowSummary {
        self.shared.window.summary(Instant::now())
    }
}

/// Records `http.server.request.duration` and `http.server.active_requests`, labelled by the
/// matched route template (axum's `MatchedPath`; unmatched paths share one label), method and
/// status. A request stays active until its response body finishes or is dropped, and its
/// duration runs until then.
///
/// Add it with `Router::layer`, last, so it wraps every route (and the fallback) and sees the
/// matched path and every rejection of the layers inside it.
#[derive(Clone)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer").finish_non_exhaustive()
    }
}

impl Default for MetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsLayer {
    /// Record through [`phalanx_core::default_meter`].
    pub fn new() -> Self {
        Self::with_meter(&phalanx_core::default_meter())
    }

    /// Record through this meter.
    pub fn with_meter(meter: &Meter) -> Self {
        let duration = meter
            .f64_histogram(names::HTTP_SERVER_REQUEST_DURATION)
            .with_unit("s")
            .with_description("Duration of HTTP server requests, until the response body ends.")
            .with_boundaries(names::DURATION_BUCKETS_SECONDS.to_vec())
            .build();
        let routes = Arc::new(RouteTable::default());
        let observed = Arc::downgrade(&routes);
        let active = meter
            .i64_observable_up_down_counter(names::HTTP_SERVER_ACTIVE_REQUESTS)
            .with_unit("{request}")
            .with_description("Number of active HTTP server requests.")
            .with_callback(move |observer| {
                if let Some(routes) = observed.upgrade() {
                    routes.observe(observer);
                }
            })
            .build();
        MetricsLayer {
            shared: Arc::new(Shared {
                duration,
                active_now: AtomicI64::new(0),
                window: RecentWindow::new(),
                routes,
                _active: active,
            }),
        }
    }

    /// The figures this layer keeps for `/status`.
    pub fn stats(&self) -> HttpStats {
        HttpStats { shared: self.shared.clone() }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, shared: self.shared.clone() }
    }
}

/// Service of [`MetricsLayer`].
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for MetricsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().map_or(names::UNMATCHED_ROUTE, |m| m.as_str());
        let entry = self.shared.routes.entry(route, req.method());
        let guard = RequestGuard::start(self.shared.clone(), entry);
        ResponseFuture { inner: self.inner.call(req), guard: Some(guard) }
    }
}

/// Ends a request's accounting when dropped: in the future if no response came, else in the body.
struct RequestGuard {
    shared: Arc<Shared>,
    entry: Arc<RouteEntry>,
    start: Instant,
    status: Option<u16>,
    body_failed: bool,
}

impl RequestGuard {
    fn start(shared: Arc<Shared>, entry: Arc<RouteEntry>) -> Self {
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

pin_project! {
    /// Response future of [`MetricsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<MetricsBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut guard = this.guard.take();
        Poll::Ready(result.map(|res| {
            if let Some(g) = guard.as_mut() {
                g.status = Some(res.status().as_u16());
            }
            res.map(|inner| MetricsBody { inner, guard })
        }))
    }
}

pin_project! {
    /// Response body of [`MetricsService`]: ends the request's accounting when it finishes or
    /// is dropped.
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
    }
}

impl<B> std::fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsBody").field("finished", &self.guard.is_none()).finish()
    }
}

impl<B> Body for MetricsBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            None => drop(this.guard.take()),
            Some(Err(_)) => {
                if let Some(g) = this.guard.as_mut() {
                    // The client did not get the response it was promised: an error for /status.
                    g.body_failed = true;
                }
                drop(this.guard.take());
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
