//! Breaker configuration: plain data, read from TOML or made with the `with_*` setters, checked
//! when a breaker, registry or layer is built. The fields follow Resilience4j's
//! `CircuitBreakerConfig`, with durations as `Duration`s (`"250ms"`, `"60s"` in TOML) and rates
//! as fractions.

use std::{fmt, time::Duration};

use http::StatusCode;
pub use phalanx_core::ConfigError;
use serde::Deserialize;

/// Configuration of one circuit breaker (the default of a [`crate::BreakerRegistry`], or of
/// one of its named breakers).
///
/// Every field has a default (Resilience4j's where it has one), so a TOML section names only
/// what it changes:
///
/// ```toml
/// failure_rate_threshold = 0.5         # a fraction in (0, 1], inclusive
/// slow_call_rate_threshold = 1.0       # a fraction in (0, 1], inclusive
/// slow_call_duration = "2s"
/// sliding_window = { count = 100 }     # the last 100 calls; or { time = "10s" }
/// minimum_number_of_calls = 20
/// permitted_calls_in_half_open = 5
/// max_wait_in_half_open = "30s"        # absent (the default): wait for every probe
/// wait_in_open = "5s"
/// backoff = { kind = "exponential", multiplier = 2.0, max_wait = "1m", jitter = 0.5 }
/// failure_statuses = ["5xx"]
/// ignored_statuses = []
/// cancelled = "failure"
/// ```
///
/// In code, start from [`BreakerConfig::default`] and use the `with_*` setters; invalid values
/// are refused by [`BreakerConfig::validate`], which every constructor calls, with a
/// [`ConfigError`] naming the field.
///
/// ```
/// use std::time::Duration;
/// use phalanx_breaker::BreakerConfig;
///
/// let config = BreakerConfig::default()
///     .with_count_window(20)
///     .with_minimum_number_of_calls(10)
///     .with_failure_rate_threshold(0.5)
///     .with_wait_in_open(Duration::from_secs(5));
/// config.validate().unwrap();
/// let err = config.with_failure_rate_threshold(50.0).validate().unwrap_err();
/// assert_eq!(err.field(), "failure_rate_threshold");
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Failure rate, a fraction in (0, 1], at or above which the breaker opens. Default 0.5.
    pub failure_rate_threshold: f64,
    /// Slow-call rate, a fraction in (0, 1], at or above which the breaker opens. Default 1.0.
    pub slow_call_rate_threshold: f64,
    /// A call taking longer than this is slow. Default 60 s.
    #[serde(with = "phalanx_core::duration")]
    pub slow_call_duration: Duration,
    /// The sliding window the rates are judged over: the last N calls, or the calls of the
    /// last N seconds. Default the last 100 calls.
    pub sliding_window: SlidingWindow,
    /// Calls the window must hold before the rates are judged. Default 100. (In a count-based
    /// window it is capped at the window size, as in Resilience4j.)
    pub minimum_number_of_calls: u32,
    /// Probe calls admitted in half-open; their outcome closes or reopens the breaker. Default 10.
    pub permitted_calls_in_half_open: u32,
    /// The longest the breaker stays half-open with every probe taken before it reopens (the
    /// probes hung). `None`, the default, waits for the probes however long they take.
    #[serde(with = "phalanx_core::duration::option")]
    pub max_wait_in_half_open: Option<Duration>,
    /// How long the breaker stays open before it lets probes through (the first time, for an
    /// exponential backoff). Default 60 s.
    #[serde(with = "phalanx_core::duration")]
    pub wait_in_open: Duration,
    /// How the wait in open grows when probes keep failing. Default constant.
    pub backoff: Backoff,
    /// Response statuses recorded as failures. Default `["5xx"]`.
    pub failure_statuses: StatusSet,
    /// Response statuses recorded as neither success nor failure. Default none.
    pub ignored_statuses: StatusSet,
    /// What a call counts as when it is dropped before it finished (an outer timeout or a
    /// client that went away). Default failure: in a stack where a timeout layer sits outside
    /// the breaker, that is how timeouts are seen.
    pub cancelled: CancelledAs,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: Duration::from_secs(60),
            sliding_window: SlidingWindow::Count(100),
            minimum_number_of_calls: 100,
            permitted_calls_in_half_open: 10,
            max_wait_in_half_open: None,
            wait_in_open: Duration::from_secs(60),
            backoff: Backoff::Constant,
            failure_statuses: StatusSet::server_errors(),
            ignored_statuses: StatusSet::empty(),
            cancelled: CancelledAs::Failure,
        }
    }
}

