//! The `/status` section of a TieredCache.

use phalanx_core::{StatusSource, TargetCheck};

use super::{cache::TieredCache, CacheKey, CacheValue};
use crate::stats;

/// Section `cache`: the per-level figures and the hit ratio, judged against
/// [`TieredCacheConfig::target_hit_ratio`](super::TieredCacheConfig::target_hit_ratio) when set.
impl<K: CacheKey, V: CacheValue> StatusSource for TieredCache<K, V> {
    fn name(&self) -> &str {
        "cache"
    }

    fn report(&self) -> serde_json::Value {
        stats::report(&self.stats())
    }

    fn targets(&self) -> Vec<TargetCheck> {
        stats::targets(self.shared.target_hit_ratio, || self.stats())
    }
}
