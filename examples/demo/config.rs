//! The demo's configuration: one TOML file (`PHALANX_CONFIG`) plus environment variables
//! (`BIND`, `DATABASE_URL`, `REDIS_URL`), which win over the file.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

/// Everything the demo reads at start-up. Every field has a default, so no file is needed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DemoConfig {
    /// Listen address. Default `127.0.0.1:3000`; env `BIND`.
    pub(crate) bind: SocketAddr,
    /// `sqlite://…` or `postgres://…`. Default: an SQLite file beside the working directory;
    /// env `DATABASE_URL`.
    pub(crate) database_url: String,
    /// Redis for the L2 cache, the distributed rate limiter and cross-node invalidation.
    /// Default: none (L1 only, in-process limiter); env `REDIS_URL`.
    pub(crate) redis_url: Option<String>,
    /// Items seeded into an empty catalog. Default 100 000.
    pub(crate) seed_items: i64,
    /// Listen backlog. Default 4096.
    pub(crate) backlog: u32,
    /// After SIGTERM/SIGINT, `/readyz` answers 503 this long before the listener closes, so a
    /// load balancer stops sending new requests first. Default 2000 ms.
    pub(crate) drain_delay_ms: u64,
    /// In-flight requests get this long to finish after the listener closes. Default 30 s.
    pub(crate) shutdown_timeout_ms: u64,
    /// Per-request timeout of the whole stack. Default 10 s.
    pub(crate) request_timeout_ms: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database_url: "sqlite://phalanx-demo.db?mode=rwc".into(),
            redis_url: None,
            seed_items: 100_000,
            backlog: 4096,
            drain_delay_ms: 2000,
            shutdown_timeout_ms: 30_000,
            request_timeout_ms: 10_000,
        }
    }
}

impl DemoConfig {
    /// The file named by `PHALANX_CONFIG` (if any), then the environment.
    pub(crate) fn load() -> Result<Self, String> {
        let mut config = match std::env::var("PHALANX_CONFIG") {
            Ok(path) => Self::from_file(Path::new(&path))?,
            Err(_) => DemoConfig::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Parse a TOML file.
    pub(crate) fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse TOML text.
    pub(crate) fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Environment variables override the file.
    pub(crate) fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(bind) = get("BIND") {
            self.bind = bind.parse().map_err(|e| format!("BIND={bind:?}: {e}"))?;
        }
        if let Some(url) = get("DATABASE_URL").filter(|u| !u.is_empty()) {
            self.database_url = url;
        }
        if let Some(url) = get("REDIS_URL") {
            self.redis_url = (!url.is_empty()).then_some(url);
        }
        Ok(())
    }

    pub(crate) fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    pub(crate) fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}