macro_rules! with_setters {
    ($($(#[$doc:meta])* $setter:ident => $field:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $setter(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}

impl BreakerConfig {
    with_setters! {
        /// Set [`BreakerConfig::failure_rate_threshold`] (a fraction in (0, 1]).
        with_failure_rate_threshold => failure_rate_threshold: f64;
        /// Set [`BreakerConfig::slow_call_rate_threshold`] (a fraction in (0, 1]).
        with_slow_call_rate_threshold => slow_call_rate_threshold: f64;
        /// Set [`BreakerConfig::slow_call_duration`].
        with_slow_call_duration => slow_call_duration: Duration;
        /// Set [`BreakerConfig::sliding_window`].
        with_sliding_window => sliding_window: SlidingWindow;
        /// Set [`BreakerConfig::minimum_number_of_calls`].
        with_minimum_number_of_calls => minimum_number_of_calls: u32;
        /// Set [`BreakerConfig::permitted_calls_in_half_open`].
        with_permitted_calls_in_half_open => permitted_calls_in_half_open: u32;
        /// Set [`BreakerConfig::max_wait_in_half_open`] (`None`: wait for the probes however long).
        with_max_wait_in_half_open => max_wait_in_half_open: Option<Duration>;
        /// Set [`BreakerConfig::wait_in_open`].
        with_wait_in_open => wait_in_open: Duration;
        /// Set [`BreakerConfig::backoff`].
        with_backoff => backoff: Backoff;
        /// Set [`BreakerConfig::failure_statuses`].
        with_failure_statuses => failure_statuses: StatusSet;
        /// Set [`BreakerConfig::ignored_statuses`].
        with_ignored_statuses => ignored_statuses: StatusSet;
        /// Set [`BreakerConfig::cancelled`].
        with_cancelled => cancelled: CancelledAs;
    }

    /// A count-based window over the last `calls` calls.
    pub fn with_count_window(self, calls: u32) -> Self {
        self.with_sliding_window(SlidingWindow::Count(calls))
    }

    /// A time-based window over the calls of the last `window` (whole seconds, one bucket per
    /// second).
    pub fn with_time_window(self, window: Duration) -> Self {
        self.with_sliding_window(SlidingWindow::Time(window))
    }

    /// Check every field; the error names the field and says what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fraction = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::new(name, format!("must be a fraction in (0, 1], got {v}")))
            }
        };
        fraction("failure_rate_threshold", self.failure_rate_threshold)?;
        fraction("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.slow_call_duration.is_zero() {
            return Err(ConfigError::new("slow_call_duration", "must be greater than zero"));
        }
        match self.sliding_window {
            SlidingWindow::Count(0) => {
                return Err(ConfigError::new("sliding_window", "a count-based window must hold at least 1 call"))
            }
            SlidingWindow::Count(calls) if calls > MAX_WINDOW_CALLS => {
                return Err(ConfigError::new(
                    "sliding_window",
                    format!("a count-based window holds at most {MAX_WINDOW_CALLS} calls, got {calls}"),
                ))
            }
            SlidingWindow::Time(window)
                if window < Duration::from_secs(1) || window > MAX_TIME_WINDOW || window.subsec_nanos() != 0 =>
            {
                return Err(ConfigError::new(
                    "sliding_window",
                    format!(
                        "a time-based window must be whole seconds from 1s to {}, got {}",
                        phalanx_core::duration::format(MAX_TIME_WINDOW),
                        phalanx_core::duration::format(window)
                    ),
                ))
            }
            _ => {}
        }
        if self.minimum_number_of_calls == 0 {
            return Err(ConfigError::new("minimum_number_of_calls", "must be at least 1"));
        }
        if self.permitted_calls_in_half_open == 0 || self.permitted_calls_in_half_open > MAX_PROBES {
            return Err(ConfigError::new(
                "permitted_calls_in_half_open",
                format!("must be in 1..={MAX_PROBES}, got {}", self.permitted_calls_in_half_open),
            ));
        }
        if self.max_wait_in_half_open.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "max_wait_in_half_open",
                "must be greater than zero (leave it out to wait for the probes however long)",
            ));
        }
        if self.wait_in_open.is_zero() {
            return Err(ConfigError::new("wait_in_open", "must be greater than zero"));
        }
        if let Backoff::Exponential { multiplier, max_wait, jitter } = self.backoff {
            if !(multiplier.is_finite() && multiplier >= 1.0) {
                return Err(ConfigError::new("backoff.multiplier", format!("must be at least 1, got {multiplier}")));
            }
            if max_wait < self.wait_in_open {
                return Err(ConfigError::new(
                    "backoff.max_wait",
                    format!(
                        "must be at least wait_in_open ({}), got {}",
                        phalanx_core::duration::format(self.wait_in_open),
                        phalanx_core::duration::format(max_wait)
                    ),
                ));
            }
            if !(0.0..1.0).contains(&jitter) {
                return Err(ConfigError::new("backoff.jitter", format!("must be a fraction in [0, 1), got {jitter}")));
            }
        }
        Ok(())
    }

    /// The outcome of a call that answered with this status.
    pub fn classify_status(&self, status: StatusCode) -> CallOutcome {
        if self.ignored_statuses.contains(status) {
            CallOutcome::Ignored
        } else if self.failure_statuses.contains(status) {
            CallOutcome::Failure
        } else {
            CallOutcome::Success
        }
    }

    /// The minimum number of calls in effect: capped at the size of a count-based window.
    pub(crate) fn effective_minimum_calls(&self) -> u32 {
        match self.sliding_window {
            SlidingWindow::Count(calls) => self.minimum_number_of_calls.min(calls),
            SlidingWindow::Time(_) => self.minimum_number_of_calls,
        }
    }

    /// The wait in open after `consecutive_opens` earlier opens without a close in between,
    /// `unit` a uniform sample in [0, 1) for the jitter.
    pub(crate) fn open_wait(&self, consecutive_opens: u32, unit: f64) -> Duration {
        match self.backoff {
            Backoff::Constant => self.wait_in_open,
            Backoff::Exponential { multiplier, max_wait, jitter } => {
                let base = self.wait_in_open.as_secs_f64() * multiplier.powi(consecutive_opens.min(1024) as i32);
                let capped = base.min(max_wait.as_secs_f64());
                // Jitter spreads the probes of many instances that opened together.
                let factor = 1.0 - jitter + 2.0 * jitter * unit;
                Duration::from_secs_f64((capped * factor).max(0.001))
            }
        }
    }
}

