//! The `breakers` section of `/status`: per breaker its state, rates over the window, the rest
//! of the wait in open and the calls by outcome; a target per breaker that it is not open.

use phalanx_core::{StatusSource, TargetCheck};

use crate::{
    breaker::{BreakerSnapshot, State},
    layer::CircuitBreakerLayer,
    registry::BreakerRegistry,
};

/// The section's name.
const SECTION: &str = "breakers";

fn report(snapshots: Vec<BreakerSnapshot>) -> serde_json::Value {
    let mut report = serde_json::Map::new();
    for snapshot in snapshots {
        let value = serde_json::json!({
            "state": snapshot.state,
            "failure_rate": snapshot.failure_rate,
            "slow_call_rate": snapshot.slow_call_rate,
            "buffered_calls": snapshot.buffered_calls,
            "failed_calls": snapshot.failed_calls,
            "slow_calls": snapshot.slow_calls,
            "retry_after_ms": snapshot.retry_after.map(|d| d.as_millis() as u64),
            "calls": snapshot.calls,
        });
        report.insert(snapshot.name, value);
    }
    serde_json::Value::Object(report)
}

fn targets(snapshots: Vec<BreakerSnapshot>) -> Vec<TargetCheck> {
    // A breaker that is not closed is a dependency in trouble: report it as a target missed.
    snapshots
        .into_iter()
        .map(|s| {
            let not_closed = f64::from(u8::from(!matches!(s.state, State::Closed | State::Disabled)));
            TargetCheck::at_most(format!("breaker_open:{}", s.name), Some(not_closed), 0.0)
        })
        .collect()
}

impl StatusSource for BreakerRegistry {
    fn name(&self) -> &str {
        SECTION
    }

    fn report(&self) -> serde_json::Value {
        report(self.snapshots())
    }

    fn targets(&self) -> Vec<TargetCheck> {
        targets(self.snapshots())
    }
}

/// The layer reports the breakers it uses: those of its registry, or its one breaker.
impl StatusSource for CircuitBreakerLayer {
    fn name(&self) -> &str {
        SECTION
    }

    fn report(&self) -> serde_json::Value {
        report(self.snapshots())
    }

    fn targets(&self) -> Vec<TargetCheck> {
        targets(self.snapshots())
    }
}
