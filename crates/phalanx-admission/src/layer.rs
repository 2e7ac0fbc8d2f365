//! [`AdmissionLayer`]: the layer, and the handle on the limiter's shared state it also is.

use std::sync::Arc;

use phalanx_core::{ConfigError, Deps, Priority};
use tower_layer::Layer;

use crate::{
    builder::AdmissionLayerBuilder,
    config::{AdmissionConfig, Algorithm},
    service::AdmissionService,
    shared::{Shared, ShedReason, Snapshot},
};

/// Admission control: priority classes share one (adaptive) concurrency limit; when it is
/// reached requests wait in a priority queue up to their class's deadline, or are shed with
/// `503`, `Retry-After` and a problem+json document.
///
/// Cheap to clone; every clone, and every service it makes, shares one limit and one queue.
/// The layer is also the handle on that state: [`snapshot`](Self::snapshot), the counts, and
/// the `admission` section of `/status` (it is a [`phalanx_core::StatusSource`]: register a
/// clone with `registry.register(layer.clone())`, or `register_as(name, ..)` for a second
/// limiter).
#[derive(Clone)]
pub struct AdmissionLayer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) algorithm: Algorithm,
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
    pub fn builder() -> AdmissionLayerBuilder {
        AdmissionLayerBuilder::from_config(&AdmissionConfig::default())
    }

    /// A layer from a configuration, recording through the meter of `deps` (or
    /// [`phalanx_core::default_meter`]).
    pub fn from_config(config: &AdmissionConfig, deps: &Deps) -> Result<Self, ConfigError> {
        let builder = AdmissionLayerBuilder::from_config(config);
        match deps.meter_ref() {
            Some(meter) => builder.meter(meter.clone()),
            None => builder,
        }
        .build()
    }

    /// The limiter's name (the `limiter` metric attribute).
    pub fn limiter_name(&self) -> &str {
        &self.shared.name
    }

    /// The algorithm setting the limit.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
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
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService { inner, shared: self.shared.clone() }
    }
}
