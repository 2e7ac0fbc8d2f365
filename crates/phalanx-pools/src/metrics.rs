//! Pool instrumentation: OpenTelemetry instruments named by `phalanx_core::names`, plus the
//! lock-free figures `/status` reports.
// Pool instruments serve `db` and `redis`; the latency figures serve `http-client` too.
#![cfg_attr(not(all(feature = "db", feature = "redis", feature = "http-client")), allow(dead_code))]

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use opentelemetry::{
    metrics::{Counter, Histogram, Meter, ObservableGauge},
    KeyValue,
};
use phalanx_core::names::{self, attr, DURATION_BUCKETS_SECONDS};

use crate::health::Health;

/// `phalanx.pool.errors`: failed acquisitions and round trips by pool and reason, counter.
/// (Not yet in `phalanx_core::names`.)
pub const POOL_ERRORS: &str = phalanx_core::names::POOL_ERRORS;
/// `phalanx.pool.health`: 0 healthy, 1 degraded, 2 recovering, 3 unhealthy, gauge.
/// (Not yet in `phalanx_core::names`.)
pub const POOL_HEALTH: &str = phalanx_core::names::POOL_HEALTH;
/// `phalanx.pool.command.duration`: one Redis round trip, seconds, histogram.
/// (Not yet in `phalanx_core::names`.)
pub const POOL_COMMAND_DURATION: &str = phalanx_core::names::POOL_COMMAND_DURATION;
/// Attribute key of [`POOL_ERRORS`]: why it failed (`timeout`, `unavailable`, `error`, `connection`).
pub const ATTR_REASON: &str = attr::REASON;

/// How full a pool is at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Occupancy {
    /// Open connections.
    pub size: u64,
    /// Open connections nobody holds.
    pub idle: u64,
    /// Connections handed out.
    pub in_use: u64,
    /// The most connections the pool may open.
    pub max: u64,
}

impl Occupancy {
    /// `in_use / max` (0 when `max` is 0).
    pub fn utilization(&self) -> f64 {
        ratio(self.in_use, self.max)
    }

