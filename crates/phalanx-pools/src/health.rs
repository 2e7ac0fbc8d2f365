//! Pool health: a background check (`SELECT 1`, `PING`) with a timeout feeds a small state
//! machine shared by every pool kind.
// The checker runs only behind the `db` and `redis` features.
#![cfg_attr(not(any(feature = "db", feature = "redis")), allow(dead_code))]

use std::{
    future::Future,
    sync::{Arc, Weak},
    time::Duration,
};

use parking_lot::Mutex;
use phalanx_core::ConfigError;
use tokio::time::Instant;

/// How healthy a pool is, as judged by its background check and its recent acquisitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Checks pass quickly and acquisitions are not timing out.
    Healthy,
    /// Checks pass but slowly, or acquisitions timed out since the last check (saturation).
    Degraded,
    /// Checks have failed `unhealthy_after` times in a row; requests fail fast.
    Unhealthy,
    /// Checks pass again after being unhealthy, but not yet `recover_after` times in a row.
    Recovering,
}

impl Health {
    /// The gauge value: 0 healthy, 1 degraded, 2 recovering, 3 unhealthy.
    pub fn as_gauge(self) -> i64 {
        match self {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Recovering => 2,
            Health::Unhealthy => 3,
        }
    }

    /// The lowercase name (`healthy`, `degraded`, `unhealthy`, `recovering`).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
            Health::Recovering => "recovering",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The background health check. Serde form (all fields optional):
///
/// ```toml
/// interval = "1s"
/// timeout = "500ms"
/// degraded_latency = "100ms"
/// unhealthy_after = 2
/// recover_after = 2
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Time between two checks. Default: `"1s"`.
    #[serde(with = "phalanx_core::duration")]
    pub interval: Duration,
    /// Deadline of one check. Default: `"500ms"`.
    #[serde(with = "phalanx_core::duration")]
    pub timeout: Duration,
    /// A passing check slower than this marks the pool degraded. Default: `"100ms"`.
    #[serde(with = "phalanx_core::duration")]
    pub degraded_latency: Duration,
    /// Consecutive failed checks before the pool is unhealthy. Default: 2.
    pub unhealthy_after: u32,
    /// Consecutive passing checks before an unhealthy pool is healthy again. Default: 2.
    pub recover_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            degraded_latency: Duration::from_millis(100),
            unhealthy_after: 2,
            recover_after: 2,
        }
    }
}

impl HealthConfig {
    /// The same check every `interval`.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The same check with this deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same check, degraded above this latency.
    pub fn with_degraded_latency(mut self, latency: Duration) -> Self {
        self.degraded_latency = latency;
        self
    }

    /// The same check, unhealthy after `n` failures in a row.
    pub fn with_unhealthy_after(mut self, n: u32) -> Self {
        self.unhealthy_after = n;
        self
    }

    /// The same check, healthy again after `n` passes in a row.
    pub fn with_recover_after(mut self, n: u32) -> Self {
        self.recover_after = n;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::new("health.interval", "must be more than 0"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("health.timeout", "must be more than 0"));
        }
        if self.unhealthy_after == 0 {
            return Err(ConfigError::new("health.unhealthy_after", "must be at least 1"));
        }
        if self.recover_after == 0 {
            return Err(ConfigError::new("health.recover_after", "must be at least 1"));
        }
        Ok(())
    }
}

/// What the last check found, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthSnapshot {
    /// The current state.
    pub state: Health,
    /// Latency of the last passing check, in milliseconds.
    pub last_check_ms: Option<f64>,
    /// The error of the last failing check.
    pub last_error: Option<String>,
    /// Checks run so far.
    pub checks: u64,
    /// Checks failed so far.
    pub failed_checks: u64,
}

#[derive(Debug)]
struct TrackerState {
    state: Health,
    consecutive_failures: u32,
    consecutive_passes: u32,
    pressure_since_check: bool,
    last_latency: Option<Duration>,
    last_error: Option<String>,
    checks: u64,
    failed_checks: u64,
}

/// The state machine behind [`Health`].
#[derive(Debug)]
pub(crate) struct HealthTracker {
    config: HealthConfig,
    inner: Mutex<TrackerState>,
}

impl HealthTracker {
    pub(crate) fn new(config: HealthConfig) -> Self {
        HealthTracker {
            config,
            inner: Mutex::new(TrackerState {
                state: Health::Healthy,
                consecutive_failures: 0,
                consecutive_passes: 0,
                pressure_since_check: false,
                last_latency: None,
                last_error: None,
                checks: 0,
                failed_checks: 0,
            }),
        }
    }

    pub(crate) fn config(&self) -> &HealthConfig {
        &self.config
    }

    pub(crate) fn state(&self) -> Health {
        self.inner.lock().state
    }

    /// An acquisition timed out: the pool is saturated, so it is at best degraded until a
    /// check finds no more pressure.
    pub(crate) fn note_pressure(&self) {
        let mut s = self.inner.lock();
        s.pressure_since_check = true;
        if s.state == Health::Healthy {
            s.state = Health::Degraded;
        }
    }

    /// A request just saw the dependency fail (no connection could be opened, or a connection
    /// broke mid-query): unhealthy now, not after `unhealthy_after` checks, so the requests that
    /// follow fail fast instead of each waiting out the acquire timeout. The background check
    /// brings it back as usual (`Recovering` after its first pass lets acquisitions through).
    pub(crate) fn trip(&self, error: String) {
        let mut s = self.inner.lock();
        s.consecutive_passes = 0;
        s.consecutive_failures = s.consecutive_failures.max(self.config.unhealthy_after);
        s.last_error = Some(error);
        s.state = Health::Unhealthy;
    }

