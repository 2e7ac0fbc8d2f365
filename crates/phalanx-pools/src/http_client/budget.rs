//! A retry budget: retries may add at most a fixed share of load on top of the requests.

use std::sync::atomic::{AtomicI64, Ordering};

const MILLI: i64 = 1000;

/// A token bucket of retries: every request deposits `ratio` of a retry, every retry withdraws
/// a whole one, and the balance never exceeds `reserve` retries (the bucket starts full). Over
/// `n` requests at most `reserve + ratio × n` retries are made, so against an upstream that
/// fails every call, retries add at most `ratio` (20 % by default) to its load, plus a
/// small fixed burst.
#[derive(Debug)]
pub struct RetryBudget {
    deposit: i64,
    cap: i64,
    balance: AtomicI64,
}

impl RetryBudget {
    /// A budget of `ratio` retries per request (0.0 ..= 1.0), holding at most `reserve` retries.
    ///
    /// # Panics
    /// When `ratio` is outside 0.0 ..= 1.0.
    pub fn new(ratio: f64, reserve: u32) -> Self {
        assert!((0.0..=1.0).contains(&ratio), "retry budget ratio must be within 0.0 ..= 1.0, got {ratio}");
        let cap = i64::from(reserve) * MILLI;
        RetryBudget { deposit: (ratio * MILLI as f64).round() as i64, cap, balance: AtomicI64::new(cap) }
    }

    /// A request was sent: earn its share of a retry.
    pub fn deposit(&self) {
        let cap = self.cap.max(self.deposit);
        let _ = self.balance.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| Some((b + self.deposit).min(cap)));
    }

    /// Take one retry; `false` when the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.balance.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| (b >= MILLI).then_some(b - MILLI)).is_ok()
    }

    /// Retries the balance allows now.
    pub fn available(&self) -> f64 {
        self.balance.load(Ordering::Acquire) as f64 / MILLI as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_never_exceed_reserve_plus_ratio_of_requests() {
        let budget = RetryBudget::new(0.2, 3);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            while budget.withdraw() {
                retries += 1;
            }
        }
        assert!(retries <= 3 + 200, "{retries}");
        assert!(retries >= 200, "{retries}");
    }

    #[test]
    fn an_idle_budget_does_not_bank_more_than_its_reserve() {
        let budget = RetryBudget::new(0.5, 2);
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(budget.available(), 2.0);
        assert!(budget.withdraw() && budget.withdraw() && !budget.withdraw());
    }

    #[test]
    #[should_panic(expected = "ratio")]
    fn an_invalid_ratio_is_refused() {
        let _ = RetryBudget::new(1.5, 1);
    }
}
