//! Phalanx cache: two levels of caching for axum services.
//!
//! - [`TieredCache`]: application data (query results) in a moka L1 and a Redis L2, with
//!   coalesced loads, tags and invalidation that reaches every node.
//! - [`CacheLayer`]: a shared HTTP response cache with RFC 9111 semantics, on top of a
//!   `TieredCache`, so HTTP entries share L2 and cross-node purges with the data cache.
#![forbid(unsafe_code)]

mod coalesce;
mod stats;
pub mod tiered;

pub use stats::{CacheStats, CacheStatus, Level, LevelStats};
pub use tiered::{CacheKey, CacheValue, ConfigError, EntryOptions, TieredCache, TieredCacheBuilder, TieredConfig};
pub mod http;

pub use crate::http::{CacheLayer, CacheLayerBuilder, CacheService, CachedResponse, HttpCacheConfig, HttpStore};
