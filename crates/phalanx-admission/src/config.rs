//! Configuration: the limit algorithm and the per-class policies, as serde structs with
//! documented defaults (the demo reads them from TOML), and the validation shared by the
//! builder and [`crate::AdmissionLayer::from_config`].

use std::{fmt, time::Duration};

use phalanx_core::Priority;
use serde::Deserialize;

/// Which algorithm sets the concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// The limit stays at `initial`.
    Fixed,
    /// Additive increase, multiplicative decrease on a latency threshold or downstream overload.
    Aimd,
    /// Netflix's Gradient2: the ratio of a long-term to the short-term latency steers the limit.
    #[default]
    Gradient2,
}

/// The concurrency limit: fixed or adaptive, with its bounds and sampling window.
///
/// The adaptive algorithms are fed the latency of admitted requests measured from admission
/// to the inner service's response headers (not to the body's end: a slow client draining a
/// large body says nothing about the server's load, while the permit is still held until the
/// body ends so in-flight counts stay true). Samples are aggregated per window: the limit
/// moves once per window of at least `window_ms` and `min_window_samples` samples.
///
/// ```toml
/// algorithm = "gradient2"   # fixed | aimd | gradient2
/// initial = 20              # the limit at start (the limit itself when fixed)
/// min = 1
/// max = 1000
/// window_ms = 200
/// min_window_samples = 20
/// floor_ratio = 0.8         # never below 0.8 × recent peak throughput × lowest latency
/// floor_windows = 50
/// [gradient2]
/// tolerance = 1.5
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// The algorithm. Default `gradient2`.
    pub algorithm: Algorithm,
    /// The limit at start; the limit itself when `fixed`. Default 20.
    pub initial: usize,
    /// The adaptive limit never falls below this. Default 1.
    pub min: usize,
    /// The adaptive limit never rises above this. Default 1000.
    pub max: usize,
    /// The shortest sampling window, milliseconds. Default 200.
    pub window_ms: u64,
    /// The fewest samples a window needs before the limit moves. Default 20.
    pub min_window_samples: u32,
    /// AIMD parameters.
    pub aimd: AimdConfig,
    /// Gradient2 parameters.
    pub gradient2: Gradient2Config,
    /// The adaptive limit never falls below this share of the concurrency the service has
    /// shown it sustains (highest throughput × lowest latency over the last `floor_windows`
    /// windows). 0 turns the floor off. Default 0.8.
    pub floor_ratio: f64,
    /// Windows remembered for the floor. Default 50 (10 s at 200 ms).
    pub floor_windows: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            algorithm: Algorithm::Gradient2,
            initial: 20,
            min: 1,
            max: 1000,
            window_ms: 200,
            min_window_samples: 20,
            aimd: AimdConfig::default(),
            gradient2: Gradient2Config::default(),
            floor_ratio: 0.8,
            floor_windows: 50,
        }
    }
}

impl LimitConfig {
    /// A fixed limit.
    pub fn fixed(limit: usize) -> Self {
        LimitConfig { algorithm: Algorithm::Fixed, initial: limit, min: limit, max: limit, ..Default::default() }
    }

    /// A Gradient2 limit starting at `initial`, bounded by `min..=max`, default parameters.
    pub fn gradient2(initial: usize, min: usize, max: usize) -> Self {
        LimitConfig { algorithm: Algorithm::Gradient2, initial, min, max, ..Default::default() }
    }

    /// An AIMD limit starting at `initial`, bounded by `min..=max`, backing off when a window's
    /// average latency exceeds `latency_threshold`.
    pub fn aimd(initial: usize, min: usize, max: usize, latency_threshold: Duration) -> Self {
        LimitConfig {
            algorithm: Algorithm::Aimd,
            initial,
            min,
            max,
            aimd: AimdConfig { latency_threshold_ms: duration_ms(latency_threshold), ..Default::default() },
            ..Default::default()
        }
    }

    /// Set the sampling window (shortest duration, fewest samples).
    pub fn window(mut self, window: Duration, min_samples: u32) -> Self {
        self.window_ms = duration_ms(window);
        self.min_window_samples = min_samples;
        self
    }

    /// Set the Gradient2 parameters.
    pub fn with_gradient2(mut self, params: Gradient2Config) -> Self {
        self.gradient2 = params;
        self
    }

