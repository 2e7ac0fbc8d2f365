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
/// command_timeout = "20ms"
/// connect_timeout = "500ms"
/// # tls_ca_file = "/etc/redis/ca.pem"   # rediss:// with a private CA (feature `tls`)
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisSettings {
    /// `redis://host:port/db`, `redis-cluster://host:port?node=host:port&…`, or their TLS forms
    /// `rediss://…` / `rediss-cluster://…`. Default: `redis://127.0.0.1:6379`.
    pub url: String,
    /// Connections in the pool. Default: 4.
    pub pool_size: usize,
    /// Deadline of one command. Default: `"20ms"`.
    #[serde(with = "crate::duration")]
    pub command_timeout: Duration,
    /// Deadline of a connection attempt. Default: `"500ms"`.
    #[serde(with = "crate::duration")]
    pub connect_timeout: Duration,
    /// Longest wait between reconnection attempts. Default: `"2s"`.
    #[serde(with = "crate::duration")]
    pub reconnect_max_delay: Duration,
    /// PEM file of the certificate authorities a TLS URL trusts, instead of the system's roots.
    /// Default: none (system roots). Needs feature `tls`.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            pool_size: 4,
            command_timeout: Duration::from_millis(20),
            connect_timeout: Duration::from_millis(500),
            reconnect_max_delay: Duration::from_secs(2),
            tls_ca_file: None,
        }
    }
}

impl RedisSettings {
    /// Settings for this URL, other fields default.
    pub fn from_url(url: impl Into<String>) -> Self {
        RedisSettings { url: url.into(), ..Self::default() }
    }

    /// The same settings with this command deadline.
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The same settings with this connection-attempt deadline.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The same settings with `size` pooled connections.
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// The same settings trusting the certificate authorities in this PEM file.
    pub fn with_tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
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
        let command_timeout = self.command_timeout;
        let connect_timeout = self.connect_timeout;
        builder
            .with_performance_config(|p| p.default_command_timeout = command_timeout)
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = connect_timeout;
                // A command in flight when the connection drops is not replayed: its caller has
                // already fallen back, and a replay could apply it twice.
                c.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                50,
                u32::try_from(self.reconnect_max_delay.as_millis()).unwrap_or(u32::MAX).max(50),
                2,
            ));
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

/// The one Redis connection set of a process: a pool for commands and one subscriber client
/// for pub/sub, built from one [`RedisSettings`] (one server, a cluster, TLS or not) and shared by
/// every layer that uses Redis (the L2 cache and its invalidations, the distributed rate limiter,
/// the Redis extractor). Cheap to clone; clones share the connections.
///
/// [`RedisHandle::connect`] starts connecting in the background and returns at once, so a service
/// starts while Redis is down and uses it from the moment it is up. Users of the handle never
/// connect its clients themselves; they wait for or observe the connection
/// (`ClientLike::wait_for_connect`, `EventInterface::reconnect_rx`).
///
/// ```no_run
/// use phalanx_core::redis::{RedisHandle, RedisSettings};
///
/// # async fn run() -> Result<(), phalanx_core::ConfigError> {
/// let redis = RedisHandle::connect(RedisSettings::from_url("redis://127.0.0.1:6379"))?;
/// let deps = phalanx_core::Deps::new().redis(redis.clone());
/// # let _ = deps;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisHandle {
    inner: std::sync::Arc<HandleInner>,
}

struct HandleInner {
    settings: RedisSettings,
    pool: Pool,
    subscriber: fred::clients::SubscriberClient,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("url", &redacted(&self.inner.settings.url))
            .field("pool_size", &self.inner.pool.size())
            .finish()
    }
}

impl RedisHandle {
    /// Build the pool and the subscriber and start connecting both in the background.
    pub fn connect(settings: RedisSettings) -> Result<Self, crate::ConfigError> {
        let handle = Self::unconnected(settings)?;
        connect_in_background(&handle.inner.pool);
        connect_in_background(&handle.inner.subscriber);
        Ok(handle)
    }

    /// Build the clients without connecting them (tests of what a layer does before Redis is up).
    pub fn unconnected(settings: RedisSettings) -> Result<Self, crate::ConfigError> {
        let invalid = |e: FredError| crate::ConfigError::new("redis.url", e.to_string());
        let pool = settings.build_pool().map_err(invalid)?;
        let subscriber = settings.builder().and_then(|b| b.build_subscriber_client()).map_err(invalid)?;
        Ok(RedisHandle { inner: std::sync::Arc::new(HandleInner { settings, pool, subscriber }) })
    }

    /// The command pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The pub/sub client (on a cluster it follows the slot map for sharded channels).
    pub fn subscriber(&self) -> &fred::clients::SubscriberClient {
        &self.inner.subscriber
    }

    /// The settings the handle was built from.
    pub fn settings(&self) -> &RedisSettings {
        &self.inner.settings
    }

    /// The deadline of one command.
    pub fn command_timeout(&self) -> Duration {
        self.inner.settings.command_timeout
    }

    /// Whether the handle talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.settings.is_cluster()
    }
}

/// The URL without its password, for logs and `Debug`.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
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
        assert_eq!(s.command_timeout, Duration::from_millis(20));
        let short: RedisSettings = serde_json::from_str(r#"{"command_timeout":"5ms"}"#).unwrap();
        assert_eq!(short.command_timeout, Duration::from_millis(5));
        let pool = s.build_pool().unwrap();
        assert_eq!(pool.size(), 2);
        assert!(RedisSettings::from_url("not a url").build_pool().is_err());
    }

    #[test]
    fn a_handle_shares_one_pool_and_one_subscriber_and_hides_the_password() {
        let settings = RedisSettings::from_url("redis://:secret@127.0.0.1:6390").with_pool_size(3);
        let handle = RedisHandle::unconnected(settings).unwrap();
        let clone = handle.clone();
        assert_eq!(clone.pool().size(), 3);
        assert!(std::sync::Arc::ptr_eq(&handle.inner, &clone.inner));
        let shown = format!("{handle:?}");
        assert!(!shown.contains("secret") && shown.contains("127.0.0.1:6390"), "{shown}");
        let e = RedisHandle::unconnected(RedisSettings::from_url("not a url")).unwrap_err();
        assert_eq!(e.field(), "redis.url");
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
