#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod status;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
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
