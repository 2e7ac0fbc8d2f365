#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod coalesce;
pub mod http;
mod stats;
pub mod tiered;

pub use phalanx_core::ConfigError;
pub use stats::{CacheStats, Level, LevelStats};
pub use tiered::{CacheKey, CacheValue, EntryOptions, LoadToken, TieredCache, TieredCacheBuilder, TieredCacheConfig};

pub use crate::http::{CacheConfig, CacheLayer, CacheLayerBuilder, CacheService, CachedResponse, HttpStore};
