//! [`Error`]: what can go wrong in this crate.

use phalanx_core::ConfigError;

/// The errors of phalanx-metrics: an invalid setting, or an exporter that could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting that cannot work, with the field that is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Prometheus exporter could not be set up.
    #[error("prometheus exporter: {0}")]
    Exporter(#[from] opentelemetry_sdk::error::OTelSdkError),
}
