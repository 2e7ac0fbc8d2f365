//! The demo's configuration: one TOML file (`PHALANX_CONFIG`; the embedded `demo.toml` when
//! unset) plus environment variables (`BIND`, `DATABASE_URL`, `REDIS_URL`), which win.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use phalanx::{
    admission::AdmissionConfig,
    breaker::BreakerConfig,
    cache::{CacheConfig as HttpCacheConfig, TieredCacheConfig},
    core::{Priority, Tier},
    metrics::MetricsConfig,
    pools::{DbPoolConfig, HttpClientConfig, RedisPoolConfig},
    ratelimit::RateLimitConfig,
};
use serde::Deserialize;

use crate::server::ServerConfig;

/// The embedded defaults: the demo runs on this file when no other is given.
pub(crate) const EMBEDDED: &str = include_str!("demo.toml");

fn default_admin_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 3001))
}

/// Everything the demo reads at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DemoConfig {
    /// Listen address of the public API; env `BIND`.
    pub(crate) bind: SocketAddr,
    /// Listen address of `/metrics`, `/status`, `/upstream/control`, `/stats/writes`; env
    /// `ADMIN_BIND`. Default `127.0.0.1:3001`: loopback only.
    #[serde(default = "default_admin_bind")]
    pub(crate) admin_bind: SocketAddr,
    /// Timeouts and the connection cap of the public listener.
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// `sqlite://…` or `postgres://…`; env `DATABASE_URL`.
    pub(crate) database_url: String,
    /// Redis for L2, distributed limits and cross-node invalidation; env `REDIS_URL`.
    #[serde(default)]
    pub(crate) redis_url: Option<String>,
    /// PEM file of the certificate authorities a `rediss://` URL trusts (default: the system's);
    /// env `REDIS_TLS_CA_FILE`.
    #[serde(default)]
    pub(crate) redis_tls_ca_file: Option<std::path::PathBuf>,
    /// Items seeded into an empty catalog.
    pub(crate) seed_items: i64,
    /// Listen backlog.
    pub(crate) backlog: u32,
    /// After SIGTERM/SIGINT `/readyz` answers 503 this long before the listener closes.
    #[serde(with = "phalanx::core::duration")]
    pub(crate) drain_delay: Duration,
    /// In-flight requests get this long to finish after the listener closes.
    #[serde(with = "phalanx::core::duration")]
    pub(crate) shutdown_timeout: Duration,
    /// Per-request timeout of the whole stack.
    #[serde(with = "phalanx::core::duration")]
    pub(crate) request_timeout: Duration,
    /// `max-age` of `GET /items/{id}` responses (whole seconds).
    #[serde(with = "phalanx::core::duration")]
    pub(crate) item_max_age: Duration,
    /// `max-age` of `GET /items` pages (whole seconds).
    #[serde(with = "phalanx::core::duration")]
    pub(crate) list_max_age: Duration,
    pub(crate) classify: ClassifyConfig,
    pub(crate) ratelimit: RateLimitConfig,
    pub(crate) cache: CacheConfig,
    /// One admission limiter per route group: `items`, `writes` (PUT inside `items`), `upstream`.
    pub(crate) admission: BTreeMap<String, AdmissionConfig>,
    #[serde(default)]
    pub(crate) breaker: BreakerConfig,
    /// The MetricsLayer, and the latency targets `/status` judges (absent: none).
    #[serde(default)]
    pub(crate) metrics: MetricsConfig,
    /// `/status`'s `scaling_recommendations`: this pod's measured capacity and the HPA's
    /// target (absent: no recommendation).
    #[serde(default)]
    pub(crate) scaling: Option<phalanx::metrics::ScalingConfig>,
    #[serde(default)]
    pub(crate) pools: PoolsConfig,
    #[serde(default)]
    pub(crate) upstream: UpstreamConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ClassifyConfig {
    /// A client may lower its priority with this header; raise it only with a key whose tier
    /// is in `tier_max_priority`.
    pub(crate) priority_header: String,
    /// Tier -> the highest priority its keys may ask for through the header.
    pub(crate) tier_max_priority: BTreeMap<Tier, Priority>,
    pub(crate) api_key_header: String,
    pub(crate) routes: BTreeMap<String, Priority>,
    /// The key table: the only API keys the demo knows. Any other key counts as no key.
    pub(crate) api_keys: BTreeMap<String, ApiKeyGrant>,
}

