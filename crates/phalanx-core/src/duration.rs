//! The one duration format of every Phalanx configuration: human strings such as `"250ms"`,
//! `"60s"`, `"1m30s"`.
//!
//! Use it on a `Duration` field with `#[serde(with = "phalanx_core::duration")]`, or on an
//! `Option<Duration>` with `#[serde(with = "phalanx_core::duration::option")]`. Units: `us`
//! (or `µs`), `ms`, `s`, `m`, `h`, `d`; a number may have a fraction (`"1.5s"`); parts add up
//! (`"1m30s"`); `"0"` alone is zero. A bare number is refused: `500` could mean seconds or
//! milliseconds, and guessing wrong is a silent outage.
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Timeouts {
//!     #[serde(with = "phalanx_core::duration")]
//!     request: Duration,
//! }
//!
//! let t: Timeouts = toml::from_str(r#"request = "1m30s""#).unwrap();
//! assert_eq!(t.request, Duration::from_secs(90));
//! assert_eq!(phalanx_core::duration::parse("250ms"), Ok(Duration::from_millis(250)));
//! assert_eq!(phalanx_core::duration::format(Duration::from_millis(1500)), "1s500ms");
//! ```

use std::{fmt::Write as _, time::Duration};

use serde::{Deserialize, Deserializer, Serializer};

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (write it like \"250ms\", \"60s\" or \"1m30s\")")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

/// Parse a human duration (`"250ms"`, `"1.5s"`, `"1m30s"`, `"0"`).
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let fail = |reason| ParseDurationError { input: input.to_owned(), reason };
    let text = input.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(fail("it is empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return Err(fail("a unit must follow a number"));
        }
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit: f64 = match unit.trim() {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3_600e9,
            "d" => 86_400e9,
            "" => return Err(fail("a number needs a unit")),
            _ => return Err(fail("unknown unit")),
        };
        let value: f64 = number.parse().map_err(|_| fail("not a number"))?;
        let nanos = value * nanos_per_unit;
        // A century is far beyond any timeout, and keeps the arithmetic exact and finite.
        if !nanos.is_finite() || nanos > 3.2e18 {
            return Err(fail("too long"));
        }
        total = total.checked_add(Duration::from_nanos(nanos.round() as u64)).ok_or_else(|| fail("too long"))?;
        rest = tail;
    }
    Ok(total)
}

/// Write a duration the way [`parse`] reads it, in the largest units that are exact.
pub fn format(duration: Duration) -> String {
    if duration.is_zero() {
        return "0".to_owned();
    }
    let mut nanos = duration.as_nanos();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000_000_000u128), ("h", 3_600_000_000_000), ("m", 60_000_000_000)]
        .into_iter()
        .chain([("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000), ("ns", 1)])
    {
        if nanos >= size {
            let _ = write!(out, "{}{unit}", nanos / size);
            nanos %= size;
        }
    }
    out
}

/// Deserialize a `Duration` from a human string.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Serialize a `Duration` as a human string.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

/// The same for `Option<Duration>` (absent or `null` is `None`).
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Deserialize an optional human duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => super::parse(&text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }

    /// Serialize an optional duration as a human string or nothing.
    pub fn serialize<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(d) => serializer.serialize_some(&super::format(*d)),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_units_fractions_and_sums() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse(" 20ms "), Ok(Duration::from_millis(20)));
    }

    #[test]
    fn refuses_bare_numbers_unknown_units_and_absurd_values() {
        for bad in ["", "500", "5 parsecs", "ms", "1..5s", "99999999999999d", "-5s", "1e3s"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let message = parse("500").unwrap_err().to_string();
        assert!(message.contains("needs a unit"), "{message}");
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(250),
            Duration::from_secs(90),
            Duration::from_millis(1500),
            Duration::from_micros(1_000_001),
            Duration::from_secs(86_400 + 61),
        ] {
            assert_eq!(parse(&format(d)), Ok(d), "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn serde_field_and_option() {
        #[derive(serde::Deserialize, serde::Serialize, PartialEq, Debug)]
        struct Conf {
            #[serde(with = "crate::duration")]
            a: Duration,
            #[serde(default, with = "crate::duration::option")]
            b: Option<Duration>,
        }
        let conf: Conf = serde_json::from_str(r#"{"a":"2s"}"#).unwrap();
        assert_eq!(conf, Conf { a: Duration::from_secs(2), b: None });
        let conf: Conf = serde_json::from_str(r#"{"a":"2s","b":"5ms"}"#).unwrap();
        assert_eq!(conf.b, Some(Duration::from_millis(5)));
        assert_eq!(serde_json::to_string(&conf).unwrap(), r#"{"a":"2s","b":"5ms"}"#);
        assert!(serde_json::from_str::<Conf>(r#"{"a":2000}"#).is_err());
    }
}
