//! Configuration: the limit algorithm and the per-class policies, as serde structs with
//! documented defaults (the demo reads them from TOML), and the validation shared by the
//! builder and [`crate::AdmissionLayer::from_config`].
//!
//! Durations are human strings (`"200ms"`, `"1s"`, through [`phalanx_core::duration`]); shares
//! and ratios are fractions (`0.1`, not `10`). Every struct is `#[non_exhaustive]`: start from
//! `Default` (or a constructor) and change it with the `with_*` setters.

use std::time::Duration;

use phalanx_core::{ConfigError, Priority};
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
/// moves once per window of at least `window` and `min_window_samples` samples.
///
/// ```toml
/// algorithm = "gradient2"   # fixed | aimd | gradient2
/// initial = 20              # the limit at start (the limit itself when fixed)
/// min = 1
/// max = 1000
/// window = "200ms"
/// min_window_samples = 20
/// floor_ratio = 0.8         # never below 0.8 × recent peak throughput × lowest latency
/// floor_windows = 50
/// [gradient2]
/// tolerance = 1.5
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitConfig {
    /// The algorithm. Default `gradient2`.
    pub algorithm: Algorithm,
    /// The limit at start; the limit itself when `fixed`. Default 20.
    pub initial: usize,
    /// The adaptive limit never falls below this. Default 1.
    pub min: usize,
    /// The adaptive limit never rises above this. Default 1000.
    pub max: usize,
    /// The shortest sampling window. Default `"200ms"`.
    #[serde(with = "phalanx_core::duration")]
    pub window: Duration,
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
            window: Duration::from_millis(200),
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
            aimd: AimdConfig { latency_threshold, ..Default::default() },
            ..Default::default()
        }
    }

    /// Set the algorithm.
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Set the limit at start (the limit itself when fixed).
    pub fn with_initial(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// Set the lowest adaptive limit.
    pub fn with_min(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// Set the highest adaptive limit.
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// Set the shortest sampling window.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Set the fewest samples a window needs before the limit moves.
    pub fn with_min_window_samples(mut self, samples: u32) -> Self {
        self.min_window_samples = samples;
        self
    }

    /// Set the floor's fraction of the shown concurrency (0 turns the floor off).
    pub fn with_floor_ratio(mut self, ratio: f64) -> Self {
        self.floor_ratio = ratio;
        self
    }

    /// Set how many windows the floor remembers.
    pub fn with_floor_windows(mut self, windows: u32) -> Self {
        self.floor_windows = windows;
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
        let bad = |field: &'static str, reason: String| Err(ConfigError::new(field, reason));
        if self.initial == 0 {
            return bad("limit.initial", "must be at least 1".into());
        }
        if self.algorithm != Algorithm::Fixed {
            if self.min == 0 || self.min > self.max {
                return bad(
                    "limit.min",
                    format!("bounds must satisfy 1 <= min <= max (min {}, max {})", self.min, self.max),
                );
            }
            if !(self.min..=self.max).contains(&self.initial) {
                return bad(
                    "limit.initial",
                    format!("{} must lie within min {} ..= max {}", self.initial, self.min, self.max),
                );
            }
            if !(0.0..=1.0).contains(&self.floor_ratio) {
                return bad("limit.floor_ratio", format!("must be a fraction in 0 ..= 1, got {}", self.floor_ratio));
            }
            if self.window.is_zero() && self.min_window_samples == 0 {
                return bad("limit.window", "window and min_window_samples cannot both be 0".into());
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
///
/// ```toml
/// backoff_ratio = 0.9
/// increase = 1
/// latency_threshold = "100ms"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AimdConfig {
    /// The limit is multiplied by this fraction on a bad window. Default 0.9.
    pub backoff_ratio: f64,
    /// The limit grows by this after a good window in which at least half of it was used. Default 1.
    pub increase: f64,
    /// A window whose average latency exceeds this is bad. Default `"100ms"`.
    #[serde(with = "phalanx_core::duration")]
    pub latency_threshold: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig { backoff_ratio: 0.9, increase: 1.0, latency_threshold: Duration::from_millis(100) }
    }
}

impl AimdConfig {
    /// Set the fraction the limit is multiplied by on a bad window.
    pub fn with_backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// Set the growth after a good window.
    pub fn with_increase(mut self, increase: f64) -> Self {
        self.increase = increase;
        self
    }

    /// Set the average latency above which a window is bad.
    pub fn with_latency_threshold(mut self, threshold: Duration) -> Self {
        self.latency_threshold = threshold;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.backoff_ratio > 0.0 && self.backoff_ratio < 1.0) {
            return Err(ConfigError::new(
                "limit.aimd.backoff_ratio",
                format!("must be a fraction in (0, 1), got {}", self.backoff_ratio),
            ));
        }
        if !(self.increase > 0.0 && self.increase.is_finite()) {
            return Err(ConfigError::new("limit.aimd.increase", format!("must be positive, got {}", self.increase)));
        }
        if self.latency_threshold.is_zero() {
            return Err(ConfigError::new("limit.aimd.latency_threshold", "must be positive"));
        }
        Ok(())
    }
}

/// Gradient2 parameters (the defaults are those of Netflix's concurrency-limits).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
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
    /// Set how much the short-term latency may exceed the long-term one (at least 1).
    pub fn with_tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Set how far the limit moves toward its estimate per window, a fraction in (0, 1].
    pub fn with_smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// Set the windows of the long-term latency average.
    pub fn with_long_window(mut self, windows: u32) -> Self {
        self.long_window = windows;
        self
    }

    /// Set the headroom added to the estimate each window.
    pub fn with_queue_size(mut self, queue_size: f64) -> Self {
        self.queue_size = queue_size;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Err(ConfigError::new("limit.gradient2.tolerance", format!("must be >= 1, got {}", self.tolerance)));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err(ConfigError::new(
                "limit.gradient2.smoothing",
                format!("must be a fraction in (0, 1], got {}", self.smoothing),
            ));
        }
        if self.long_window == 0 {
            return Err(ConfigError::new("limit.gradient2.long_window", "must be at least 1"));
        }
        if !(self.queue_size >= 0.0 && self.queue_size.is_finite()) {
            return Err(ConfigError::new(
                "limit.gradient2.queue_size",
                format!("must be >= 0, got {}", self.queue_size),
            ));
        }
        Ok(())
    }
}

