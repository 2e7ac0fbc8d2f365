//! Phalanx: composable Tower layers for axum services that must keep their latency promises
//! with 10,000+ users connected at once.
//!
//! This facade re-exports the layer crates, one feature each (all on by default, as `full`):
//!
//! | feature | crate | what |
//! | --- | --- | --- |
//! | (always) | [`core`] | client identity, priority and tier, problem+json, instrument names |
//! | `cache` | `phalanx-cache` | `TieredCache` (moka L1 + Redis L2) and the RFC 9111 `CacheLayer` |
//! | `ratelimit` | `phalanx-ratelimit` | GCRA `RateLimitLayer`, in-process and on Redis (its feature `redis`, on by default) |
//! | `admission` | `phalanx-admission` | priority-aware adaptive concurrency limit and load shedding |
//! | `breaker` | `phalanx-breaker` | circuit breaker: axum layer (`breaker-reqwest`: and reqwest middleware) |
//! | `metrics` | `phalanx-metrics` | OpenTelemetry HTTP metrics, `/metrics`, `/status` |
//! | `pools` | `phalanx-pools` | `Db`, `Redis` and `Http` extractors over instrumented pools |
//!
//! ```
//! use axum::{routing::get, Router};
//! use phalanx::core::{Classifier, ClassifyLayer, Priority};
//!
//! let app: Router = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(ClassifyLayer::new(Classifier::builder().route_priority("/health", Priority::Critical).build()));
//! # let _ = app;
//! ```
#![forbid(unsafe_code)]

pub use phalanx_core as core;

#[cfg(feature = "admission")]
pub use phalanx_admission as admission;
#[cfg(feature = "breaker")]
pub use phalanx_breaker as breaker;
#[cfg(feature = "cache")]
pub use phalanx_cache as cache;
#[cfg(feature = "metrics")]
pub use phalanx_metrics as metrics;
#[cfg(feature = "pools")]
pub use phalanx_pools as pools;
#[cfg(feature = "ratelimit")]
pub use phalanx_ratelimit as ratelimit;
