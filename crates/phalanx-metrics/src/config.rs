//! [`MetricsConfig`]: the `[metrics]` table, and the [`LatencyTargets`] `/status` judges.

use std::time::Duration;

use phalanx_core::ConfigError;
use serde::Deserialize;

/// The latency targets `/status` judges from the HTTP figures of the recent window (about ten
/// seconds). None by default: with no target configured, no latency check is reported.
///
/// ```toml
/// avg = "200ms"   # check `avg_latency_ms < 200`
/// p99 = "500ms"   # check `p99_latency_ms < 500`
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LatencyTargets {
    /// The mean latency must stay below this. Default none (not judged).
    #[serde(with = "phalanx_core::duration::option")]
    pub avg: Option<Duration>,
    /// The 99th percentile latency must stay below this. Default none (not judged).
    #[serde(with = "phalanx_core::duration::option")]
    pub p99: Option<Duration>,
}

impl LatencyTargets {
    /// No targets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Judge the mean latency against this.
    pub fn with_avg(mut self, avg: Duration) -> Self {
        self.avg = Some(avg);
        self
    }

    /// Judge the 99th percentile latency against this.
    pub fn with_p99(mut self, p99: Duration) -> Self {
        self.p99 = Some(p99);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (field, target) in [("targets.avg", self.avg), ("targets.p99", self.p99)] {
            if target.is_some_and(|t| t.is_zero()) {
                return Err(ConfigError::new(field, "must be above 0 (leave it out for no target)"));
            }
        }
        Ok(())
    }
}

/// The configuration of a [`crate::MetricsLayer`] ([`crate::MetricsLayer::from_config`]).
///
/// ```toml
/// max_routes = 4096
/// [targets]
/// avg = "200ms"
/// p99 = "500ms"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Distinct route templates labelled by name; requests of routes beyond it share the label
    /// `_overflow`, so a route table without bound cannot grow the series count. Default 4096.
    pub max_routes: usize,
    /// The latency targets `/status` judges. Default none.
    pub targets: LatencyTargets,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { max_routes: 4096, targets: LatencyTargets::default() }
    }
}

impl MetricsConfig {
    /// Set the bound on distinct route labels.
    pub fn with_max_routes(mut self, max_routes: usize) -> Self {
        self.max_routes = max_routes;
        self
    }

    /// Set the latency targets.
    pub fn with_targets(mut self, targets: LatencyTargets) -> Self {
        self.targets = targets;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_routes == 0 {
            return Err(ConfigError::new("max_routes", "must be at least 1"));
        }
        self.targets.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_targets_by_default_and_durations_as_strings() {
        let config = MetricsConfig::default();
        assert_eq!(config.targets, LatencyTargets::default());
        assert_eq!(config.targets.avg, None);
        let config: MetricsConfig = toml::from_str("[targets]\navg = \"200ms\"\np99 = \"0.5s\"").unwrap();
        assert_eq!(config.targets.avg, Some(Duration::from_millis(200)));
        assert_eq!(config.targets.p99, Some(Duration::from_millis(500)));
        assert!(toml::from_str::<MetricsConfig>("[targets]\navg_ms = 200").is_err());
        assert!(toml::from_str::<MetricsConfig>("[targets]\navg = 200").is_err());
        let zero = MetricsConfig::default().with_targets(LatencyTargets::new().with_p99(Duration::ZERO));
        assert_eq!(zero.validate().unwrap_err().field(), "targets.p99");
        assert_eq!(MetricsConfig::default().with_max_routes(0).validate().unwrap_err().field(), "max_routes");
    }
}
