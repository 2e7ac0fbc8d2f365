//! [`HttpClientBuilder`]: `HttpClient::builder()…build().await?`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use opentelemetry::metrics::Meter;
use parking_lot::RwLock;
use reqwest_middleware::Middleware;
use tower::retry::budget::TpsBudget;

use super::{
    balance,
    middleware::{Instruments, MetricsMiddleware, RetryMiddleware},
    HttpClient, HttpClientConfig, HttpShared,
};
use crate::Error;

/// Builds an [`HttpClient`]: [`HttpClient::builder`]. Every setting defaults as in
/// [`HttpClientConfig`].
#[derive(Default)]
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
            .field("breakers", &self.breakers.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpClientBuilder {
    /// Start from this configuration (every setting of it replaces the builder's, the
    /// upstreams included).
    pub fn config(mut self, config: HttpClientConfig) -> Self {
        self.config = config;
        self
    }

    /// The client's name: its `/status` section.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Idle keep-alive connections kept per upstream host.
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.config.pool_max_idle_per_host = n;
        self
    }

    /// Close keep-alive connections idle this long (`None` or zero: never).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.pool_idle_timeout = timeout;
        self
    }

    /// Deadline of a TCP connect.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Deadline of one attempt (connect to end of body).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Retries of one idempotent request.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.config.max_retries = n;
        self
    }

    /// Wait before the first retry, doubled for each further one.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_backoff = backoff;
        self
    }

    /// The retry budget: `ratio` retries per request (a fraction), `min_per_second` retries
    /// always allowed, requests counted for `ttl` (see [`HttpClientConfig::retry_budget_ratio`]).
    pub fn retry_budget(mut self, ratio: f64, min_per_second: u32, ttl: Duration) -> Self {
        self.config = self.config.with_retry_budget(ratio, min_per_second, ttl);
        self
    }

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
        self.config = self.config.with_upstream(name, replicas);
        self
    }

    /// Build the client. Fails with [`Error::Config`] naming the setting that cannot work
    /// (`upstreams.NAME` for a replica that is not `host:port`), or [`Error::Http`] when
    /// reqwest cannot start its client.
    pub async fn build(self) -> Result<HttpClient, Error> {
        let HttpClientBuilder { config, meter, middlewares, breakers } = self;
        config.validate()?;
        let balancer = Arc::new(balance::Balancer::new(&config.upstreams, breakers)?);
        let meter = meter.unwrap_or_else(phalanx_core::default_meter);
        let reqwest = reqwest::Client::builder()
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(config.pool_idle_timeout.filter(|d| !d.is_zero()))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(Error::Http)?;
        let budget = TpsBudget::new(
            config.retry_budget_ttl,
            config.retry_budget_min_per_second,
            config.retry_budget_ratio as f32,
        );
        let shared = Arc::new(HttpShared {
            budget,
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
