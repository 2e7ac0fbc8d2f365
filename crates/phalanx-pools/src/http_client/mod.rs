//! The [`Http`] extractor: one shared reqwest-middleware client with a bounded connection
//! pool, per-upstream metrics, retries of idempotent requests within a [`RetryBudget`], and a slot
//! for the per-host circuit breaker middleware, and client-side least-request balancing over
//! the replicas of a logical upstream name (P2C over in-flight requests, each replica behind
//! its own breaker).

mod balance;
mod budget;
mod middleware;

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use opentelemetry::metrics::Meter;
use parking_lot::RwLock;
use reqwest_middleware::{ClientWithMiddleware, Middleware};

pub use budget::RetryBudget;

use crate::{health::Health, status::PoolReport, BuildError};

use middleware::{HostStats, Instruments, MetricsMiddleware, RetryMiddleware};

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

/// Configuration of an [`HttpClient`]. Serde form (all fields optional):
///
/// ```toml
/// name = "http"
/// pool_max_idle_per_host = 32
/// pool_idle_timeout_ms = 90000
/// connect_timeout_ms = 1000
/// request_timeout_ms = 5000
/// max_retries = 2
/// retry_backoff_ms = 25
/// retry_budget_ratio = 0.2
/// retry_budget_reserve = 10
/// [upstreams]                     # logical name -> replicas, balanced by P2C
/// quote = ["10.0.0.5:8080", "10.0.0.6:8080"]
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpClientConfig {
    /// The client's name: its key in `/status`. Default: `http`.
    pub name: String,
    /// Idle keep-alive connections kept per upstream host. Default: 32.
    pub pool_max_idle_per_host: usize,
    /// Close keep-alive connections idle this long, in milliseconds; `None` never. Default: 90000.
    pub pool_idle_timeout_ms: Option<u64>,
    /// Deadline of a TCP connect, in milliseconds. Default: 1000.
    pub connect_timeout_ms: u64,
    /// Deadline of one attempt (connect to end of body), in milliseconds. Default: 5000.
    pub request_timeout_ms: u64,
    /// Retries of one idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) after a
    /// connect error, a timeout, or a 502/503/504. Default: 2.
    pub max_retries: u32,
    /// Wait before the first retry, doubled for each further one, in milliseconds. Default: 25.
    pub retry_backoff_ms: u64,
    /// Retries allowed per request sent, over time: at most this share of extra load. Default: 0.2.
    pub retry_budget_ratio: f64,
    /// Retries the budget can hold for a burst. Default: 10.
    pub retry_budget_reserve: u32,
    /// Balanced upstreams: a request to `http://NAME/...` goes to one of NAME's replicas
    /// (`host:port`), chosen by the power of two choices over requests in flight; each replica
    /// has its own circuit breaker when [`HttpClientBuilder::breaker`] is set. Default: none.
    pub upstreams: HashMap<String, Vec<String>>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            name: "http".into(),
            pool_max_idle_per_host: 32,
            pool_idle_timeout_ms: Some(90_000),
            connect_timeout_ms: 1000,
            request_timeout_ms: 5000,
            max_retries: 2,
            retry_backoff_ms: 25,
            retry_budget_ratio: 0.2,
            retry_budget_reserve: 10,
            upstreams: HashMap::new(),
        }
    }
}

impl HttpClientConfig {
    fn validate(&self) -> Result<(), BuildError> {
        let fail = |msg: &str| Err(BuildError::Config(format!("http client `{}`: {msg}", self.name)));
        if self.name.is_empty() {
            return fail("name must not be empty");
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return fail("connect_timeout_ms and request_timeout_ms must be > 0");
        }
        if !(0.0..=1.0).contains(&self.retry_budget_ratio) {
            return fail("retry_budget_ratio must be within 0.0 ..= 1.0");
        }
        Ok(())
    }
}

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
    config: HttpClientConfig,
    budget: RetryBudget,
    balancer: Arc<balance::Balancer>,
    hosts: RwLock<HashMap<String, Arc<HostStats>>>,
    instruments: Instruments,
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