    /// Set the AIMD parameters.
    pub fn with_aimd(mut self, params: AimdConfig) -> Self {
        self.aimd = params;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError(msg));
        if self.initial == 0 {
            return bad("limit.initial must be at least 1".into());
        }
        if self.algorithm != Algorithm::Fixed {
            if self.min == 0 || self.min > self.max {
                return bad(format!("limit bounds must satisfy 1 <= min <= max (min {}, max {})", self.min, self.max));
            }
            if !(self.min..=self.max).contains(&self.initial) {
                return bad(format!(
                    "limit.initial {} must lie within min {} ..= max {}",
                    self.initial, self.min, self.max
                ));
            }
            if !(0.0..=1.0).contains(&self.floor_ratio) {
                return bad(format!("limit.floor_ratio must lie in 0 ..= 1, got {}", self.floor_ratio));
            }
            if self.window_ms == 0 && self.min_window_samples == 0 {
                return bad("limit.window_ms and limit.min_window_samples cannot both be 0".into());
            }
        }
        match self.algorithm {
            Algorithm::Fixed => Ok(()),
            Algorithm::Aimd => self.aimd.validate(),
            Algorithm::Gradient2 => self.gradient2.validate(),
        }
    }
}

/// AIMD parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AimdConfig {
    /// The limit is multiplied by this on a bad window. Default 0.9.
    pub backoff_ratio: f64,
    /// The limit grows by this after a good window in which at least half of it was used. Default 1.
    pub increase: f64,
    /// A window whose average latency exceeds this is bad, milliseconds. Default 100.
    pub latency_threshold_ms: u64,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig { backoff_ratio: 0.9, increase: 1.0, latency_threshold_ms: 100 }
    }
}

impl AimdConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.backoff_ratio > 0.0 && self.backoff_ratio < 1.0) {
            return Err(ConfigError(format!("aimd.backoff_ratio must lie in (0, 1), got {}", self.backoff_ratio)));
        }
        if !(self.increase > 0.0 && self.increase.is_finite()) {
            return Err(ConfigError(format!("aimd.increase must be positive, got {}", self.increase)));
        }
        if self.latency_threshold_ms == 0 {
            return Err(ConfigError("aimd.latency_threshold_ms must be positive".into()));
        }
        Ok(())
    }
}

/// Gradient2 parameters (the defaults are those of Netflix's concurrency-limits).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gradient2Config {
    /// How much the short-term latency may exceed the long-term one before the limit shrinks.
    /// Default 1.5. Lower values hold latency closer to the unloaded one at some cost in
    /// throughput.
    pub tolerance: f64,
    /// How far the limit moves toward its new estimate per window, 0..=1. Default 0.2.
    pub smoothing: f64,
    /// The long-term latency is an exponential average over this many windows. Default 600.
    pub long_window: u32,
    /// The headroom added to the estimate each window. Default 4.
    pub queue_size: f64,
}

impl Default for Gradient2Config {
    fn default() -> Self {
        Gradient2Config { tolerance: 1.5, smoothing: 0.2, long_window: 600, queue_size: 4.0 }
    }
}

impl Gradient2Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Err(ConfigError(format!("gradient2.tolerance must be >= 1, got {}", self.tolerance)));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError(format!("gradient2.smoothing must lie in (0, 1], got {}", self.smoothing)));
        }
        if self.long_window == 0 {
            return Err(ConfigError("gradient2.long_window must be at least 1".into()));
        }
        if !(self.queue_size >= 0.0 && self.queue_size.is_finite()) {
            return Err(ConfigError(format!("gradient2.queue_size must be >= 0, got {}", self.queue_size)));
        }
        Ok(())
    }
}

/// What one priority class may do. Every field is optional in TOML; missing ones take the
/// class's default (see [`ClassPolicy::default_for`]).
///
/// ```toml
/// share = 0.1            # at most 10 % of the limit in flight
/// max_queue = 50         # at most 50 waiting
/// queue_timeout_ms = 50  # wait at most 50 ms, then 503
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassOverrides {
    /// The fraction of the limit this class may hold in flight, 0 < share <= 1.
    pub share: Option<f64>,
    /// How many requests of this class may wait; 0 sheds at once when it cannot be admitted.
    pub max_queue: Option<usize>,
    /// How long a request of this class may wait, milliseconds; 0 sheds at once.
    pub queue_timeout_ms: Option<u64>,
}

/// The effective policy of one priority class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassPolicy {
    /// The fraction of the limit this class may hold in flight.
    pub share: f64,
    /// How many requests of this class may wait.
    pub max_queue: usize,
    /// How long a request of this class may wait before it is shed.
    pub queue_timeout: Duration,
}

