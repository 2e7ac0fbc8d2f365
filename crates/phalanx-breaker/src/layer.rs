//! `CircuitBreakerLayer`: a breaker around axum routes. Open → 503 problem+json with
//! `Retry-After` at once, the handler not called.

use phalanx_core::{ConfigError, Deps};
use tower_layer::Layer;

use crate::{
    breaker::{BreakerSnapshot, CircuitBreaker},
    builder::CircuitBreakerLayerBuilder,
    config::BreakerConfig,
    registry::BreakerRegistry,
    service::CircuitBreakerService,
};

/// Puts a circuit breaker in front of a service: one per matched route template (the
/// default), or one named breaker for every request.
///
/// A response's status is judged by the breaker's rule (5xx fails, 4xx does not, by default);
/// an error from the inner service is a failure; a call dropped before its response headers
/// counts as [`BreakerConfig::cancelled`] says. The call's duration ends at the response
/// headers.
///
/// Build it with [`CircuitBreakerLayer::builder`] or [`CircuitBreakerLayer::from_config`]; to
/// share the breakers with other users (the reqwest middleware, a health check), build a
/// [`BreakerRegistry`] and use [`CircuitBreakerLayer::per_route`]. The layer is the `breakers`
/// section of `/status` ([`phalanx_core::StatusSource`]): `status.register(layer.clone())`.
///
/// ```
/// use std::time::Duration;
/// use axum::{http::StatusCode, routing::get, Router};
/// use phalanx_breaker::CircuitBreakerLayer;
///
/// let breakers = CircuitBreakerLayer::builder()
///     .count_window(20)
///     .minimum_number_of_calls(10)
///     .failure_rate_threshold(0.5)
///     .wait_in_open(Duration::from_secs(5))
///     .build()?;
/// let app: Router = Router::new()
///     .route("/orders/{id}", get(|| async { StatusCode::OK }))
///     .route_layer(breakers.clone());
/// let status = phalanx_core::StatusRegistry::new();
/// status.register(breakers);
/// # let _ = app;
/// # Ok::<(), phalanx_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    pub(crate) pick: Pick,
}

/// Which breaker a request goes through.
#[derive(Clone, Debug)]
pub(crate) enum Pick {
    /// Always this one; `registry` is the one it came from, if any (for metrics and status).
    Fixed { breaker: CircuitBreaker, registry: Option<BreakerRegistry> },
    /// The registry's breaker named after the matched route template.
    PerRoute(BreakerRegistry),
}

impl CircuitBreakerLayer {
    /// A builder: the breakers' configuration, a meter, one breaker per route or a single one.
    pub fn builder() -> CircuitBreakerLayerBuilder {
        CircuitBreakerLayerBuilder::default()
    }

    /// A breaker per route template with this configuration (the `[breaker]` section of a
    /// TOML file), recording through the meter of `deps`; fails if `config` is invalid.
    pub fn from_config(config: &BreakerConfig, deps: &Deps) -> Result<Self, ConfigError> {
        Ok(Self::per_route(BreakerRegistry::from_config(config, deps)?))
    }

    /// Every request goes through `breaker` (no metrics: a breaker alone records none; build
    /// with [`CircuitBreakerLayerBuilder::single`] for a named breaker with metrics).
    pub fn new(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer { pick: Pick::Fixed { breaker, registry: None } }
    }

    /// Each request goes through the breaker of `registry` named after its matched route
    /// template (`/items/{id}`). Apply it with `Router::route_layer`, where the template is
    /// known; requests without one share the breaker `unmatched`.
    pub fn per_route(registry: BreakerRegistry) -> Self {
        CircuitBreakerLayer { pick: Pick::PerRoute(registry) }
    }

    pub(crate) fn single_of(registry: BreakerRegistry, name: &str) -> Self {
        let breaker = registry.get_or_create(name);
        CircuitBreakerLayer { pick: Pick::Fixed { breaker, registry: Some(registry) } }
    }

    /// The registry of the layer's breakers, unless it was made from a lone breaker.
    pub fn registry(&self) -> Option<&BreakerRegistry> {
        match &self.pick {
            Pick::Fixed { registry, .. } => registry.as_ref(),
            Pick::PerRoute(registry) => Some(registry),
        }
    }

    /// The snapshots of the layer's breakers, by name.
    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        match &self.pick {
            Pick::Fixed { breaker, .. } => vec![breaker.snapshot()],
            Pick::PerRoute(registry) => registry.snapshots(),
        }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.pick.clone())
    }
}