/// What one priority class may do. Every field is optional in TOML; missing ones take the
/// class's default (see [`ClassPolicy::default_for`]).
///
/// ```toml
/// share = 0.1              # at most a tenth of the limit in flight
/// max_queue = 50           # at most 50 waiting
/// queue_timeout = "50ms"   # wait at most 50 ms, then 503
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClassOverrides {
    /// The fraction of the limit this class may hold in flight, 0 < share <= 1. Default: the
    /// class's (see [`ClassPolicy::default_for`]).
    pub share: Option<f64>,
    /// How many requests of this class may wait; 0 sheds at once when it cannot be admitted.
    /// Default: the class's.
    pub max_queue: Option<usize>,
    /// How long a request of this class may wait; `"0"` sheds at once. Default: the class's.
    #[serde(with = "phalanx_core::duration::option")]
    pub queue_timeout: Option<Duration>,
}

impl ClassOverrides {
    /// Override the share.
    pub fn with_share(mut self, share: f64) -> Self {
        self.share = Some(share);
        self
    }

    /// Override the queue bound.
    pub fn with_max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = Some(max_queue);
        self
    }

    /// Override the queue deadline.
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = Some(timeout);
        self
    }
}

/// The effective policy of one priority class.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
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

    /// Set the fraction of the limit the class may hold in flight.
    pub fn with_share(mut self, share: f64) -> Self {
        self.share = share;
        self
    }

    /// Set how many requests of the class may wait.
    pub fn with_max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = max_queue;
        self
    }

    /// Set how long a request of the class may wait.
    pub fn with_queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    fn apply(mut self, o: &ClassOverrides) -> Self {
        if let Some(share) = o.share {
            self.share = share;
        }
        if let Some(n) = o.max_queue {
            self.max_queue = n;
        }
        if let Some(timeout) = o.queue_timeout {
            self.queue_timeout = timeout;
        }
        self
    }

    pub(crate) fn validate(&self, priority: Priority) -> Result<(), ConfigError> {
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err(ConfigError::new(
                format!("classes.{priority}.share"),
                format!("must be a fraction in (0, 1], got {}", self.share),
            ));
        }
        Ok(())
    }
}

