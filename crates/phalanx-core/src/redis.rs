//! Redis helpers shared by the layers that keep state in Redis (feature `redis`).
//!
//! Every round trip a layer makes goes through [`bounded`]: it has a deadline, and the caller
//! decides what a timeout or an error means ([`crate::FailureMode`]). Clients built by
//! [`RedisSettings::build_pool`] reconnect by themselves with exponential backoff and fail
//! commands at once while disconnected, so a Redis that is gone costs no waiting.
//!
//! One URL names the deployment: `redis://` (one server), `redis-cluster://host:port?node=…`
//! (a Redis Cluster: fred follows `MOVED`/`ASK` and the slot map), and `rediss://` /
//! `rediss-cluster://` for TLS (feature `tls`, rustls; [`RedisSettings::tls_ca_file`] names a
//! private certificate authority). A TLS URL in a build without the feature is refused rather than
//! silently connected in plain text.

use std::{future::Future, time::Duration};

use fred::{
    error::Error as FredError,
    prelude::{Builder, ClientLike, Config, Pool, ReconnectPolicy},
};

/// How to reach Redis. Serde form:
///
/// ```toml
/// url = "redis://127.0.0.1:6379"
/// pool_size = 4
/// command_timeout_ms = 20
/// connect_timeout_ms = 500
/// # tls_ca_file = "/etc/redis/ca.pem"   # rediss:// with a private CA (feature `tls`)
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port/db`, `redis-cluster://host:port?node=host:port&…`, or their TLS forms
    /// `rediss://…` / `rediss-cluster://…`. Default: `redis://127.0.0.1:6379`.
    pub url: String,
    /// Connections in the pool. Default: 4.
    pub pool_size: usize,
    /// Deadline of one command, in milliseconds. Default: 20.
    pub command_timeout_ms: u64,
    /// Deadline of a connection attempt, in milliseconds. Default: 500.
    pub connect_timeout_ms: u64,
    /// Longest wait between reconnection attempts, in milliseconds. Default: 2000.
    pub reconnect_max_delay_ms: u32,
    /// PEM file of the certificate authorities a TLS URL trusts, instead of the system's roots.
    /// Default: none (system roots). Needs feature `tls`.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 4,
            command_timeout_ms: 20,
            connect_timeout_ms: 500,
            reconnect_max_delay_ms: 2000,
            tls_ca_file: None,
        }
    }
}

impl RedisSettings {
    /// Settings for this URL, other fields default.
    pub fn from_url(url: impl Into<String>) -> Self {
        RedisSettings { url: url.into(), ..Self::default() }
    }

    /// The deadline of one command.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// A fred client builder with these settings: command and connect timeouts, fail-fast
    /// while disconnected, and unbounded exponential reconnection.
    pub fn builder(&self) -> Result<Builder, FredError> {
        #[allow(unused_mut)]
        let mut config = Config { fail_fast: true, ..Config::from_url(&self.url)? };
        #[cfg(feature = "tls")]
        if let Some(ca_file) = &self.tls_ca_file {
            if !self.uses_tls() {
                return Err(config_error("tls_ca_file is set but the URL is not rediss:// or rediss-cluster://"));
            }
            config.tls = Some(tls::with_ca_file(ca_file)?);
        }
        #[cfg(not(feature = "tls"))]
        if self.uses_tls() || self.tls_ca_file.is_some() {
            return Err(config_error("a TLS Redis URL needs phalanx-core's `tls` feature"));
        }
        let mut builder = Builder::from_config(config);
        let command_timeout = self.command_timeout();
        let connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        builder
            .with_performance_config(|p| p.default_command_timeout = command_timeout)
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = connect_timeout;
                // A command in flight when the connection drops is not replayed: its caller has
                // already fallen back, and a replay could apply it twice.
                c.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, self.reconnect_max_delay_ms.max(50), 2));
        Ok(builder)
    }

    /// Whether the URL asks for TLS (`rediss://`, `rediss-cluster://` and the valkey forms).
    pub fn uses_tls(&self) -> bool {
        let scheme = self.url.split_once("://").map_or("", |(scheme, _)| scheme);
        matches!(scheme, "rediss" | "rediss-cluster" | "rediss-sentinel" | "valkeys" | "valkeys-cluster")
    }

    /// Whether the URL names a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        let scheme = self.url.split_once("://").map_or("", |(scheme, _)| scheme);
        scheme.ends_with("-cluster")
    }

    /// A pool of `pool_size` clients, not yet connected: call [`connect_in_background`].
    pub fn build_pool(&self) -> Result<Pool, FredError> {
        self.builder()?.build_pool(self.pool_size.max(1))
    }
}

