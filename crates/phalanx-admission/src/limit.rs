//! The limit algorithms and the sampling window that feeds them.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use crate::config::{AimdConfig, Algorithm, Gradient2Config, LimitConfig};

/// One window's aggregate, handed to the algorithm.
#[derive(Debug, Clone, Copy)]
struct WindowSample {
    /// Average latency of the window's samples, seconds.
    avg_rtt: f64,
    /// The most requests in flight at once during the window.
    max_in_flight: usize,
    /// Whether any sample was a downstream overload (error, 503, 504).
    dropped: bool,
}

/// An exponential moving average that starts as a plain mean over its first samples.
#[derive(Debug, Clone)]
struct ExpAverage {
    window: u32,
    warmup: u32,
    count: u32,
    value: f64,
}

impl ExpAverage {
    fn new(window: u32) -> Self {
        ExpAverage { window, warmup: window.min(10), count: 0, value: 0.0 }
    }

    fn add(&mut self, x: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.value += (x - self.value) / f64::from(self.count);
        } else {
            let factor = 2.0 / (f64::from(self.window) + 1.0);
            self.value = self.value * (1.0 - factor) + x * factor;
        }
        self.value
    }
}

#[derive(Debug)]
enum Rule {
    Fixed,
    Aimd { params: AimdConfig, threshold: f64 },
    Gradient2 { params: Gradient2Config, long_rtt: ExpAverage },
}

impl Rule {
    /// The next limit from the current one and a window.
    fn next(&mut self, limit: f64, w: &WindowSample) -> f64 {
        match self {
            Rule::Fixed => limit,
            Rule::Aimd { params, threshold } => {
                if w.dropped || w.avg_rtt > *threshold {
                    limit * params.backoff_ratio
                } else if w.max_in_flight * 2 >= limit as usize {
                    limit + params.increase
                } else {
                    limit
                }
            }
            Rule::Gradient2 { params, long_rtt } => {
                let short = w.avg_rtt.max(1e-9);
                // The baseline is the unloaded latency: a window slower than the tolerance allows
                // (queueing, or a machine saturated by something else) moves it only as far as
                // the tolerance, so sustained overload cannot drag it up to the loaded latency.
                let seen = match long_rtt.count >= long_rtt.warmup {
                    true => short.min(long_rtt.value * params.tolerance),
                    false => short,
                };
                let long = long_rtt.add(seen);
                // Latency back to normal after a long overload: let the baseline catch up faster
                // than the average alone would.
                if long / short > 2.0 {
                    long_rtt.value *= 0.95;
                }
                // Application-limited: too little traffic to say anything about the limit.
                if (w.max_in_flight as f64) < limit / 2.0 {
                    return limit;
                }
                let gradient = (params.tolerance * long / short).clamp(0.5, 1.0);
                let estimate = limit * gradient + params.queue_size;
                limit * (1.0 - params.smoothing) + estimate * params.smoothing
            }
        }
    }
}

/// The limit, its algorithm and the window of samples not yet applied.
#[derive(Debug)]
pub(crate) struct Limiter {
    rule: Rule,
    min: f64,
    max: f64,
    estimate: f64,
    window_len: Duration,
    min_samples: u32,
    window_start: Instant,
    samples: u32,
    rtt_sum: f64,
    max_in_flight: usize,
    dropped: bool,
    /// Throughput (answers per second) and average latency of the latest windows.
    history: VecDeque<(f64, f64)>,
    floor_windows: usize,
    floor_ratio: f64,
    /// The shrink step waiting to be judged.
    shrink: Option<ShrinkStep>,
    /// The latency at which shrinking proved not to lower the latency, and the windows left:
    /// while the latency stays about there, the limit does not shrink again.
    hold: Option<(f64, u32)>,
}

/// How many windows a hold lasts at most before shrinking is tried again (4 s at 200 ms).
const HOLD_WINDOWS: u32 = 20;