/// The largest count-based window, in calls.
pub const MAX_WINDOW_CALLS: u32 = 1_000_000;

/// The longest time-based window (one bucket per second).
pub const MAX_TIME_WINDOW: Duration = Duration::from_secs(3600);

/// The sliding window a breaker judges its rates over.
///
/// In TOML: `sliding_window = { count = 100 }` or `sliding_window = { time = "10s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last N calls.
    Count(u32),
    /// The calls that ended within this long (whole seconds, at most an hour), in one-second
    /// buckets.
    Time(#[serde(with = "phalanx_core::duration")] Duration),
}

impl Default for SlidingWindow {
    fn default() -> Self {
        SlidingWindow::Count(100)
    }
}

/// The largest number of half-open probes (the probe count shares a word with the state).
pub const MAX_PROBES: u32 = (1 << 24) - 1;

/// How the wait in open grows while the breaker keeps reopening.
///
/// In TOML: `backoff = { kind = "constant" }` (the default) or
/// `backoff = { kind = "exponential", multiplier = 2.0, max_wait = "5m", jitter = 0.5 }`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Backoff {
    /// Always [`BreakerConfig::wait_in_open`].
    #[default]
    Constant,
    /// `wait_in_open × multiplier^k` after k reopenings without a close, capped at `max_wait`,
    /// then spread by ± `jitter` (a fraction: 0.5 means anywhere from half to 1.5 times).
    Exponential {
        /// Growth per reopening (≥ 1). Default 2.
        #[serde(default = "default_multiplier")]
        multiplier: f64,
        /// The longest wait before jitter. Default 5 minutes.
        #[serde(default = "default_max_wait", with = "phalanx_core::duration")]
        max_wait: Duration,
        /// Spread as a fraction in [0, 1). Default 0.5.
        #[serde(default = "default_jitter")]
        jitter: f64,
    },
}

impl Backoff {
    /// Exponential backoff with the defaults: ×2 per reopening, at most 5 minutes, ±50 % jitter.
    pub fn exponential() -> Self {
        Backoff::Exponential {
            multiplier: default_multiplier(),
            max_wait: default_max_wait(),
            jitter: default_jitter(),
        }
    }
}

fn default_multiplier() -> f64 {
    2.0
}
fn default_max_wait() -> Duration {
    Duration::from_secs(300)
}
fn default_jitter() -> f64 {
    0.5
}

