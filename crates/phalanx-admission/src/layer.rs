//! [`AdmissionLayer`], its builder, and [`AdmissionHandle`] / [`AdmissionStatus`] for `/status`.

use std::{sync::Arc, time::Duration};

use opentelemetry::metrics::Meter;
use phalanx_core::{Priority, StatusSource};
use serde_json::json;
use tower_layer::Layer;

use crate::{
    config::{AdmissionConfig, Algorithm, ClassPolicy, ConfigError, LimitConfig},
    limit::Limiter,
    metrics::Instruments,
    service::AdmissionService,
    shared::{Shared, ShedReason, Snapshot},
};

/// Admission control: priority classes share one (adaptive) concurrency limit; when it is
/// reached requests wait in a priority queue up to their class's deadline, or are shed with
/// `503`, `Retry-After` and a problem+json document.
///
/// Cheap to clone; every clone, and every service it makes, shares one limit and one queue.
#[derive(Clone)]
pub struct AdmissionLayer {
    shared: Arc<Shared>,
    algorithm: Algorithm,
}

impl std::fmt::Debug for AdmissionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionLayer")
            .field("name", &self.shared.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl AdmissionLayer {
    /// A builder with the default configuration ([`AdmissionConfig::default`]).
    pub fn builder() -> AdmissionBuilder {
        AdmissionBuilder::from_config(&AdmissionConfig::default())
    }

    /// A layer from a configuration, recording through [`phalanx_core::default_meter`].
    pub fn from_config(config: &AdmissionConfig) -> Result<Self, ConfigError> {
        AdmissionBuilder::from_config(config).build()
    }

    /// A handle on the shared state: snapshots, shed counts, the `/status` section.
    pub fn handle(&self) -> AdmissionHandle {
        AdmissionHandle { shared: self.shared.clone(), algorithm: self.algorithm }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService { inner, shared: self.shared.clone() }
    }
}

/// Builder of an [`AdmissionLayer`], with consuming setters.
#[derive(Debug, Clone)]
pub struct AdmissionBuilder {
    name: String,
    limit: LimitConfig,
    policies: [ClassPolicy; 5],
    max_queued_total: usize,
    retry_after: Duration,
    meter: Option<Meter>,
}

impl AdmissionBuilder {
    /// A builder starting from this configuration.
    pub fn from_config(config: &AdmissionConfig) -> Self {
        AdmissionBuilder {
            name: config.name.clone(),
            limit: config.limit.clone(),
            policies: config.classes.policies(),
            max_queued_total: config.max_queued_total,
            retry_after: Duration::from_millis(config.retry_after_ms),
            meter: None,
        }
    }

    /// The limiter's name in metrics and `/status` (default `"default"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The concurrency limit: [`LimitConfig::fixed`], [`LimitConfig::gradient2`],
    /// [`LimitConfig::aimd`].
    pub fn limit(mut self, limit: LimitConfig) -> Self {
        self.limit = limit;
        self
    }

    /// The whole policy of one class.
    pub fn class(mut self, priority: Priority, policy: ClassPolicy) -> Self {
        self.policies[priority.index()] = policy;
        self
    }

    /// The fraction of the limit a class may hold in flight, 0 < share <= 1.
    pub fn share(mut self, priority: Priority, share: f64) -> Self {
        self.policies[priority.index()].share = share;
        self
    }

    /// How many requests of a class may wait (0: shed at once when not admitted).
    pub fn max_queue(mut self, priority: Priority, max: usize) -> Self {
        self.policies[priority.index()].max_queue = max;
        self
    }

    /// How long a request of a class may wait before it is shed (zero: shed at once).
    pub fn queue_timeout(mut self, priority: Priority, timeout: Duration) -> Self {
        self.policies[priority.index()].queue_timeout = timeout;
        self
    }

    /// The most requests waiting over all classes (0: no total bound). When full, an arriving
    /// request evicts the newest waiter of the lowest class below its own, or is shed.
    pub fn max_queued_total(mut self, max: usize) -> Self {
        self.max_queued_total = max;
        self
    }

    /// The `Retry-After` of shed answers (default 1 s).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Record through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Build the layer, or say what is wrong with the configuration.
    pub fn build(self) -> Result<AdmissionLayer, ConfigError> {
        self.limit.validate()?;
        for p in Priority::ALL {
            self.policies[p.index()].validate(p)?;
        }
        let name: Arc<str> = self.name.into();
        let meter = self.meter.unwrap_or_else(phalanx_core::default_meter);
        let instruments = Instruments::new(&meter, &name);
        let shared = Arc::new(Shared::new(
            name,
            Limiter::new(&self.limit),
            self.policies,
            self.max_queued_total,
            self.retry_after,
            instruments,
        ));
        Instruments::register_gauges(&meter, &shared);
        Ok(AdmissionLayer { shared, algorithm: self.limit.algorithm })
    }
}

/// A cheap handle on a limiter's shared state.
#[derive(Clone)]
pub struct AdmissionHandle {
    shared: Arc<Shared>,
    algorithm: Algorithm,
}

impl std::fmt::Debug for AdmissionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionHandle").field("name", &self.shared.name).finish_non_exhaustive()
    }
}