    /// `in_use / size`: how busy the connections already open are.
    pub fn utilization_of_open(&self) -> f64 {
        ratio(self.in_use, self.size)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// What a pool's gauges read.
pub(crate) trait GaugeSource: Send + Sync + 'static {
    fn occupancy(&self) -> Occupancy;
    fn health(&self) -> Health;
}

/// Count, sum, max and a bucketed distribution of durations, for `/status`.
#[derive(Debug)]
pub(crate) struct LatencyStats {
    count: AtomicU64,
    sum_nanos: AtomicU64,
    max_nanos: AtomicU64,
    buckets: Vec<AtomicU64>,
}

impl LatencyStats {
    pub(crate) fn new() -> Self {
        LatencyStats {
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            max_nanos: AtomicU64::new(0),
            buckets: (0..=DURATION_BUCKETS_SECONDS.len()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn record(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_nanos.fetch_max(nanos, Ordering::Relaxed);
        let secs = d.as_secs_f64();
        let idx = DURATION_BUCKETS_SECONDS.iter().position(|&b| secs <= b).unwrap_or(DURATION_BUCKETS_SECONDS.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
    }

    /// Upper bound of the bucket holding quantile `q`, in milliseconds.
    fn quantile_ms(&self, q: f64, count: u64) -> Option<f64> {
        if count == 0 {
            return None;
        }
        let rank = (q * count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                let max_ms = self.max_nanos.load(Ordering::Relaxed) as f64 / 1e6;
                return Some(DURATION_BUCKETS_SECONDS.get(i).map_or(max_ms, |b| (b * 1000.0).min(max_ms)));
            }
        }
        None
    }

    pub(crate) fn report(&self) -> serde_json::Value {
        let count = self.count.load(Ordering::Relaxed);
        let avg = (count > 0).then(|| self.sum_nanos.load(Ordering::Relaxed) as f64 / count as f64 / 1e6);
        serde_json::json!({
            "count": count,
            "avg_ms": avg,
            "p50_ms": self.quantile_ms(0.5, count),
            "p99_ms": self.quantile_ms(0.99, count),
            "max_ms": (count > 0).then(|| self.max_nanos.load(Ordering::Relaxed) as f64 / 1e6),
        })
    }
}

/// Instruments and counters of one pool.
pub(crate) struct PoolMetrics {
    name: Arc<str>,
    attrs: [KeyValue; 1],
    acquire_duration: Histogram<f64>,
    command_duration: Histogram<f64>,
    timeouts: Counter<u64>,
    errors: Counter<u64>,
    gauges: parking_lot::Mutex<Vec<ObservableGauge<f64>>>,
    pub(crate) acquire: LatencyStats,
    pub(crate) command: LatencyStats,
    timeouts_total: AtomicU64,
    errors_total: AtomicU64,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics").field("pool", &self.name).finish_non_exhaustive()
    }
}

impl PoolMetrics {
    pub(crate) fn new(meter: &Meter, name: &str) -> Self {
        let name: Arc<str> = Arc::from(name);
        PoolMetrics {
            attrs: [KeyValue::new(attr::POOL, name.to_string())],
            name,
            acquire_duration: meter
                .f64_histogram(names::POOL_ACQUIRE_DURATION)
                .with_unit("s")
                .with_description("Time to acquire a pooled connection")
                .with_boundaries(DURATION_BUCKETS_SECONDS.to_vec())
                .build(),
            command_duration: meter
                .f64_histogram(POOL_COMMAND_DURATION)
                .with_unit("s")
                .with_description("Duration of one round trip on a pooled connection")
                .with_boundaries(DURATION_BUCKETS_SECONDS.to_vec())
                .build(),
            timeouts: meter
                .u64_counter(names::POOL_ACQUIRE_TIMEOUTS)
                .with_description("Acquisitions that timed out")
                .build(),
            errors: meter.u64_counter(POOL_ERRORS).with_description("Failed acquisitions and round trips").build(),
            gauges: parking_lot::Mutex::new(Vec::new()),
            acquire: LatencyStats::new(),
            command: LatencyStats::new(),
            timeouts_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
        }
    }

    /// Register the gauges; their callbacks hold only a `Weak`, so the pool can be dropped.
    pub(crate) fn register_gauges<T: GaugeSource>(&self, meter: &Meter, source: &Arc<T>) {
        type Read = fn(&dyn GaugeSource) -> f64;
        let gauges: [(&'static str, &'static str, Read); 5] = [
            (names::POOL_SIZE, "Open pooled connections", |s| s.occupancy().size as f64),
            (names::POOL_IDLE, "Idle pooled connections", |s| s.occupancy().idle as f64),
            (names::POOL_IN_USE, "Pooled connections handed out", |s| s.occupancy().in_use as f64),
            (names::POOL_UTILIZATION, "Connections in use / max connections", |s| s.occupancy().utilization()),
            (POOL_HEALTH, "0 healthy, 1 degraded, 2 recovering, 3 unhealthy", |s| s.health().as_gauge() as f64),
        ];
        let mut kept = self.gauges.lock();
        for (name, description, read) in gauges {
            let weak: Weak<T> = Arc::downgrade(source);
            let attrs = self.attrs.clone();
            kept.push(
                meter
                    .f64_observable_gauge(name)
                    .with_description(description)
                    .with_callback(move |observer| {
                        if let Some(source) = weak.upgrade() {
                            observer.observe(read(&*source), &attrs);
                        }
                    })
                    .build(),
            );
        }
    }

    pub(crate) fn acquired(&self, waited: Duration) {
        self.acquire_duration.record(waited.as_secs_f64(), &self.attrs);
        self.acquire.record(waited);
    }

    pub(crate) fn acquire_timed_out(&self, waited: Duration) {
        self.acquire_duration.record(waited.as_secs_f64(), &self.attrs);
        self.timeouts.add(1, &self.attrs);
        self.timeouts_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn round_trip(&self, took: Duration) {
        self.command_duration.record(took.as_secs_f64(), &self.attrs);
        self.command.record(took);
    }

    pub(crate) fn error(&self, reason: &'static str) {
        self.errors.add(1, &[self.attrs[0].clone(), KeyValue::new(ATTR_REASON, reason)]);
        self.errors_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn timeouts_total(&self) -> u64 {
        self.timeouts_total.load(Ordering::Relaxed)
    }

    pub(crate) fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_stats_report_bucket_quantiles_capped_by_the_max() {
        let s = LatencyStats::new();
        for ms in [1u64, 1, 1, 1, 40] {
            s.record(Duration::from_millis(ms));
        }
        let r = s.report();
        assert_eq!(r["count"], 5);
        assert_eq!(r["p50_ms"], 1.0);
        assert_eq!(r["p99_ms"], 40.0);
        assert_eq!(r["max_ms"], 40.0);
        assert_eq!(LatencyStats::new().report()["p99_ms"], serde_json::Value::Null);
    }

    #[test]
    fn utilization_is_in_use_over_max_and_over_open() {
        let o = Occupancy { size: 4, idle: 1, in_use: 3, max: 10 };
        assert!((o.utilization() - 0.3).abs() < 1e-9);
        assert!((o.utilization_of_open() - 0.75).abs() < 1e-9);
        assert_eq!(Occupancy::default().utilization(), 0.0);
    }
}
