//! `Cache-Control` directives (RFC 9111 §5.2), of requests and of responses, and the targeted
//! fields of RFC 9213 (`CDN-Cache-Control` and the like).
//!
//! Every number here comes from a client or an origin: it is parsed as delta-seconds, digits
//! only, saturating at 2^31 as RFC 9111 §1.2.2 asks, so no later sum of them can overflow.

use http::{header, HeaderMap, HeaderName};

/// The greatest delta-seconds value kept (RFC 9111 §1.2.2): larger ones, and ones that do not
/// fit any integer, become this.
pub(crate) const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Delta-seconds (RFC 9111 §1.2.2): one or more ASCII digits, nothing else (no sign, no
/// fraction), saturating at [`MAX_DELTA_SECONDS`].
pub(crate) fn parse_delta(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value: u64 = 0;
    for digit in text.bytes() {
        value = value.saturating_mul(10).saturating_add(u64::from(digit - b'0'));
        if value >= MAX_DELTA_SECONDS {
            return Some(MAX_DELTA_SECONDS);
        }
    }
    Some(value)
}

/// The directives this cache acts on. Unknown directives are ignored, as RFC 9111 asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    /// `max-stale` without a value: any staleness is acceptable.
    pub(crate) max_stale: Option<u64>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) only_if_cached: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

impl Directives {
    /// Parse every `Cache-Control` field of these headers.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let mut d = Directives::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for item in split_list(text) {
                let (name, arg) = match item.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (item, None),
                };
                d.apply(name, arg);
            }
        }
        d
    }

    /// The directives of a response for this cache: from the first targeted field of `targets`
    /// (most specific first) that is present and valid, which then replaces `Cache-Control`
    /// (RFC 9213 §2.2); from `Cache-Control` otherwise.
    pub(crate) fn for_response(headers: &HeaderMap, targets: &[HeaderName]) -> Self {
        for target in targets {
            if let Some(d) = Self::targeted(headers, target) {
                return d;
            }
        }
        Self::from_headers(headers)
    }

    /// A targeted field, parsed as a Structured Fields dictionary (RFC 9213 §2.1); `None` when
    /// it is absent or invalid (then it is ignored, as §2.1 asks).
    fn targeted(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        let mut values = headers.get_all(name).iter().peekable();
        values.peek()?;
        let mut d = Directives::default();
        for value in values {
            let text = value.to_str().ok()?;
            for member in text.split(',') {
                // Parameters (`;name=value`) qualify a member; none of them matters here.
                let member = member.trim_matches([' ', '\t']);
                let member = member.split_once(';').map_or(member, |(m, _)| m);
                let (key, arg) = match member.split_once('=') {
                    Some((k, a)) => (k, Some(a)),
                    None => (member, None),
                };
                if !is_sf_key(key) {
                    return None;
                }
                let arg = match arg {
                    // `key=?0` is false: the directive is absent.
                    Some("?0") => continue,
                    Some("?1") | None => None,
                    // Integers are the only values the directives here take; a token or a
                    // string is a valid member this cache does not act on.
                    Some(a) if is_sf_number(a) => Some(a),
                    Some(a) if is_sf_token_or_string(a) => Some(a),
                    Some(_) => return None,
                };
                d.apply(key, arg);
            }
        }
        Some(d)
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        let d = self;
        let seconds = || arg.and_then(parse_delta);
        match name.to_ascii_lowercase().as_str() {
            "no-store" => d.no_store = true,
            // `no-cache="field"` restricts re-use of a field; honouring it as a plain
            // no-cache is the conservative reading.
            "no-cache" => d.no_cache = true,
            // Likewise `private="field"`: a shared cache does not store it.
            "private" => d.private = true,
            "public" => d.public = true,
            "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
            // An invalid max-age makes the response stale (RFC 9111 §4.2.1).
            "max-age" => d.max_age = Some(seconds().unwrap_or(0)),
            "s-maxage" => d.s_maxage = Some(seconds().unwrap_or(0)),
            "max-stale" => d.max_stale = Some(seconds().unwrap_or(MAX_DELTA_SECONDS)),
            "min-fresh" => d.min_fresh = seconds(),
            "only-if-cached" => d.only_if_cached = true,
            "stale-while-revalidate" => d.stale_while_revalidate = seconds(),
            "stale-if-error" => d.stale_if_error = seconds(),
            _ => {}
        }
    }
}

/// A Structured Fields dictionary key: `lcalpha / "*"` then `lcalpha / DIGIT / "_" / "-" / "." / "*"`.
fn is_sf_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'*'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*'))
}

