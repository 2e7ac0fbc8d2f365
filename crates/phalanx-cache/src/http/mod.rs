//! [`CacheLayer`]: an HTTP response cache with the semantics of a shared cache (RFC 9111).
//!
//! - **What is stored**: responses to GET whose status is cacheable, without `no-store` or
//!   `private`; for a request with `Authorization`, only when the response says `public`,
//!   `s-maxage` or `must-revalidate`; with `Set-Cookie` only when configured. HEAD is answered
//!   from stored GET responses.
//! - **Freshness**: `s-maxage`, then `max-age`, then `Expires`; heuristic freshness only when
//!   configured; a default TTL (per layer, so per route when the layer wraps one route) for
//!   responses with no caching headers. `Age` is set on every response served from storage.
//!   Request directives `no-cache`, `max-age`, `max-stale`, `min-fresh`, `only-if-cached` (504
//!   when nothing is stored) and `no-store` are honoured.
//! - **Vary**: a response that varies is stored under a variant key holding the selecting request
//!   headers, with a marker at the base key naming them; `Vary: *` is never stored.
//! - **Validation**: a stale response with `ETag` / `Last-Modified` is revalidated with
//!   `If-None-Match` / `If-Modified-Since`; a 304 refreshes the stored headers. A client's own
//!   conditional request is answered 304 from storage when it matches.
//! - **Stale**: `stale-while-revalidate` serves stale and refreshes once in the background (the
//!   refresh carries the request's extensions); a stored response stands in for a refused (503,
//!   429), failed (5xx, 408, an inner error) or timed-out origin answer within `stale-if-error`
//!   or the layer's error grace, unless `must-revalidate`, `proxy-revalidate`, `no-cache` or
//!   `s-maxage` forbid it. 503 and 429 are never stored and never make a pass.
//! - **Keys**: the target URI (scheme, authority, path, query), or path and query with
//!   `single_host`; `key_query` names the query parameters that are part of a route's key.
//! - **Targeted fields** (RFC 9213): `Phalanx-Cache-Control`, then `CDN-Cache-Control`, replace
//!   `Cache-Control` for this cache when present and valid.
//! - **Ranges**: a single `bytes` range is served from a stored complete response (206 / 416).
//! - Header numbers are delta-seconds saturating at 2^31: no origin value can overflow.
//! - **Invalidation**: POST, PUT, PATCH, DELETE (any method but GET, HEAD, OPTIONS, TRACE) with a 2xx/3xx response purge the target URI and
//!   the same-origin `Location` / `Content-Location`, with all variants, on every node.
//!   [`CacheLayer::purge`] and [`CacheLayer::purge_tag`] (tags from `Cache-Tag` /
//!   `Surrogate-Key`) do the same on demand.
//! - **Coalescing**: concurrent misses for one key make one inner call; the others wait up to
//!   the coalescing timeout, then call the inner service themselves.
//! - **Size cap**: bodies are read up to the cap; a larger body streams on untouched, unstored.
//! - `X-Cache` (configurable name): `HIT`, `MISS`, `STALE`, `REVALIDATED`.

//!
//! Modules, one concern each (tower-http's anatomy): `config` ([`CacheConfig`]), `builder`
//! ([`CacheLayerBuilder`]), `layer` ([`CacheLayer`]), `service` ([`CacheService`], the request
//! path), `future` ([`ResponseFuture`]), `body` ([`CacheBody`], [`SplicedBody`]), `state` (what
//! every service shares, the cache key), `status` (the `/status` section), and the RFC rules:
//! `directives`, `entry`, `range`.

mod body;
mod builder;
mod config;
mod directives;
mod entry;
mod future;
mod layer;
mod range;
mod service;
mod state;
mod status;

pub use body::{CacheBody, SplicedBody};
pub use builder::CacheLayerBuilder;
pub use config::{CacheConfig, UnknownQuery};
pub use entry::CachedResponse;
pub use future::ResponseFuture;
pub use layer::CacheLayer;
pub use service::CacheService;
pub use state::{HttpStore, KeyFn};
