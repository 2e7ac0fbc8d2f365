//! Rate limiting for axum and tower: [`RateLimitLayer`].
//!
//! - **GCRA**, one theoretical arrival time (TAT) per client and policy. In-process it is exact:
//!   from a fresh key, over `t` seconds at most `burst + rate · t` requests pass.
//! - **Stores**: in-process (sharded map of 64-bit digests; idle keys dropped as shards grow,
//!   which changes no decision) or Redis ([`RedisStore`]): each node leases a slice of each
//!   key's quota from Redis and decides locally; a background task tops leases up, so a request
//!   never waits on Redis. `N` nodes allow at most `burst + rate·t + N·L·(2 + ⌊t/τ⌋)` over `t`
//!   (`L` the lease, `τ` the burst's restore time; see the README).
//! - **Policies**: named [`Quota`]s with per-[`Tier`](phalanx_core::Tier) overrides; every policy
//!   of a layer must pass. Keyed by [`ClientKey`](phalanx_core::ClientKey): one already in the
//!   request extensions (from `ClassifyLayer`) or the layer's `ClientKeyResolver` (forwarding
//!   headers believed from trusted proxies only). The tier comes from the `Tier` extension
//!   (default `Standard`).
//! - **Responses**: 429 `application/problem+json` with `Retry-After`; `RateLimit-Policy` and
//!   `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers) on allowed and limited responses:
//!   `RateLimit-Policy: "per-client";q=1000;w=60`, `RateLimit: "per-client";r=998;t=42`, where
//!   `r` is the number of requests that would pass right now and `t` the seconds until the quota
//!   is fully restored. `Retry-After` is the time until one request would pass.
//! - **Redis slow or gone**: slow or hung, it delays only the background top-ups. Down (failing
//!   for the store's `down_after`), the layer fails open (by default falling back to the
//!   in-process limiter with each quota divided by the last known node count, which nodes
//!   announce in Redis) or fails closed (503 `dependency-unavailable`), counted in
//!   `phalanx.ratelimit.decisions{policy, outcome}` with `outcome` in `allowed`, `limited`,
//!   `fail_open`, `fail_closed`. A fallback decision that limits is counted `limited`.
//! - **Shadow mode**: decide and count (with a `shadow=true` attribute), never reject.
//!
//! **Time**: the layer's [`Clock`] (the wall clock advanced by the CPU's time-stamp counter and
//! re-anchored to the wall clock every second, or `tokio::time` when the layer is built where
//! tokio's time is paused). The Redis scripts read Redis's own clock by default
//! ([`RedisStoreBuilder::server_time`]), so node clocks may disagree.
//!
//! ```
//! use axum::{routing::get, Router};
//! use phalanx_core::{ClientKeyResolver, Tier};
//! use phalanx_ratelimit::{Policy, Quota, RateLimitLayer};
//!
//! let layer = RateLimitLayer::builder()
//!     .policy(
//!         Policy::new("per-client", Quota::per_minute(1000).with_burst(100))
//!             .tier(Tier::Premium, Quota::per_minute(10_000).with_burst(1000))
//!             .tier(Tier::Throttled, Quota::per_minute(10)),
//!     )
//!     .key_resolver(ClientKeyResolver::builder().header("x-client-id").peer_ip().build().unwrap())
//!     .build()
//!     .expect("valid rate limit");
//!
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(layer);
//! # let _ = app;
//! ```
#![forbid(unsafe_code)]

mod clock;
mod config;
mod layer;
mod local;
mod quota;
mod redis;
mod service;

pub use clock::Clock;
pub use config::{PolicyConfig, QuotaConfig, RateLimitConfig, RedisLimitConfig};
pub use layer::{RateLimitLayer, RateLimitLayerBuilder, RateLimitStatus, RATELIMIT, RATELIMIT_POLICY};
pub use quota::{Policy, Quota};
pub use redis::{RedisStore, RedisStoreBuilder};
pub use service::{RateLimitService, ResponseFuture};

/// An invalid rate-limit configuration, found at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError(String);

impl BuildError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        BuildError(msg.into())
    }
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid rate limit configuration: {}", self.0)
    }
}

impl std::error::Error for BuildError {}
