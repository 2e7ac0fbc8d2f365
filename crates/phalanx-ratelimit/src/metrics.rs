//! `phalanx.ratelimit.decisions{policy, outcome}`: counted without an OpenTelemetry call per
//! decision, read by an observable counter when the metrics are collected.

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::{
    metrics::{Meter, ObservableCounter},
    KeyValue,
};
use phalanx_core::names;

use crate::{
    local::Tally,
    quota::{CompiledPolicy, Outcome, OUTCOMES},
};

/// The metric attribute marking decisions of a layer in shadow mode (present only there).
const SHADOW_ATTR: &str = names::attr::SHADOW;

/// Decisions per policy and outcome that the in-process store did not count itself (those
/// that went to Redis, and failures), read with the store's counts by `/status` and by an
/// observable OTel counter at collection time: a decision makes no OTel call.
pub(crate) struct Metrics {
    counts: Box<[[AtomicU64; OUTCOMES]]>,
    _decisions: ObservableCounter<u64>,
}

impl Metrics {
    /// Counters for these policies. `read` gives every decision's count so far (the stores'
    /// and these), or `None` once the layer is gone; it is called only at collection time.
    pub(crate) fn new<F>(meter: &Meter, policies: &[CompiledPolicy], shadow: bool, read: F) -> Self
    where
        F: Fn() -> Option<Tally> + Send + Sync + 'static,
    {
        // Attributes per policy and outcome, built once.
        let attributes: Vec<[Vec<KeyValue>; OUTCOMES]> = policies
            .iter()
            .map(|policy| {
                Outcome::NAMES.map(|outcome| {
                    let mut attrs = vec![
                        KeyValue::new(names::attr::POLICY, policy.name.to_string()),
                        KeyValue::new(names::attr::OUTCOME, outcome),
                    ];
                    if shadow {
                        attrs.push(KeyValue::new(SHADOW_ATTR, true));
                    }
                    attrs
                })
            })
            .collect();
        let decisions = meter
            .u64_observable_counter(names::RATELIMIT_DECISIONS)
            .with_description("Rate-limit decisions by policy and outcome")
            .with_callback(move |observer| {
                let Some(tally) = read() else { return };
                for (policy, attributes) in attributes.iter().enumerate() {
                    for (outcome, attributes) in Outcome::ALL.iter().zip(attributes) {
                        let count = tally[policy][*outcome as usize];
                        // An outcome never seen makes no series.
                        if count > 0 {
                            observer.observe(count, attributes);
                        }
                    }
                }
            })
            .build();
        let counts = policies.iter().map(|_| Default::default()).collect();
        Metrics { counts, _decisions: decisions }
    }

    /// Count one decision of one policy.
    pub(crate) fn record(&self, policy: usize, outcome: Outcome) {
        self.counts[policy][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Add the decisions counted here to a tally of the stores' counts.
    pub(crate) fn add_to(&self, tally: &mut Tally) {
        for (row, counts) in tally.iter_mut().zip(self.counts.iter()) {
            for (n, count) in row.iter_mut().zip(counts) {
                *n += count.load(Ordering::Relaxed);
            }
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("policies", &self.counts.len()).finish_non_exhaustive()
    }
}
