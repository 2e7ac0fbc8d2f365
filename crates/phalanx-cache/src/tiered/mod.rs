//! [`TieredCache`]: application data in a moka L1 and (optionally) a Redis L2, with coalesced
//! loads, tags, and invalidation that reaches every node.
//!
//! - **L1** is a moka cache (TinyLFU admission, plus a doorkeeper while it is full), weighed in
//!   encoded bytes under [`TieredCacheConfig::max_bytes`]; each entry has its own TTL and an
//!   optional idle time.
//! - **L2** (feature `redis`, when a `phalanx_core::redis::RedisHandle` is given)
//!   holds the postcard encoding of the value, lz4-compressed above a size threshold, with its
//!   TTL kept by Redis and its tags beside it.
//! - **Loads**: [`TieredCache::get_with`] runs the loader once for concurrent misses of one key,
//!   across both levels; an L2 hit fills L1. Followers wait at most
//!   [`TieredCacheConfig::coalesce_timeout`], then load by themselves.
//! - **Redis is never request latency**: an L1 hit makes no Redis call; an L1 miss makes one
//!   (`MGET` of the value and the invalidation epoch) with [`TieredCacheConfig::l2_read_timeout`]
//!   as deadline, skipped at once while the L2 circuit is open. Stores (value, tag index and,
//!   for `insert`, the announcement) go to a bounded queue written by a background task in
//!   pipelined batches; a full queue drops the store, counted.
//! - **Stale re-cache race**: a load takes a [`LoadToken`] before reading its source; its store
//!   is refused, in L1 and in L2, when its key or one of its tags was invalidated after that.
//! - **Coherence**: `remove`, `insert` and `invalidate_tag` publish on the namespace's channel;
//!   every other node drops the key (or the tag's keys) from its L1. Each invalidation also
//!   increments an epoch in Redis and records it for the name's bucket, so a node whose
//!   subscription was lost drops, once subscribed again, only the L1 entries that may have
//!   missed an invalidation. Timeouts and outages never empty or shorten L1.
//!
//! Modules, one concern each. Leaves, which know nothing of the cache's state: `config`,
//! `options`, `slot` (an L1 entry), `token` (load tokens), `doorkeeper` (admission while L1 is
//! full), `tags` (the local tag index), `circuit` (the L2 circuit), `wire` (the L2 formats and
//! the writer's messages), `l2` (the Redis commands). `shared` holds the state every clone
//! shares and the paths through both levels; `l1` (lookups and fills), `invalidation` (the
//! invalidation clock and the replay of what Redis could not take), `listener` (the pub/sub
//! invalidation listener and reconciliation) and `writer` (the background L2 writer) add its
//! behaviour. `cache` is the public API, `builder` puts it together, `status` is its `/status`
//! section.

mod builder;
mod cache;
mod circuit;
mod config;
mod doorkeeper;
mod invalidation;
mod l1;
#[cfg(feature = "redis")]
mod l2;
#[cfg(not(feature = "redis"))]
#[path = "l2_none.rs"]
mod l2;
#[cfg(feature = "redis")]
mod listener;
mod options;
mod shared;
mod slot;
mod status;
mod tags;
mod token;
mod wire;
mod writer;

use std::{
    fmt::Display,
    hash::Hash,
    str::FromStr,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{de::DeserializeOwned, Serialize};

pub use builder::TieredCacheBuilder;
pub use cache::TieredCache;
pub use config::TieredCacheConfig;
pub use options::EntryOptions;
pub use token::LoadToken;

/// What a key must be: hashable for L1, and written as text (its `Display`, read back with
/// `FromStr`) in Redis keys and invalidation messages. `String`, integers and the like qualify.
pub trait CacheKey: Hash + Eq + Clone + Send + Sync + Display + FromStr + 'static {}
impl<T: Hash + Eq + Clone + Send + Sync + Display + FromStr + 'static> CacheKey for T {}

/// What a value must be: cheap enough to clone (wrap big values in `Arc`) and serde-encodable
/// (postcard, a compact binary format, in L2; the encoded length is the L1 weight).
pub trait CacheValue: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> CacheValue for T {}

/// The tables' hasher: keys come from clients (paths, headers), so it is seeded at random, and
/// it is much cheaper than SipHash.
type Hasher = foldhash::quality::RandomState;

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