/// One shrink of the limit, judged once its effect can show.
#[derive(Debug)]
struct ShrinkStep {
    from: f64,
    to: f64,
    /// The latency under the old limit, seconds: of the window that shrank it, then of the
    /// window in which the in-flight count fitted under the new limit.
    before: f64,
    /// When the in-flight count first fitted under `to`.
    drained_at: Option<Instant>,
}

/// A shrink helped when the latency fell by at least this share of the limit's fall: queueing
/// latency falls in proportion to the limit, a saturated machine's does not fall at all.
const SHRINK_EFFECT: f64 = 0.25;

impl Limiter {
    pub(crate) fn new(cfg: &LimitConfig) -> Self {
        let rule = match cfg.algorithm {
            Algorithm::Fixed => Rule::Fixed,
            Algorithm::Aimd => {
                Rule::Aimd { params: cfg.aimd.clone(), threshold: cfg.aimd.latency_threshold.as_secs_f64() }
            }
            Algorithm::Gradient2 => {
                Rule::Gradient2 { params: cfg.gradient2.clone(), long_rtt: ExpAverage::new(cfg.gradient2.long_window) }
            }
        };
        let (min, max) = match cfg.algorithm {
            Algorithm::Fixed => (cfg.initial, cfg.initial),
            _ => (cfg.min, cfg.max),
        };
        Limiter {
            rule,
            min: min as f64,
            max: max as f64,
            estimate: cfg.initial as f64,
            window_len: cfg.window,
            min_samples: cfg.min_window_samples,
            window_start: Instant::now(),
            samples: 0,
            rtt_sum: 0.0,
            max_in_flight: 0,
            dropped: false,
            history: VecDeque::with_capacity(cfg.floor_windows as usize),
            floor_windows: cfg.floor_windows as usize,
            floor_ratio: cfg.floor_ratio,
            shrink: None,
            hold: None,
        }
    }

    /// Shrink only while shrinking lowers the latency. A shrink is one step: the limit goes no
    /// lower until the step is judged, one latency after the in-flight count has come down to
    /// it (the answers admitted before it have drained), against the latency of the answers that
    /// drained. If the latency did not fall (CPU
    /// saturated by something else, a dependency slow whatever our concurrency), the step is
    /// undone and the limit holds while the latency stays at that level, for at most
    /// `HOLD_WINDOWS`; a clearly lower or higher latency ends the hold sooner.
    fn judge_shrinks(&mut self, now: Instant, limit: f64, mut next: f64, w: &WindowSample) -> f64 {
        if let Some(step) = &mut self.shrink {
            if step.drained_at.is_none() && w.max_in_flight as f64 <= step.to.ceil() {
                // The answers of this window were admitted under the old limit: the latency
                // to beat is theirs.
                step.drained_at = Some(now);
                step.before = w.avg_rtt;
            }
            let settle = Duration::from_secs_f64(step.before.min(60.0)) + self.window_len;
            match step.drained_at {
                Some(at) if now.duration_since(at) >= settle => {
                    let helped = w.avg_rtt <= step.before * (1.0 - SHRINK_EFFECT * (1.0 - step.to / step.from));
                    if !helped {
                        self.hold = Some((step.before.min(w.avg_rtt), HOLD_WINDOWS));
                        next = next.max(step.from);
                    }
                    self.shrink = None;
                }
                _ => next = next.max(step.to),
            }
        }
        if let Some((rtt, windows)) = &mut self.hold {
            *windows = windows.saturating_sub(1);
            if w.avg_rtt < *rtt * 0.8 || w.avg_rtt > *rtt * 1.5 || *windows == 0 {
                self.hold = None;
            } else if next < limit {
                next = limit;
            }
        }
        if self.shrink.is_none() && next < limit * 0.99 {
            self.shrink = Some(ShrinkStep { from: limit, to: next, before: w.avg_rtt, drained_at: None });
        }
        next
    }

