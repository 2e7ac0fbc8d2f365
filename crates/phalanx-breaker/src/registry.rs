//! Named breakers: one per route template, dependency or upstream host, made on first use.

use std::{collections::HashMap, fmt, sync::Arc};

use parking_lot::RwLock;
use phalanx_core::{ConfigError, Deps};

use crate::{
    breaker::{BreakerSnapshot, CircuitBreaker, Listener},
    builder::BreakerRegistryBuilder,
    config::BreakerConfig,
    metrics::Instruments,
};

/// A registry of named circuit breakers sharing a default configuration, with per-name
/// overrides. Cheap to clone; clones share the breakers.
///
/// Names must come from a bounded set (route templates, upstream `host:port`, dependency
/// names), never raw paths: each name is a breaker for the life of the registry and a metrics
/// series.
///
/// It records `phalanx.breaker.state{breaker}` and `phalanx.breaker.calls{breaker,outcome}`
/// as observable instruments read at collection time, so a call costs no metrics work, and
/// it is the `breakers` section of `/status` ([`phalanx_core::StatusSource`]):
/// `status.register(registry.clone())`.
///
/// ```
/// use phalanx_breaker::{BreakerConfig, BreakerRegistry, State};
///
/// // In code:
/// let registry = BreakerRegistry::builder()
///     .count_window(20)
///     .minimum_number_of_calls(10)
///     .config_for("payments", BreakerConfig::default().with_failure_rate_threshold(0.25))
///     .build()?;
/// assert_eq!(registry.get_or_create("payments").state(), State::Closed);
///
/// // From a TOML section:
/// let config: BreakerConfig = toml::from_str(r#"wait_in_open = "5s""#).unwrap();
/// let registry = BreakerRegistry::from_config(&config, &phalanx_core::Deps::new())?;
/// # let _ = registry;
/// # Ok::<(), phalanx_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct BreakerRegistry {
    pub(crate) inner: Arc<RegistryInner>,
}

pub(crate) struct RegistryInner {
    pub(crate) default: BreakerConfig,
    pub(crate) overrides: HashMap<String, BreakerConfig>,
    pub(crate) breakers: RwLock<HashMap<Arc<str>, CircuitBreaker, foldhash::quality::RandomState>>,
    pub(crate) listeners: Vec<Listener>,
    /// Keeps the observable instruments registered while the registry lives.
    pub(crate) _instruments: Option<Instruments>,
}

impl fmt::Debug for BreakerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<Arc<str>> = self.inner.breakers.read().keys().cloned().collect();
        f.debug_struct("BreakerRegistry").field("breakers", &names).finish_non_exhaustive()
    }
}

impl BreakerRegistry {
    /// A builder: the default configuration (field by field or whole), per-name
    /// configurations, a meter, state-change listeners.
    pub fn builder() -> BreakerRegistryBuilder {
        BreakerRegistryBuilder::new()
    }

    /// A registry whose breakers use `config`, recording through the meter of `deps` (or
    /// [`phalanx_core::default_meter`]); fails if `config` is invalid.
    pub fn from_config(config: &BreakerConfig, deps: &Deps) -> Result<Self, ConfigError> {
        Self::builder().config(config.clone()).meter(deps.meter_or_default()).build()
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
        let breaker = CircuitBreaker::from_validated(name, config);
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

    /// The configuration a breaker of this name gets: its own, or the default.
    pub fn config_of(&self, name: &str) -> &BreakerConfig {
        self.inner.overrides.get(name).unwrap_or(&self.inner.default)
    }
}
