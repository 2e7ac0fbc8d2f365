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
/// Every clock reads the wall clock once and then advances with a monotonic clock. The default
/// ([`Clock::default`]) follows tokio's time when the layer is built where that time is paused
/// (`#[tokio::test(start_paused = true)]`), so such tests control it; elsewhere it reads the
/// CPU's time-stamp counter ([`Clock::tsc`]), the cheapest monotonic clock. Nodes sharing Redis
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
    /// [`Clock::tokio`] when called on a runtime whose time is paused, else [`Clock::tsc`].
    /// A test that pauses time only after building its layers passes [`Clock::tokio`] itself.
    fn default() -> Self {
        if tokio_time_is_paused() {
            Clock::tokio()
        } else {
            Clock::tsc()
        }
    }
}

/// Whether tokio's clock stands still here: on a runtime with paused time, `Instant::now` does
/// not move while real time passes (it jumps only when the runtime parks).
fn tokio_time_is_paused() -> bool {
    let tokio_start = tokio::time::Instant::now();
    let real_start = std::time::Instant::now();
    while real_start.elapsed() < Duration::from_micros(20) {
        std::hint::spin_loop();
    }
    tokio::time::Instant::now() == tokio_start
}

impl Clock {
    /// The wall clock at creation, advanced by `tokio::time::Instant`: tests that pause, advance
    /// or auto-advance tokio's time move this clock with it.
    pub fn tokio() -> Self {
        let epoch_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        Clock(Kind::Tokio { epoch_us, origin: tokio::time::Instant::now() })
    }

    /// The wall clock at creation, advanced by the CPU's time-stamp counter where it is stable
    /// (through `quanta`), else by the OS monotonic clock. Cheaper to read than
    /// [`Clock::tokio`] (a counter read against a clock call), but blind to tokio's paused time.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_default_follows_paused_tokio_time() {
        let clock = Clock::default();
        let start = clock.now_us();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now_us() - start, 5_000_000);
    }

    #[tokio::test]
    async fn the_default_reads_real_time_on_a_running_clock() {
        let clock = Clock::default();
        assert!(matches!(clock.0, Kind::Tsc { .. }));
        let start = clock.now_us();
        std::thread::sleep(Duration::from_millis(5));
        let elapsed = clock.now_us() - start;
        assert!((4_000..1_000_000).contains(&elapsed), "{elapsed} µs");
    }

    #[test]
    fn outside_a_runtime_the_default_reads_the_counter() {
        assert!(matches!(Clock::default().0, Kind::Tsc { .. }));
    }
}