    /// The concurrency the service has shown it sustains: the highest recent throughput times
    /// the lowest recent latency (the bandwidth-delay product), times `floor_ratio`. Below it
    /// the limit would idle capacity the service demonstrably has; latency that rises without
    /// throughput rising (a saturated CPU) then cannot shrink the limit into a collapse.
    fn floor(&mut self, elapsed: f64, window: &WindowSample) -> f64 {
        if self.floor_windows == 0 || self.floor_ratio == 0.0 || elapsed <= 0.0 {
            return 0.0;
        }
        if self.history.len() == self.floor_windows {
            self.history.pop_front();
        }
        self.history.push_back((f64::from(self.samples) / elapsed, window.avg_rtt));
        let peak = self.history.iter().map(|h| h.0).fold(0.0, f64::max);
        let min_rtt = self.history.iter().map(|h| h.1).fold(f64::INFINITY, f64::min);
        self.floor_ratio * peak * min_rtt
    }

    /// The current limit, a whole number of requests.
    pub(crate) fn limit(&self) -> usize {
        self.estimate as usize
    }

    /// Whether the limit can change at all.
    pub(crate) fn is_adaptive(&self) -> bool {
        !matches!(self.rule, Rule::Fixed)
    }

    /// Note how many requests are in flight (called on every admission).
    pub(crate) fn observe_in_flight(&mut self, in_flight: usize) {
        self.max_in_flight = self.max_in_flight.max(in_flight);
    }

