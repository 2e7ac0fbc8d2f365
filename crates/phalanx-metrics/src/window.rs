//! Latency and error figures over a recent window, for the `/status` report.
//!
//! A ring of one-second slots, each a log-linear histogram of atomics (8 sub-buckets per power
//! of two: under 12.5 % error on a quantile). Recording is a few relaxed atomic adds — no lock,
//! no allocation — so it can sit on every request. A slot is reset when time comes round to it
//! again; samples racing with that reset may be lost, which a status report can afford.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::time::Instant;

const SLOTS: usize = 11;
const BUCKETS: usize = 16 + 37 * 8;

struct Slot {
    epoch: AtomicU64,
    count: AtomicU64,
    errors: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            epoch: AtomicU64::new(0),
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn reset(&self) {
        self.count.store(0, Relaxed);
        self.errors.store(0, Relaxed);
        self.sum_us.store(0, Relaxed);
        self.max_us.store(0, Relaxed);
        for b in self.buckets.iter() {
            b.store(0, Relaxed);
        }
    }
}

/// Figures over the window.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct WindowSummary {
    /// Seconds covered.
    pub window_s: f64,
    /// Requests completed in the window.
    pub requests: u64,
    /// Requests per second.
    pub rate: f64,
    /// Share of responses with a 5xx status (or no response).
    pub error_rate: f64,
    /// Mean latency in milliseconds (`None` without requests).
    pub avg_ms: Option<f64>,
    /// Median latency in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: Option<f64>,
    /// Largest latency in milliseconds.
    pub max_ms: Option<f64>,
}

/// The recent-window recorder. Shared through an `Arc`.
pub(crate) struct RecentWindow {
    origin: Instant,
    slots: Vec<Slot>,
}

impl RecentWindow {
    pub(crate) fn new() -> Self {
        RecentWindow { origin: Instant::now(), slots: (0..SLOTS).map(|_| Slot::new()).collect() }
    }

    fn epoch(&self, now: Instant) -> u64 {
        // Epoch 0 marks a slot never used.
        now.saturating_duration_since(self.origin).as_secs() + 1
    }

    pub(crate) fn record(&self, now: Instant, latency: Duration, error: bool) {
        let epoch = self.epoch(now);
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        let seen = slot.epoch.load(Relaxed);
        if seen != epoch && slot.epoch.compare_exchange(seen, epoch, Relaxed, Relaxed).is_ok() {
            slot.reset();
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        slot.count.fetch_add(1, Relaxed);
        slot.sum_us.fetch_add(us, Relaxed);
        slot.max_us.fetch_max(us, Relaxed);
        if error {
            slot.errors.fetch_add(1, Relaxed);
        }
        slot.buckets[bucket_of(us)].fetch_add(1, Relaxed);
    }

    /// Figures over the last `SLOTS - 1` whole seconds plus the current one.
    pub(crate) fn summary(&self, now: Instant) -> WindowSummary {
        let current = self.epoch(now);
        let oldest = current.saturating_sub(SLOTS as u64 - 2).max(1);
        let mut counts = vec![0u64; BUCKETS];
        let (mut requests, mut errors, mut sum_us, mut max_us) = (0u64, 0u64, 0u64, 0u64);
        for slot in &self.slots {
            let epoch = slot.epoch.load(Relaxed);
            if epoch < oldest || epoch > current {
                continue;
            }
            requests += slot.count.load(Relaxed);
            errors += slot.errors.load(Relaxed);
            sum_us += slot.sum_us.load(Relaxed);
            max_us = max_us.max(slot.max_us.load(Relaxed));
            for (total, b) in counts.iter_mut().zip(slot.buckets.iter()) {
                *total += b.load(Relaxed);
            }
        }
        // The current slot is partly elapsed: count the window by the time it really covers.
        let elapsed = now.saturating_duration_since(self.origin).as_secs_f64();
        let window_s = elapsed.min((SLOTS - 1) as f64).max(1e-3);
        let ms = |us: f64| us / 1000.0;
        let quantile = |q: f64| {
            let rank = ((requests as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            counts.iter().enumerate().find_map(|(i, c)| {
                seen += c;
                (seen >= rank).then(|| ms(bucket_mid(i).min(max_us as f64)))
            })
        };
        WindowSummary {
            window_s,
            requests,
            rate: requests as f64 / window_s,
            error_rate: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
            avg_ms: (requests > 0).then(|| ms(sum_us as f64 / requests as f64)),
            p50_ms: if requests == 0 { None } else { quantile(0.50) },
            p99_ms: if requests == 0 { None } else { quantile(0.99) },
            max_ms: (requests > 0).then(|| ms(max_us as f64)),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < 16 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as usize; // >= 4
    let sub = ((us >> (exp - 3)) & 7) as usize;
    (16 + (exp - 4) * 8 + sub).min(BUCKETS - 1)
}

fn bucket_mid(index: usize) -> f64 {
    if index < 16 {
        return index as f64;
    }
    let exp = (index - 16) / 8 + 4;
    let sub = ((index - 16) % 8) as u64;
    let low = (8 + sub) << (exp - 3);
    let width = 1u64 << (exp - 3);
    low as f64 + width as f64 / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_within_an_eighth() {
        let mut last = 0;
        for us in [0u64, 1, 15, 16, 17, 31, 32, 100, 1_000, 65_432, 1_000_000, 60_000_000] {
            let b = bucket_of(us);
            assert!(b >= last, "bucket of {us} went back");
            last = b;
            let mid = bucket_mid(b);
            assert!((mid - us as f64).abs() <= (us as f64 / 8.0).max(1.0), "{us} -> {mid}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn summary_reports_rate_quantiles_errors_and_forgets_old_slots() {
        let w = RecentWindow::new();
        tokio::time::advance(Duration::from_millis(500)).await;
        for i in 0..100u64 {
            w.record(Instant::now(), Duration::from_millis(if i < 99 { 10 } else { 400 }), i % 10 == 0);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let s = w.summary(Instant::now());
        assert_eq!(s.requests, 100);
        assert!((s.error_rate - 0.1).abs() < 1e-9);
        let p50 = s.p50_ms.unwrap();
        assert!((9.0..=11.5).contains(&p50), "p50 {p50}");
        assert!(s.p99_ms.unwrap() <= 11.5, "p99 is the 99th of 100 samples");
        assert_eq!(s.max_ms, Some(400.0));
        assert!((s.avg_ms.unwrap() - 13.9).abs() < 0.01);
        assert!((s.rate - 100.0 / 2.5).abs() < 1e-6);

        tokio::time::advance(Duration::from_secs(30)).await;
        let later = w.summary(Instant::now());
        assert_eq!(later.requests, 0);
        assert_eq!(later.avg_ms, None);
    }
}