impl ClassPolicy {
    /// The defaults: lower classes get a smaller share, a shorter queue and a shorter wait.
    ///
    /// | class | share | max_queue | queue_timeout |
    /// | --- | --- | --- | --- |
    /// | critical | 1.0 | 1000 | 1 s |
    /// | high | 1.0 | 500 | 500 ms |
    /// | normal | 0.9 | 250 | 250 ms |
    /// | low | 0.5 | 100 | 100 ms |
    /// | background | 0.1 | 50 | 50 ms |
    pub fn default_for(priority: Priority) -> Self {
        let (share, max_queue, ms) = match priority {
            Priority::Critical => (1.0, 1000, 1000),
            Priority::High => (1.0, 500, 500),
            Priority::Normal => (0.9, 250, 250),
            Priority::Low => (0.5, 100, 100),
            Priority::Background => (0.1, 50, 50),
        };
        ClassPolicy { share, max_queue, queue_timeout: Duration::from_millis(ms) }
    }

    fn apply(mut self, o: &ClassOverrides) -> Self {
        if let Some(share) = o.share {
            self.share = share;
        }
        if let Some(n) = o.max_queue {
            self.max_queue = n;
        }
        if let Some(ms) = o.queue_timeout_ms {
            self.queue_timeout = Duration::from_millis(ms);
        }
        self
    }

    pub(crate) fn validate(&self, priority: Priority) -> Result<(), ConfigError> {
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err(ConfigError(format!("classes.{priority}.share must lie in (0, 1], got {}", self.share)));
        }
        Ok(())
    }
}

/// The per-class overrides, one table per class.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassesConfig {
    /// Critical.
    pub critical: ClassOverrides,
    /// High.
    pub high: ClassOverrides,
    /// Normal.
    pub normal: ClassOverrides,
    /// Low.
    pub low: ClassOverrides,
    /// Background.
    pub background: ClassOverrides,
}

impl ClassesConfig {
    /// The effective policies, indexed by [`Priority::index`].
    pub fn policies(&self) -> [ClassPolicy; 5] {
        let overrides = [&self.critical, &self.high, &self.normal, &self.low, &self.background];
        let mut out = [ClassPolicy::default_for(Priority::Critical); 5];
        for p in Priority::ALL {
            out[p.index()] = ClassPolicy::default_for(p).apply(overrides[p.index()]);
        }
        out
    }
}

/// One admission limiter: its name, limit and class policies.
///
/// ```toml
/// name = "api"
/// retry_after_ms = 1000
///
/// [limit]
/// algorithm = "gradient2"
/// initial = 50
/// min = 5
/// max = 500
///
/// [classes.background]
/// share = 0.1
/// queue_timeout_ms = 20
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Names the limiter in metrics (`limiter` attribute) and `/status`. Default `"default"`.
    pub name: String,
    /// The `Retry-After` of shed answers, milliseconds (rounded up to whole seconds). Default 1000.
    pub retry_after_ms: u64,
    /// The most requests waiting over all classes together; when full, a request evicts the
    /// newest waiter of a lower class or is shed. Default 0: only the per-class bounds apply.
    pub max_queued_total: usize,
    /// The concurrency limit.
    pub limit: LimitConfig,
    /// The per-class policies.
    pub classes: ClassesConfig,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            name: "default".into(),
            retry_after_ms: 1000,
            max_queued_total: 0,
            limit: LimitConfig::default(),
            classes: ClassesConfig::default(),
        }
    }
}

/// An invalid admission configuration, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub(crate) String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid admission configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_merge_with_class_defaults() {
        let cfg: AdmissionConfig = toml::from_str(
            r#"
            name = "api"
            [limit]
            algorithm = "aimd"
            initial = 30
            min = 5
            max = 300
            [limit.aimd]
            latency_threshold_ms = 40
            [classes.background]
            share = 0.2
            "#,
        )
        .unwrap();
        assert_eq!(cfg.name, "api");
        assert_eq!(cfg.limit.algorithm, Algorithm::Aimd);
        assert_eq!(cfg.limit.aimd.latency_threshold_ms, 40);
        assert_eq!(cfg.limit.aimd.backoff_ratio, 0.9);
        let policies = cfg.classes.policies();
        let bg = policies[Priority::Background.index()];
        assert_eq!(bg.share, 0.2);
        assert_eq!(bg.max_queue, 50);
        assert_eq!(bg.queue_timeout, Duration::from_millis(50));
        assert_eq!(policies[Priority::Critical.index()], ClassPolicy::default_for(Priority::Critical));
        assert!(cfg.limit.validate().is_ok());
    }

    #[test]
    fn invalid_values_are_named_in_the_error() {
        let err = LimitConfig::gradient2(50, 60, 100).validate().unwrap_err();
        assert!(err.to_string().contains("limit.initial 50"), "{err}");
        let err =
            ClassPolicy { share: 1.5, ..ClassPolicy::default_for(Priority::Low) }.validate(Priority::Low).unwrap_err();
        assert!(err.to_string().contains("classes.low.share"), "{err}");
        assert!(toml::from_str::<AdmissionConfig>("limits = 3").is_err());
    }
}
