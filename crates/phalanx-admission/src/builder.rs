//! [`AdmissionLayerBuilder`]: an [`AdmissionLayer`] set up in code, with consuming setters.

use std::{sync::Arc, time::Duration};

use opentelemetry::metrics::Meter;
use phalanx_core::{ConfigError, Priority};

use crate::{
    config::{AdmissionConfig, ClassPolicy, LimitConfig},
    layer::AdmissionLayer,
    limit::Limiter,
    metrics::Instruments,
    shared::Shared,
};

/// Builder of an [`AdmissionLayer`] ([`AdmissionLayer::builder`]), with consuming setters; it
/// starts from [`AdmissionConfig::default`]. [`build`](Self::build) checks the settings.
#[derive(Debug, Clone)]
pub struct AdmissionLayerBuilder {
    name: String,
    limit: LimitConfig,
    policies: [ClassPolicy; 5],
    max_queued_total: usize,
    retry_after: Duration,
    meter: Option<Meter>,
}

impl AdmissionLayerBuilder {
    /// A builder starting from this configuration.
    pub(crate) fn from_config(config: &AdmissionConfig) -> Self {
        AdmissionLayerBuilder {
            name: config.name.clone(),
            limit: config.limit.clone(),
            policies: config.classes.policies(),
            max_queued_total: config.max_queued_total,
            retry_after: config.retry_after,
            meter: None,
        }
    }

    /// The limiter's name in metrics and `/status` (default `"default"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The concurrency limit: [`LimitConfig::fixed`], [`LimitConfig::gradient2`],
    /// [`LimitConfig::aimd`] (default [`LimitConfig::default`]).
    pub fn limit(mut self, limit: LimitConfig) -> Self {
        self.limit = limit;
        self
    }

    /// The whole policy of one class (default [`ClassPolicy::default_for`]).
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

    /// The most requests waiting over all classes (default 0: no total bound). When full, an
    /// arriving request evicts the newest waiter of the lowest class below its own, or is shed.
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

    /// Build the layer, or say which setting is wrong.
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