fn config_error(message: &'static str) -> FredError {
    FredError::new(fred::error::ErrorKind::Config, message)
}

#[cfg(feature = "tls")]
mod tls {
    use std::{path::Path, sync::Arc};

    use fred::{error::Error as FredError, types::config::TlsConfig};
    use rustls::pki_types::{pem::PemObject, CertificateDer};

    /// A rustls client configuration that trusts exactly the certificates in `ca_file`.
    pub(super) fn with_ca_file(ca_file: &Path) -> Result<TlsConfig, FredError> {
        let tls_error = |what: String| FredError::new(fred::error::ErrorKind::Tls, what);
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| tls_error(format!("reading {}: {e}", ca_file.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| tls_error(format!("parsing {}: {e}", ca_file.display())))?;
            roots.add(cert).map_err(|e| tls_error(format!("a CA in {}: {e}", ca_file.display())))?;
        }
        if roots.is_empty() {
            return Err(tls_error(format!("{} holds no certificate", ca_file.display())));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(config.into())
    }
}

/// Start connecting (and reconnecting, forever) without waiting for it: a service starts even
/// when Redis is down, and uses Redis from the moment it is up.
pub fn connect_in_background<C: ClientLike>(client: &C) {
    // The handle ends only when the client is told to quit; reconnection is the client's job.
    let _task = client.connect();
}

/// Why a bounded Redis round trip gave no answer.
#[derive(Debug)]
pub enum RedisFailure {
    /// No answer within the deadline.
    Timeout,
    /// Redis answered with an error, or the client is disconnected.
    Error(FredError),
}

impl std::fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisFailure::Timeout => f.write_str("redis round trip timed out"),
            RedisFailure::Error(e) => write!(f, "redis error: {e}"),
        }
    }
}

impl std::error::Error for RedisFailure {}

/// Run a Redis round trip with a deadline.
pub async fn bounded<T, F>(deadline: Duration, fut: F) -> Result<T, RedisFailure>
where
    F: Future<Output = Result<T, FredError>>,
{
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RedisFailure::Error(e)),
        Err(_) => Err(RedisFailure::Timeout),
    }
}

/// `REDIS_URL` from the environment, or the local default for tests.
pub fn url_from_env() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_build_a_pool() {
        let s: RedisSettings = serde_json::from_str(r#"{"url":"redis://127.0.0.1:6390","pool_size":2}"#).unwrap();
        assert_eq!(s.command_timeout(), Duration::from_millis(20));
        let pool = s.build_pool().unwrap();
        assert_eq!(pool.size(), 2);
        assert!(RedisSettings::from_url("not a url").build_pool().is_err());
    }

    #[test]
    fn cluster_and_tls_urls_are_recognised() {
        let cluster = RedisSettings::from_url("redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001");
        assert!(cluster.is_cluster() && !cluster.uses_tls());
        assert!(cluster.build_pool().is_ok());
        let tls = RedisSettings::from_url("rediss-cluster://127.0.0.1:7000");
        assert!(tls.is_cluster() && tls.uses_tls());
        assert!(!RedisSettings::from_url("redis://127.0.0.1:6379").uses_tls());
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn a_tls_url_without_the_feature_is_refused_not_sent_in_plain_text() {
        assert!(RedisSettings::from_url("rediss://127.0.0.1:6380").build_pool().is_err());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_ca_file_without_a_tls_url_is_refused() {
        let settings = RedisSettings {
            tls_ca_file: Some("/nonexistent.pem".into()),
            ..RedisSettings::from_url("redis://127.0.0.1:1")
        };
        assert!(settings.build_pool().is_err());
    }

    #[tokio::test]
    async fn bounded_round_trip_to_a_dead_port_fails_fast() {
        let pool = RedisSettings::from_url("redis://127.0.0.1:1").build_pool().unwrap();
        connect_in_background(&pool);
        let started = std::time::Instant::now();
        let got: Result<Option<String>, _> =
            bounded(Duration::from_millis(200), fred::prelude::KeysInterface::get(&pool, "k")).await;
        assert!(got.is_err());
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
