//! The L2 circuit: after consecutive failed or timed-out round trips it opens, and requests
//! skip Redis at once; after a cooldown one probe at a time goes through, and a success
//! closes it.

use std::{
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use tokio::time::Instant;

pub(crate) struct Circuit {
    failures: AtomicU32,
    /// Milliseconds since `epoch` + 1 until which it is open; 0: closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    /// False until the connections are first up: a command sent while a cluster client is
    /// still learning the slots fails and can leave that client failing.
    ready: AtomicBool,
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
}

/// Leave to make one round trip; report how it went. Dropped unreported (the caller was
/// cancelled), a probe frees its place for the next one.
pub(crate) struct Attempt<'a> {
    circuit: &'a Circuit,
    probe: bool,
    reported: bool,
}

impl Circuit {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Circuit {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            ready: AtomicBool::new(true),
            threshold: threshold.max(1),
            cooldown,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether requests currently skip L2.
    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0 || !self.ready.load(Ordering::Acquire)
    }

    /// Whether the connections were first made; until then no round trip is let through.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Leave for a round trip: always while closed; while open, none until the cooldown has
    /// passed, then one probe at a time.
    pub(crate) fn try_acquire(&self) -> Option<Attempt<'_>> {
        if !self.ready.load(Ordering::Relaxed) {
            return None;
        }
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(Attempt { circuit: self, probe: false, reported: false });
        }
        if self.now_ms() < until {
            return None;
        }
        self.probing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).ok().map(|_| Attempt {
            circuit: self,
            probe: true,
            reported: false,
        })
    }

    fn open(&self) {
        let until = self.now_ms() + self.cooldown.as_millis() as u64;
        self.open_until.store(until.max(1), Ordering::Release);
    }
}

impl Attempt<'_> {
    pub(crate) fn success(mut self) {
        self.reported = true;
        let c = self.circuit;
        c.failures.store(0, Ordering::Relaxed);
        if c.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("cache L2 circuit closed: Redis answers again");
        }
        if self.probe {
            c.probing.store(false, Ordering::Release);
        }
    }

    pub(crate) fn failure(mut self) {
        self.reported = true;
        let c = self.circuit;
        if self.probe {
            c.open();
            c.probing.store(false, Ordering::Release);
            return;
        }
        if c.failures.fetch_add(1, Ordering::AcqRel) + 1 >= c.threshold && !c.is_open() {
            c.open();
            tracing::warn!("cache L2 circuit open: requests skip Redis");
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.circuit.probing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_probes_one_at_a_time_and_closes_on_success() {
        let c = Circuit::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            c.try_acquire().unwrap().failure();
        }
        assert!(c.is_open());
        assert!(c.try_acquire().is_none(), "open: no round trip");
        tokio::time::advance(Duration::from_millis(1001)).await;
        let probe = c.try_acquire().expect("a probe after the cooldown");
        assert!(c.try_acquire().is_none(), "one probe at a time");
        probe.failure();
        assert!(c.try_acquire().is_none(), "a failed probe opens it again");
        tokio::time::advance(Duration::from_millis(1001)).await;
        drop(c.try_acquire().unwrap());
        let probe = c.try_acquire().expect("a cancelled probe frees its place");
        probe.success();
        assert!(!c.is_open());
        assert!(c.try_acquire().is_some() && c.try_acquire().is_some());
    }
}