/// What one API key of the table grants.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiKeyGrant {
    /// The tier its requests are classified (and rate limited) as.
    pub(crate) tier: Tier,
    /// Whether it may change the catalog (`PUT /items/{id}`).
    #[serde(default)]
    pub(crate) write: bool,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            priority_header: "x-priority".into(),
            tier_max_priority: BTreeMap::new(),
            api_key_header: "x-api-key".into(),
            routes: BTreeMap::new(),
            api_keys: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CacheConfig {
    /// The TieredCache of catalog rows.
    pub(crate) rows: TieredCacheConfig,
    /// The HTTP response cache's rules, and (`[cache.http.store]`) the TieredCache under it.
    pub(crate) http: HttpCacheConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PoolsConfig {
    pub(crate) db: DbPoolConfig,
    pub(crate) redis: RedisPoolConfig,
    pub(crate) http: HttpClientConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct UpstreamConfig {
    /// The origin `/upstream/quote` calls; none: an in-process upstream.
    pub(crate) url: Option<String>,
}

impl DemoConfig {
    /// The file named by `PHALANX_CONFIG` (or the embedded one), then the environment.
    pub(crate) fn load() -> Result<Self, String> {
        let mut config = match std::env::var("PHALANX_CONFIG") {
            Ok(path) => Self::from_file(Path::new(&path))?,
            Err(_) => Self::from_toml(EMBEDDED).map_err(|e| format!("embedded demo.toml: {e}"))?,
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(crate) fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Environment variables override the file.
    pub(crate) fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(bind) = get("BIND") {
            self.bind = bind.parse().map_err(|e| format!("BIND={bind:?}: {e}"))?;
        }
        if let Some(bind) = get("ADMIN_BIND") {
            self.admin_bind = bind.parse().map_err(|e| format!("ADMIN_BIND={bind:?}: {e}"))?;
        }
        if let Some(url) = get("DATABASE_URL").filter(|u| !u.is_empty()) {
            self.database_url = url;
        }
        if let Some(url) = get("REDIS_URL") {
            self.redis_url = (!url.is_empty()).then_some(url);
        }
        if let Some(path) = get("REDIS_TLS_CA_FILE") {
            self.redis_tls_ca_file = (!path.is_empty()).then(|| path.into());
        }
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        if self.admin_bind == self.bind {
            return Err(format!("admin_bind and bind are both {}: the admin listener needs its own", self.bind));
        }
        if !self.admin_bind.ip().is_loopback() {
            tracing::warn!(admin = %self.admin_bind, "the admin listener is not on loopback: keep it off the public network");
        }
        Ok(())
    }

    /// The admin listener's limits: the public one's timeouts, few connections.
    pub(crate) fn admin_server(&self) -> ServerConfig {
        ServerConfig { max_connections: 64, ..self.server }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_parses_and_env_wins() {
        let mut config = DemoConfig::from_toml(EMBEDDED).unwrap();
        assert_eq!(config.bind.port(), 3000);
        assert_eq!(config.admin_bind.to_string(), "127.0.0.1:3001");
        assert!(config.validate().is_ok());
        assert!(config.redis_url.is_none());
        assert_eq!(config.ratelimit.policies.len(), 2);
        assert!(config.admission.contains_key("items") && config.admission.contains_key("writes"));
        assert_eq!(config.metrics.targets.p99, Some(Duration::from_millis(500)), "the demo's own SLO");
        config
            .apply_env(|k| match k {
                "BIND" => Some("127.0.0.1:4000".into()),
                "ADMIN_BIND" => Some("127.0.0.1:4001".into()),
                "REDIS_URL" => Some("redis://127.0.0.1:6379".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.bind.port(), 4000);
        assert_eq!(config.admin_bind.port(), 4001);
        assert_eq!(config.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert!(config.apply_env(|k| (k == "BIND").then(|| "nonsense".into())).is_err());
    }

    #[test]
    fn redis_urls_of_every_scheme_pass_through_unchanged() {
        for url in [
            "redis://127.0.0.1:6379",
            "rediss://user:secret@redis.example:6380/0",
            "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002",
        ] {
            let mut config = DemoConfig::from_toml(EMBEDDED).unwrap();
            config.apply_env(|k| (k == "REDIS_URL").then(|| url.to_owned())).unwrap();
            assert_eq!(config.redis_url.as_deref(), Some(url));
        }
        let mut config = DemoConfig::from_toml(EMBEDDED).unwrap();
        config.apply_env(|k| (k == "REDIS_URL").then(String::new)).unwrap();
        assert_eq!(config.redis_url, None, "an empty REDIS_URL means none");
        config.apply_env(|k| (k == "REDIS_TLS_CA_FILE").then(|| "/etc/redis/ca.pem".to_owned())).unwrap();
        assert_eq!(config.redis_tls_ca_file.as_deref(), Some(std::path::Path::new("/etc/redis/ca.pem")));
    }

    #[test]
    fn the_admin_listener_must_be_its_own() {
        let mut config = DemoConfig::from_toml(EMBEDDED).unwrap();
        config.admin_bind = config.bind;
        assert!(config.validate().unwrap_err().contains("admin"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = format!("{EMBEDDED}\nno_such_setting = 1\n");
        assert!(DemoConfig::from_toml(&text).unwrap_err().contains("no_such_setting"));
    }
}
