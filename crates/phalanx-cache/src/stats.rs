//! Per-level counters, their OpenTelemetry export and the `/status` section.
//!
//! The hot path only bumps relaxed atomics; the instruments are observable ones whose
//! callbacks read these atomics at collection time, so a cache hit never pays for an
//! attribute-set lookup in the metrics SDK.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Weak,
};

use opentelemetry::{metrics::Meter, KeyValue};
use phalanx_core::{
    names::{self, attr},
    TargetCheck,
};

/// The level a lookup was answered at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The in-process moka cache.
    L1,
    /// Redis.
    L2,
    /// The HTTP response cache (CacheLayer), whatever level held the response.
    Http,
}

impl Level {
    /// The `level` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::L1 => "l1",
            Level::L2 => "l2",
            Level::Http => "http",
        }
    }
}

/// Counters of one level.
#[derive(Debug, Default)]
pub(crate) struct LevelCounters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) evictions: AtomicU64,
}

impl LevelCounters {
    fn snapshot(&self) -> LevelStats {
        LevelStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of one level's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LevelStats {
    /// Lookups answered by this level.
    pub hits: u64,
    /// Lookups this level could not answer.
    pub misses: u64,
    /// Entries found but too old to serve as they were (expired, or stale HTTP responses).
    pub stale: u64,
    /// Lookups that waited for another caller's load instead of loading themselves.
    pub coalesced: u64,
    /// Entries evicted for size or expiry (not explicit removals).
    pub evictions: u64,
}

impl LevelStats {
    /// `hits / (hits + misses + stale)`, `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let total = self.hits + self.misses + self.stale;
        (total > 0).then(|| self.hits as f64 / total as f64)
    }
}

/// A snapshot of every level.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct CacheStats {
    /// The in-process level.
    pub l1: LevelStats,
    /// Redis.
    pub l2: LevelStats,
    /// The HTTP layer's own view (only CacheLayer records here).
    pub http: LevelStats,
    /// Bytes held by L1 (the weigher's sum).
    pub l1_bytes: u64,
    /// Entries held by L1.
    pub l1_entries: u64,
    /// Redis round trips that failed or timed out and were answered by L1 and the loader.
    pub fallbacks: u64,
    /// L2 round trips not made because the L2 circuit was open.
    pub l2_short_circuits: u64,
    /// L2 stores dropped: the write queue was full, the circuit open, or the write failed.
    pub l2_writes_dropped: u64,
    /// Stores of loaded values refused because their key or a tag was invalidated during the
    /// load (L1 and L2).
    pub stores_refused: u64,
    /// Callers that stopped waiting for another's load after the coalesce timeout.
    pub coalesce_timeouts: u64,
}

impl CacheStats {
    /// The hit ratio the `/status` target judges: the HTTP layer's when it has seen requests,
    /// else L1 and L2 together (a lookup that reached the loader is a miss).
    pub fn hit_ratio(&self) -> Option<f64> {
        if let Some(r) = self.http.hit_ratio() {
            return Some(r);
        }
        let hits = self.l1.hits + self.l2.hits + self.l1.coalesced;
        let total = self.l1.hits + self.l1.misses + self.l1.stale;
        (total > 0).then(|| (hits as f64 / total as f64).min(1.0))
    }
}

/// Counters shared by a TieredCache and the CacheLayers that use it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) l1: LevelCounters,
    pub(crate) l2: LevelCounters,
    pub(crate) http: LevelCounters,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) l2_short_circuits: AtomicU64,
    pub(crate) l2_writes_dropped: AtomicU64,
    pub(crate) stores_refused: AtomicU64,
    pub(crate) coalesce_timeouts: AtomicU64,
}

/// What the instruments and the status section read: the counters and L1's size.
pub(crate) trait StatsProbe: Send + Sync + 'static {
    fn counters(&self) -> &Counters;
    /// (bytes, entries) held by L1.
    fn l1_size(&self) -> (u64, u64);

    fn snapshot(&self) -> CacheStats {
        let c = self.counters();
        let (l1_bytes, l1_entries) = self.l1_size();
        CacheStats {
            l1: c.l1.snapshot(),
            l2: c.l2.snapshot(),
            http: c.http.snapshot(),
            l1_bytes,
            l1_entries,
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
            l2_short_circuits: c.l2_short_circuits.load(Ordering::Relaxed),
            l2_writes_dropped: c.l2_writes_dropped.load(Ordering::Relaxed),
            stores_refused: c.stores_refused.load(Ordering::Relaxed),
            coalesce_timeouts: c.coalesce_timeouts.load(Ordering::Relaxed),
        }
    }
}

