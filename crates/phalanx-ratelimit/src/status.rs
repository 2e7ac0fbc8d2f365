//! The `"ratelimit"` section of `/status`: [`RateLimitLayer`] is a [`StatusSource`], and reads
//! its figures one at a time too.

use phalanx_core::{FailureMode, StatusSource};

use crate::{layer::RateLimitLayer, quota::Outcome};

impl RateLimitLayer {
    /// Decisions so far of one policy with one outcome (`allowed`, `limited`, `fail_open`,
    /// `fail_closed`); 0 for an unknown policy or outcome.
    pub fn decisions(&self, policy: &str, outcome: &str) -> u64 {
        let shared = &self.shared;
        let Some(p) = shared.policies.iter().position(|p| &*p.name == policy) else { return 0 };
        let Some(o) = Outcome::NAMES.iter().position(|o| *o == outcome) else { return 0 };
        shared.snapshot().tally[p][o]
    }

    /// Bytes held by the in-process store's tables.
    pub fn local_bytes(&self) -> usize {
        self.shared.snapshot().local_bytes
    }

    /// Keys held by the in-process store (idle ones not yet swept included).
    pub fn local_keys(&self) -> usize {
        self.shared.snapshot().local_keys
    }

    /// Keys with a lease on this node (Redis store; idle ones not yet swept included; 0
    /// in-process).
    pub fn lease_keys(&self) -> usize {
        self.shared.snapshot().lease_keys
    }

    /// The live nodes last counted on Redis (1 without a Redis store).
    pub fn nodes(&self) -> u32 {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.shared.redis {
            return redis.nodes();
        }
        1
    }
}

/// `"ratelimit"`: decisions per policy and outcome, store kind, local keys and bytes; on Redis
/// also lease keys and bytes and `redis` {`down`, `nodes`, `syncs`, `sync_rounds_failed`,
/// `syncs_dropped`, `queued`}. A report takes each shard lock once.
impl StatusSource for RateLimitLayer {
    fn name(&self) -> &str {
        "ratelimit"
    }

    fn report(&self) -> serde_json::Value {
        let shared = &self.shared;
        let snapshot = shared.snapshot();
        let mut policies = serde_json::Map::new();
        for (i, p) in shared.policies.iter().enumerate() {
            let mut entry = serde_json::Map::new();
            for (outcome, name) in Outcome::ALL.iter().zip(Outcome::NAMES) {
                entry.insert(name.into(), snapshot.tally[i][*outcome as usize].into());
            }
            policies.insert(p.name.to_string(), entry.into());
        }
        #[cfg(feature = "redis")]
        let on_redis = shared.redis.is_some();
        #[cfg(not(feature = "redis"))]
        let on_redis = false;
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut report = serde_json::json!({
            "store": if on_redis { "redis" } else { "local" },
            "shadow": shared.shadow,
            "failure_mode": match shared.failure_mode { FailureMode::Open => "open", FailureMode::Closed => "closed" },
            "policies": policies,
            "local_keys": snapshot.local_keys,
            "local_bytes": snapshot.local_bytes,
        });
        #[cfg(feature = "redis")]
        if let Some(redis) = &shared.redis {
            report["lease_keys"] = snapshot.lease_keys.into();
            report["lease_bytes"] = snapshot.lease_bytes.into();
            report["redis"] = redis.counters();
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use phalanx_core::{ClientKey, Tier};

    use super::*;
    use crate::{
        local::LOCKS_TAKEN,
        quota::{Policy, Quota},
    };

    fn locks_taken_by(f: impl FnOnce()) -> usize {
        let before = LOCKS_TAKEN.with(|n| n.get());
        f();
        LOCKS_TAKEN.with(|n| n.get()) - before
    }

    #[test]
    fn a_status_report_takes_each_shard_lock_at_most_once() {
        let layer = RateLimitLayer::builder()
            .policy(Policy::new("a", Quota::per_second(10)))
            .policy(Policy::new("b", Quota::per_minute(100)))
            .policy(Policy::new("c", Quota::per_hour(1000)))
            .build()
            .unwrap();
        let shared = &layer.shared;
        for i in 0..1000 {
            let key = ClientKey::new(format!("id:{i}"));
            shared.answer_now(Some(&key), shared.local.digest(key.as_str()), Tier::Standard);
        }
        let shards = shared.local.shard_count();
        let mut report = serde_json::Value::Null;
        // Three policies × four outcomes, keys and bytes: still one pass over the shards.
        assert_eq!(locks_taken_by(|| report = layer.report()), shards);
        assert_eq!(report["policies"]["a"]["allowed"], 1000);
        assert_eq!(report["local_keys"], 3000);
        assert_eq!(locks_taken_by(|| assert_eq!(layer.decisions("c", "allowed"), 1000)), shards);
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn a_status_report_on_redis_takes_each_lease_shard_lock_at_most_once() {
        // No server is needed: the handle is never connected, decisions come from credits.
        let settings = phalanx_core::redis::RedisSettings::from_url("redis://127.0.0.1:1");
        let handle = phalanx_core::redis::RedisHandle::unconnected(settings).unwrap();
        let layer = RateLimitLayer::builder()
            .policy(Policy::new("a", Quota::per_second(100)))
            .policy(Policy::new("b", Quota::per_minute(1000)))
            .redis(handle)
            .build()
            .unwrap();
        let shared = &layer.shared;
        for i in 0..500 {
            let key = ClientKey::new(format!("id:{i}"));
            shared.answer_now(Some(&key), shared.local.digest(key.as_str()), Tier::Standard);
        }
        let redis = shared.redis.as_ref().unwrap();
        let shards = shared.local.shard_count() + redis.shard_count();
        let mut report = serde_json::Value::Null;
        assert_eq!(locks_taken_by(|| report = layer.report()), shards);
        assert_eq!(report["policies"]["b"]["allowed"], 500);
        assert_eq!(report["lease_keys"], 500);
    }
}
