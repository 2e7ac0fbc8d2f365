//! The admission instruments: observable gauges reading the shared state, and the shed counter.

use std::sync::{Arc, Weak};

use opentelemetry::{
    metrics::{Counter, Meter},
    KeyValue,
};
use phalanx_core::{names, Priority};

use crate::shared::{Shared, ShedReason, Snapshot};

/// Attribute key naming the limiter, so several limiters (one per route group) make distinct
/// series.
pub const LIMITER_ATTR: &str = phalanx_core::names::attr::LIMITER;

pub(crate) struct Instruments {
    shed: Counter<u64>,
    /// Attributes per class, then per class and reason, built once.
    class_attrs: [[KeyValue; 2]; 5],
    shed_attrs: [[[KeyValue; 3]; 3]; 5],
}

impl Instruments {
    pub(crate) fn new(meter: &Meter, name: &Arc<str>) -> Self {
        let limiter = KeyValue::new(LIMITER_ATTR, name.to_string());
        let class_attrs = Priority::ALL.map(|p| [KeyValue::new(names::attr::PRIORITY, p.as_str()), limiter.clone()]);
        let shed_attrs = Priority::ALL.map(|p| {
            ShedReason::ALL.map(|r| {
                [
                    KeyValue::new(names::attr::PRIORITY, p.as_str()),
                    KeyValue::new(names::attr::REASON, r.as_str()),
                    limiter.clone(),
                ]
            })
        });
        let shed = meter
            .u64_counter(names::ADMISSION_SHED)
            .with_description("Requests refused by the admission limiter")
            .with_unit("{request}")
            .build();
        Instruments { shed, class_attrs, shed_attrs }
    }

    pub(crate) fn shed(&self, priority: Priority, reason: ShedReason) {
        let attrs = &self.shed_attrs[priority.index()][reason.index()];
        self.shed.add(1, attrs);
    }

    /// Register the gauges. They hold the state weakly: once every layer and service is
    /// dropped they report nothing.
    pub(crate) fn register_gauges(meter: &Meter, shared: &Arc<Shared>) {
        type Read = fn(&Snapshot, usize) -> u64;
        let gauges: [(&'static str, &'static str, Read); 3] = [
            (names::ADMISSION_IN_FLIGHT, "Admitted requests not yet finished", |s, c| s.classes[c].in_flight as u64),
            (names::ADMISSION_LIMIT, "The part of the concurrency limit a class may use", |s, c| {
                s.classes[c].limit as u64
            }),
            (names::ADMISSION_QUEUED, "Requests waiting for admission", |s, c| s.classes[c].queued as u64),
        ];
        for (name, description, read) in gauges {
            let weak: Weak<Shared> = Arc::downgrade(shared);
            meter
                .u64_observable_gauge(name)
                .with_description(description)
                .with_unit("{request}")
                .with_callback(move |observer| {
                    let Some(shared) = weak.upgrade() else { return };
                    let snapshot = shared.snapshot();
                    for p in Priority::ALL {
                        observer.observe(read(&snapshot, p.index()), &shared.instruments.class_attrs[p.index()]);
                    }
                })
                .build();
        }
    }
}