/// What a call dropped before it finished counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelledAs {
    /// A failure (and slow if it ran long enough).
    #[default]
    Failure,
    /// Not recorded; in half-open its probe slot goes to the next caller.
    Ignored,
}

/// How a finished call is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// Counted as a success (slow if it took longer than the slow-call duration).
    Success,
    /// Counted as a failure (slow if it took longer than the slow-call duration).
    Failure,
    /// Not counted in the rates; in half-open the probe slot is given back.
    Ignored,
}

/// A set of HTTP status codes, written in configuration as `"5xx"`, `"429"` or `"500-504"`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StatusSet {
    bits: [u64; 10],
}

impl StatusSet {
    /// No status.
    pub const fn empty() -> Self {
        StatusSet { bits: [0; 10] }
    }

    /// 500 to 599.
    pub fn server_errors() -> Self {
        Self::empty().with_range(500, 599)
    }

    /// This set plus the statuses `from..=to` (clamped to 100..=639).
    pub fn with_range(mut self, from: u16, to: u16) -> Self {
        for code in from.max(100)..=to.min(639) {
            let i = (code - 100) as usize;
            self.bits[i / 64] |= 1 << (i % 64);
        }
        self
    }

    /// This set plus one status.
    pub fn with(self, status: StatusCode) -> Self {
        self.with_range(status.as_u16(), status.as_u16())
    }

    /// Whether the set holds this status.
    pub fn contains(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        if !(100..640).contains(&code) {
            return false;
        }
        let i = (code - 100) as usize;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// Parse entries such as `"5xx"`, `"429"`, `"500-504"`.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, ConfigError> {
        let mut set = StatusSet::empty();
        for entry in entries {
            let e = entry.trim();
            let bad = || {
                ConfigError::new(
                    "statuses",
                    format!("bad status entry {entry:?}: expected \"5xx\", \"429\" or \"500-504\""),
                )
            };
            let code = |s: &str| s.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c)).ok_or_else(bad);
            if let Some(class) = e.strip_suffix("xx").or_else(|| e.strip_suffix("XX")) {
                let digit: u16 = class.parse().ok().filter(|d| (1..=5).contains(d)).ok_or_else(bad)?;
                set = set.with_range(digit * 100, digit * 100 + 99);
            } else if let Some((from, to)) = e.split_once('-') {
                let (from, to) = (code(from)?, code(to)?);
                if from > to {
                    return Err(bad());
                }
                set = set.with_range(from, to);
            } else {
                let c = code(e)?;
                set = set.with_range(c, c);
            }
        }
        Ok(set)
    }
}

