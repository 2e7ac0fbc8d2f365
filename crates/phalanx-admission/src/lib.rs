//! Admission control for axum services: priority classes sharing one concurrency limit, fixed
//! or adaptive, with a bounded priority queue, per-class deadlines and load shedding.
//!
//! [`AdmissionLayer`] reads each request's [`phalanx_core::Priority`] from its extensions (put
//! there by [`phalanx_core::ClassifyLayer`]; `normal` when absent) and then:
//!
//! - **admits** it when the limit has room and its class is within its share of the limit;
//! - else **queues** it: higher classes first, FIFO within a class, each class's queue bounded,
//!   optionally a bound over all classes where a higher class evicts the newest waiter of a
//!   lower one;
//! - **sheds** it with `503 Service Unavailable`, `Retry-After` and an
//!   `application/problem+json` document (type `urn:phalanx:problem:overloaded`) when its queue
//!   is full or its class's queue deadline passes.
//!
//! One limit is shared by all clones of the service (axum clones it per request); nothing is
//! reserved in `poll_ready`. An admitted request holds its slot until its response body ends
//! or is dropped ([`AdmissionBody`]).
//!
//! The limit is fixed or adaptive ([`LimitConfig`]): AIMD or Gradient2 (as in Netflix's
//! concurrency-limits), fed with the time from admission to the inner service's response
//! headers, aggregated per sampling window, bounded by `min..=max`, and never raised on a
//! window that used less than half of it.
//!
//! Metrics (through [`AdmissionBuilder::meter`] or the global `phalanx` meter):
//! `phalanx.admission.in_flight`, `.limit`, `.queued` (observable gauges by `priority`) and
//! `phalanx.admission.shed` (counter by `priority` and `reason` = `queue_full` | `deadline` |
//! `share`), each also labelled with the limiter's name ([`LIMITER_ATTR`]). [`AdmissionStatus`]
//! is the `admission` section of `/status`.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use phalanx_admission::{AdmissionLayer, AdmissionStatus, LimitConfig};
//! use phalanx_core::{ClassifyLayer, Classifier, Priority, StatusRegistry};
//!
//! let admission = AdmissionLayer::builder()
//!     .name("api")
//!     .limit(LimitConfig::gradient2(50, 5, 500))
//!     .share(Priority::Background, 0.1)
//!     .queue_timeout(Priority::Background, Duration::from_millis(20))
//!     .build()
//!     .expect("valid admission configuration");
//!
//! let status = StatusRegistry::new();
//! status.register(AdmissionStatus::new([admission.handle()]));
//!
//! let classifier = Classifier::builder().priority_header("x-priority").build();
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(admission)
//!     .layer(ClassifyLayer::new(classifier));
//! # let _ = app;
//! ```
#![forbid(unsafe_code)]

mod body;
pub mod config;
mod layer;
mod limit;
mod metrics;
mod service;
mod shared;

pub use body::AdmissionBody;
pub use config::{
    AdmissionConfig, AimdConfig, Algorithm, ClassOverrides, ClassPolicy, ClassesConfig, ConfigError, Gradient2Config,
    LimitConfig,
};
pub use layer::{AdmissionBuilder, AdmissionHandle, AdmissionLayer, AdmissionStatus};
pub use metrics::LIMITER_ATTR;
pub use service::{AdmissionService, ResponseFuture};
pub use shared::{ClassSnapshot, ShedReason, Snapshot};
