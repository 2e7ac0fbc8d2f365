//! Sliding windows of call outcomes, O(1) per recorded call.
//!
//! Both keep running totals; recording a call adds it and subtracts whatever leaves the window
//! (the oldest call of a count-based window, the buckets older than N seconds of a time-based
//! one), so judging the rates never walks the window.

use crate::config::SlidingWindow;

/// Calls, failures and slow calls in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u32,
    pub(crate) failed: u32,
    pub(crate) slow: u32,
}

impl Totals {
    pub(crate) fn add(&mut self, failed: bool, slow: bool) {
        self.calls += 1;
        self.failed += u32::from(failed);
        self.slow += u32::from(slow);
    }

    fn remove(&mut self, other: Totals) {
        self.calls -= other.calls;
        self.failed -= other.failed;
        self.slow -= other.slow;
    }

    /// Failure rate, a fraction.
    pub(crate) fn failure_rate(&self) -> f64 {
        fraction(self.failed, self.calls)
    }

    /// Slow-call rate, a fraction.
    pub(crate) fn slow_rate(&self) -> f64 {
        fraction(self.slow, self.calls)
    }
}

fn fraction(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

#[derive(Debug)]
pub(crate) enum Window {
    Count { slots: Box<[u8]>, next: usize, filled: usize, totals: Totals },
    Time { buckets: Box<[Bucket]>, head_sec: u64, totals: Totals },
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    totals: Totals,
}

impl Window {
    /// A window of this kind; a time-based one gets a bucket per whole second.
    pub(crate) fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::Count(calls) => {
                let size = calls.max(1) as usize;
                Window::Count { slots: vec![0; size].into_boxed_slice(), next: 0, filled: 0, totals: Totals::default() }
            }
            SlidingWindow::Time(window) => Window::Time {
                buckets: vec![Bucket::default(); window.as_secs().max(1) as usize].into_boxed_slice(),
                head_sec: 0,
                totals: Totals::default(),
            },
        }
    }

    /// Record one call that ended at `now_sec` (whole seconds on the breaker's clock).
    pub(crate) fn record(&mut self, now_sec: u64, failed: bool, slow: bool) {
        match self {
            Window::Count { slots, next, filled, totals } => {
                let bits = (if failed { FAILED } else { 0 }) | (if slow { SLOW } else { 0 });
                if *filled == slots.len() {
                    let old = slots[*next];
                    totals.remove(Totals {
                        calls: 1,
                        failed: u32::from(old & FAILED != 0),
                        slow: u32::from(old & SLOW != 0),
                    });
                } else {
                    *filled += 1;
                }
                slots[*next] = bits;
                totals.add(failed, slow);
                *next = if *next + 1 == slots.len() { 0 } else { *next + 1 };
            }
            Window::Time { buckets, head_sec, totals } => {
                let now = advance(buckets, head_sec, totals, now_sec);
                let len = buckets.len() as u64;
                buckets[(now % len) as usize].totals.add(failed, slow);
                totals.add(failed, slow);
            }
        }
    }

    /// The totals of the calls still in the window at `now_sec`.
    pub(crate) fn totals(&mut self, now_sec: u64) -> Totals {
        match self {
            Window::Count { totals, .. } => *totals,
            Window::Time { buckets, head_sec, totals } => {
                advance(buckets, head_sec, totals, now_sec);
                *totals
            }
        }
    }

    /// Forget every call.
    pub(crate) fn clear(&mut self) {
        match self {
            Window::Count { slots, next, filled, totals } => {
                slots.fill(0);
                *next = 0;
                *filled = 0;
                *totals = Totals::default();
            }
            Window::Time { buckets, totals, .. } => {
                buckets.fill(Bucket::default());
                *totals = Totals::default();
            }
        }
    }
}

/// Move the head of a time-based window to `now_sec`, emptying the buckets of the seconds that
/// left the window. Each second is emptied once, so the cost is amortised O(1) per call. A call
/// that ended a moment before the head (it took the lock late) is put in the head's bucket.
fn advance(buckets: &mut [Bucket], head_sec: &mut u64, totals: &mut Totals, now_sec: u64) -> u64 {
    if now_sec <= *head_sec {
        return *head_sec;
    }
    let len = buckets.len() as u64;
    if now_sec - *head_sec >= len {
        buckets.fill(Bucket::default());
        *totals = Totals::default();
    } else {
        for sec in *head_sec + 1..=now_sec {
            let bucket = &mut buckets[(sec % len) as usize];
            totals.remove(bucket.totals);
            *bucket = Bucket::default();
        }
    }
    *head_sec = now_sec;
    now_sec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_the_last_n_calls() {
        let mut w = Window::new(SlidingWindow::Count(3));
        w.record(0, true, false);
        w.record(0, true, true);
        w.record(0, false, false);
        assert_eq!(w.totals(0), Totals { calls: 3, failed: 2, slow: 1 });
        w.record(0, false, false);
        w.record(0, false, false);
        assert_eq!(w.totals(0), Totals { calls: 3, failed: 0, slow: 0 });
        w.clear();
        assert_eq!(w.totals(0), Totals::default());
    }

    #[test]
    fn time_window_drops_buckets_older_than_n_seconds() {
        let mut w = Window::new(SlidingWindow::Time(std::time::Duration::from_secs(3)));
        w.record(10, true, false);
        w.record(11, false, true);
        w.record(12, false, false);
        assert_eq!(w.totals(12), Totals { calls: 3, failed: 1, slow: 1 });
        // Second 10 leaves at 13.
        assert_eq!(w.totals(13), Totals { calls: 2, failed: 0, slow: 1 });
        // A late call from second 12 lands in the head bucket.
        w.record(12, true, false);
        assert_eq!(w.totals(13), Totals { calls: 3, failed: 1, slow: 1 });
        // A long quiet spell empties everything.
        assert_eq!(w.totals(100), Totals::default());
        w.record(100, true, true);
        assert_eq!(w.totals(102), Totals { calls: 1, failed: 1, slow: 1 });
        assert_eq!(w.totals(103), Totals::default());
    }

    #[test]
    fn rates_are_fractions() {
        let t = Totals { calls: 4, failed: 2, slow: 1 };
        assert_eq!(t.failure_rate(), 0.5);
        assert_eq!(t.slow_rate(), 0.25);
        assert_eq!(Totals::default().failure_rate(), 0.0);
    }
}