impl AdmissionHandle {
    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The limit, in-flight and queued counts now.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// The current concurrency limit.
    pub fn limit(&self) -> usize {
        self.shared.snapshot().limit
    }

    /// How many requests of a class were shed for a reason.
    pub fn shed_count(&self, priority: Priority, reason: ShedReason) -> u64 {
        self.shared.shed_count(priority, reason)
    }

    /// How many requests of a class were admitted.
    pub fn admitted_count(&self, priority: Priority) -> u64 {
        self.shared.counters.admitted[priority.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This limiter's figures as JSON (one entry of the `/status` section).
    pub fn report(&self) -> serde_json::Value {
        let snap = self.snapshot();
        let mut classes = serde_json::Map::new();
        for class in snap.classes {
            let p = class.priority;
            let policy = &self.shared.policies[p.index()];
            let shed: serde_json::Map<String, serde_json::Value> =
                ShedReason::ALL.iter().map(|r| (r.as_str().to_owned(), self.shed_count(p, *r).into())).collect();
            classes.insert(
                p.as_str().to_owned(),
                json!({
                    "in_flight": class.in_flight,
                    "limit": class.limit,
                    "queued": class.queued,
                    "admitted": self.admitted_count(p),
                    "shed": shed,
                    "share": policy.share,
                    "max_queue": policy.max_queue,
                    "queue_timeout_ms": policy.queue_timeout.as_millis() as u64,
                }),
            );
        }
        let algorithm = match self.algorithm {
            Algorithm::Fixed => "fixed",
            Algorithm::Aimd => "aimd",
            Algorithm::Gradient2 => "gradient2",
        };
        json!({
            "algorithm": algorithm,
            "limit": snap.limit,
            "in_flight": snap.in_flight,
            "queued": snap.queued,
            "classes": classes,
        })
    }
}

/// The `admission` section of `/status`: every registered limiter's figures by name.
#[derive(Debug, Clone, Default)]
pub struct AdmissionStatus {
    limiters: Vec<AdmissionHandle>,
}

impl AdmissionStatus {
    /// A section over these limiters.
    pub fn new(limiters: impl IntoIterator<Item = AdmissionHandle>) -> Self {
        AdmissionStatus { limiters: limiters.into_iter().collect() }
    }

    /// Add a limiter.
    pub fn with(mut self, limiter: AdmissionHandle) -> Self {
        self.limiters.push(limiter);
        self
    }
}

impl StatusSource for AdmissionStatus {
    fn name(&self) -> &str {
        "admission"
    }

    fn report(&self) -> serde_json::Value {
        let limiters: serde_json::Map<String, serde_json::Value> =
            self.limiters.iter().map(|h| (h.name().to_owned(), h.report())).collect();
        serde_json::Value::Object(limiters)
    }
}
