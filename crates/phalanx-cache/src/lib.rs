//! Phalanx cache: two levels of caching for axum services.
//!
//! - [`TieredCache`]: application data (query results) in a moka L1 and a Redis L2, with
//!   coalesced loads, tags and invalidation that reaches every node.
//! - [`CacheLayer`]: a shared HTTP response cache with RFC 9111 semantics, on top of a
//!   `TieredCache`, so HTTP entries share L2 and cross-node purges with the data cache.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use axum::{body::Body, http::Request, routing::get, Router};
//! use phalanx_cache::{CacheLayer, HttpStore, TieredCache};
//! use tower::ServiceExt;
//!
//! // Add `.redis(RedisSettings::from_url(..))` to share L2 and purges across nodes.
//! let store: HttpStore = TieredCache::builder().namespace("app:http").build().unwrap();
//! let cache = CacheLayer::builder().store(store).default_ttl(Duration::from_secs(5)).build().unwrap();
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(cache.clone());
//!
//! let first = app.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! let second = app.oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(cache.status().stats().http.hits, 1);
//! # }
//! ```
#![forbid(unsafe_code)]

mod coalesce;
mod stats;
pub mod tiered;

pub use stats::{CacheStats, CacheStatus, Level, LevelStats};
pub use tiered::{
    CacheKey, CacheValue, ConfigError, EntryOptions, LoadToken, TieredCache, TieredCacheBuilder, TieredConfig,
};
pub mod http;

pub use crate::http::{CacheLayer, CacheLayerBuilder, CacheService, CachedResponse, HttpCacheConfig, HttpStore};