/// Builds an [`HttpClient`]: [`HttpClient::builder`].
pub struct HttpClientBuilder {
    config: HttpClientConfig,
    meter: Option<Meter>,
    middlewares: Vec<Arc<dyn Middleware>>,
    breakers: Option<phalanx_breaker::BreakerRegistry>,
}

impl std::fmt::Debug for HttpClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientBuilder")
            .field("config", &self.config)
            .field("middlewares", &self.middlewares.len())
            .finish_non_exhaustive()
    }
}

impl HttpClientBuilder {
    /// Record through this meter instead of [`phalanx_core::default_meter`].
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Add a middleware inside the retry and metrics middlewares, so it sees every attempt —
    /// the place for the per-host circuit breaker (`phalanx_breaker::BreakerMiddleware`).
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middlewares.push(Arc::new(middleware));
        self
    }

    /// Send every attempt through the per-upstream (`host:port`) circuit breakers of
    /// `registry`: an open breaker fails the request at once, and that refusal is not retried.
    /// The balancer skips the replicas whose breaker in `registry` is open.
    pub fn breaker(mut self, registry: phalanx_breaker::BreakerRegistry) -> Self {
        self.breakers = Some(registry.clone());
        self.middleware(phalanx_breaker::BreakerMiddleware::new(registry))
    }

    /// Balance requests to `http://NAME/...` over these replicas (`host:port`), like
    /// [`HttpClientConfig::upstreams`].
    pub fn upstream<I, S>(mut self, name: &str, replicas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.upstreams.insert(name.to_owned(), replicas.into_iter().map(Into::into).collect());
        self
    }

    /// Build the client.
    pub fn build(self) -> Result<HttpClient, BuildError> {
        let HttpClientBuilder { config, meter, middlewares, breakers } = self;
        config.validate()?;
        let balancer = Arc::new(balance::Balancer::new(&config.upstreams, breakers)?);
        let meter = meter.unwrap_or_else(phalanx_core::default_meter);
        let reqwest = reqwest::Client::builder()
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(config.pool_idle_timeout_ms.map(Duration::from_millis))
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| BuildError::Client(e.to_string()))?;
        let shared = Arc::new(HttpShared {
            budget: RetryBudget::new(config.retry_budget_ratio, config.retry_budget_reserve),
            balancer: Arc::clone(&balancer),
            hosts: RwLock::new(HashMap::new()),
            instruments: Instruments::new(&meter),
            config,
        });
        let mut builder =
            reqwest_middleware::ClientBuilder::new(reqwest).with(RetryMiddleware::new(Arc::clone(&shared)));
        if !balancer.is_empty() {
            builder = builder.with(balance::BalanceMiddleware::new(balancer));
        }
        builder = builder.with(MetricsMiddleware::new(Arc::clone(&shared)));
        for m in middlewares {
            builder = builder.with_arc(m);
        }
        Ok(HttpClient { client: builder.build(), shared })
    }
}

impl HttpClient {
    /// A builder for a client with this configuration.
    pub fn builder(config: HttpClientConfig) -> HttpClientBuilder {
        HttpClientBuilder { config, meter: None, middlewares: Vec::new(), breakers: None }
    }

    /// A client with this configuration and no extra middleware, recording through the default meter.
    pub fn new(config: HttpClientConfig) -> Result<Self, BuildError> {
        Self::builder(config).build()
    }

    /// The middleware client.
    pub fn client(&self) -> &ClientWithMiddleware {
        &self.client
    }

    /// The retry budget.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.shared.budget
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

impl PoolReport for HttpClient {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn report(&self) -> serde_json::Value {
        let hosts: serde_json::Map<String, serde_json::Value> =
            self.shared.hosts.read().iter().map(|(h, s)| (h.clone(), s.report())).collect();
        serde_json::json!({
            "kind": "http",
            "pool_max_idle_per_host": self.shared.config.pool_max_idle_per_host,
            "retry_budget_available": self.shared.budget.available(),
            "hosts": hosts,
        })
    }

    /// Upstream health is the circuit breaker's to judge; the client itself is always usable.
    fn health(&self) -> Health {
        Health::Healthy
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
