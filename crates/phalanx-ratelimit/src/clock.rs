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
/// The default ([`Clock::default`]) follows tokio's time when the layer is built where that
/// time is paused (`#[tokio::test(start_paused = true)]`), so such tests control it; elsewhere it
/// reads the CPU's time-stamp counter ([`Clock::tsc`]), the cheapest clock, re-anchored to the
/// wall clock every second. The Redis store's scripts read Redis's own clock by default
/// ([`RedisLimitConfig::server_time`](crate::RedisLimitConfig::server_time)), so nodes sharing Redis need not agree on time.
#[derive(Debug, Clone)]
pub struct Clock(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Tokio { epoch_us: u64, origin: tokio::time::Instant },
    Tsc(Arc<Tsc>),
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

    /// The wall clock, advanced by the CPU's time-stamp counter where it is stable (through
    /// `quanta`), else by the OS monotonic clock, and re-anchored to the wall clock every second
    /// of counter time, so that a counter's drift never adds up with uptime (an NTP-disciplined
    /// wall clock keeps nodes within its own error of each other). A re-anchoring may move the
    /// time back by the drift of one second; the limiter tolerates that (a TAT never depends on
    /// the clock being monotonic). Cheaper to read than [`Clock::tokio`] (a counter read against
    /// a clock call), but blind to tokio's paused time.
    pub fn tsc() -> Self {
        Clock(Kind::Tsc(Arc::new(Tsc::new(quanta::Clock::new(), None))))
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
            Kind::Tsc(tsc) => tsc.now_us(),
            Kind::Manual(now) => now.load(Ordering::Relaxed),
        }
    }
}

/// How often, in counter time, the counter clock is re-anchored to the wall clock.
const REANCHOR_US: u64 = 1_000_000;

/// The counter clock: `now = counter microseconds since origin + offset`, where the offset is
/// the wall clock minus the counter at the last anchoring. One atomic word each, so a reader
/// never sees half an anchor.
#[derive(Debug)]
struct Tsc {
    clock: quanta::Clock,
    origin: u64,
    offset_us: AtomicU64,
    next_anchor_us: AtomicU64,
    /// A wall clock to read instead of the system's (tests).
    wall: Option<Arc<AtomicU64>>,
}

impl Tsc {
    fn new(clock: quanta::Clock, wall: Option<Arc<AtomicU64>>) -> Self {
        let tsc =
            Tsc { origin: clock.raw(), clock, offset_us: AtomicU64::new(0), next_anchor_us: AtomicU64::new(0), wall };
        tsc.now_us();
        tsc
    }

    fn wall_us(&self) -> u64 {
        match &self.wall {
            Some(wall) => wall.load(Ordering::Relaxed),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64),
        }
    }

    fn now_us(&self) -> u64 {
        let counter_us = self.clock.delta_as_nanos(self.origin, self.clock.raw()) / 1000;
        let next = self.next_anchor_us.load(Ordering::Relaxed);
        // One reader per period re-anchors; the others keep the offset they read.
        if counter_us >= next
            && self
                .next_anchor_us
                .compare_exchange(next, counter_us + REANCHOR_US, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let offset = self.wall_us().wrapping_sub(counter_us);
            self.offset_us.store(offset, Ordering::Relaxed);
            return counter_us.wrapping_add(offset);
        }
        counter_us.wrapping_add(self.offset_us.load(Ordering::Relaxed))
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
    fn the_counter_clock_re_anchors_to_the_wall_clock() {
        let (counter, mock) = quanta::Clock::mock();
        let start = 1_700_000_000_000_000u64;
        let wall = Arc::new(AtomicU64::new(start));
        let clock = Clock(Kind::Tsc(Arc::new(Tsc::new(counter, Some(wall.clone())))));
        assert_eq!(clock.now_us(), start);
        // Within a period the counter alone moves the time.
        mock.increment(Duration::from_millis(500));
        wall.fetch_add(500_300, Ordering::Relaxed);
        assert_eq!(clock.now_us(), start + 500_000);
        // The counter runs 300 µs slow per 500 ms: an hour of that would be 2 s of skew. At
        // each period's end the wall clock is read again, so the skew never exceeds one period's drift.
        for _ in 0..7200 {
            mock.increment(Duration::from_millis(500));
            wall.fetch_add(500_300, Ordering::Relaxed);
            let skew = wall.load(Ordering::Relaxed) - clock.now_us();
            assert!(skew <= 600, "skew {skew} µs");
        }
        assert_eq!(clock.now_us(), wall.load(Ordering::Relaxed) - 300, "anchored at the last period");
    }

    #[test]
    fn outside_a_runtime_the_default_reads_the_counter() {
        assert!(matches!(Clock::default().0, Kind::Tsc { .. }));
    }
}
