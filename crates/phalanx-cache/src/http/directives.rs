//! `Cache-Control` directives (RFC 9111 §5.2), of requests and of responses.

use http::{header, HeaderMap};

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
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
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
                    "max-stale" => d.max_stale = Some(seconds().unwrap_or(u64::MAX)),
                    "min-fresh" => d.min_fresh = seconds(),
                    "only-if-cached" => d.only_if_cached = true,
                    "stale-while-revalidate" => d.stale_while_revalidate = seconds(),
                    "stale-if-error" => d.stale_if_error = seconds(),
                    _ => {}
                }
            }
        }
        d
    }
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
        assert_eq!(d.max_stale, Some(u64::MAX));
        assert_eq!(d.max_age, Some(0));
        assert!(d.private);
    }
}
