//! [`MetricsLayer`], the state its services share, and [`HttpStats`], the handle `/status`
//! reads.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, Ordering::Relaxed},
        Arc,
    },
};

use http::Method;
use opentelemetry::{
    metrics::{AsyncInstrument, Histogram, ObservableUpDownCounter},
    KeyValue, StringValue,
};
use parking_lot::RwLock;
use phalanx_core::{names::attr, Deps};
use tokio::time::Instant;
use tower_layer::Layer;

use crate::{
    builder::MetricsLayerBuilder,
    config::{LatencyTargets, MetricsConfig},
    error::Error,
    service::MetricsService,
    window::{RecentWindow, WindowSummary},
};

pub(crate) struct Shared {
    pub(crate) duration: Histogram<f64>,
    pub(crate) active_now: AtomicI64,
    pub(crate) window: RecentWindow,
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) targets: LatencyTargets,
    /// Kept so the callback that reports active requests lives as long as the layer.
    pub(crate) _active: ObservableUpDownCounter<i64>,
}

/// Ready-made label sets per route, one slot per method label, each with its active count.
/// Active requests are counted here with one atomic add and reported through an observable
/// instrument at collection time, instead of two synchronous instrument updates per request.
pub(crate) struct RouteTable {
    entries: RwLock<HashMap<Box<str>, MethodSlots, foldhash::quality::RandomState>>,
    /// Distinct route templates kept ready-made; past this they share [`OVERFLOW_ROUTE`].
    max_routes: usize,
}

type MethodSlots = [Option<Arc<RouteEntry>>; METHOD_LABELS];

/// One route and method: its labels and requests in flight.
pub(crate) struct RouteEntry {
    pub(crate) labels: [KeyValue; 2],
    pub(crate) active: AtomicI64,
}

impl RouteTable {
    pub(crate) fn new(max_routes: usize) -> Self {
        RouteTable { entries: RwLock::default(), max_routes }
    }

    pub(crate) fn entry(&self, route: &str, method: &Method) -> Arc<RouteEntry> {
        let (index, method_name) = method_label(method);
        if let Some(found) = self.entries.read().get(route).and_then(|slots| slots[index].clone()) {
            return found;
        }
        let mut entries = self.entries.write();
        // Past the bound (only reachable with thousands of route templates) routes share one entry.
        let route = if entries.len() < self.max_routes || entries.contains_key(route) { route } else { OVERFLOW_ROUTE };
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

    pub(crate) fn observe(&self, observer: &dyn AsyncInstrument<i64>) {
        for slots in self.entries.read().values() {
            for entry in slots.iter().flatten() {
                observer.observe(entry.active.load(Relaxed), &entry.labels);
            }
        }
    }
}

/// The route label shared by requests beyond `max_routes` distinct route templates.
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
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for HttpStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStats").field("active", &self.active()).field("targets", &self.targets()).finish()
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

    /// The latency targets `/status` judges these figures against (none by default).
    pub fn targets(&self) -> LatencyTargets {
        self.shared.targets
    }
}

/// Records `http.server.request.duration` and `http.server.active_requests`, labelled by the
/// matched route template (axum's `MatchedPath`; unmatched paths share one label), method and
/// status. A request stays active until its response body finishes or is dropped, and its
/// duration runs until then.
///
/// Build it with [`MetricsLayer::builder`] (`.meter(meter)`, `.targets(..)`) or
/// [`MetricsLayer::from_config`]; [`MetricsLayer::new`] records through
/// [`phalanx_core::default_meter`] with the defaults. Add it with `Router::layer`, last, so it
/// wraps every route (and the fallback) and sees the matched path and every rejection of the
/// layers inside it.
#[derive(Clone)]
pub struct MetricsLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("max_routes", &self.shared.routes.max_routes)
            .field("targets", &self.shared.targets)
            .finish_non_exhaustive()
    }
}

impl Default for MetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsLayer {
    /// Record through [`phalanx_core::default_meter`], with the default configuration (no
    /// latency targets): the same as `MetricsLayer::builder().build()`.
    pub fn new() -> Self {
        MetricsLayerBuilder::default().finish()
    }

    /// A builder with the default configuration ([`MetricsConfig::default`]).
    pub fn builder() -> MetricsLayerBuilder {
        MetricsLayerBuilder::default()
    }

    /// A layer from a configuration, recording through the meter of `deps` (or
    /// [`phalanx_core::default_meter`]).
    pub fn from_config(config: &MetricsConfig, deps: &Deps) -> Result<Self, Error> {
        let builder = MetricsLayerBuilder::from_config(config);
        match deps.meter_ref() {
            Some(meter) => builder.meter(meter.clone()),
            None => builder,
        }
        .build()
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