/// An Integer or a Decimal; a Decimal is a valid member, and an invalid delta-seconds.
fn is_sf_number(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.len() <= 15
        && frac.len() <= 3
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
}

fn is_sf_token_or_string(value: &str) -> bool {
    if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        return inner.bytes().all(|b| (0x20..0x7f).contains(&b));
    }
    let mut bytes = value.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'*'))
        && bytes.all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b';' | b'=' | b'"' | b'(' | b')'))
}

/// The comma-separated members of a list field, trimmed, empty ones skipped.
pub(crate) fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Directives {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::CACHE_CONTROL, v.parse().unwrap());
        }
        Directives::from_headers(&h)
    }

    #[test]
    fn directives_parse_case_insensitively_across_fields() {
        let d = parse(&["Public, MAX-AGE=60", "s-maxage=\"120\", stale-while-revalidate=5, x-ext=1"]);
        assert!(d.public);
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(120));
        assert_eq!(d.stale_while_revalidate, Some(5));
        let d = parse(&["max-stale, max-age=oops, private=\"x\""]);
        assert_eq!(d.max_stale, Some(MAX_DELTA_SECONDS));
        assert_eq!(d.max_age, Some(0));
        assert!(d.private);
    }

    #[test]
    fn delta_seconds_saturate_and_take_digits_only() {
        assert_eq!(parse_delta("18446744073709551615"), Some(MAX_DELTA_SECONDS));
        assert_eq!(parse_delta("999999999999999999999999999"), Some(MAX_DELTA_SECONDS));
        assert_eq!(parse_delta("2147483647"), Some(2_147_483_647));
        assert_eq!(parse_delta("0"), Some(0));
        for bad in ["", "+5", "-1", "1.5", " 1", "1e3", "٣"] {
            assert_eq!(parse_delta(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_valid_targeted_field_replaces_cache_control_and_an_invalid_one_is_ignored() {
        let targets = [HeaderName::from_static("phalanx-cache-control"), HeaderName::from_static("cdn-cache-control")];
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
        h.insert("cdn-cache-control", "max-age=60, stale-if-error=5".parse().unwrap());
        let d = Directives::for_response(&h, &targets);
        assert_eq!((d.no_store, d.max_age, d.stale_if_error), (false, Some(60), Some(5)));
        h.insert("phalanx-cache-control", "max-age=7".parse().unwrap());
        assert_eq!(Directives::for_response(&h, &targets).max_age, Some(7));
        h.insert("phalanx-cache-control", "max-age=8;x=1, private;y".parse().unwrap());
        let d = Directives::for_response(&h, &targets);
        assert_eq!((d.max_age, d.private), (Some(8), true), "parameters are ignored");
        h.insert("phalanx-cache-control", "MAX-AGE=7".parse().unwrap());
        assert_eq!(Directives::for_response(&h, &targets).max_age, Some(60), "invalid key: ignored");
        h.remove("phalanx-cache-control");
        h.insert("cdn-cache-control", "max-age=1.5".parse().unwrap());
        assert_eq!(Directives::for_response(&h, &targets).max_age, Some(0), "a decimal: invalid delta-seconds");
        h.insert("cdn-cache-control", "max-age=60, =x".parse().unwrap());
        assert!(Directives::for_response(&h, &targets).no_store, "not a dictionary: Cache-Control rules");
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_without_panic_and_within_bounds(text in "\\PC{0,80}", digits in "[0-9]{1,40}") {
            let d = parse(&[]);
            assert_eq!(d, Directives::default());
            if let Some(n) = parse_delta(&text) {
                proptest::prop_assert!(n <= MAX_DELTA_SECONDS);
            }
            let significant = digits.trim_start_matches('0');
            let expected = if significant.len() > 10 { MAX_DELTA_SECONDS } else { significant.parse::<u64>().unwrap_or(0).min(MAX_DELTA_SECONDS) };
            proptest::prop_assert_eq!(parse_delta(&digits), Some(expected));
            let mut h = HeaderMap::new();
            if let Ok(value) = http::HeaderValue::try_from(text.as_str()) {
                h.insert(header::CACHE_CONTROL, value.clone());
                h.insert("cdn-cache-control", value);
            }
            let d = Directives::for_response(&h, &[HeaderName::from_static("cdn-cache-control")]);
            for n in [d.max_age, d.s_maxage, d.max_stale, d.min_fresh, d.stale_while_revalidate, d.stale_if_error].into_iter().flatten() {
                proptest::prop_assert!(n <= MAX_DELTA_SECONDS);
            }
        }
    }
}
