//! A circuit breaker with the semantics of Resilience4j, usable around axum routes
//! ([`CircuitBreakerLayer`]) and around outbound reqwest calls ([`BreakerMiddleware`]).
//!
//! - [`CircuitBreaker`]: closed, open, half-open, forced open and disabled; a count-based or
//!   time-based sliding window (O(1) per call); failure-rate and slow-call-rate thresholds
//!   (inclusive) judged once the window holds a minimum number of calls; exactly N half-open
//!   probes, also under concurrency; a constant or exponential (jittered) wait in open;
//!   state-change listeners.
//! - [`BreakerRegistry`]: named breakers (per route template, dependency or upstream host),
//!   their metrics (`phalanx.breaker.state`, `phalanx.breaker.calls`) and `/status` section.
//! - [`CircuitBreakerLayer`]: open → 503 `application/problem+json` with `Retry-After` (the
//!   rest of the wait), the handler not called.
//! - [`BreakerMiddleware`]: a `reqwest_middleware::Middleware` with one breaker per upstream
//!   `host:port`; open → an error at once, no connection attempted.
//!
//! ```
//! use std::time::Duration;
//!
//! use axum::{http::StatusCode, routing::get, Router};
//! use phalanx_breaker::{BreakerConfig, BreakerMiddleware, BreakerRegistry, CircuitBreakerLayer};
//!
//! let config = BreakerConfig::default()
//!     .count_based_window(20)
//!     .minimum_number_of_calls(10)
//!     .failure_rate_threshold(50.0)
//!     .slow_call_duration(Duration::from_secs(2))
//!     .wait_in_open(Duration::from_secs(5));
//! let registry = BreakerRegistry::new(config);
//!
//! // Server side: a breaker per route template.
//! let app: Router = Router::new()
//!     .route("/orders/{id}", get(|| async { StatusCode::OK }))
//!     .route_layer(CircuitBreakerLayer::per_route(registry.clone()));
//!
//! // Client side: a breaker per upstream host:port, over the same registry.
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(BreakerMiddleware::new(registry.clone()))
//!     .build();
//! # let _ = (app, client);
//! ```
#![forbid(unsafe_code)]

mod breaker;
pub mod config;
mod layer;
mod middleware;
mod registry;
mod window;

pub use breaker::{
    BreakerError, BreakerSnapshot, CallCounts, CallNotPermitted, CircuitBreaker, OutcomeLabel, Permit, State,
    StateTransition,
};
pub use config::{Backoff, BreakerConfig, CallOutcome, CancelledAs, ConfigError, StatusSet, WindowType};
pub use layer::{open_problem, CircuitBreakerLayer, CircuitBreakerService, ResponseFuture};
pub use middleware::{upstream_key, BreakerMiddleware};
pub use registry::{BreakerRegistry, BreakerRegistryBuilder};