    /// Record one check's outcome (its latency, or why it failed); returns the new state.
    pub(crate) fn record(&self, outcome: Result<Duration, String>) -> Health {
        let mut s = self.inner.lock();
        s.checks += 1;
        match outcome {
            Ok(latency) => {
                s.consecutive_failures = 0;
                s.consecutive_passes = s.consecutive_passes.saturating_add(1);
                s.last_latency = Some(latency);
                let slow = latency > self.config.degraded_latency;
                let pressured = std::mem::take(&mut s.pressure_since_check);
                let was_down = matches!(s.state, Health::Unhealthy | Health::Recovering);
                s.state = if was_down && s.consecutive_passes < self.config.recover_after {
                    Health::Recovering
                } else if slow || pressured {
                    Health::Degraded
                } else {
                    Health::Healthy
                };
            }
            Err(error) => {
                s.failed_checks += 1;
                s.consecutive_passes = 0;
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.last_error = Some(error);
                s.pressure_since_check = false;
                if s.consecutive_failures >= self.config.unhealthy_after {
                    s.state = Health::Unhealthy;
                } else if s.state == Health::Healthy {
                    s.state = Health::Degraded;
                }
            }
        }
        s.state
    }

    pub(crate) fn snapshot(&self) -> HealthSnapshot {
        let s = self.inner.lock();
        HealthSnapshot {
            state: s.state,
            last_check_ms: s.last_latency.map(|d| d.as_secs_f64() * 1000.0),
            last_error: s.last_error.clone(),
            checks: s.checks,
            failed_checks: s.failed_checks,
        }
    }
}

/// Something whose health can be checked in the background.
pub(crate) trait Checked: Send + Sync + 'static {
    fn tracker(&self) -> &HealthTracker;
    fn check(self: Arc<Self>) -> impl Future<Output = Result<(), String>> + Send;
    /// Every connection is handed out, so a check that waits for one proves nothing about the
    /// dependency: it is busy, not gone.
    fn saturated(&self) -> bool {
        false
    }
    /// A count that moves whenever a request gets what the check waits for (a connection): a
    /// check that failed while it moved since the previous check stood in a queue behind live
    /// traffic, which says the dependency is busy, not gone.
    fn progress(&self) -> u64 {
        0
    }
}

/// Run the check every interval until the pool is dropped (the task holds only a `Weak`).
pub(crate) fn spawn_checker<T: Checked>(shared: &Arc<T>) {
    let weak: Weak<T> = Arc::downgrade(shared);
    let interval = shared.tracker().config().interval;
    let timeout = shared.tracker().config().timeout;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut progress_before = weak.upgrade().map_or(0, |shared| shared.progress());
        loop {
            ticks.tick().await;
            let Some(shared) = weak.upgrade() else { return };
            let started = Instant::now();
            let outcome = match tokio::time::timeout(timeout, Arc::clone(&shared).check()).await {
                Ok(Ok(())) => Ok(started.elapsed()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("check timed out after {} ms", timeout.as_millis())),
            };
            let outcome = match outcome {
                Err(_) if shared.saturated() || shared.progress() != progress_before => {
                    shared.tracker().note_pressure();
                    Ok(started.elapsed())
                }
                other => other,
            };
            progress_before = shared.progress();
            let failed = outcome.as_ref().err().cloned();
            let state = shared.tracker().record(outcome);
            if let Some(error) = failed {
                tracing::warn!(%error, %state, "pool health check failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> HealthTracker {
        HealthTracker::new(HealthConfig { unhealthy_after: 2, recover_after: 2, ..HealthConfig::default() })
    }

    #[test]
    fn a_trip_is_unhealthy_at_once_and_the_first_passing_check_lets_requests_through() {
        let t = tracker();
        assert_eq!(t.record(Ok(Duration::from_millis(1))), Health::Healthy);
        t.trip("connection refused".into());
        assert_eq!(t.state(), Health::Unhealthy);
        assert_eq!(t.snapshot().last_error.as_deref(), Some("connection refused"));
        // A failing check keeps it down; passes bring it back in the usual steps.
        assert_eq!(t.record(Err("refused".into())), Health::Unhealthy);
        assert_eq!(t.record(Ok(Duration::from_millis(1))), Health::Recovering);
        assert_eq!(t.record(Ok(Duration::from_millis(1))), Health::Healthy);
    }

    #[test]
    fn failures_make_it_unhealthy_and_passes_recover_it_in_steps() {
        let t = tracker();
        let fast = Ok(Duration::from_millis(1));
        assert_eq!(t.record(fast.clone()), Health::Healthy);
        assert_eq!(t.record(Err("refused".into())), Health::Degraded);
        assert_eq!(t.record(Err("refused".into())), Health::Unhealthy);
        assert_eq!(t.record(fast.clone()), Health::Recovering);
        assert_eq!(t.record(fast.clone()), Health::Healthy);
        let snap = t.snapshot();
        assert_eq!((snap.checks, snap.failed_checks), (5, 2));
        assert_eq!(snap.last_error.as_deref(), Some("refused"));
    }

    #[test]
    fn slow_checks_and_acquire_timeouts_degrade_until_a_clean_check() {
        let t = tracker();
        assert_eq!(t.record(Ok(Duration::from_millis(150))), Health::Degraded);
        assert_eq!(t.record(Ok(Duration::from_millis(1))), Health::Healthy);
        t.note_pressure();
        assert_eq!(t.state(), Health::Degraded);
        assert_eq!(t.record(Ok(Duration::from_millis(1))), Health::Degraded);
        assert_eq!(t.record(Ok(Duration::from_millis(1))), Health::Healthy);
    }
}
