//! What L2 holds and what nodes send each other: the name buckets of the invalidation index,
//! the invalidation message, the stored-value format, and a store queued for the writer.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::{sync::Arc, time::Duration};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;

/// Buckets of the invalidation index (in L1 and in Redis). A collision can only refuse a
/// store or drop an L1 entry that need not have been: never the other way round.
pub(super) const BUCKETS: u64 = 4096;

const FORMAT_VERSION: u8 = 1;
const FLAG_LZ4: u8 = 1;

/// The bucket of a key (`kind` b'k') or a tag (b't'): FNV-1a, the same on every node.
pub(super) fn bucket(kind: u8, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in std::iter::once(&kind).chain(name.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % BUCKETS
}

/// An invalidation message between nodes: `<node>\n<kind>\n<epoch>\n<payload>`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Invalidation<'a> {
    Key(&'a str),
    Tag(&'a str),
}

pub(super) fn encode_message(node: &str, epoch: u64, inv: &Invalidation<'_>) -> String {
    match inv {
        Invalidation::Key(k) => format!("{node}\nk\n{epoch}\n{k}"),
        Invalidation::Tag(t) => format!("{node}\nt\n{epoch}\n{t}"),
    }
}

/// `(origin node, epoch, invalidation)`, or `None` for a message of another format.
pub(super) fn decode_message(msg: &str) -> Option<(&str, u64, Invalidation<'_>)> {
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
pub(super) struct Stored {
    pub(super) expires_unix_ms: u64,
    pub(super) tags: Vec<Arc<str>>,
    pub(super) value: Bytes,
}

/// `[version][flags][expires ms u64][tag count u16]([len u16][tag])*[value, maybe lz4]`.
pub(super) fn encode_stored(value: &[u8], expires_unix_ms: u64, tags: &[Arc<str>], compress_above: usize) -> Bytes {
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

pub(super) fn decode_stored(mut buf: Bytes) -> Option<Stored> {
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
pub(super) struct StoreOp {
    pub(super) key: String,
    pub(super) payload: Bytes,
    pub(super) ttl: Duration,
    pub(super) expires_unix_ms: u64,
    pub(super) tags: Vec<Arc<str>>,
    /// The epoch the load began after; `None`: unconditional.
    pub(super) token: Option<u64>,
    /// Publish an invalidation of the key (an explicit insert).
    pub(super) announce: bool,
}

/// What a store script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoreOutcome {
    Written(u64),
    Refused,
}

/// A message to the background writer.
pub(super) enum WriteMsg {
    Store(StoreOp),
    /// Answer once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
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
    }
}