/// The per-class overrides, one table per class. Default: no overrides (every class keeps
/// [`ClassPolicy::default_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
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
    /// Set the overrides of one class.
    pub fn with_class(mut self, priority: Priority, overrides: ClassOverrides) -> Self {
        *match priority {
            Priority::Critical => &mut self.critical,
            Priority::High => &mut self.high,
            Priority::Normal => &mut self.normal,
            Priority::Low => &mut self.low,
            Priority::Background => &mut self.background,
        } = overrides;
        self
    }

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
/// retry_after = "1s"
///
/// [limit]
/// algorithm = "gradient2"
/// initial = 50
/// min = 5
/// max = 500
///
/// [classes.background]
/// share = 0.1
/// queue_timeout = "20ms"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AdmissionConfig {
    /// Names the limiter in metrics (`limiter` attribute) and `/status`. Default `"default"`.
    pub name: String,
    /// The `Retry-After` of shed answers (rounded up to whole seconds). Default `"1s"`.
    #[serde(with = "phalanx_core::duration")]
    pub retry_after: Duration,
    /// The most requests waiting over all classes together; when full, a request evicts the
    /// newest waiter of a lower class or is shed. Default 0: only the per-class bounds apply.
    pub max_queued_total: usize,
    /// The concurrency limit. Default [`LimitConfig::default`] (Gradient2 from 20 in 1..=1000).
    pub limit: LimitConfig,
    /// The per-class policies. Default: [`ClassPolicy::default_for`] each class.
    pub classes: ClassesConfig,
}

impl AdmissionConfig {
    /// Set the limiter's name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Set the `Retry-After` of shed answers.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Set the bound over all classes' queues (0: none).
    pub fn with_max_queued_total(mut self, max: usize) -> Self {
        self.max_queued_total = max;
        self
    }

    /// Set the concurrency limit.
    pub fn with_limit(mut self, limit: LimitConfig) -> Self {
        self.limit = limit;
        self
    }

    /// Set the per-class overrides.
    pub fn with_classes(mut self, classes: ClassesConfig) -> Self {
        self.classes = classes;
        self
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            name: "default".into(),
            retry_after: Duration::from_secs(1),
            max_queued_total: 0,
            limit: LimitConfig::default(),
            classes: ClassesConfig::default(),
        }
    }
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
            latency_threshold = "40ms"
            [classes.background]
            share = 0.2
            [classes.low]
            queue_timeout = "0"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.name, "api");
        assert_eq!(cfg.limit.algorithm, Algorithm::Aimd);
        assert_eq!(cfg.limit.aimd.latency_threshold, Duration::from_millis(40));
        assert_eq!(cfg.retry_after, Duration::from_secs(1));
        assert_eq!(cfg.limit.aimd.backoff_ratio, 0.9);
        let policies = cfg.classes.policies();
        let bg = policies[Priority::Background.index()];
        assert_eq!(bg.share, 0.2);
        assert_eq!(bg.max_queue, 50);
        assert_eq!(bg.queue_timeout, Duration::from_millis(50));
        assert_eq!(policies[Priority::Low.index()].queue_timeout, Duration::ZERO);
        assert_eq!(policies[Priority::Critical.index()], ClassPolicy::default_for(Priority::Critical));
        assert!(cfg.limit.validate().is_ok());
    }

    #[test]
    fn invalid_values_are_named_in_the_error() {
        let err = LimitConfig::gradient2(50, 60, 100).validate().unwrap_err();
        assert_eq!(err.field(), "limit.initial");
        assert!(err.to_string().contains("50 must lie within"), "{err}");
        let err = ClassPolicy::default_for(Priority::Low).with_share(1.5).validate(Priority::Low).unwrap_err();
        assert_eq!(err.field(), "classes.low.share");
        let err = LimitConfig::aimd(10, 1, 20, Duration::ZERO).validate().unwrap_err();
        assert_eq!(err.field(), "limit.aimd.latency_threshold");
        assert!(toml::from_str::<AdmissionConfig>("limits = 3").is_err());
        assert!(toml::from_str::<AdmissionConfig>("retry_after = 1000").is_err(), "a bare number has no unit");
        assert!(toml::from_str::<AdmissionConfig>("retry_after_ms = 1000").is_err(), "the old name is refused");
    }
}
