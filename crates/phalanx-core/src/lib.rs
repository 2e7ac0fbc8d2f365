//! What every Phalanx layer shares.
//!
//! - [`identity`]: who is calling — a [`ClientKey`] from a header, an API key, a principal
//!   set by an auth layer, or the peer IP (forwarding headers believed only from trusted proxies).
//! - [`priority`] and [`classify`]: [`Priority`] and [`Tier`], put into the request extensions
//!   by [`ClassifyLayer`].
//! - [`problem`]: RFC 9457 `application/problem+json` rejections, one helper for every layer.
//! - [`config`]: [`ConfigError`] (every builder's error: the field and why) and [`Deps`] (what
//!   `XLayer::from_config(&XConfig, &Deps)` takes besides the file: the meter, the Redis handle).
//! - [`duration`]: the one duration format of every configuration (`"250ms"`, `"60s"`).
//! - [`body`]: [`LayerBody`], the response body of a layer that sometimes answers by itself, and
//!   [`GuardedBody`], a body that holds a guard until it is sent or dropped.
//! - [`names`]: the instrument and attribute names of the one metrics vocabulary.
//! - [`status`]: the registration API through which layers add sections to `/status`.
//! - `redis` (feature `redis`): the one shared [`redis::RedisHandle`] (a pool and a subscriber),
//!   connection settings and bounded-time round trips.
//! - `testing` (feature `testing`): real-service test support (skip or fail, private Redis).
//!
//! ```
//! use axum::{routing::get, Router};
//! use phalanx_core::{ClassifyLayer, Classifier, Priority, Tier};
//!
//! let classifier = Classifier::builder()
//!     .priority_header("x-priority")
//!     .route_priority("/admin/{*rest}", Priority::Critical)
//!     .api_key_tier("x-api-key", "k-premium-1", Tier::Premium)
//!     .build();
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ClassifyLayer::new(classifier));
//! # let _ = app;
//! ```
#![forbid(unsafe_code)]

pub mod body;
pub mod classify;
pub mod config;
pub mod duration;
pub mod identity;
pub mod names;
pub mod priority;
pub mod problem;
#[cfg(feature = "redis")]
pub mod redis;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;

pub use body::{BodyGuard, GuardedBody, LayerBody};
pub use classify::{Classification, Classifier, ClassifierBuilder, ClassifyLayer, ClassifyService};
pub use config::{ConfigError, Deps};
pub use identity::{
    ClientKey, ClientKeyResolver, ClientKeyResolverBuilder, ForwardingHeader, KeySource, PeerAddr, Principal,
};
pub use priority::{Priority, Tier};
pub use problem::Problem;
pub use status::{StatusRegistry, StatusSource, TargetCheck};

/// Failure policy for a layer whose shared backend (Redis) is slow or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Let the request through (or fall back to a local decision).
    #[default]
    Open,
    /// Refuse the request.
    Closed,
}

/// The `Meter` that Phalanx layers record through unless given one: the global meter provider's
/// `phalanx` scope. Install the provider before building layers; instruments made before that
/// stay no-ops.
pub fn default_meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter_with_scope(
        opentelemetry::InstrumentationScope::builder("phalanx").with_version(env!("CARGO_PKG_VERSION")).build(),
    )
}
