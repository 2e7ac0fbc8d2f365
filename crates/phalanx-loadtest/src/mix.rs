//! The request mix: weighted request templates with Zipf-distributed placeholders.
//!
//! A mix file is TOML (any extension but `.json`) or JSON (`.json`) holding a list of
//! `request` entries (`mixes/default.toml` in this crate is the default mix written out):
//!
//! ```toml
//! [[request]]
//! name = "get item"              # optional, shown nowhere but in errors
//! weight = 90                    # relative share, default 1
//! method = "GET"                 # default GET
//! path = "/items/{id}"           # placeholders: {id} {page} {user} {rand}
//! id = { min = 1, max = 100000, zipf = 1.0 }   # distribution of {id}; zipf = 0 is uniform
//!
//! [[request]]
//! weight = 5
//! path = "/items?page={page}&per_page=20"
//! page = { min = 1, max = 5000, zipf = 1.0 }
//!
//! [[request]]
//! weight = 5
//! method = "PUT"
//! path = "/items/{id}"
//! body = '{"name":"item {id}","price_cents":{rand},"stock":5}'
//! headers = { "content-type" = "application/json" }
//! ```
//!
//! The JSON form is `{"request": [{"weight": 90, "path": "/items/{id}", ...}, ...]}`.
//! `{id}` and `{page}` default to the command line's `--ids`/`--zipf` range (pages: one per 20 ids);
//! `{user}` is the user's number (0-based) and `{rand}` a uniform number in 1..=10000.
//! Any other brace is literal text, so JSON bodies need no escaping.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use rand::Rng;
use serde::Deserialize;

/// Zipf distribution over `min..=min + n - 1` (rank 1 is `min`, the most frequent value).
///
/// Sampling uses rejection-inversion (W. Hörmann and G. Derflinger, 1996): constant time and
/// memory whatever the range, which a cumulative table over 10^7 ids would not be.
#[derive(Debug, Clone)]
pub(crate) struct Zipf {
    min: u64,
    n: u64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    squeeze: f64,
}

impl Zipf {
    /// `exponent` 0 gives the uniform distribution; it must not be negative.
    pub(crate) fn new(min: u64, max: u64, exponent: f64) -> Result<Self, String> {
        if max < min {
            return Err(format!("range {min}..={max} is empty"));
        }
        if !(exponent >= 0.0 && exponent.is_finite()) {
            return Err(format!("zipf exponent {exponent} must be a finite number >= 0"));
        }
        let n = max - min + 1;
        let mut zipf = Zipf { min, n, exponent, h_integral_x1: 0.0, h_integral_n: 0.0, squeeze: 0.0 };
        zipf.h_integral_x1 = zipf.h_integral(1.5) - 1.0;
        zipf.h_integral_n = zipf.h_integral(n as f64 + 0.5);
        zipf.squeeze = 2.0 - zipf.h_integral_inverse(zipf.h_integral(2.5) - zipf.h(2.0));
        Ok(zipf)
    }

    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        if self.exponent == 0.0 || self.n == 1 {
            return self.min + rng.random_range(0..self.n);
        }
        loop {
            let u = self.h_integral_n + rng.random::<f64>() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n as f64);
            if k - x <= self.squeeze || u >= self.h_integral(k + 0.5) - self.h(k) {
                return self.min + k as u64 - 1;
            }
        }
    }

    /// The probability mass function's shape, x^-s.
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    /// An antiderivative of `h`: (x^(1-s) - 1) / (1-s), continuous at s = 1 (where it is ln x).
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        expm1_over_x((1.0 - self.exponent) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (ln1p_over_x(t) * x).exp()
    }
}

/// expm1(x)/x, with its limit 1 near 0.
fn expm1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x / 2.0 * (1.0 + x / 3.0 * (1.0 + x / 4.0))
    }
}

/// ln(1+x)/x, with its limit 1 near 0.
fn ln1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// One piece of a path or body template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Id,
    Page,
    User,
    Rand,
}

