#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod builder;
pub mod config;
mod future;
mod layer;
mod metrics;
#[cfg(feature = "reqwest")]
mod middleware;
mod registry;
mod service;
mod status;
mod window;

pub use breaker::{
    BreakerError, BreakerSnapshot, CallCounts, CallNotPermitted, CircuitBreaker, OutcomeLabel, Permit, State,
    StateTransition,
};
pub use builder::{BreakerRegistryBuilder, CircuitBreakerLayerBuilder};
pub use config::{Backoff, BreakerConfig, CallOutcome, CancelledAs, ConfigError, SlidingWindow, StatusSet};
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use middleware::{upstream_key, BreakerMiddleware};
pub use registry::BreakerRegistry;
pub use service::{open_problem, CircuitBreakerService};
