//! `BreakerMiddleware`: a breaker per upstream `host:port` around outbound reqwest calls.

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::{breaker::CircuitBreaker, registry::BreakerRegistry};

/// A [`reqwest_middleware::Middleware`] that sends each request through the breaker of its
/// upstream `host:port` in a [`BreakerRegistry`]. While that breaker is open the request fails
/// at once with a [`reqwest_middleware::Error::Middleware`] wrapping a
/// [`crate::CallNotPermitted`] (downcast it to read `retry_after`), and no connection is
/// attempted.
///
/// A transport error (connect, timeout, body) is a failure; a response is judged by the
/// breaker's status rule (5xx fails, 4xx does not, by default). The call's duration ends at
/// the response headers.
///
/// Needs the crate feature `reqwest`.
///
/// ```
/// use std::time::Duration;
/// use phalanx_breaker::{BreakerConfig, BreakerMiddleware, BreakerRegistry};
///
/// let registry = BreakerRegistry::builder()
///     .wait_in_open(Duration::from_secs(5))
///     .config_for("payments.internal:443", BreakerConfig::default().with_failure_rate_threshold(0.25))
///     .build()?;
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(BreakerMiddleware::new(registry.clone()))
///     .build();
/// # let _ = client;
/// # Ok::<(), phalanx_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BreakerMiddleware {
    registry: BreakerRegistry,
}

impl BreakerMiddleware {
    /// Breakers from `registry`, one per upstream `host:port`.
    pub fn new(registry: BreakerRegistry) -> Self {
        BreakerMiddleware { registry }
    }

    /// The registry.
    pub fn registry(&self) -> &BreakerRegistry {
        &self.registry
    }

    /// The breaker a request to `url` goes through.
    pub fn breaker_for(&self, url: &reqwest::Url) -> CircuitBreaker {
        self.registry.get_or_create(&upstream_key(url))
    }
}

/// `host:port` of a URL, the name of its breaker in the registry (the scheme's default port when none is given).
pub fn upstream_key(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

#[async_trait::async_trait]
impl Middleware for BreakerMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let breaker = self.breaker_for(req.url());
        let permit = breaker.try_acquire().map_err(reqwest_middleware::Error::middleware)?;
        let result = next.run(req, extensions).await;
        match &result {
            Ok(res) => {
                let outcome = breaker.config().classify_status(res.status());
                permit.record(outcome);
            }
            Err(_) => permit.failure(),
        }
        result
    }
}
