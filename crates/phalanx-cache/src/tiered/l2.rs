//! L2: values in Redis, tag indexes, counters, the invalidation epoch and channel.
//!
//! Key layout under the namespace `ns`, every key inside the hash tag `{ns}` so that each
//! script's keys share one slot on a Redis Cluster:
//!
//! - `{ns}:v:<key>` values (TTL kept by Redis);
//! - `{ns}:t:<tag>` sorted sets of the keys carrying a tag, scored by the value's expiry (unix
//!   ms): expired members are dropped on every store into the set, and the set itself expires
//!   with its longest-lived member, so the index never outgrows the live values;
//! - `{ns}:c:<key>` counters;
//! - `{ns}:epoch` the invalidation epoch, incremented by every invalidation, and `{ns}:inv` a
//!   hash of at most [`BUCKETS`] fields: bucket of a key or tag name → epoch of its last
//!   invalidation. A store refuses to write when a name of its own was invalidated after its
//!   load began, and a node that lost its subscription drops only what may be stale.
//!
//! `{ns}:inval` is the pub/sub channel (classic PUBLISH reaches every node of a cluster).

use std::time::Duration;

use bytes::Bytes;
use fred::{
    clients::{Pool, SubscriberClient},
    prelude::{ClientLike, HashesInterface, KeysInterface, LuaInterface, PubsubInterface, SortedSetsInterface},
    types::Value,
};
use phalanx_core::redis::{bounded, RedisFailure, RedisHandle};

use super::wire::{bucket, encode_message, Invalidation, StoreOp, StoreOutcome};

/// Why an L2 round trip gave no answer.
pub(super) type Failure = RedisFailure;

/// Members unlinked per round trip by a tag purge.
const PURGE_BATCH: usize = 256;

/// Store a value and index its tags. KEYS: value, epoch, inv, tag sets…; ARGV: payload, ttl
/// ms, expiry unix ms, token epoch (-1: unconditional), now unix ms, key text, announce node
/// ('' : none), channel, then the buckets of the key and of each tag. Returns -1 when an
/// invalidation of one of those names came after the token, else the epoch (0 when none was
/// taken).
const STORE_SCRIPT: &str = r"
local token = tonumber(ARGV[4])
if token >= 0 then
  local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
  if epoch > token then
    for i = 9, #ARGV do
      if tonumber(redis.call('HGET', KEYS[3], ARGV[i]) or '0') > token then return -1 end
    end
  end
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 4, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[5])
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[6])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
if ARGV[7] == '' then return 0 end
local e = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], ARGV[9], e)
redis.call('PUBLISH', ARGV[8], ARGV[7] .. '\nk\n' .. e .. '\n' .. ARGV[6])
return e
";

/// Record an invalidation. KEYS: epoch, inv, target (a value, or a tag set); ARGV: bucket,
/// mode ('k': unlink the value and publish; 't': return the first batch of the tag set),
/// batch, channel, node, name. Returns `{epoch, members}`.
const INVALIDATE_SCRIPT: &str = r"
local e = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], e)
if ARGV[2] == 'k' then
  redis.call('UNLINK', KEYS[3])
  redis.call('PUBLISH', ARGV[4], ARGV[5] .. '\nk\n' .. e .. '\n' .. ARGV[6])
  return {e, {}}
end
return {e, redis.call('ZRANGE', KEYS[3], 0, tonumber(ARGV[3]) - 1)}
";

/// Redis access for one TieredCache, over the process's shared [`RedisHandle`].
pub(super) struct L2 {
    /// The process's one pool and subscriber.
    pub(super) redis: RedisHandle,
    /// `{ns}`, the hash tag every key starts with.
    prefix: String,
    pub(super) channel: String,
    /// Deadline of a write-path round trip.
    deadline: Duration,
    /// Deadline of a read on the request path.
    read_deadline: Duration,
    /// The cluster slot of every key of the namespace.
    slot: u16,
}

