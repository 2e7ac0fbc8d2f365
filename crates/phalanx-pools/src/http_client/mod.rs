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
mod client;
mod config;
mod extract;
mod middleware;

pub use builder::HttpClientBuilder;
pub use client::HttpClient;
pub use config::HttpClientConfig;
pub use extract::Http;

use client::HttpShared;

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
