//! The registry's instruments: `phalanx.breaker.state` and `phalanx.breaker.calls`, observed
//! at collection time so a call does no metrics work.

use std::sync::Weak;

use opentelemetry::{metrics::Meter, KeyValue};
use phalanx_core::names::{self, attr};

use crate::{
    breaker::{CircuitBreaker, OutcomeLabel},
    registry::RegistryInner,
};

/// Keeps the observable instruments registered while the registry lives.
pub(crate) struct Instruments {
    _state: opentelemetry::metrics::ObservableGauge<u64>,
    _calls: opentelemetry::metrics::ObservableCounter<u64>,
}

/// Register the instruments; their callbacks read the registry through `registry` and stop
/// reporting once it is gone.
pub(crate) fn register_instruments(meter: &Meter, registry: Weak<RegistryInner>) -> Instruments {
    let for_state = registry.clone();
    let state = meter
        .u64_observable_gauge(names::BREAKER_STATE)
        .with_description("Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled")
        .with_callback(move |observer| {
            let Some(inner) = for_state.upgrade() else { return };
            let breakers: Vec<CircuitBreaker> = inner.breakers.read().values().cloned().collect();
            for breaker in breakers {
                observer
                    .observe(breaker.state().as_gauge(), &[KeyValue::new(attr::BREAKER, breaker.name().to_owned())]);
            }
        })
        .build();
    let calls = meter
        .u64_observable_counter(names::BREAKER_CALLS)
        .with_description("Calls through a circuit breaker by outcome")
        .with_callback(move |observer| {
            let Some(inner) = registry.upgrade() else { return };
            let breakers: Vec<CircuitBreaker> = inner.breakers.read().values().cloned().collect();
            for breaker in breakers {
                let counts = breaker.call_counts();
                for label in OutcomeLabel::ALL {
                    observer.observe(
                        counts.get(label),
                        &[
                            KeyValue::new(attr::BREAKER, breaker.name().to_owned()),
                            KeyValue::new(attr::OUTCOME, label.as_str()),
                        ],
                    );
                }
            }
        })
        .build();
    Instruments { _state: state, _calls: calls }
}
