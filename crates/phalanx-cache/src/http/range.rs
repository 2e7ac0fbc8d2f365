//! Range requests answered from a stored complete response (RFC 9110 §14).

use http::{header, HeaderMap, HeaderValue, StatusCode};

use super::entry::{parse_date, CachedResponse};

/// What part of a stored response a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// All of it: no `Range`, one this cache ignores (not `bytes`, several ranges, invalid), or
    /// an `If-Range` that does not match.
    Full,
    /// Bytes `start..end` (end exclusive): 206 with `Content-Range`.
    Part { start: usize, end: usize },
    /// No byte of the range exists: 416 with `Content-Range: bytes */length`.
    Unsatisfiable,
}

/// The part of `entry` that the request's `Range` (and `If-Range`) select.
pub(crate) fn select(entry: &CachedResponse, request: &HeaderMap) -> Ranged {
    let Some(range) = request.get(header::RANGE) else { return Ranged::Full };
    if entry.status() != StatusCode::OK {
        return Ranged::Full;
    }
    if let Some(if_range) = request.get(header::IF_RANGE) {
        if !if_range_matches(entry, if_range) {
            return Ranged::Full;
        }
    }
    let Ok(range) = range.to_str() else { return Ranged::Full };
    parse_single(range, entry.body().len())
}

/// `If-Range` (RFC 9110 §13.1.5): a strong match of the entity tag, or the exact `Last-Modified`.
fn if_range_matches(entry: &CachedResponse, if_range: &HeaderValue) -> bool {
    let Ok(text) = if_range.to_str() else { return false };
    let text = text.trim();
    if text.starts_with('"') {
        return entry.headers().get(header::ETAG).and_then(|e| e.to_str().ok()).is_some_and(|etag| etag == text);
    }
    if text.starts_with("W/") {
        return false;
    }
    match (parse_date(if_range), entry.headers().get(header::LAST_MODIFIED).and_then(parse_date)) {
        (Some(wanted), Some(last_modified)) => wanted == last_modified,
        _ => false,
    }
}

/// One `bytes` range over a representation of `len` bytes.
fn parse_single(range: &str, len: usize) -> Ranged {
    let Some((unit, set)) = range.split_once('=') else { return Ranged::Full };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Ranged::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else { return Ranged::Full };
    let (first, last) = (first.trim(), last.trim());
    let len = len as u64;
    let (start, end) = match (number(first), number(last)) {
        // `-N`: the last N bytes.
        (None, Some(suffix)) if first.is_empty() => {
            if suffix == 0 || len == 0 {
                return Ranged::Unsatisfiable;
            }
            (len - suffix.min(len), len)
        }
        // `A-`: from A to the end.
        (Some(start), None) if last.is_empty() => (start, len),
        // `A-B`, inclusive.
        (Some(start), Some(end)) if end >= start => (start, end.saturating_add(1).min(len)),
        // Invalid: the field is ignored (RFC 9110 §14.2).
        _ => return Ranged::Full,
    };
    if start >= len {
        return Ranged::Unsatisfiable;
    }
    // Both are at most `len`, a usize.
    Ranged::Part { start: start as usize, end: end as usize }
}

/// Digits only, saturating (a huge position is past any end, not an error).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

pub(crate) fn content_range(start: usize, end: usize, total: usize) -> HeaderValue {
    HeaderValue::try_from(format!("bytes {start}-{}/{total}", end - 1)).unwrap_or(HeaderValue::from_static("bytes */0"))
}

pub(crate) fn unsatisfied_range(total: usize) -> HeaderValue {
    HeaderValue::try_from(format!("bytes */{total}")).unwrap_or(HeaderValue::from_static("bytes */0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_single("bytes=0-3", 10), Ranged::Part { start: 0, end: 4 });
        assert_eq!(parse_single("bytes=5-", 10), Ranged::Part { start: 5, end: 10 });
        assert_eq!(parse_single("bytes=-3", 10), Ranged::Part { start: 7, end: 10 });
        assert_eq!(parse_single("bytes=-30", 10), Ranged::Part { start: 0, end: 10 });
        assert_eq!(parse_single("bytes=8-18446744073709551616", 10), Ranged::Part { start: 8, end: 10 });
        assert_eq!(parse_single("bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(parse_single("bytes=-0", 10), Ranged::Unsatisfiable);
        for ignored in ["bytes=3-1", "items=0-1", "bytes=0-1,4-5", "bytes=a-b", "bytes", "bytes=+1-2"] {
            assert_eq!(parse_single(ignored, 10), Ranged::Full, "{ignored}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_range_selects_a_part_inside_the_body(range in "\\PC{0,40}", spec in "bytes=[0-9]{0,22}-[0-9]{0,22}", len in 0usize..64) {
            for r in [&range, &spec] {
                if let Ranged::Part { start, end } = parse_single(r, len) {
                    proptest::prop_assert!(start < end && end <= len, "{r} over {len}: {start}..{end}");
                }
            }
        }
    }
}