/// Register the observable instruments of the vocabulary for one cache. They hold only a
/// weak reference, so a dropped cache stops reporting.
pub(crate) fn register_instruments<P: StatsProbe>(meter: &Meter, probe: &Arc<P>) {
    let levels = [Level::L1, Level::L2, Level::Http];
    let weak: Weak<P> = Arc::downgrade(probe);
    meter
        .u64_observable_counter(names::CACHE_LOOKUPS)
        .with_description("Cache lookups by level and result")
        .with_callback(move |observer| {
            let Some(probe) = weak.upgrade() else { return };
            let s = probe.snapshot();
            for level in levels {
                let l = match level {
                    Level::L1 => s.l1,
                    Level::L2 => s.l2,
                    Level::Http => s.http,
                };
                for (result, value) in
                    [("hit", l.hits), ("miss", l.misses), ("stale", l.stale), ("coalesced", l.coalesced)]
                {
                    observer.observe(
                        value,
                        &[KeyValue::new(attr::LEVEL, level.as_str()), KeyValue::new(attr::RESULT, result)],
                    );
                }
            }
        })
        .build();
    let weak: Weak<P> = Arc::downgrade(probe);
    meter
        .u64_observable_counter(names::CACHE_EVICTIONS)
        .with_description("Cache evictions by level (size or expiry)")
        .with_callback(move |observer| {
            let Some(probe) = weak.upgrade() else { return };
            let s = probe.snapshot();
            observer.observe(s.l1.evictions, &[KeyValue::new(attr::LEVEL, Level::L1.as_str())]);
        })
        .build();
    let weak: Weak<P> = Arc::downgrade(probe);
    meter
        .u64_observable_gauge(names::CACHE_SIZE)
        .with_description("Bytes held by the cache level")
        .with_unit("By")
        .with_callback(move |observer| {
            let Some(probe) = weak.upgrade() else { return };
            observer.observe(probe.l1_size().0, &[KeyValue::new(attr::LEVEL, Level::L1.as_str())]);
        })
        .build();
    let weak: Weak<P> = Arc::downgrade(probe);
    meter
        .u64_observable_counter(names::CACHE_FALLBACKS)
        .with_description("Redis round trips answered by L1 and the loader instead")
        .with_callback(move |observer| {
            let Some(probe) = weak.upgrade() else { return };
            observer.observe(probe.counters().fallbacks.load(Ordering::Relaxed), &[]);
        })
        .build();
    let weak: Weak<P> = Arc::downgrade(probe);
    meter
        .u64_observable_counter(CACHE_L2_WRITES_DROPPED)
        .with_description("L2 stores dropped (write queue full, circuit open, or write failed)")
        .with_callback(move |observer| {
            let Some(probe) = weak.upgrade() else { return };
            observer.observe(probe.counters().l2_writes_dropped.load(Ordering::Relaxed), &[]);
        })
        .build();
}

/// The dropped-L2-writes counter (kept here until phalanx-core's names carry it).
pub(crate) const CACHE_L2_WRITES_DROPPED: &str = "phalanx.cache.l2.writes_dropped";

/// A cache's `/status` report: its figures and the hit ratio.
pub(crate) fn report(stats: &CacheStats) -> serde_json::Value {
    let mut value = serde_json::to_value(stats).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("hit_ratio".into(), stats.hit_ratio().into());
    }
    value
}

/// The hit-ratio target check, when a target is set.
pub(crate) fn targets(target_hit_ratio: Option<f64>, stats: impl FnOnce() -> CacheStats) -> Vec<TargetCheck> {
    match target_hit_ratio {
        Some(target) if target > 0.0 => vec![TargetCheck::at_least("cache_hit_ratio", stats().hit_ratio(), target)],
        _ => Vec::new(),
    }
}
