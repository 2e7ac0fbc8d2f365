//! The limiter's clock: microseconds since the Unix epoch.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Where a limiter reads the time, in microseconds since the Unix epoch.
///
/// The default, [`Clock::tokio`], reads the wall clock once and then advances with
/// `tokio::time::Instant`, so tests with `start_paused = true` control it. Nodes sharing Redis
/// pass this time into the GCRA script, so their wall clocks should agree (NTP keeps them within
/// a few milliseconds; a skew of `d` lets a key gain or lose about `d / emission interval`
/// requests when it moves between nodes). Where clocks cannot be trusted, the Redis store can
/// use the Redis server's clock instead ([`crate::RedisStoreBuilder::server_time`]).
#[derive(Debug, Clone)]
pub struct Clock(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Tokio { epoch_us: u64, origin: tokio::time::Instant },
    Tsc { epoch_us: u64, clock: quanta::Clock, origin: u64 },
    Manual(Arc<AtomicU64>),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::tokio()
    }
}

impl Clock {
    /// The wall clock at creation, advanced by `tokio::time` (paused in tests).
    pub fn tokio() -> Self {
        let epoch_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Clock(Kind::Tokio { epoch_us, origin: tokio::time::Instant::now() })
    }

    /// The wall clock at creation, advanced by the CPU's time-stamp counter where it is stable
    /// (through `quanta`, as tower_governor reads time), else by the OS monotonic clock. Cheaper
    /// to read than [`Clock::tokio`], but blind to tokio's paused time.
    pub fn tsc() -> Self {
        let clock = quanta::Clock::new();
        let epoch_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Clock(Kind::Tsc { epoch_us, origin: clock.raw(), clock })
    }

    /// A clock that moves only when told ([`Clock::advance`]); clones share it. For tests that
    /// need deterministic time with real I/O (a paused tokio clock would jump past I/O deadlines).
    pub fn manual(start: Duration) -> Self {
        Clock(Kind::Manual(Arc::new(AtomicU64::new(start.as_micros() as u64))))
    }

    /// Move a manual clock forward; no effect on a tokio clock.
    pub fn advance(&self, by: Duration) {
        if let Kind::Manual(now) = &self.0 {
            now.fetch_add(by.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// Microseconds since the Unix epoch.
    pub fn now_us(&self) -> u64 {
        match &self.0 {
            Kind::Tokio { epoch_us, origin } => epoch_us + origin.elapsed().as_micros() as u64,
            Kind::Tsc { epoch_us, clock, origin } => epoch_us + clock.delta_as_nanos(*origin, clock.raw()) / 1000,
            Kind::Manual(now) => now.load(Ordering::Relaxed),
        }
    }
}
