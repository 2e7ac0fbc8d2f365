//! The builders of [`BreakerRegistry`] and [`CircuitBreakerLayer`]: consuming setters for the
//! default configuration, per-name configurations, the meter and state-change listeners;
//! `build()` checks everything and names the field that is wrong.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use opentelemetry::metrics::Meter;
use parking_lot::RwLock;
use phalanx_core::ConfigError;

use crate::{
    breaker::{Listener, StateTransition},
    config::{Backoff, BreakerConfig, CancelledAs, SlidingWindow, StatusSet},
    layer::CircuitBreakerLayer,
    metrics::register_instruments,
    registry::{BreakerRegistry, RegistryInner},
};

/// Setters of the default configuration, one per [`BreakerConfig`] field, generated for both
/// builders (`$apply` sets a field on the builder's default configuration).
macro_rules! config_setters {
    ($apply:ident) => {
        /// The default configuration as a whole, replacing every setting made so far.
        pub fn config(self, config: BreakerConfig) -> Self {
            self.$apply(|c| *c = config)
        }

        /// [`BreakerConfig::failure_rate_threshold`]: a fraction in (0, 1]. Default 0.5.
        pub fn failure_rate_threshold(self, fraction: f64) -> Self {
            self.$apply(|c| c.failure_rate_threshold = fraction)
        }

        /// [`BreakerConfig::slow_call_rate_threshold`]: a fraction in (0, 1]. Default 1.0.
        pub fn slow_call_rate_threshold(self, fraction: f64) -> Self {
            self.$apply(|c| c.slow_call_rate_threshold = fraction)
        }

        /// [`BreakerConfig::slow_call_duration`]. Default 60 s.
        pub fn slow_call_duration(self, duration: Duration) -> Self {
            self.$apply(|c| c.slow_call_duration = duration)
        }

        /// [`BreakerConfig::sliding_window`]. Default the last 100 calls.
        pub fn sliding_window(self, window: SlidingWindow) -> Self {
            self.$apply(|c| c.sliding_window = window)
        }

        /// A count-based window over the last `calls` calls.
        pub fn count_window(self, calls: u32) -> Self {
            self.sliding_window(SlidingWindow::Count(calls))
        }

        /// A time-based window over the calls of the last `window` (whole seconds).
        pub fn time_window(self, window: Duration) -> Self {
            self.sliding_window(SlidingWindow::Time(window))
        }

        /// [`BreakerConfig::minimum_number_of_calls`]. Default 100.
        pub fn minimum_number_of_calls(self, calls: u32) -> Self {
            self.$apply(|c| c.minimum_number_of_calls = calls)
        }

        /// [`BreakerConfig::permitted_calls_in_half_open`]. Default 10.
        pub fn permitted_calls_in_half_open(self, calls: u32) -> Self {
            self.$apply(|c| c.permitted_calls_in_half_open = calls)
        }

        /// [`BreakerConfig::max_wait_in_half_open`]. Default: wait for the probes however long.
        pub fn max_wait_in_half_open(self, max_wait: Duration) -> Self {
            self.$apply(|c| c.max_wait_in_half_open = Some(max_wait))
        }

        /// [`BreakerConfig::wait_in_open`]. Default 60 s.
        pub fn wait_in_open(self, wait: Duration) -> Self {
            self.$apply(|c| c.wait_in_open = wait)
        }

        /// [`BreakerConfig::backoff`]. Default constant.
        pub fn backoff(self, backoff: Backoff) -> Self {
            self.$apply(|c| c.backoff = backoff)
        }

        /// [`BreakerConfig::failure_statuses`]. Default 5xx.
        pub fn failure_statuses(self, statuses: StatusSet) -> Self {
            self.$apply(|c| c.failure_statuses = statuses)
        }

        /// [`BreakerConfig::ignored_statuses`]. Default none.
        pub fn ignored_statuses(self, statuses: StatusSet) -> Self {
            self.$apply(|c| c.ignored_statuses = statuses)
        }

        /// [`BreakerConfig::cancelled`]. Default failure.
        pub fn cancelled(self, cancelled: CancelledAs) -> Self {
            self.$apply(|c| c.cancelled = cancelled)
        }
    };
}

