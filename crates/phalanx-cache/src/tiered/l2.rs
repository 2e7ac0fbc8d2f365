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

use std::{sync::Arc, time::Duration};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fred::{
    clients::{Pool, SubscriberClient},
    prelude::{ClientLike, HashesInterface, KeysInterface, LuaInterface, PubsubInterface, SortedSetsInterface},
    types::Value,
};
use phalanx_core::redis::{bounded, RedisFailure};

/// Buckets of the invalidation index (in L1 and in Redis). A collision can only refuse a
/// store or drop an L1 entry that need not have been: never the other way round.
pub(crate) const BUCKETS: u64 = 4096;

/// Members unlinked per round trip by a tag purge.
pub(crate) const PURGE_BATCH: usize = 256;

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

const FORMAT_VERSION: u8 = 1;
const FLAG_LZ4: u8 = 1;

/// The bucket of a key (`kind` b'k') or a tag (b't'): FNV-1a, the same on every node.
pub(crate) fn bucket(kind: u8, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in std::iter::once(&kind).chain(name.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % BUCKETS
}

/// An invalidation message between nodes: `<node>\n<kind>\n<epoch>\n<payload>`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invalidation<'a> {
    Key(&'a str),
    Tag(&'a str),
}

pub(crate) fn encode_message(node: &str, epoch: u64, inv: &Invalidation<'_>) -> String {
    match inv {
        Invalidation::Key(k) => format!("{node}\nk\n{epoch}\n{k}"),
        Invalidation::Tag(t) => format!("{node}\nt\n{epoch}\n{t}"),
    }
}

/// `(origin node, epoch, invalidation)`, or `None` for a message of another format.
pub(crate) fn decode_message(msg: &str) -> Option<(&str, u64, Invalidation<'_>)> {
    let (node, rest) = msg.split_once('\n')?;
    let (kind, rest) = rest.split_once('\n')?;
    let (epoch, payload) = rest.split_once('\n')?;
    let epoch = epoch.parse().ok()?;
    match kind {
        "k" => Some((node, epoch, Invalidation::Key(payload))),
        "t" => Some((node, epoch, Invalidation::Tag(payload))),
        _ => None,
    }
}

/// A value as stored in L2: its wall-clock expiry and tags travel with it, so a node filling
/// L1 from L2 keeps both.
pub(crate) struct Stored {
    pub(crate) expires_unix_ms: u64,
    pub(crate) tags: Vec<Arc<str>>,
    pub(crate) value: Bytes,
}

/// `[version][flags][expires ms u64][tag count u16]([len u16][tag])*[value, maybe lz4]`.
pub(crate) fn encode_stored(value: &[u8], expires_unix_ms: u64, tags: &[Arc<str>], compress_above: usize) -> Bytes {
    let compress = compress_above > 0 && value.len() > compress_above;
    let mut out = BytesMut::with_capacity(12 + tags.iter().map(|t| t.len() + 2).sum::<usize>() + value.len());
    out.put_u8(FORMAT_VERSION);
    out.put_u8(if compress { FLAG_LZ4 } else { 0 });
    out.put_u64_le(expires_unix_ms);
    out.put_u16_le(tags.len().min(u16::MAX as usize) as u16);
    for tag in tags.iter().take(u16::MAX as usize) {
        let bytes = &tag.as_bytes()[..tag.len().min(u16::MAX as usize)];
        out.put_u16_le(bytes.len() as u16);
        out.put_slice(bytes);
    }
    if compress {
        out.put_slice(&lz4_flex::compress_prepend_size(value));
    } else {
        out.put_slice(value);
    }
    out.freeze()
}

pub(crate) fn decode_stored(mut buf: Bytes) -> Option<Stored> {
    if buf.remaining() < 12 || buf.get_u8() != FORMAT_VERSION {
        return None;
    }
    let flags = buf.get_u8();
    let expires_unix_ms = buf.get_u64_le();
    let count = buf.get_u16_le() as usize;
    let mut tags = Vec::with_capacity(count);
    for _ in 0..count {
        if buf.remaining() < 2 {
            return None;
        }
        let len = buf.get_u16_le() as usize;
        if buf.remaining() < len {
            return None;
        }
        tags.push(Arc::from(std::str::from_utf8(&buf.split_to(len)).ok()?));
    }
    let value = if flags & FLAG_LZ4 != 0 { Bytes::from(lz4_flex::decompress_size_prepended(&buf).ok()?) } else { buf };
    Some(Stored { expires_unix_ms, tags, value })
}

/// One queued store, written by the background writer.
pub(crate) struct StoreOp {
    pub(crate) key: String,
    pub(crate) payload: Bytes,
    pub(crate) ttl: Duration,
    pub(crate) expires_unix_ms: u64,
    pub(crate) tags: Vec<Arc<str>>,
    /// The epoch the load began after; `None`: unconditional.
    pub(crate) token: Option<u64>,
    /// Publish an invalidation of the key (an explicit insert).
    pub(crate) announce: bool,
}

/// What a store script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOutcome {
    Written(u64),
    Refused,
}

/// Redis access for one TieredCache.
pub(crate) struct L2 {
    pub(crate) pool: Pool,
    pub(crate) subscriber: SubscriberClient,
    /// `{ns}`, the hash tag every key starts with.
    pub(crate) prefix: String,
    pub(crate) channel: String,
    /// Deadline of a write-path round trip.
    pub(crate) deadline: Duration,
    /// Deadline of a read on the request path.
    pub(crate) read_deadline: Duration,
}

impl L2 {
    pub(crate) fn new(
        pool: Pool,
        subscriber: SubscriberClient,
        namespace: &str,
        deadline: Duration,
        read_deadline: Duration,
    ) -> Self {
        let prefix = format!("{{{namespace}}}");
        L2 { pool, subscriber, channel: format!("{prefix}:inval"), prefix, deadline, read_deadline }
    }

    pub(crate) fn value_key(&self, key: &str) -> String {
        format!("{}:v:{key}", self.prefix)
    }

    pub(crate) fn tag_key(&self, tag: &str) -> String {
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
    pub(crate) async fn get(&self, key: &str) -> Result<(Option<Bytes>, u64), RedisFailure> {
        let keys = vec![self.value_key(key), self.epoch_key()];
        let (value, epoch): (Option<Bytes>, Option<u64>) = bounded(self.read_deadline, self.pool.mget(keys)).await?;
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
    pub(crate) async fn store_batch(&self, ops: &[StoreOp], node: &str) -> Result<Vec<StoreOutcome>, RedisFailure> {
        let pipeline = self.pool.next().pipeline();
        for op in ops {
            let (keys, args) = self.store_call(op, node);
            // Pipelines have no EVAL of their own: the same command, spelled out.
            let mut call: Vec<Value> = Vec::with_capacity(2 + keys.len() + args.len());
            call.push(Value::from(STORE_SCRIPT));
            call.push(Value::Integer(keys.len() as i64));
            call.extend(keys.into_iter().map(Value::from));
            call.extend(args);
            let queued: Result<(), _> = pipeline.custom(fred::cmd!("EVAL"), call).await;
            queued.map_err(RedisFailure::Error)?;
        }
        let answers: Vec<i64> = bounded(self.deadline, pipeline.all()).await?;
        Ok(answers
            .into_iter()
            .map(|n| if n < 0 { StoreOutcome::Refused } else { StoreOutcome::Written(n as u64) })
            .collect())
    }

    /// Remove a value, record and publish its invalidation; returns the epoch.
    pub(crate) async fn remove(&self, key: &str, node: &str) -> Result<u64, RedisFailure> {
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
            bounded(self.deadline, self.pool.eval(INVALIDATE_SCRIPT, keys, args)).await?;
        Ok(epoch)
    }

    /// Purge a tag incrementally: record the invalidation, then unlink the tagged values
    /// [`PURGE_BATCH`] at a time (each batch one pipelined round trip, never one O(n) script
    /// nor a whole-set read), then publish. Returns `(epoch, values unlinked)`.
    pub(crate) async fn purge_tag(&self, tag: &str, node: &str) -> Result<(u64, u64), RedisFailure> {
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
            bounded(self.deadline, self.pool.eval(INVALIDATE_SCRIPT, keys, args)).await?;
        let message = encode_message(node, epoch, &Invalidation::Tag(tag));
        let mut unlinked = 0u64;
        loop {
            let last = members.len() < PURGE_BATCH;
            let pipeline = self.pool.next().pipeline();
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
    pub(crate) async fn invalidations(&self) -> Result<(u64, Vec<(u64, u64)>), RedisFailure> {
        let pipeline = self.pool.next().pipeline();
        let _: Result<(), _> = pipeline.get(self.epoch_key()).await;
        let _: Result<(), _> = pipeline.hgetall(self.inv_key()).await;
        let (epoch, buckets): (Option<u64>, std::collections::HashMap<u64, u64>) =
            bounded(self.deadline, pipeline.all()).await?;
        Ok((epoch.unwrap_or(0), buckets.into_iter().collect()))
    }

    pub(crate) async fn increment(&self, key: &str, delta: i64) -> Result<i64, RedisFailure> {
        bounded(self.deadline, self.pool.incr_by::<i64, _>(self.counter_key(key), delta)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_round_trip_with_and_without_compression() {
        let tags: Vec<Arc<str>> = vec!["item:1".into(), "items".into()];
        let value = vec![7u8; 4096];
        for compress_above in [0, 1024] {
            let enc = encode_stored(&value, 42, &tags, compress_above);
            if compress_above > 0 {
                assert!(enc.len() < value.len() / 4, "lz4 shrinks a repetitive value");
            }
            let dec = decode_stored(enc).expect("decodes");
            assert_eq!(dec.expires_unix_ms, 42);
            assert_eq!(dec.tags, tags);
            assert_eq!(dec.value.as_ref(), value.as_slice());
        }
        assert!(decode_stored(Bytes::from_static(b"\x09garbage")).is_none());
    }

    #[test]
    fn invalidation_messages_round_trip() {
        let msg = encode_message("node-a", 7, &Invalidation::Tag("item:1"));
        assert_eq!(decode_message(&msg), Some(("node-a", 7, Invalidation::Tag("item:1"))));
        let msg = encode_message("n", 0, &Invalidation::Key("a\nb"));
        assert_eq!(decode_message(&msg), Some(("n", 0, Invalidation::Key("a\nb"))));
        assert_eq!(decode_message("junk"), None);
        assert_eq!(decode_message("n\nk\nnot-a-number\nkey"), None);
    }

    #[test]
    fn buckets_are_stable_and_separate_keys_from_tags() {
        assert_eq!(bucket(b'k', "item:1"), bucket(b'k', "item:1"));
        assert!(bucket(b'k', "x") < BUCKETS);
        // The Lua side builds key messages itself: keep the format in step.
        assert!(STORE_SCRIPT.contains(r"'\nk\n'") && INVALIDATE_SCRIPT.contains(r"'\nk\n'"));
    }
}
