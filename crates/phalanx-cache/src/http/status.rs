//! The `/status` section of a CacheLayer.

use phalanx_core::{StatusSource, TargetCheck};

use super::layer::CacheLayer;
use crate::stats;

/// Section `http_cache`: the store's figures and the hit ratio (the HTTP layer's once it has
/// seen requests), judged against [`CacheConfig::target_hit_ratio`](super::CacheConfig) when set.
impl StatusSource for CacheLayer {
    fn name(&self) -> &str {
        "http_cache"
    }

    fn report(&self) -> serde_json::Value {
        stats::report(&self.stats())
    }

    fn targets(&self) -> Vec<TargetCheck> {
        stats::targets(self.state.target_hit_ratio, || self.stats())
    }
}
