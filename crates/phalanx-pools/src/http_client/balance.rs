//! Client-side least-request balancing: a request to a logical upstream name goes to one of
//! its replicas, chosen by the power of two choices (P2C) over requests in flight.
//!
//! Two replicas are drawn at random among those whose circuit breaker lets calls through; the
//! one with fewer requests in flight wins, and on a tie the one that was sent fewer requests so
//! far, so an even load spreads evenly and a slow replica (its requests stay in flight longer)
//! gets less. A failing replica is ejected by its own breaker (keyed by its `host:port`, the
//! same key the breaker middleware uses): while the breaker is open it is not drawn. When every
//! replica's breaker is open the draw is over all of them, and the breaker refuses at once.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

use phalanx_core::ConfigError;

/// One replica of a balanced upstream.
#[derive(Debug)]
pub(crate) struct Replica {
    host: String,
    port: u16,
    key: String,
    in_flight: AtomicU64,
    sent: AtomicU64,
}

impl Replica {
    fn parse(upstream: &str, addr: &str) -> std::result::Result<Self, ConfigError> {
        let bad = || ConfigError::new(format!("upstreams.{upstream}"), format!("replica `{addr}` is not host:port"));
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Replica {
            host: host.to_owned(),
            port,
            key: if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") },
            in_flight: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        })
    }
}

/// The replicas of every balanced upstream name.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    upstreams: HashMap<String, Vec<Arc<Replica>>>,
    breakers: Option<phalanx_breaker::BreakerRegistry>,
    seed: AtomicU64,
}

/// Decrements the replica's in-flight count when the attempt ends, however it ends.
struct InFlight(Arc<Replica>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Balancer {
    pub(crate) fn new(
        upstreams: &HashMap<String, Vec<String>>,
        breakers: Option<phalanx_breaker::BreakerRegistry>,
    ) -> std::result::Result<Self, ConfigError> {
        let mut map = HashMap::new();
        for (name, replicas) in upstreams {
            if replicas.is_empty() {
                return Err(ConfigError::new(format!("upstreams.{name}"), "has no replica"));
            }
            let parsed = replicas
                .iter()
                .map(|r| Replica::parse(name, r).map(Arc::new))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            map.insert(name.to_ascii_lowercase(), parsed);
        }
        Ok(Balancer { upstreams: map, breakers, seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15) })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// splitmix64 over a shared counter: cheap, lock-free, good enough to draw two indices.
    fn random(&self) -> u64 {
        let mut z = self.seed.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn available(&self, r: &Replica) -> bool {
        match self.breakers.as_ref().and_then(|b| b.get(&r.key)) {
            Some(b) => !matches!(b.state(), phalanx_breaker::State::Open | phalanx_breaker::State::ForcedOpen),
            None => true,
        }
    }

    /// P2C among the replicas whose breaker is not open (or among all when none is).
    pub(crate) fn pick(&self, replicas: &[Arc<Replica>]) -> Arc<Replica> {
        let open: Vec<&Arc<Replica>> = replicas.iter().filter(|r| self.available(r)).collect();
        let pool: Vec<&Arc<Replica>> = if open.is_empty() { replicas.iter().collect() } else { open };
        if pool.len() == 1 {
            return Arc::clone(pool[0]);
        }
        let n = pool.len() as u64;
        let r = self.random();
        let a = (r % n) as usize;
        // A second index different from the first.
        let b = ((a as u64 + 1 + (r >> 32) % (n - 1)) % n) as usize;
        let (ra, rb) = (pool[a], pool[b]);
        let load = |x: &Replica| (x.in_flight.load(Relaxed), x.sent.load(Relaxed));
        Arc::clone(if load(rb) < load(ra) { rb } else { ra })
    }

    /// The replicas of the request's upstream name, if it is a balanced one.
    pub(crate) fn replicas(&self, url: &reqwest::Url) -> Option<&[Arc<Replica>]> {
        let host = url.host_str()?;
        self.upstreams.get(&host.to_ascii_lowercase()).map(Vec::as_slice)
    }

    /// In flight and requests sent per replica of `upstream`, in configuration order.
    pub(crate) fn report(&self, upstream: &str) -> Option<Vec<(String, u64, u64)>> {
        self.upstreams
            .get(&upstream.to_ascii_lowercase())
            .map(|rs| rs.iter().map(|r| (r.key.clone(), r.in_flight.load(Relaxed), r.sent.load(Relaxed))).collect())
    }
}

/// Rewrites a request to a balanced upstream name to the chosen replica. Sits inside the retry
/// middleware, so every attempt is balanced anew, and outside the metrics and breaker
/// middlewares, so they see the replica's `host:port`.
pub(crate) struct BalanceMiddleware {
    balancer: Arc<Balancer>,
}

impl BalanceMiddleware {
    pub(crate) fn new(balancer: Arc<Balancer>) -> Self {
        BalanceMiddleware { balancer }
    }
}

#[async_trait::async_trait]
impl Middleware for BalanceMiddleware {
    async fn handle(&self, mut req: Request, extensions: &mut Extensions, next: Next<'_>) -> Result<Response> {
        let Some(replicas) = self.balancer.replicas(req.url()) else {
            return next.run(req, extensions).await;
        };
        let replica = self.balancer.pick(replicas);
        let url = req.url_mut();
        if url.set_host(Some(&replica.host)).is_err() || url.set_port(Some(replica.port)).is_err() {
            return Err(reqwest_middleware::Error::Middleware(anyhow::anyhow!(
                "replica {} cannot carry this URL",
                replica.key
            )));
        }
        replica.in_flight.fetch_add(1, Relaxed);
        replica.sent.fetch_add(1, Relaxed);
        let _guard = InFlight(replica);
        next.run(req, extensions).await
    }
}
