//! The `/status` section of an [`AdmissionLayer`]: its algorithm, limit and counts, and per
//! class the same plus admitted and shed counts and the policy.

use phalanx_core::StatusSource;
use serde_json::json;

use crate::{config::Algorithm, layer::AdmissionLayer, shared::ShedReason};

impl Algorithm {
    /// The name used in TOML and `/status`: `fixed`, `aimd`, `gradient2`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Fixed => "fixed",
            Algorithm::Aimd => "aimd",
            Algorithm::Gradient2 => "gradient2",
        }
    }
}

/// The section is named `admission`; a service with several limiters registers each under its
/// own name (`registry.register_as("admission.items", items.clone())`).
impl StatusSource for AdmissionLayer {
    fn name(&self) -> &str {
        "admission"
    }

    fn report(&self) -> serde_json::Value {
        let snap = self.snapshot();
        let mut classes = serde_json::Map::new();
        for class in snap.classes {
            let p = class.priority;
            let policy = &self.shared.policies[p.index()];
            let shed: serde_json::Map<String, serde_json::Value> =
                ShedReason::ALL.iter().map(|r| (r.as_str().to_owned(), self.shed_count(p, *r).into())).collect();
            classes.insert(
                p.as_str().to_owned(),
                json!({
                    "in_flight": class.in_flight,
                    "limit": class.limit,
                    "queued": class.queued,
                    "admitted": self.admitted_count(p),
                    "shed": shed,
                    "share": policy.share,
                    "max_queue": policy.max_queue,
                    "queue_timeout_ms": policy.queue_timeout.as_millis() as u64,
                }),
            );
        }
        json!({
            "name": self.limiter_name(),
            "algorithm": self.algorithm.as_str(),
            "limit": snap.limit,
            "in_flight": snap.in_flight,
            "queued": snap.queued,
            "classes": classes,
        })
    }
}