impl Default for StatusSet {
    fn default() -> Self {
        Self::empty()
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes: Vec<u16> = (100..640).filter(|&c| StatusCode::from_u16(c).is_ok_and(|s| self.contains(s))).collect();
        f.debug_tuple("StatusSet").field(&codes).finish()
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries: Vec<String> = Vec::deserialize(d)?;
        StatusSet::parse(entries.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_section_overrides_only_what_it_names() {
        let cfg: BreakerConfig = toml::from_str(
            r#"
            failure_rate_threshold = 0.25
            slow_call_duration = "250ms"
            sliding_window = { time = "10s" }
            wait_in_open = "1.5s"
            max_wait_in_half_open = "30s"
            backoff = { kind = "exponential", max_wait = "1m" }
            failure_statuses = ["5xx", "429"]
            ignored_statuses = ["501-502"]
            cancelled = "ignored"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.failure_rate_threshold, 0.25);
        assert_eq!(cfg.slow_call_rate_threshold, 1.0);
        assert_eq!(cfg.slow_call_duration, Duration::from_millis(250));
        assert_eq!(cfg.sliding_window, SlidingWindow::Time(Duration::from_secs(10)));
        assert_eq!(cfg.wait_in_open, Duration::from_millis(1500));
        assert_eq!(cfg.max_wait_in_half_open, Some(Duration::from_secs(30)));
        assert_eq!(
            cfg.backoff,
            Backoff::Exponential { multiplier: 2.0, max_wait: Duration::from_secs(60), jitter: 0.5 }
        );
        assert_eq!(cfg.classify_status(StatusCode::TOO_MANY_REQUESTS), CallOutcome::Failure);
        assert_eq!(cfg.classify_status(StatusCode::BAD_GATEWAY), CallOutcome::Ignored);
        assert_eq!(cfg.classify_status(StatusCode::NOT_FOUND), CallOutcome::Success);
        assert_eq!(cfg.cancelled, CancelledAs::Ignored);
        cfg.validate().unwrap();

        let cfg: BreakerConfig = toml::from_str("sliding_window = { count = 20 }").unwrap();
        assert_eq!(cfg.sliding_window, SlidingWindow::Count(20));
        assert_eq!(cfg.max_wait_in_half_open, None);
        assert_eq!(cfg, BreakerConfig::default().with_count_window(20));
    }

    #[test]
    fn default_rule_fails_5xx_and_passes_4xx() {
        let cfg = BreakerConfig::default();
        assert_eq!(cfg.classify_status(StatusCode::INTERNAL_SERVER_ERROR), CallOutcome::Failure);
        assert_eq!(cfg.classify_status(StatusCode::GATEWAY_TIMEOUT), CallOutcome::Failure);
        assert_eq!(cfg.classify_status(StatusCode::BAD_REQUEST), CallOutcome::Success);
        assert_eq!(cfg.classify_status(StatusCode::OK), CallOutcome::Success);
    }

    #[test]
    fn invalid_values_are_refused_with_the_field_named() {
        let field = |cfg: BreakerConfig| cfg.validate().unwrap_err().field().to_owned();
        let d = BreakerConfig::default;
        assert_eq!(field(d().with_failure_rate_threshold(0.0)), "failure_rate_threshold");
        // A percentage where a fraction belongs.
        assert_eq!(field(d().with_failure_rate_threshold(50.0)), "failure_rate_threshold");
        assert_eq!(field(d().with_slow_call_rate_threshold(1.5)), "slow_call_rate_threshold");
        assert_eq!(field(d().with_slow_call_duration(Duration::ZERO)), "slow_call_duration");
        assert_eq!(field(d().with_count_window(0)), "sliding_window");
        assert_eq!(field(d().with_time_window(Duration::ZERO)), "sliding_window");
        assert_eq!(field(d().with_time_window(Duration::from_millis(1500))), "sliding_window");
        assert_eq!(field(d().with_time_window(Duration::from_secs(7200))), "sliding_window");
        assert_eq!(field(d().with_minimum_number_of_calls(0)), "minimum_number_of_calls");
        assert_eq!(field(d().with_permitted_calls_in_half_open(0)), "permitted_calls_in_half_open");
        assert_eq!(field(d().with_max_wait_in_half_open(Some(Duration::ZERO))), "max_wait_in_half_open");
        assert_eq!(field(d().with_wait_in_open(Duration::ZERO)), "wait_in_open");
        let exp = |multiplier, max_wait, jitter| Backoff::Exponential { multiplier, max_wait, jitter };
        assert_eq!(field(d().with_backoff(exp(0.5, Duration::from_secs(600), 0.0))), "backoff.multiplier");
        assert_eq!(field(d().with_backoff(exp(2.0, Duration::from_secs(1), 0.0))), "backoff.max_wait");
        assert_eq!(field(d().with_backoff(exp(2.0, Duration::from_secs(600), 1.0))), "backoff.jitter");
        assert!(toml::from_str::<BreakerConfig>("failure_statuses = [\"6xx\"]").is_err());
        assert!(toml::from_str::<BreakerConfig>("slow_call_duration = \"fast\"").is_err());
        // A bare number is refused: seconds or milliseconds?
        assert!(toml::from_str::<BreakerConfig>("wait_in_open = 1500").is_err());
        assert!(toml::from_str::<BreakerConfig>("no_such_field = 1").is_err());
        // The old names are refused, not silently ignored.
        assert!(toml::from_str::<BreakerConfig>("sliding_window_size = 10").is_err());
    }

    #[test]
    fn exponential_wait_grows_caps_and_jitters_within_bounds() {
        let cfg = BreakerConfig::default()
            .with_wait_in_open(Duration::from_secs(1))
            .with_backoff(Backoff::Exponential { multiplier: 2.0, max_wait: Duration::from_secs(10), jitter: 0.5 });
        assert_eq!(cfg.open_wait(0, 0.5), Duration::from_secs(1));
        assert_eq!(cfg.open_wait(3, 0.5), Duration::from_secs(8));
        assert_eq!(cfg.open_wait(10, 0.5), Duration::from_secs(10));
        assert_eq!(cfg.open_wait(2, 0.0), Duration::from_secs(2));
        assert_eq!(cfg.open_wait(2, 1.0), Duration::from_secs(6));
    }
}
