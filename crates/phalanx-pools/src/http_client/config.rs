//! [`HttpClientConfig`]: what an [`HttpClient`](crate::HttpClient) is built from.

use std::{collections::HashMap, time::Duration};

use phalanx_core::ConfigError;

/// Configuration of an [`HttpClient`](crate::HttpClient). Serde form (all fields optional):
///
/// ```toml
/// name = "http_client"
/// pool_max_idle_per_host = 32
/// pool_idle_timeout = "90s"
/// connect_timeout = "1s"
/// request_timeout = "5s"
/// max_retries = 2
/// retry_backoff = "25ms"
/// retry_budget_ratio = 0.2
/// retry_budget_min_per_second = 1
/// retry_budget_ttl = "10s"
/// [upstreams]                     # logical name -> replicas, balanced by P2C
/// quote = ["10.0.0.5:8080", "10.0.0.6:8080"]
/// ```
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpClientConfig {
    /// The client's name: its `/status` section. Default: `http_client` (not `http`, which is
    /// the server figures' key in phalanx-metrics' `/status` report).
    pub name: String,
    /// Idle keep-alive connections kept per upstream host. Default: 32.
    pub pool_max_idle_per_host: usize,
    /// Close keep-alive connections idle this long; `None` or `"0"`: never. Default: `"90s"`.
    #[serde(with = "phalanx_core::duration::option")]
    pub pool_idle_timeout: Option<Duration>,
    /// Deadline of a TCP connect. Default: `"1s"`.
    #[serde(with = "phalanx_core::duration")]
    pub connect_timeout: Duration,
    /// Deadline of one attempt (connect to end of body). Default: `"5s"`.
    #[serde(with = "phalanx_core::duration")]
    pub request_timeout: Duration,
    /// Retries of one idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) after a
    /// connect error, a timeout, or a 502/503/504. Default: 2.
    pub max_retries: u32,
    /// Wait before the first retry, doubled for each further one. Default: `"25ms"`.
    #[serde(with = "phalanx_core::duration")]
    pub retry_backoff: Duration,
    /// Retries allowed per request sent, as a fraction (0.0 ..= 1.0): at most this share of
    /// extra load over the last `retry_budget_ttl`. Default: 0.2.
    ///
    /// tower's [`TpsBudget`](tower::retry::budget::TpsBudget) charges `⌊1 / ratio⌋` requests per
    /// retry, so a ratio that is not `1/n` allows the next `1/n` up: 0.2 and 0.25 are exact,
    /// 0.3 allows one retry per 3 requests (0.33), 0.4 one per 2 (0.5), above 0.5 one per request.
    pub retry_budget_ratio: f64,
    /// Retries allowed on top of the ratio, per second of `retry_budget_ttl`: the budget always
    /// holds `min_per_second × ttl` of them, so that a client sending few requests can still
    /// retry. Default: 1 (10 retries per 10 s).
    pub retry_budget_min_per_second: u32,
    /// How long a request sent counts towards the budget (1 s ..= 60 s). Default: `"10s"`.
    #[serde(with = "phalanx_core::duration")]
    pub retry_budget_ttl: Duration,
    /// Balanced upstreams: a request to `http://NAME/...` goes to one of NAME's replicas
    /// (`host:port`), chosen by the power of two choices over requests in flight; each replica
    /// has its own circuit breaker when [`HttpClientBuilder::breaker`](crate::HttpClientBuilder::breaker)
    /// is set. Default: none.
    pub upstreams: HashMap<String, Vec<String>>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            name: "http_client".into(),
            pool_max_idle_per_host: 32,
            pool_idle_timeout: Some(Duration::from_secs(90)),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            max_retries: 2,
            retry_backoff: Duration::from_millis(25),
            retry_budget_ratio: 0.2,
            retry_budget_min_per_second: 1,
            retry_budget_ttl: Duration::from_secs(10),
            upstreams: HashMap::new(),
        }
    }
}

impl HttpClientConfig {
    /// The same configuration with this name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same configuration keeping `n` idle connections per host.
    pub fn with_pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = n;
        self
    }

    /// The same configuration closing keep-alive connections idle this long (`None`: never).
    pub fn with_pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The same configuration with this connect deadline.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The same configuration with this per-attempt deadline.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The same configuration retrying an idempotent request at most `n` times.
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The same configuration waiting this long before the first retry.
    pub fn with_retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// The same configuration with this retry budget: `ratio` retries per request (a
    /// fraction), `min_per_second` retries always allowed, requests counted for `ttl`.
    pub fn with_retry_budget(mut self, ratio: f64, min_per_second: u32, ttl: Duration) -> Self {
        self.retry_budget_ratio = ratio;
        self.retry_budget_min_per_second = min_per_second;
        self.retry_budget_ttl = ttl;
        self
    }

    /// The same configuration balancing `http://NAME/...` over these replicas (`host:port`).
    pub fn with_upstream<I, S>(mut self, name: impl Into<String>, replicas: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.upstreams.insert(name.into(), replicas.into_iter().map(Into::into).collect());
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new("connect_timeout", "must be more than 0"));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new("request_timeout", "must be more than 0"));
        }
        if !(0.0..=1.0).contains(&self.retry_budget_ratio) {
            return Err(ConfigError::new("retry_budget_ratio", "must be a fraction within 0.0 ..= 1.0"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.retry_budget_ttl) {
            return Err(ConfigError::new("retry_budget_ttl", "must be within 1s ..= 60s"));
        }
        if self.retry_budget_min_per_second >= i32::MAX as u32 {
            return Err(ConfigError::new("retry_budget_min_per_second", "must be below 2^31 - 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::retry::budget::{Budget, TpsBudget};

    /// Retries the budget grants after `requests` requests, with no floor.
    fn retries_allowed(ratio: f32, requests: u32) -> u32 {
        let budget = TpsBudget::new(Duration::from_secs(10), 0, ratio);
        (0..requests).for_each(|_| budget.deposit());
        let mut retries = 0;
        while budget.withdraw() {
            retries += 1;
        }
        retries
    }

    #[test]
    fn the_budget_ratio_is_applied_as_one_retry_per_floor_of_its_inverse_requests() {
        // What `retry_budget_ratio`'s docs promise: exact for 1/n, the next 1/n up otherwise.
        assert_eq!(retries_allowed(0.2, 100), 20);
        assert_eq!(retries_allowed(0.25, 100), 25);
        assert_eq!(retries_allowed(0.3, 99), 33);
        assert_eq!(retries_allowed(0.4, 100), 50);
        assert_eq!(retries_allowed(0.6, 100), 100);
        assert_eq!(retries_allowed(0.0, 100), 0);
    }

    #[test]
    fn the_floor_is_min_per_second_times_the_ttl() {
        let budget = TpsBudget::new(Duration::from_secs(5), 1, 0.2);
        let mut retries = 0;
        while budget.withdraw() {
            retries += 1;
        }
        assert_eq!(retries, 5);
    }
}