/// A path or body with `{id}`, `{page}`, `{user}` and `{rand}` placeholders.
#[derive(Debug, Clone)]
struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    fn parse(source: &str) -> Self {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            let placeholder =
                [("{id}", Piece::Id), ("{page}", Piece::Page), ("{user}", Piece::User), ("{rand}", Piece::Rand)]
                    .into_iter()
                    .find(|(token, _)| rest[open..].starts_with(token));
            match placeholder {
                Some((token, piece)) => {
                    text.push_str(&rest[..open]);
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                    rest = &rest[open + token.len()..];
                }
                None => {
                    text.push_str(&rest[..=open]);
                    rest = &rest[open + 1..];
                }
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Template { pieces }
    }

    fn uses(&self, wanted: &Piece) -> bool {
        self.pieces.iter().any(|piece| piece == wanted)
    }

    fn render(&self, values: &Values, out: &mut String) {
        use std::fmt::Write;
        for piece in &self.pieces {
            // Writing to a String cannot fail.
            let _ = match piece {
                Piece::Text(text) => {
                    out.push_str(text);
                    Ok(())
                }
                Piece::Id => write!(out, "{}", values.id),
                Piece::Page => write!(out, "{}", values.page),
                Piece::User => write!(out, "{}", values.user),
                Piece::Rand => write!(out, "{}", values.rand),
            };
        }
    }
}

/// The values drawn for one request.
struct Values {
    id: u64,
    page: u64,
    user: usize,
    rand: u64,
}

/// One weighted entry of the mix.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    method: Method,
    path: Template,
    body: Option<Template>,
    headers: Vec<(HeaderName, HeaderValue)>,
    id: Zipf,
    page: Zipf,
}

/// A request drawn from the mix, ready to be turned into an `http::Request`.
#[derive(Debug)]
pub(crate) struct Drawn<'a> {
    pub(crate) method: Method,
    /// Path and query, to be appended to the base URL's path prefix.
    pub(crate) path: String,
    pub(crate) body: Bytes,
    pub(crate) headers: &'a [(HeaderName, HeaderValue)],
}

/// A weighted set of request templates.
#[derive(Debug, Clone)]
pub(crate) struct Mix {
    entries: Vec<Entry>,
    /// Running sum of the weights, for drawing an entry.
    cumulative: Vec<f64>,
}

/// The mix file's shape (see the module documentation).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MixFile {
    #[serde(alias = "requests")]
    request: Vec<EntrySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "default_weight")]
    weight: f64,
    #[serde(default = "default_method")]
    method: String,
    path: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    id: Option<RangeSpec>,
    #[serde(default)]
    page: Option<RangeSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeSpec {
    #[serde(default = "default_min")]
    min: u64,
    max: u64,
    #[serde(default = "default_zipf")]
    zipf: f64,
}

fn default_weight() -> f64 {
    1.0
}
fn default_method() -> String {
    "GET".to_owned()
}
fn default_min() -> u64 {
    1
}
fn default_zipf() -> f64 {
    1.0
}

/// The ranges `{id}` and `{page}` take when an entry does not set its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Defaults {
    /// Ids are 1..=ids.
    pub(crate) ids: u64,
    /// Zipf exponent of ids and pages.
    pub(crate) zipf: f64,
}

impl Defaults {
    fn id(self) -> RangeSpec {
        RangeSpec { min: 1, max: self.ids.max(1), zipf: self.zipf }
    }
    fn page(self) -> RangeSpec {
        RangeSpec { min: 1, max: self.ids.div_ceil(20).max(1), zipf: self.zipf }
    }
}

