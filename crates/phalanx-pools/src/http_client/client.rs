//! [`HttpClient`]: the shared client handle and its `/status` section.

use std::{collections::HashMap, sync::Arc};

use parking_lot::RwLock;
use phalanx_core::StatusSource;
use reqwest_middleware::ClientWithMiddleware;
use tower::retry::budget::TpsBudget;

use super::{
    balance,
    middleware::{HostStats, Instruments},
    HttpClientBuilder, HttpClientConfig,
};
use crate::Error;

/// The shared outbound HTTP client. Cheap to clone (clones share connections, budget and
/// figures); derefs to [`ClientWithMiddleware`]. Put it in the axum state and take it with the
/// [`Http`](super::Http) extractor.
///
/// Middleware order, outermost first: retries (idempotent requests only, within the budget),
/// per-host metrics (one measurement per attempt), then the middlewares added with
/// [`HttpClientBuilder::middleware`] (the per-host circuit breaker goes here, so each attempt
/// passes the breaker and an open breaker's refusal is never retried).
#[derive(Clone)]
pub struct HttpClient {
    pub(super) client: ClientWithMiddleware,
    pub(super) shared: Arc<HttpShared>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("name", &self.shared.config.name).finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub(crate) struct HttpShared {
    pub(super) config: HttpClientConfig,
    pub(super) budget: TpsBudget,
    pub(super) balancer: Arc<balance::Balancer>,
    pub(super) hosts: RwLock<HashMap<String, Arc<HostStats>>>,
    pub(super) instruments: Instruments,
}

impl HttpShared {
    /// The figures of the request's upstream `host:port`.
    pub(crate) fn upstream(&self, url: &reqwest::Url) -> Arc<HostStats> {
        let key = phalanx_breaker::upstream_key(url);
        if let Some(stats) = self.hosts.read().get(&key) {
            return Arc::clone(stats);
        }
        let mut hosts = self.hosts.write();
        Arc::clone(hosts.entry(key).or_insert_with(|| Arc::new(HostStats::new(url))))
    }
}

impl HttpClient {
    /// A builder: every setting defaults as in [`HttpClientConfig`].
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder::default()
    }

    /// The client of a configuration file's section, recording through the meter of `deps`.
    /// For middlewares or circuit breakers, use
    /// `HttpClient::builder().config(config.clone()).breaker(registry)…`.
    pub async fn from_config(config: &HttpClientConfig, deps: &phalanx_core::Deps) -> Result<Self, Error> {
        Self::builder().config(config.clone()).meter(deps.meter_or_default()).build().await
    }

    /// Its configuration.
    pub fn config(&self) -> &HttpClientConfig {
        &self.shared.config
    }

    /// The middleware client.
    pub fn client(&self) -> &ClientWithMiddleware {
        &self.client
    }

    /// The replicas of a balanced upstream: `(host:port, in flight, requests sent)` each.
    pub fn replicas(&self, upstream: &str) -> Option<Vec<(String, u64, u64)>> {
        self.shared.balancer.report(upstream)
    }

    /// Figures of one upstream `host:port` (the breaker's key): requests (attempts), errors,
    /// retries, retries refused by the budget, in flight, duration.
    pub fn upstream_report(&self, upstream: &str) -> Option<serde_json::Value> {
        self.shared.hosts.read().get(upstream).map(|h| h.report())
    }
}

impl std::ops::Deref for HttpClient {
    type Target = ClientWithMiddleware;
    fn deref(&self) -> &ClientWithMiddleware {
        &self.client
    }
}

/// The client's `/status` section, named by the client (`http_client`): per upstream `host:port`
/// requests (attempts), errors, in flight, retries, retries refused by the budget and
/// duration. No targets: upstream health is the circuit breaker's to judge.
impl StatusSource for HttpClient {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn report(&self) -> serde_json::Value {
        let hosts: serde_json::Map<String, serde_json::Value> =
            self.shared.hosts.read().iter().map(|(h, s)| (h.clone(), s.report())).collect();
        serde_json::json!({
            "kind": "http",
            "pool_max_idle_per_host": self.shared.config.pool_max_idle_per_host,
            "max_retries": self.shared.config.max_retries,
            "retry_budget_ratio": self.shared.config.retry_budget_ratio,
            "hosts": hosts,
        })
    }
}