impl L2 {
    /// L2 of `namespace` over `redis`: write-path round trips get the handle's command timeout,
    /// reads on the request path `read_timeout` (at most that).
    pub(super) fn new(redis: RedisHandle, namespace: &str, read_timeout: Duration) -> Self {
        let prefix = format!("{{{namespace}}}");
        let slot = fred::util::redis_keyslot(prefix.as_bytes());
        let deadline = redis.command_timeout();
        let read_deadline = read_timeout.min(deadline);
        L2 { redis, channel: format!("{prefix}:inval"), prefix, deadline, read_deadline, slot }
    }

    fn pool(&self) -> &Pool {
        self.redis.pool()
    }

    pub(super) fn subscriber(&self) -> &SubscriberClient {
        self.redis.subscriber()
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}:v:{key}", self.prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:t:{tag}", self.prefix)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}:c:{key}", self.prefix)
    }

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    fn inv_key(&self) -> String {
        format!("{}:inv", self.prefix)
    }

    /// The value and the current epoch, in one round trip (`MGET`, one slot).
    pub(super) async fn get(&self, key: &str) -> Result<(Option<Bytes>, u64), RedisFailure> {
        let keys = vec![self.value_key(key), self.epoch_key()];
        let (value, epoch): (Option<Bytes>, Option<u64>) = bounded(self.read_deadline, self.pool().mget(keys)).await?;
        Ok((value, epoch.unwrap_or(0)))
    }

    fn store_call(&self, op: &StoreOp, node: &str) -> (Vec<String>, Vec<Value>) {
        let mut keys = Vec::with_capacity(3 + op.tags.len());
        keys.push(self.value_key(&op.key));
        keys.push(self.epoch_key());
        keys.push(self.inv_key());
        keys.extend(op.tags.iter().map(|t| self.tag_key(t)));
        let now = super::unix_ms(std::time::SystemTime::now());
        let mut args: Vec<Value> = vec![
            Value::Bytes(op.payload.clone()),
            Value::Integer(op.ttl.as_millis().clamp(1, i64::MAX as u128) as i64),
            Value::Integer(op.expires_unix_ms.min(i64::MAX as u64) as i64),
            Value::Integer(op.token.map_or(-1, |t| t.min(i64::MAX as u64) as i64)),
            Value::Integer(now.min(i64::MAX as u64) as i64),
            Value::from(op.key.as_str()),
            Value::from(if op.announce { node } else { "" }),
            Value::from(self.channel.as_str()),
        ];
        args.push(Value::Integer(bucket(b'k', &op.key) as i64));
        args.extend(op.tags.iter().map(|t| Value::Integer(bucket(b't', t) as i64)));
        (keys, args)
    }

    /// Write a batch of stores in one pipelined round trip.
    pub(super) async fn store_batch(&self, ops: &[StoreOp], node: &str) -> Result<Vec<StoreOutcome>, RedisFailure> {
        let pipeline = self.pool().next().pipeline();
        for op in ops {
            let (keys, args) = self.store_call(op, node);
            // Pipelines have no EVAL of their own: the same command, spelled out.
            let mut call: Vec<Value> = Vec::with_capacity(2 + keys.len() + args.len());
            call.push(Value::from(STORE_SCRIPT));
            call.push(Value::Integer(keys.len() as i64));
            call.extend(keys.into_iter().map(Value::from));
            call.extend(args);
            // Routed by the namespace's slot (fred would hash the script text otherwise).
            let eval = fred::cmd!("EVAL", hash: fred::types::ClusterHash::Custom(self.slot));
            let queued: Result<(), _> = pipeline.custom(eval, call).await;
            queued.map_err(RedisFailure::Error)?;
        }
        let answers: Vec<i64> = bounded(self.deadline, pipeline.all()).await?;
        Ok(answers
            .into_iter()
            .map(|n| if n < 0 { StoreOutcome::Refused } else { StoreOutcome::Written(n as u64) })
            .collect())
    }

    /// Remove a value, record and publish its invalidation; returns the epoch.
    pub(super) async fn remove(&self, key: &str, node: &str) -> Result<u64, RedisFailure> {
        let keys = vec![self.epoch_key(), self.inv_key(), self.value_key(key)];
        let args: Vec<Value> = vec![
            Value::Integer(bucket(b'k', key) as i64),
            Value::from("k"),
            Value::Integer(0),
            Value::from(self.channel.as_str()),
            Value::from(node),
            Value::from(key),
        ];
        let (epoch, _): (u64, Vec<String>) =
            bounded(self.deadline, self.pool().eval(INVALIDATE_SCRIPT, keys, args)).await?;
        Ok(epoch)
    }

    /// Purge a tag incrementally: record the invalidation, then unlink the tagged values
    /// [`PURGE_BATCH`] at a time (each batch one pipelined round trip, never one O(n) script
    /// nor a whole-set read), then publish. Returns `(epoch, values unlinked)`.
    pub(super) async fn purge_tag(&self, tag: &str, node: &str) -> Result<(u64, u64), RedisFailure> {
        let tag_key = self.tag_key(tag);
        let keys = vec![self.epoch_key(), self.inv_key(), tag_key.clone()];
        let args: Vec<Value> = vec![
            Value::Integer(bucket(b't', tag) as i64),
            Value::from("t"),
            Value::Integer(PURGE_BATCH as i64),
            Value::from(self.channel.as_str()),
            Value::from(node),
            Value::from(tag),
        ];
        let (epoch, mut members): (u64, Vec<String>) =
            bounded(self.deadline, self.pool().eval(INVALIDATE_SCRIPT, keys, args)).await?;
        let message = encode_message(node, epoch, &Invalidation::Tag(tag));
        let mut unlinked = 0u64;
        loop {
            let last = members.len() < PURGE_BATCH;
            let pipeline = self.pool().next().pipeline();
            if !members.is_empty() {
                let values: Vec<String> = members.iter().map(|m| self.value_key(m)).collect();
                let _: Result<(), _> = pipeline.unlink(values).await;
                let _: Result<(), _> = pipeline.zrem(tag_key.as_str(), members.clone()).await;
            }
            if last {
                let _: Result<(), _> = pipeline.publish(self.channel.as_str(), message.as_str()).await;
                let _: Vec<Value> = bounded(self.deadline, pipeline.all()).await?;
                return Ok((epoch, unlinked + members.len() as u64));
            }
            let _: Result<(), _> =
                pipeline.zrange(tag_key.as_str(), 0, PURGE_BATCH as i64 - 1, None, false, None, false).await;
            let answers: Vec<Value> = bounded(self.deadline, pipeline.all()).await?;
            unlinked += members.len() as u64;
            members = match answers.into_iter().last() {
                Some(Value::Array(next)) => next.into_iter().filter_map(|v| v.into_string()).collect(),
                _ => Vec::new(),
            };
        }
    }

    /// The epoch and the invalidated-at epoch of every bucket, in one round trip.
    pub(super) async fn invalidations(&self) -> Result<(u64, Vec<(u64, u64)>), RedisFailure> {
        let pipeline = self.pool().next().pipeline();
        let _: Result<(), _> = pipeline.get(self.epoch_key()).await;
        let _: Result<(), _> = pipeline.hgetall(self.inv_key()).await;
        let (epoch, buckets): (Option<u64>, std::collections::HashMap<u64, u64>) =
            bounded(self.deadline, pipeline.all()).await?;
        Ok((epoch.unwrap_or(0), buckets.into_iter().collect()))
    }

    pub(super) async fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisFailure> {
        bounded(self.deadline, self.pool().incr_by::<i64, _>(self.counter_key(key), delta)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_build_key_messages_in_the_format_nodes_read() {
        // The Lua side builds key messages itself: keep the format in step.
        assert!(STORE_SCRIPT.contains(r"'\nk\n'") && INVALIDATE_SCRIPT.contains(r"'\nk\n'"));
        assert_eq!(encode_message("n", 3, &Invalidation::Key("k")), "n\nk\n3\nk");
    }
}
