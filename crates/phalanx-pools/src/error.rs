//! The one error type of the crate.

use phalanx_core::ConfigError;

/// Why a pool or client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting cannot work; the error names the field (`url`, `max_connections`,
    /// `health.interval`, ...).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database refused the first connection that [`DbPoolConfig::connect_at_start`]
    /// asks for.
    ///
    /// [`DbPoolConfig::connect_at_start`]: crate::DbPoolConfig::connect_at_start
    #[cfg(feature = "db")]
    #[cfg_attr(docsrs, doc(cfg(feature = "db")))]
    #[error("database: {0}")]
    Db(#[source] sqlx::Error),
    /// reqwest could not build the HTTP client (its TLS backend or resolver failed to start).
    #[cfg(feature = "http-client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
    #[error("http client: {0}")]
    Http(#[source] reqwest::Error),
}
