//! L2: values in Redis, tag sets, counters, and the invalidation channel.
//!
//! Key layout under the namespace `ns`: `ns:v:<key>` values (TTL kept by Redis), `ns:t:<tag>`
//! sets of the value keys carrying a tag, `ns:c:<key>` counters; `ns:inval` is the pub/sub
//! channel. Each write that must reach the other nodes runs as one Lua script that also
//! publishes, so it costs one round trip.

use std::{sync::Arc, time::Duration};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fred::{
    clients::{Pool, SubscriberClient},
    prelude::{KeysInterface, LuaInterface},
    types::Value,
};
use phalanx_core::redis::{bounded, RedisFailure};

const SET_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
";

const DEL_SCRIPT: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return n
";

const PURGE_TAG_SCRIPT: &str = r"
local members = redis.call('SMEMBERS', KEYS[1])
for _, k in ipairs(members) do redis.call('DEL', k) end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return #members
";

const FORMAT_VERSION: u8 = 1;
const FLAG_LZ4: u8 = 1;

/// An invalidation message between nodes: `<node>\n<kind>\n<payload>`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invalidation<'a> {
    Key(&'a str),
    Tag(&'a str),
}

pub(crate) fn encode_message(node: &str, inv: &Invalidation<'_>) -> String {
    match inv {
        Invalidation::Key(k) => format!("{node}\nk\n{k}"),
        Invalidation::Tag(t) => format!("{node}\nt\n{t}"),
    }
}

/// `(origin node, invalidation)`, or `None` for a message of another format.
pub(crate) fn decode_message(msg: &str) -> Option<(&str, Invalidation<'_>)> {
    let (node, rest) = msg.split_once('\n')?;
    let (kind, payload) = rest.split_once('\n')?;
    match kind {
        "k" => Some((node, Invalidation::Key(payload))),
        "t" => Some((node, Invalidation::Tag(payload))),
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

/// Redis access for one TieredCache.
pub(crate) struct L2 {
    pub(crate) pool: Pool,
    pub(crate) subscriber: SubscriberClient,
    pub(crate) namespace: String,
    pub(crate) channel: String,
    pub(crate) deadline: Duration,
}

impl L2 {
    pub(crate) fn value_key(&self, key: &str) -> String {
        format!("{}:v:{key}", self.namespace)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:t:{tag}", self.namespace)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}:c:{key}", self.namespace)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>, RedisFailure> {
        bounded(self.deadline, self.pool.get::<Option<Bytes>, _>(self.value_key(key))).await
    }

    /// Store a value; `announce` is the message for the other nodes (empty: none).
    pub(crate) async fn set(
        &self,
        key: &str,
        payload: Bytes,
        ttl: Duration,
        tags: &[Arc<str>],
        announce: String,
    ) -> Result<(), RedisFailure> {
        let ttl_ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
        if tags.is_empty() && announce.is_empty() {
            let fut = self.pool.set::<(), _, _>(
                self.value_key(key),
                payload,
                Some(fred::types::Expiration::PX(ttl_ms)),
                None,
                false,
            );
            return bounded(self.deadline, fut).await;
        }
        let mut keys = Vec::with_capacity(1 + tags.len());
        keys.push(self.value_key(key));
        keys.extend(tags.iter().map(|t| self.tag_key(t)));
        let args: Vec<Value> = vec![
            Value::Bytes(payload),
            Value::Integer(ttl_ms),
            Value::from(self.channel.as_str()),
            Value::from(announce),
        ];
        bounded(self.deadline, self.pool.eval::<Value, _, _, _>(SET_SCRIPT, keys, args)).await.map(drop)
    }

    pub(crate) async fn remove(&self, key: &str, announce: String) -> Result<(), RedisFailure> {
        let args = vec![self.channel.clone(), announce];
        bounded(self.deadline, self.pool.eval::<Value, _, _, _>(DEL_SCRIPT, self.value_key(key), args)).await.map(drop)
    }

    pub(crate) async fn purge_tag(&self, tag: &str, announce: String) -> Result<u64, RedisFailure> {
        let args = vec![self.channel.clone(), announce];
        bounded(self.deadline, self.pool.eval::<u64, _, _, _>(PURGE_TAG_SCRIPT, self.tag_key(tag), args)).await
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
        let msg = encode_message("node-a", &Invalidation::Tag("item:1"));
        assert_eq!(decode_message(&msg), Some(("node-a", Invalidation::Tag("item:1"))));
        let msg = encode_message("n", &Invalidation::Key("a\nb"));
        assert_eq!(decode_message(&msg), Some(("n", Invalidation::Key("a\nb"))));
        assert_eq!(decode_message("junk"), None);
    }
}