/// Builds a [`BreakerRegistry`]: `BreakerRegistry::builder()…build()?`.
pub struct BreakerRegistryBuilder {
    default: BreakerConfig,
    overrides: HashMap<String, BreakerConfig>,
    meter: Option<Meter>,
    listeners: Vec<Listener>,
}

impl fmt::Debug for BreakerRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerRegistryBuilder")
            .field("default", &self.default)
            .field("overrides", &self.overrides)
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl Default for BreakerRegistryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BreakerRegistryBuilder {
    /// The default configuration, [`phalanx_core::default_meter`], no overrides.
    pub fn new() -> Self {
        BreakerRegistryBuilder {
            default: BreakerConfig::default(),
            overrides: HashMap::new(),
            meter: None,
            listeners: Vec::new(),
        }
    }

    fn apply(mut self, set: impl FnOnce(&mut BreakerConfig)) -> Self {
        set(&mut self.default);
        self
    }

    config_setters!(apply);

    /// Use `config` for the breaker called `name` (a route template, `host:port` or
    /// dependency name) instead of the default.
    pub fn config_for(mut self, name: impl Into<String>, config: BreakerConfig) -> Self {
        self.overrides.insert(name.into(), config);
        self
    }

    /// Record through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Call `listener` on every state change of every breaker of the registry.
    pub fn on_state_change(mut self, listener: impl Fn(&StateTransition) + Send + Sync + 'static) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// The registry; fails if the default or a per-name configuration is invalid (the error's
    /// field is `config_for["name"].field` for the latter).
    pub fn build(self) -> Result<BreakerRegistry, ConfigError> {
        self.default.validate()?;
        for (name, config) in &self.overrides {
            config.validate().map_err(|e| e.in_section(&format!("config_for[{name:?}]")))?;
        }
        let meter = self.meter.unwrap_or_else(phalanx_core::default_meter);
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<RegistryInner>| {
            let instruments = register_instruments(&meter, weak.clone());
            RegistryInner {
                default: self.default,
                overrides: self.overrides,
                breakers: RwLock::new(HashMap::default()),
                listeners: self.listeners,
                _instruments: Some(instruments),
            }
        });
        Ok(BreakerRegistry { inner })
    }
}

/// Builds a [`CircuitBreakerLayer`]: `CircuitBreakerLayer::builder()…build()?`.
///
/// By default the layer keeps one breaker per matched route template; [`single`] puts every
/// request through one named breaker instead.
///
/// [`single`]: CircuitBreakerLayerBuilder::single
#[derive(Debug, Default)]
pub struct CircuitBreakerLayerBuilder {
    registry: BreakerRegistryBuilder,
    single: Option<String>,
}

impl CircuitBreakerLayerBuilder {
    fn apply(mut self, set: impl FnOnce(&mut BreakerConfig)) -> Self {
        self.registry = self.registry.apply(set);
        self
    }

    config_setters!(apply);

    /// Use `config` for the route template (or, with [`single`](Self::single), the breaker)
    /// called `name` instead of the default.
    pub fn config_for(mut self, name: impl Into<String>, config: BreakerConfig) -> Self {
        self.registry = self.registry.config_for(name, config);
        self
    }

    /// Every request goes through one breaker called `name` (a dependency, say), instead of
    /// one per route template.
    pub fn single(mut self, name: impl Into<String>) -> Self {
        self.single = Some(name.into());
        self
    }

    /// Record through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.registry = self.registry.meter(meter);
        self
    }

    /// Call `listener` on every state change of the layer's breakers.
    pub fn on_state_change(mut self, listener: impl Fn(&StateTransition) + Send + Sync + 'static) -> Self {
        self.registry = self.registry.on_state_change(listener);
        self
    }

    /// The layer; fails if a configuration is invalid.
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError> {
        let registry = self.registry.build()?;
        Ok(match self.single {
            Some(name) => CircuitBreakerLayer::single_of(registry, &name),
            None => CircuitBreakerLayer::per_route(registry),
        })
    }
}