    /// Add one admitted request's latency; returns the new limit when a window closed.
    pub(crate) fn sample(&mut self, now: Instant, rtt: Duration, in_flight: usize, dropped: bool) -> Option<usize> {
        if !self.is_adaptive() {
            return None;
        }
        self.samples += 1;
        self.rtt_sum += rtt.as_secs_f64();
        self.dropped |= dropped;
        self.max_in_flight = self.max_in_flight.max(in_flight);
        if self.samples < self.min_samples || now.duration_since(self.window_start) < self.window_len {
            return None;
        }
        let window = WindowSample {
            avg_rtt: self.rtt_sum / f64::from(self.samples),
            max_in_flight: self.max_in_flight,
            dropped: self.dropped,
        };
        let limit = self.estimate;
        let mut next = self.rule.next(limit, &window);
        // Never grow on a window that did not use at least half of the limit: the samples say
        // nothing about what more concurrency would do.
        if next > limit && (window.max_in_flight as f64) < limit / 2.0 {
            next = limit;
        }
        if !window.dropped {
            next = self.judge_shrinks(now, limit, next, &window);
        }
        let elapsed = now.duration_since(self.window_start).as_secs_f64();
        next = next.max(self.floor(elapsed, &window));
        self.estimate = next.clamp(self.min, self.max);
        self.window_start = now;
        self.samples = 0;
        self.rtt_sum = 0.0;
        self.max_in_flight = in_flight;
        self.dropped = false;
        Some(self.limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(avg_ms: f64, max_in_flight: usize) -> WindowSample {
        WindowSample { avg_rtt: avg_ms / 1000.0, max_in_flight, dropped: false }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shrink_that_does_not_lower_the_latency_is_undone_and_held() {
        let cfg = LimitConfig::aimd(100, 5, 200, Duration::from_millis(50))
            .with_floor_ratio(0.0)
            .with_window(Duration::from_millis(100))
            .with_min_window_samples(1);
        let mut limiter = Limiter::new(&cfg);
        let mut t = Instant::now();
        let mut window = |limiter: &mut Limiter, rtt_ms: u64, in_flight: usize| {
            t += Duration::from_millis(100);
            limiter.sample(t, Duration::from_millis(rtt_ms), in_flight, false);
            limiter.limit()
        };
        // Slow whatever the concurrency: one step down, then back once its effect is judged.
        assert_eq!(window(&mut limiter, 200, 100), 90);
        let mut limits = Vec::new();
        for _ in 0..10 {
            limits.push(window(&mut limiter, 200, 90));
        }
        // Judged one latency (200 ms) and one window after the in-flight count fitted.
        assert_eq!(limits[..4], [90, 90, 90, 90], "no second step before the first is judged");
        assert!(limits[4..].iter().all(|&l| l == 100), "undone and held: {limits:?}");
        // Queueing: the latency follows the limit down, two windows late (the answers of a
        // window were admitted two windows before), so the steps go on.
        let mut limiter = Limiter::new(&cfg);
        let mut limits = vec![100, 100, 100];
        for _ in 0..40 {
            let limit = limits[limits.len() - 1];
            let next = window(&mut limiter, 2 * limits[limits.len() - 3] as u64, limit);
            limits.push(next);
        }
        let limit = *limits.last().unwrap();
        assert!(limit <= 70, "the latency followed the limit down: {limit}");
    }

    #[test]
    fn aimd_backs_off_on_slow_windows_and_grows_only_when_used() {
        let mut rule = Rule::Aimd { params: AimdConfig::default(), threshold: 0.1 };
        assert_eq!(rule.next(100.0, &window(150.0, 100)), 90.0);
        assert_eq!(rule.next(100.0, &window(50.0, 60)), 101.0);
        assert_eq!(rule.next(100.0, &window(50.0, 10)), 100.0);
        let dropped = WindowSample { dropped: true, ..window(1.0, 100) };
        assert_eq!(rule.next(100.0, &dropped), 90.0);
    }

    #[test]
    fn gradient2_shrinks_when_latency_rises_and_holds_when_idle() {
        let mut rule = Rule::Gradient2 { params: Gradient2Config::default(), long_rtt: ExpAverage::new(600) };
        let mut limit = 100.0;
        for _ in 0..20 {
            limit = rule.next(limit, &window(10.0, 100));
        }
        assert!(limit > 100.0, "steady latency lets the limit probe upward: {limit}");
        let before = limit;
        limit = rule.next(limit, &window(40.0, before as usize));
        assert!(limit < before, "four times the latency shrinks the limit: {before} -> {limit}");
        assert_eq!(rule.next(limit, &window(10.0, 1)), limit, "no change while application-limited");
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_applies_windows_within_bounds() {
        let cfg = LimitConfig::aimd(10, 5, 12, Duration::from_millis(50))
            .with_floor_ratio(0.0)
            .with_window(Duration::from_millis(100))
            .with_min_window_samples(2);
        let mut limiter = Limiter::new(&cfg);
        let t0 = Instant::now();
        assert_eq!(limiter.sample(t0, Duration::from_millis(10), 10, false), None, "window still open");
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.sample(t1, Duration::from_millis(10), 10, false), Some(11));
        let t2 = t1 + Duration::from_millis(100);
        limiter.sample(t2, Duration::from_millis(10), 11, false);
        let t3 = t2 + Duration::from_millis(100);
        limiter.sample(t3, Duration::from_millis(10), 11, false);
        let t3b = t3 + Duration::from_millis(1);
        assert_eq!(limiter.sample(t3b, Duration::from_millis(10), 11, false), None);
        assert_eq!(limiter.limit(), 12, "capped at max");
        let mut t = t3 + Duration::from_millis(100);
        // Downstream overload (503s) shrinks at once, without waiting for the latency to fall.
        for _ in 0..20 {
            limiter.sample(t, Duration::from_millis(500), 12, true);
            limiter.sample(t, Duration::from_millis(500), 12, true);
            t += Duration::from_millis(100);
        }
        assert_eq!(limiter.limit(), 5, "floored at min");
        let fixed = Limiter::new(&LimitConfig::fixed(7));
        assert_eq!(fixed.limit(), 7);
        assert!(!fixed.is_adaptive());
    }
}
