//! The cluster-wide count of catalog writes, kept in Redis off the request path.
//!
//! A write only adds to a local atomic; one task per process flushes the sum with `INCRBY`
//! every [`FLUSH_EVERY`]. A Redis that is slow or gone costs a write nothing: the task's
//! round trip waits (bounded by the pool's acquire timeout and the client's command deadline),
//! and what it could not add stays pending for the next flush, so no count is lost while the
//! process runs and nothing queues but one number.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use fred::interfaces::KeysInterface;
use phalanx::pools::RedisPool;

/// The Redis key the count lives under (every node adds to it).
pub(crate) const WRITES_KEY: &str = "phalanx:demo:writes";

/// How often the pending count goes to Redis: the staleness of `/stats/writes`.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Writes counted here and not yet in Redis. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct WriteCounter {
    pending: Arc<AtomicU64>,
}

impl WriteCounter {
    /// A counter whose flushing task runs until the process ends (or every clone is dropped).
    pub(crate) fn spawn(redis: RedisPool) -> Self {
        let counter = WriteCounter::default();
        let pending = Arc::downgrade(&counter.pending);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pending) = pending.upgrade() else { return };
                flush(&redis, &pending).await;
            }
        });
        counter
    }

    /// Count one write.
    pub(crate) fn add(&self) {
        self.pending.fetch_add(1, Relaxed);
    }

    /// Writes not yet flushed.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> u64 {
        self.pending.load(Relaxed)
    }
}

/// Move the pending count into Redis; on failure it goes back to pending.
async fn flush(redis: &RedisPool, pending: &AtomicU64) {
    let n = pending.swap(0, Relaxed);
    if n == 0 {
        return;
    }
    let added = match redis.acquire().await {
        Ok(conn) => conn.run(|c| async move { c.incr_by::<i64, _>(WRITES_KEY, n as i64).await }).await.is_ok(),
        Err(_) => false,
    };
    if !added {
        // Failures are in the pool's metrics; the count waits for the next flush.
        pending.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx::core::{
        redis::{RedisHandle, RedisSettings},
        Deps,
    };

    async fn pool(url: &str) -> RedisPool {
        let handle = RedisHandle::connect(RedisSettings::from_url(url.to_owned())).unwrap();
        let config = crate::config::DemoConfig::from_toml(crate::config::EMBEDDED).unwrap();
        RedisPool::from_config(&config.pools.redis, &Deps::new().redis(handle)).await.unwrap()
    }

    async fn stored(pool: &RedisPool) -> i64 {
        let conn = pool.acquire().await.unwrap();
        conn.run(|c| async move { c.get::<Option<i64>, _>(WRITES_KEY).await }).await.unwrap().unwrap_or(0)
    }

    #[tokio::test]
    async fn writes_reach_redis_in_one_flush_without_a_round_trip_each() {
        let Some(url) = phalanx_core::testing::require_redis("writes_reach_redis_in_one_flush") else { return };
        let redis = pool(&url).await;
        let before = stored(&redis).await;
        let counter = WriteCounter::spawn(redis.clone());
        for _ in 0..5 {
            counter.add();
        }
        // Counting is local: nothing was sent yet.
        assert_eq!(counter.pending(), 5);
        for _ in 0..50 {
            if counter.pending() == 0 && stored(&redis).await >= before + 5 {
                return;
            }
            tokio::time::sleep(FLUSH_EVERY / 4).await;
        }
        panic!("5 writes not flushed: pending {}, stored {} (was {before})", counter.pending(), stored(&redis).await);
    }

    #[tokio::test]
    async fn a_redis_that_is_gone_keeps_the_count_pending() {
        // Nothing listens on this port: every flush fails.
        let redis = pool("redis://127.0.0.1:1").await;
        let counter = WriteCounter::spawn(redis);
        counter.add();
        counter.add();
        tokio::time::sleep(FLUSH_EVERY * 4).await;
        assert_eq!(counter.pending(), 2, "a failed flush must put its count back");
    }
}
