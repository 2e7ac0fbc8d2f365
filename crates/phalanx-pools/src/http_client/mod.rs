//! The [`Http`] extractor: one shared reqwest-middleware client with a bounded connection
//! pool, per-upstream metrics, retries of idempotent requests within a retry budget, a slot
//! for the per-host circuit breaker middleware, and client-side least-request balancing over
//! the replicas of a logical upstream name (P2C over in-flight requests, each replica behind
//! its own breaker).
//!
//! ## The retry budget
//!
//! Retries are bounded twice: at most [`max_retries`](HttpClientConfig::max_retries) per
//! request, and over all requests by tower's [`TpsBudget`]: every request sent deposits, every
//! retry withdraws, deposits count for [`retry_budget_ttl`](HttpClientConfig::retry_budget_ttl),
//! and a floor of [`retry_budget_min_per_second`](HttpClientConfig::retry_budget_min_per_second)
//! is always there. Against an upstream that fails every call, retries add at most
//! `retry_budget_ratio` (20 % by default) to its load, plus that floor. A retry the budget
//! refuses is counted per host (`retries_denied` in `/status`) and the failed response is
//! returned as it is.
//!
//! Phalanx had its own budget before; tower's covers what it did (a ratio of retries per
//! request plus a bounded reserve), with three differences that are documented rather than
//! worked around: the ratio is applied as `1 / ⌊1 / ratio⌋` (see
//! [`HttpClientConfig::retry_budget_ratio`]); the balance is not readable, so `/status`
//! reports the retries made and refused instead; and each deposit and withdrawal takes a short
//! uncontended-in-practice mutex (never held across an `.await`) where ours used atomics only.

mod balance;
mod builder;
mod config;
mod middleware;

use std::{collections::HashMap, convert::Infallible, sync::Arc};

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use parking_lot::RwLock;
use reqwest_middleware::ClientWithMiddleware;

pub use builder::HttpClientBuilder;
pub use config::HttpClientConfig;

use phalanx_core::StatusSource;
use tower::retry::budget::TpsBudget;

use crate::Error;

use middleware::{HostStats, Instruments};

/// `http.client.request.duration` (OpenTelemetry semantic conventions), seconds, histogram,
/// labelled by `server.address`. (Not yet in `phalanx_core::names`.)
pub const HTTP_CLIENT_REQUEST_DURATION: &str = phalanx_core::names::HTTP_CLIENT_REQUEST_DURATION;
/// `http.client.active_requests` (OpenTelemetry semantic conventions), up-down counter,
/// labelled by `server.address`. (Not yet in `phalanx_core::names`.)
pub const HTTP_CLIENT_ACTIVE_REQUESTS: &str = phalanx_core::names::HTTP_CLIENT_ACTIVE_REQUESTS;
/// The `server.address` attribute key: the upstream host.
pub const ATTR_SERVER_ADDRESS: &str = phalanx_core::names::attr::SERVER_ADDRESS;
/// The `server.port` attribute key: the upstream port.
pub const ATTR_SERVER_PORT: &str = phalanx_core::names::attr::SERVER_PORT;

/// The shared outbound HTTP client. Cheap to clone (clones share connections, budget and
/// figures); derefs to [`ClientWithMiddleware`]. Put it in the axum state and take it with the
/// [`Http`] extractor.
///
/// Middleware order, outermost first: retries (idempotent requests only, within the budget),
/// per-host metrics (one measurement per attempt), then the middlewares added with
/// [`HttpClientBuilder::middleware`] (the per-host circuit breaker goes here, so each attempt
/// passes the breaker and an open breaker's refusal is never retried).
#[derive(Clone)]
pub struct HttpClient {
    client: ClientWithMiddleware,
    shared: Arc<HttpShared>,
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

/// The client's `/status` section, named by the client (`http`): per upstream `host:port`
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

/// The shared [`HttpClient`] from the axum state. Never rejects.
///
/// ```no_run
/// use phalanx_pools::Http;
///
/// async fn proxy(Http(client): Http) -> String {
///     match client.get("http://127.0.0.1:9000/quote").send().await {
///         Ok(res) => res.text().await.unwrap_or_default(),
///         Err(e) => format!("upstream failed: {e}"),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Http(pub HttpClient);

impl std::ops::Deref for Http {
    type Target = HttpClient;
    fn deref(&self) -> &HttpClient {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Http
where
    HttpClient: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Http(HttpClient::from_ref(state)))
    }
}