impl Mix {
    /// The default mix: 90 % `GET /items/{id}`, 5 % `GET /items?page={page}&per_page=20`,
    /// 5 % `PUT /items/{id}` with a JSON body.
    pub(crate) fn default_mix(defaults: Defaults) -> Result<Self, String> {
        let json_header = BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]);
        let spec = |weight: f64, method: &str, path: &str, body: Option<&str>| EntrySpec {
            name: None,
            weight,
            method: method.to_owned(),
            path: path.to_owned(),
            body: body.map(str::to_owned),
            headers: if body.is_some() { json_header.clone() } else { BTreeMap::new() },
            id: None,
            page: None,
        };
        Self::from_specs(
            vec![
                spec(90.0, "GET", "/items/{id}", None),
                spec(5.0, "GET", "/items?page={page}&per_page=20", None),
                spec(5.0, "PUT", "/items/{id}", Some(r#"{"name":"item {id}","price_cents":{rand},"stock":5}"#)),
            ],
            defaults,
        )
    }

    /// Reads a mix file: JSON when its name ends in `.json`, TOML otherwise.
    pub(crate) fn from_file(path: &Path, defaults: Defaults) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read mix file {}: {e}", path.display()))?;
        let is_json = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        Self::parse(&text, is_json, defaults).map_err(|e| format!("mix file {}: {e}", path.display()))
    }

    pub(crate) fn parse(text: &str, is_json: bool, defaults: Defaults) -> Result<Self, String> {
        let file: MixFile = if is_json {
            serde_json::from_str(text).map_err(|e| e.to_string())?
        } else {
            toml::from_str(text).map_err(|e| e.to_string())?
        };
        Self::from_specs(file.request, defaults)
    }

    fn from_specs(specs: Vec<EntrySpec>, defaults: Defaults) -> Result<Self, String> {
        if specs.is_empty() {
            return Err("the mix has no request entries".to_owned());
        }
        let mut entries = Vec::with_capacity(specs.len());
        let mut cumulative = Vec::with_capacity(specs.len());
        let mut total = 0.0;
        for (index, spec) in specs.into_iter().enumerate() {
            let label = spec.name.clone().unwrap_or_else(|| format!("entry {}", index + 1));
            let fail = |what: String| format!("{label}: {what}");
            if !(spec.weight >= 0.0 && spec.weight.is_finite()) {
                return Err(fail(format!("weight {} must be a finite number >= 0", spec.weight)));
            }
            let method = Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| fail(format!("bad method {:?}", spec.method)))?;
            if !spec.path.starts_with('/') {
                return Err(fail(format!("path {:?} must start with '/'", spec.path)));
            }
            let mut headers = Vec::with_capacity(spec.headers.len());
            for (name, value) in &spec.headers {
                let name =
                    HeaderName::from_bytes(name.as_bytes()).map_err(|_| fail(format!("bad header name {name:?}")))?;
                let value = HeaderValue::from_str(value).map_err(|_| fail(format!("bad header value {value:?}")))?;
                headers.push((name, value));
            }
            let range = |range: RangeSpec| Zipf::new(range.min, range.max, range.zipf).map_err(&fail);
            let entry = Entry {
                method,
                path: Template::parse(&spec.path),
                body: spec.body.as_deref().map(Template::parse),
                headers,
                id: range(spec.id.unwrap_or(defaults.id()))?,
                page: range(spec.page.unwrap_or(defaults.page()))?,
            };
            total += spec.weight;
            entries.push(entry);
            cumulative.push(total);
        }
        if total <= 0.0 {
            return Err("the weights of the mix add up to 0".to_owned());
        }
        Ok(Mix { entries, cumulative })
    }

    /// Draws an entry by weight and fills in its placeholders.
    pub(crate) fn draw<R: Rng + ?Sized>(&self, rng: &mut R, user: usize) -> Drawn<'_> {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let point = rng.random::<f64>() * total;
        let index = self.cumulative.partition_point(|&sum| sum <= point).min(self.entries.len() - 1);
        let entry = &self.entries[index];
        let uses = |piece: &Piece| entry.path.uses(piece) || entry.body.as_ref().is_some_and(|body| body.uses(piece));
        let values = Values {
            id: if uses(&Piece::Id) { entry.id.sample(rng) } else { 0 },
            page: if uses(&Piece::Page) { entry.page.sample(rng) } else { 0 },
            user,
            rand: if uses(&Piece::Rand) { rng.random_range(1..=10_000) } else { 0 },
        };
        let mut path = String::with_capacity(32);
        entry.path.render(&values, &mut path);
        let body = match &entry.body {
            Some(template) => {
                let mut body = String::with_capacity(64);
                template.render(&values, &mut body);
                Bytes::from(body)
            }
            None => Bytes::new(),
        };
        Drawn { method: entry.method.clone(), path, body, headers: &entry.headers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const DEFAULTS: Defaults = Defaults { ids: 100_000, zipf: 1.0 };

    /// Exact Zipf probabilities of ranks 1..=n.
    fn zipf_pmf(n: u64, s: f64) -> Vec<f64> {
        let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
        let sum: f64 = weights.iter().sum();
        weights.into_iter().map(|w| w / sum).collect()
    }

    #[test]
    fn zipf_samples_follow_the_distribution() {
        for (n, s) in [(1000, 1.0), (50, 0.7), (200, 1.4)] {
            let zipf = Zipf::new(1, n, s).unwrap();
            let mut rng = SmallRng::seed_from_u64(7);
            let draws = 400_000;
            let mut counts = vec![0u64; n as usize];
            for _ in 0..draws {
                let value = zipf.sample(&mut rng);
                assert!((1..=n).contains(&value), "{value} outside 1..={n}");
                counts[value as usize - 1] += 1;
            }
            let pmf = zipf_pmf(n, s);
            for rank in [1usize, 2, 3, 10] {
                let expected = pmf[rank - 1];
                let observed = counts[rank - 1] as f64 / draws as f64;
                assert!(
                    (observed - expected).abs() < 0.01 + expected * 0.03,
                    "n={n} s={s} rank {rank}: observed {observed}, expected {expected}"
                );
            }
        }
    }

    #[test]
    fn zipf_with_exponent_zero_is_uniform_over_an_offset_range() {
        let zipf = Zipf::new(10, 13, 0.0).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[(zipf.sample(&mut rng) - 10) as usize] += 1;
        }
        assert!(seen.iter().all(|&count| (800..1200).contains(&count)), "{seen:?}");
        assert!(Zipf::new(5, 4, 1.0).is_err());
        assert!(Zipf::new(1, 4, -1.0).is_err());
    }

    #[test]
    fn templates_replace_known_placeholders_and_keep_other_braces() {
        let template = Template::parse(r#"{"id":{id},"page":{page},"u":"{user}","x":{other}}"#);
        let mut out = String::new();
        template.render(&Values { id: 42, page: 3, user: 7, rand: 9 }, &mut out);
        assert_eq!(out, r#"{"id":42,"page":3,"u":"7","x":{other}}"#);
    }

    #[test]
    fn default_mix_draws_about_ninety_five_percent_gets() {
        let mix = Mix::default_mix(DEFAULTS).unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        let (mut item_gets, mut page_gets, mut puts) = (0, 0, 0);
        for _ in 0..20_000 {
            let drawn = mix.draw(&mut rng, 0);
            match (drawn.method.as_str(), drawn.path.starts_with("/items?page=")) {
                ("GET", false) => item_gets += 1,
                ("GET", true) => page_gets += 1,
                ("PUT", _) => {
                    puts += 1;
                    let body: serde_json::Value = serde_json::from_slice(&drawn.body).unwrap();
                    assert!(body["price_cents"].as_u64().is_some());
                    assert_eq!(drawn.headers[0].0, "content-type");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!((17_600..18_400).contains(&item_gets), "{item_gets}");
        assert!((800..1200).contains(&page_gets), "{page_gets}");
        assert!((800..1200).contains(&puts), "{puts}");
    }

    #[test]
    fn the_shipped_mix_file_parses() {
        let mix = Mix::parse(include_str!("../mixes/default.toml"), false, Defaults { ids: 10, zipf: 0.0 }).unwrap();
        assert_eq!(mix.entries.len(), 3);
        let mut rng = SmallRng::seed_from_u64(2);
        // The file's own ranges win over the defaults (ids 1..=10 here).
        assert!((0..2000).any(|_| {
            let drawn = mix.draw(&mut rng, 0);
            drawn.path.strip_prefix("/items/").and_then(|id| id.parse::<u64>().ok()).is_some_and(|id| id > 10)
        }));
    }

    #[test]
    fn mix_files_parse_from_toml_and_json() {
        let toml = r#"
            [[request]]
            weight = 3
            path = "/a/{id}"
            id = { min = 5, max = 5 }
            [[request]]
            weight = 1
            method = "put"
            path = "/b/{user}"
            body = "{rand}"
        "#;
        let mix = Mix::parse(toml, false, DEFAULTS).unwrap();
        let mut rng = SmallRng::seed_from_u64(11);
        let paths: Vec<String> = (0..200).map(|_| mix.draw(&mut rng, 4).path).collect();
        assert!(paths.iter().any(|p| p == "/a/5"));
        assert!(paths.iter().any(|p| p == "/b/4"));
        assert!(paths.iter().all(|p| p == "/a/5" || p == "/b/4"));

        let json = r#"{"request": [{"path": "/only", "method": "DELETE"}]}"#;
        let mix = Mix::parse(json, true, DEFAULTS).unwrap();
        let drawn = mix.draw(&mut rng, 0);
        assert_eq!((drawn.method, drawn.path.as_str()), (Method::DELETE, "/only"));

        assert!(Mix::parse(r#"{"request": []}"#, true, DEFAULTS).is_err());
        assert!(Mix::parse(r#"{"request": [{"path": "no-slash"}]}"#, true, DEFAULTS).is_err());
        assert!(Mix::parse(r#"{"request": [{"path": "/x", "weight": 0}]}"#, true, DEFAULTS).is_err());
        assert!(Mix::parse(r#"{"request": [{"path": "/x", "colour": 1}]}"#, true, DEFAULTS).is_err());
    }
}
