//! [`MetricsLayerBuilder`]: a [`MetricsLayer`] set up in code, with consuming setters.

use std::sync::{atomic::AtomicI64, Arc};

use opentelemetry::metrics::Meter;
use phalanx_core::names;

use crate::{
    config::{LatencyTargets, MetricsConfig},
    error::Error,
    layer::{MetricsLayer, RouteTable, Shared},
    window::RecentWindow,
};

/// Builder of a [`MetricsLayer`] ([`MetricsLayer::builder`]), with consuming setters; it starts
/// from [`MetricsConfig::default`]. [`build`](Self::build) checks the settings.
#[derive(Debug, Clone, Default)]
pub struct MetricsLayerBuilder {
    config: MetricsConfig,
    meter: Option<Meter>,
}

impl MetricsLayerBuilder {
    pub(crate) fn from_config(config: &MetricsConfig) -> Self {
        MetricsLayerBuilder { config: config.clone(), meter: None }
    }

    /// Record through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// The bound on distinct route labels (default 4096); past it routes share `_overflow`.
    pub fn max_routes(mut self, max_routes: usize) -> Self {
        self.config.max_routes = max_routes;
        self
    }

    /// The latency targets `/status` judges (default none: no latency check is reported).
    pub fn targets(mut self, targets: LatencyTargets) -> Self {
        self.config.targets = targets;
        self
    }

    /// Build the layer, or say which setting is wrong.
    pub fn build(self) -> Result<MetricsLayer, Error> {
        self.config.validate()?;
        Ok(self.finish())
    }

    /// Build a layer from settings known to be valid.
    pub(crate) fn finish(self) -> MetricsLayer {
        let meter = self.meter.unwrap_or_else(phalanx_core::default_meter);
        let duration = meter
            .f64_histogram(names::HTTP_SERVER_REQUEST_DURATION)
            .with_unit("s")
            .with_description("Duration of HTTP server requests, until the response body ends.")
            .with_boundaries(names::DURATION_BUCKETS_SECONDS.to_vec())
            .build();
        let routes = Arc::new(RouteTable::new(self.config.max_routes));
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
                targets: self.config.targets,
                _active: active,
            }),
        }
    }
}
