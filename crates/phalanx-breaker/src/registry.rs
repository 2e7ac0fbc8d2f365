//! Named breakers: one per route template, dependency or upstream host, made on first use.

use std::{collections::HashMap, fmt, sync::Arc};

use opentelemetry::{metrics::Meter, KeyValue};
use parking_lot::RwLock;
use phalanx_core::{
    names::{self, attr},
    StatusSource, TargetCheck,
};

use crate::{
    breaker::{BreakerSnapshot, CircuitBreaker, Listener, OutcomeLabel, StateTransition},
    config::{BreakerConfig, ConfigError},
};

/// A registry of named circuit breakers sharing a default configuration, with per-name
/// overrides. Cheap to clone; clones share the breakers.
///
/// Names must come from a bounded set (route templates, upstream `host:port`), never raw
/// paths: each name is a breaker for the life of the registry and a metrics series.
///
/// It records `phalanx.breaker.state{breaker}` and `phalanx.breaker.calls{breaker,outcome}`
/// as observable instruments read at collection time, so a call costs no metrics work, and
/// it is the `breakers` section of `/status` ([`StatusSource`]).
#[derive(Clone)]
pub struct BreakerRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    default: BreakerConfig,
    overrides: HashMap<String, BreakerConfig>,
    breakers: RwLock<HashMap<Arc<str>, CircuitBreaker, foldhash::quality::RandomState>>,
    listeners: Vec<Listener>,
    /// Keeps the observable instruments registered while the registry lives.
    _instruments: Option<Instruments>,
}

struct Instruments {
    _state: opentelemetry::metrics::ObservableGauge<u64>,
    _calls: opentelemetry::metrics::ObservableCounter<u64>,
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<Arc<str>> = self.inner.breakers.read().keys().cloned().collect();
        f.debug_struct("BreakerRegistry").field("breakers", &names).finish()
    }
}

impl BreakerRegistry {
    /// A registry whose breakers use `config`, recording through
    /// [`phalanx_core::default_meter`].
    ///
    /// # Panics
    ///
    /// If `config` is invalid (see [`BreakerConfig::validate`]); use
    /// [`BreakerRegistry::builder`] to get the error instead.
    pub fn new(config: BreakerConfig) -> Self {
        match Self::builder(config).build() {
            Ok(registry) => registry,
            Err(err) => panic!("{err}"),
        }
    }

    /// A builder: per-name configuration, a meter, state-change listeners.
    pub fn builder(config: BreakerConfig) -> BreakerRegistryBuilder {
        BreakerRegistryBuilder { default: config, overrides: HashMap::new(), meter: None, listeners: Vec::new() }
    }

    /// The breaker of this name, made with its configuration on first use.
    pub fn get_or_create(&self, name: &str) -> CircuitBreaker {
        if let Some(breaker) = self.inner.breakers.read().get(name) {
            return breaker.clone();
        }
        let mut breakers = self.inner.breakers.write();
        if let Some(breaker) = breakers.get(name) {
            return breaker.clone();
        }
        let config = self.inner.overrides.get(name).unwrap_or(&self.inner.default).clone();
        let breaker =
            CircuitBreaker::new(name, config).expect("configurations are validated when the registry is built");
        for listener in &self.inner.listeners {
            breaker.add_listener(listener.clone());
        }
        breakers.insert(breaker.name_arc().clone(), breaker.clone());
        breaker
    }

    /// The breaker of this name, if it has been made.
    pub fn get(&self, name: &str) -> Option<CircuitBreaker> {
        self.inner.breakers.read().get(name).cloned()
    }

    /// Every breaker made so far, by name.
    pub fn breakers(&self) -> Vec<CircuitBreaker> {
        let mut all: Vec<CircuitBreaker> = self.inner.breakers.read().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Every breaker's snapshot, by name.
    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        self.breakers().iter().map(CircuitBreaker::snapshot).collect()
    }

    /// The default configuration.
    pub fn default_config(&self) -> &BreakerConfig {
        &self.inner.default
    }
}

/// Builds a [`BreakerRegistry`].
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
            .finish_non_exhaustive()
    }
}

impl BreakerRegistryBuilder {
    /// Use `config` for the breaker called `name` (a route template or `host:port`).
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

    /// The registry; fails if any configuration is invalid.
    pub fn build(self) -> Result<BreakerRegistry, ConfigError> {
        self.default.validate()?;
        for (name, config) in &self.overrides {
            config.validate().map_err(|e| ConfigError::new(format!("breaker '{name}': {e}")))?;
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

fn register_instruments(meter: &Meter, registry: std::sync::Weak<RegistryInner>) -> Instruments {
    let for_state = registry.clone();
    let state = meter
        .u64_observable_gauge(names::BREAKER_STATE)
        .with_description("Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled")
        .with_callback(move |observer| {
            let Some(inner) = for_state.upgrade() else { return };
            let breakers: Vec<CircuitBreaker> = inner.breakers.read().values().cloned().collect();
            for breaker in breakers {
                observer
                    .observe(breaker.state().as_gauge(), &[KeyValue::new(attr::BREAKER, breaker.name().to_owned())]);
            }
        })
        .build();
    let calls = meter
        .u64_observable_counter(names::BREAKER_CALLS)
        .with_description("Calls through a circuit breaker by outcome")
        .with_callback(move |observer| {
            let Some(inner) = registry.upgrade() else { return };
            let breakers: Vec<CircuitBreaker> = inner.breakers.read().values().cloned().collect();
            for breaker in breakers {
                let counts = breaker.call_counts();
                for label in OutcomeLabel::ALL {
                    observer.observe(
                        counts.get(label),
                        &[
                            KeyValue::new(attr::BREAKER, breaker.name().to_owned()),
                            KeyValue::new(attr::OUTCOME, label.as_str()),
                        ],
                    );
                }
            }
        })
        .build();
    Instruments { _state: state, _calls: calls }
}

impl StatusSource for BreakerRegistry {
    fn name(&self) -> &str {
        "breakers"
    }

    fn report(&self) -> serde_json::Value {
        let mut report = serde_json::Map::new();
        for snapshot in self.snapshots() {
            let value = serde_json::json!({
                "state": snapshot.state,
                "failure_rate": snapshot.failure_rate,
                "slow_call_rate": snapshot.slow_call_rate,
                "buffered_calls": snapshot.buffered_calls,
                "failed_calls": snapshot.failed_calls,
                "slow_calls": snapshot.slow_calls,
                "retry_after_ms": snapshot.retry_after.map(|d| d.as_millis() as u64),
                "calls": snapshot.calls,
            });
            report.insert(snapshot.name.to_string(), value);
        }
        serde_json::Value::Object(report)
    }

    fn targets(&self) -> Vec<TargetCheck> {
        // A breaker that is not closed is a dependency in trouble: report it as a target missed.
        self.snapshots()
            .into_iter()
            .map(|s| {
                let not_closed = f64::from(u8::from(!matches!(s.state, crate::State::Closed | crate::State::Disabled)));
                TargetCheck::at_most(format!("breaker_open:{}", s.name), Some(not_closed), 0.0)
            })
            .collect()
    }
}
