//! Client identity: who a request counts against.
//!
//! A [`ClientKeyResolver`] tries its [`KeySource`]s in order and returns the first that yields
//! a key; with none, the request is [`ClientKey::anonymous`].
//!
//! By default every source is one a client cannot mint:
//! - the peer IP is the socket's address (axum's `ConnectInfo<SocketAddr>` or [`PeerAddr`]);
//!   the one forwarding header the trusted proxy sets ([`ForwardingHeader`]: `X-Forwarded-For`
//!   unless configured otherwise) is read only when that peer is inside a trusted-proxy CIDR,
//!   and walked from the right, skipping trusted hops. The other forwarding headers are never
//!   read, so a client's own `Forwarded` cannot beat the proxy's `X-Forwarded-For`;
//! - an API key counts only when it is in the configured table of known keys; an unknown key
//!   is treated as no key (the next source is tried);
//! - a [`Principal`] is what an authentication layer put into the extensions.
//!
//! [`KeySource::Header`] (a client-id header such as `X-Client-ID`) **trusts the client**: any
//! client can send a fresh value with every request and so escape a per-client limit. Offer it
//! only behind a gateway that sets the header itself.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use axum::extract::ConnectInfo;
use http::{header::HeaderName, Extensions, HeaderMap};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::ConfigError;

/// The identity a request counts against, as a short printable string:
/// `id:<header value>`, `key:<api-key digest>`, `principal:<name>`, `ip:<address>` or `anonymous`.
///
/// Cheap to clone (an `Arc<str>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(Arc<str>);

impl ClientKey {
    /// The key shared by every request that no source could identify.
    pub fn anonymous() -> Self {
        ClientKey(Arc::from("anonymous"))
    }

    /// A key from an already-formed string (tests, custom sources).
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        ClientKey(key.into())
    }

    /// The key as a string, fit for a map or Redis key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether no source identified the request.
    pub fn is_anonymous(&self) -> bool {
        &*self.0 == "anonymous"
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientKey").field(&&*self.0).finish()
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An authenticated principal, put into the request extensions by an authentication layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(pub Arc<str>);

/// The immediate peer's socket address, for services that do not use axum's `ConnectInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Where a client key may come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "KeySourceConfig")]
pub enum KeySource {
    /// A client-id header such as `X-Client-ID`, taken as it is (visible ASCII, bounded length).
    ///
    /// This source **trusts the client**: whoever sends the header chooses the key. Use it only
    /// where a gateway in front sets (and overwrites) the header.
    Header(HeaderName),
    /// An API key header. Only a key in the configured table ([`ClientKeyConfig::api_keys`])
    /// yields a key; an unknown one counts as no key. Keys are held only as digests.
    ApiKey(HeaderName),
    /// The [`Principal`] an authentication layer put in the request extensions.
    Principal,
    /// The peer IP, behind trusted proxies only (IPv6 grouped by a prefix, /64 by default).
    PeerIp,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeySourceConfig {
    Header(String),
    ApiKey(String),
    Principal,
    PeerIp,
}

impl TryFrom<KeySourceConfig> for KeySource {
    type Error = String;

    fn try_from(c: KeySourceConfig) -> Result<Self, Self::Error> {
        let name = |s: String| {
            HeaderName::try_from(s.as_str()).map_err(|_| format!("invalid header name {s:?} in client key source"))
        };
        Ok(match c {
            KeySourceConfig::Header(h) => KeySource::Header(name(h)?),
            KeySourceConfig::ApiKey(h) => KeySource::ApiKey(name(h)?),
            KeySourceConfig::Principal => KeySource::Principal,
            KeySourceConfig::PeerIp => KeySource::PeerIp,
        })
    }
}

/// The one forwarding header a trusted proxy sets, and so the only one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx `$proxy_add_x_forwarded_for`, HAProxy
    /// `option forwardfor`). The default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
    /// `X-Real-IP: client`: one address, set (overwritten) by the proxy.
    XRealIp,
}

/// Serde form of a [`ClientKeyResolver`]:
///
/// ```toml
/// sources = [{ api_key = "x-api-key" }, "peer_ip"]
/// api_keys = ["k-1", "k-2"]            # the known keys; any other counts as no key
/// trusted_proxies = ["10.0.0.0/8", "127.0.0.1/32"]
/// forwarding_header = "x-forwarded-for" # or "forwarded", "x-real-ip"
/// ipv6_prefix = 64
/// ```
#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientKeyConfig {
    /// Sources tried in order. Default: `["peer_ip"]`.
    pub sources: Vec<KeySource>,
    /// The API keys an `api_key` source accepts. Required when there is such a source.
    /// Default: none.
    pub api_keys: Vec<String>,
    /// CIDRs of the proxies whose forwarding header is believed. Default: none.
    pub trusted_proxies: Vec<IpNet>,
    /// The forwarding header those proxies set; no other is read. Default: `x-forwarded-for`.
    pub forwarding_header: ForwardingHeader,
    /// IPv6 peers are grouped by this prefix length. Default: 64.
    pub ipv6_prefix: u8,
    /// Longest accepted header value, in bytes. Default: 128.
    pub max_value_len: usize,
}

impl Default for ClientKeyConfig {
    fn default() -> Self {
        ClientKeyConfig {
            sources: vec![KeySource::PeerIp],
            api_keys: Vec::new(),
            trusted_proxies: Vec::new(),
            forwarding_header: ForwardingHeader::default(),
            ipv6_prefix: 64,
            max_value_len: 128,
        }
    }
}

// API keys stay out of logs: Debug shows how many there are, not what they are.
impl fmt::Debug for ClientKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeyConfig")
            .field("sources", &self.sources)
            .field("api_keys", &format_args!("<{} keys>", self.api_keys.len()))
            .field("trusted_proxies", &self.trusted_proxies)
            .field("forwarding_header", &self.forwarding_header)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("max_value_len", &self.max_value_len)
            .finish()
    }
}

impl ClientKeyConfig {
    /// Build the resolver; fails on an IPv6 prefix above 128, an empty source list, or an
    /// `api_key` source without a table of known keys.
    pub fn build(self) -> Result<ClientKeyResolver, ConfigError> {
        if self.ipv6_prefix > 128 {
            return Err(ConfigError::new("ipv6_prefix", format!("{} is above 128", self.ipv6_prefix)));
        }
        if self.sources.is_empty() {
            return Err(ConfigError::new("sources", "a client key resolver needs at least one source"));
        }
        if self.max_value_len == 0 {
            return Err(ConfigError::new("max_value_len", "must be at least 1"));
        }
        let api_key_source = self.sources.iter().any(|s| matches!(s, KeySource::ApiKey(_)));
        if api_key_source && self.api_keys.is_empty() {
            // Without a table every key would be accepted, and any client could mint one.
            return Err(ConfigError::new("api_keys", "an api_key source needs the table of known keys"));
        }
        if self.api_keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::new("api_keys", "an empty API key"));
        }
        let known = self.api_keys.iter().map(|k| api_key_digest(k)).collect();
        Ok(ClientKeyResolver { inner: Arc::new(Inner { config: self, known }) })
    }
}

/// Resolves the [`ClientKey`] of a request. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientKeyResolver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientKeyConfig,
    /// Digests of the known API keys.
    known: HashSet<String>,
}

impl Default for ClientKeyResolver {
    fn default() -> Self {
        ClientKeyConfig::default().build().expect("default client key config is valid")
    }
}

/// Builder of a [`ClientKeyResolver`], with consuming setters.
#[derive(Debug, Clone)]
pub struct ClientKeyResolverBuilder {
    config: ClientKeyConfig,
    error: Option<ConfigError>,
}

/// Forwarding headers hold at most this many hops that we look at; the rest is ignored so a
/// flood of entries costs nothing.
const MAX_FORWARDED_HOPS: usize = 32;

impl ClientKeyResolver {
    /// A builder with no sources and no trusted proxies.
    pub fn builder() -> ClientKeyResolverBuilder {
        ClientKeyResolverBuilder {
            config: ClientKeyConfig { sources: Vec::new(), ..ClientKeyConfig::default() },
            error: None,
        }
    }

    /// The configuration this resolver was built from.
    pub fn config(&self) -> &ClientKeyConfig {
        &self.inner.config
    }

    /// Whether `key` is in the table of known API keys.
    pub fn is_known_api_key(&self, key: &str) -> bool {
        self.inner.known.contains(&api_key_digest(key))
    }

    /// The key of a request, or [`ClientKey::anonymous`].
    pub fn resolve<B>(&self, req: &http::Request<B>) -> ClientKey {
        self.resolve_parts(req.headers(), req.extensions())
    }

    /// The key from headers and extensions, or [`ClientKey::anonymous`].
    pub fn resolve_parts(&self, headers: &HeaderMap, extensions: &Extensions) -> ClientKey {
        self.try_resolve(headers, extensions).unwrap_or_else(ClientKey::anonymous)
    }

    /// The key from the first source that yields one.
    pub fn try_resolve(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<ClientKey> {
        self.inner.config.sources.iter().find_map(|source| match source {
            KeySource::Header(name) => {
                self.header_value(headers, name).map(|v| ClientKey(Arc::from(format!("id:{v}"))))
            }
            KeySource::ApiKey(name) => self
                .header_value(headers, name)
                .map(api_key_digest)
                // An unknown key is no key: the next source decides, so a client cannot mint one.
                .filter(|digest| self.inner.known.contains(digest))
                .map(|digest| ClientKey(Arc::from(format!("key:{digest}")))),
            KeySource::Principal => {
                extensions.get::<Principal>().map(|p| ClientKey(Arc::from(format!("principal:{}", p.0))))
            }
            KeySource::PeerIp => self.client_ip(headers, extensions).map(|ip| ClientKey(peer_key(self.group(ip)))),
        })
    }

    /// A valid header value: visible ASCII only, within the length cap. Anything else is ignored
    /// (the next source is tried), so a malformed header cannot mint keys of its choice.
    fn header_value<'a>(&self, headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
        let value = headers.get(name)?.as_bytes();
        let ok = !value.is_empty()
            && value.len() <= self.inner.config.max_value_len
            && value.iter().all(|b| (0x21..=0x7e).contains(b));
        ok.then(|| std::str::from_utf8(value).ok()).flatten()
    }

    fn group(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) if self.inner.config.ipv6_prefix < 128 => {
                let prefix = self.inner.config.ipv6_prefix;
                let bits = u128::from(v6);
                let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
            other => other,
        }
    }

    /// Whether an address is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.inner.config.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client's IP: the peer's, or, when the peer is a trusted proxy, the rightmost
    /// untrusted hop of the configured [`ForwardingHeader`] (no other is read). `None` without
    /// a peer address.
    pub fn client_ip(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
        // axum's `ConnectInfo` first: it is where a served request has its peer.
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .or_else(|| extensions.get::<PeerAddr>().map(|p| p.0.ip()))
            .map(canonical)?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let hops = match self.inner.config.forwarding_header {
            ForwardingHeader::XForwardedFor => x_forwarded_for_hops(headers),
            ForwardingHeader::Forwarded => forwarded_for_hops(headers),
            ForwardingHeader::XRealIp => x_real_ip_hop(headers),
        };
        let mut client = peer;
        for hop in hops.iter().rev().take(MAX_FORWARDED_HOPS) {
            match hop {
                Some(ip) => {
                    client = *ip;
                    if !self.is_trusted(*ip) {
                        break;
                    }
                }
                // An unparsable or obfuscated hop: the last trusted hop is as far as we can see.
                None => break,
            }
        }
        Some(client)
    }
}

impl ClientKeyResolverBuilder {
    /// Add a source, tried after those already added.
    pub fn source(mut self, source: KeySource) -> Self {
        self.config.sources.push(source);
        self
    }

    /// Add a client-id header source.
    pub fn header(self, name: &str) -> Self {
        match HeaderName::try_from(name) {
            Ok(h) => self.source(KeySource::Header(h)),
            Err(_) => self.fail("sources", format!("invalid header name {name:?}")),
        }
    }

    /// Add an API-key header source. Only keys given to [`Self::known_api_keys`] count.
    pub fn api_key(self, name: &str) -> Self {
        match HeaderName::try_from(name) {
            Ok(h) => self.source(KeySource::ApiKey(h)),
            Err(_) => self.fail("sources", format!("invalid header name {name:?}")),
        }
    }

    /// Add the principal source.
    pub fn principal(self) -> Self {
        self.source(KeySource::Principal)
    }

    /// Add the peer-IP source.
    pub fn peer_ip(self) -> Self {
        self.source(KeySource::PeerIp)
    }

    /// Trust forwarding headers from peers inside these CIDRs (`"10.0.0.0/8"`, `"::1/128"`).
    pub fn trusted_proxies<I, S>(mut self, cidrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for cidr in cidrs {
            let cidr = cidr.as_ref();
            match cidr.parse::<IpNet>().or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from)) {
                Ok(net) => self.config.trusted_proxies.push(net),
                Err(_) => return self.fail("trusted_proxies", format!("invalid CIDR {cidr:?}")),
            }
        }
        self
    }

    /// The API keys an API-key source accepts (added to those already given).
    pub fn known_api_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.api_keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// The one forwarding header the trusted proxies set (default `X-Forwarded-For`).
    pub fn forwarding_header(mut self, header: ForwardingHeader) -> Self {
        self.config.forwarding_header = header;
        self
    }

    /// Group IPv6 clients by this prefix length (default 64).
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.config.ipv6_prefix = bits;
        self
    }

    /// Longest accepted header value in bytes (default 128).
    pub fn max_value_len(mut self, len: usize) -> Self {
        self.config.max_value_len = len;
        self
    }

    fn fail(mut self, field: &'static str, reason: String) -> Self {
        self.error.get_or_insert(ConfigError::new(field, reason));
        self
    }

    /// Build; fails on an invalid header name, CIDR or prefix, or with no source.
    pub fn build(self) -> Result<ClientKeyResolver, ConfigError> {
        match self.error {
            Some(e) => Err(e),
            None => self.config.build(),
        }
    }
}

/// `ip:<address>`, spelled as `Display` spells it; an IPv4 address (the common key, once per
/// request) without the formatting machinery.
fn peer_key(ip: IpAddr) -> Arc<str> {
    let IpAddr::V4(v4) = ip else { return Arc::from(format!("ip:{ip}")) };
    let mut out = [0u8; 18];
    out[..3].copy_from_slice(b"ip:");
    let mut len = 3;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            out[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            out[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        out[len] = b'0' + octet % 10;
        len += 1;
    }
    Arc::from(std::str::from_utf8(&out[..len]).expect("ASCII digits and dots"))
}

/// The digest under which an API key is stored: 128 bits of SHA-256, in hex.
pub fn api_key_digest(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        hops.extend(value.split(',').map(|hop| parse_node(hop.trim())));
    }
    hops
}

/// `X-Real-IP` names one address; more than one value (a client's plus the proxy's, when the
/// proxy appends rather than overwrites) is not believed.
fn x_real_ip_hop(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut values = headers.get_all("x-real-ip").iter();
    match (values.next(), values.next()) {
        (Some(v), None) => vec![v.to_str().ok().and_then(|v| parse_node(v.trim()))],
        (None, _) => Vec::new(),
        (Some(_), Some(_)) => vec![None],
    }
}

fn forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            // An element without `for=` says nothing about this hop: count it as unknown.
            hops.push(node.and_then(|n| parse_node(n.trim_matches('"'))));
        }
    }
    hops
}

/// An address as written in a forwarding header: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = node.parse::<SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    let inner = node.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(|v6| canonical(IpAddr::V6(v6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut req = http::Request::new(());
        for (k, v) in headers {
            req.headers_mut().append(HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        req.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        req
    }

    fn ip_resolver() -> ClientKeyResolver {
        ClientKeyResolver::builder().peer_ip().trusted_proxies(["10.0.0.0/8", "::1/128"]).build().unwrap()
    }

    #[test]
    fn spoofed_forwarded_for_from_untrusted_peer_does_not_change_the_key() {
        let r = ip_resolver();
        let plain = r.resolve(&request("203.0.113.7:5000", &[]));
        let spoofed = r.resolve(&request("203.0.113.7:5000", &[("x-forwarded-for", "1.1.1.1")]));
        let spoofed_fwd = r.resolve(&request("203.0.113.7:5000", &[("forwarded", "for=1.1.1.1")]));
        assert_eq!(plain.as_str(), "ip:203.0.113.7");
        assert_eq!(spoofed, plain);
        assert_eq!(spoofed_fwd, plain);
    }

    #[test]
    fn trusted_proxy_forwarding_is_walked_from_the_right() {
        let r = ip_resolver();
        // The client prepended a fake hop; the proxy chain 10.0.0.2 -> 10.0.0.1 appended the real one.
        let req = request("10.0.0.1:80", &[("x-forwarded-for", "6.6.6.6, 198.51.100.9, 10.0.0.2")]);
        assert_eq!(r.resolve(&req).as_str(), "ip:198.51.100.9");
    }

    #[test]
    fn configured_forwarded_header_parses_ipv6_with_port_and_xff_is_ignored() {
        let r = ClientKeyResolver::builder()
            .peer_ip()
            .trusted_proxies(["10.0.0.0/8", "::1/128"])
            .forwarding_header(ForwardingHeader::Forwarded)
            .build()
            .unwrap();
        let req = request(
            "[::1]:80",
            &[("forwarded", r#"for="[2001:db8:cafe::17]:4711";proto=https"#), ("x-forwarded-for", "5.5.5.5")],
        );
        assert_eq!(r.resolve(&req).as_str(), "ip:2001:db8:cafe::");
        // The proxy sets Forwarded; an X-Forwarded-For alone is the client's and is not read.
        let req = request("[::1]:80", &[("x-forwarded-for", "5.5.5.5")]);
        assert_eq!(r.resolve(&req).as_str(), "ip:::");
    }

    #[test]
    fn a_clients_forwarded_header_does_not_beat_the_proxys_x_forwarded_for() {
        // The proxy appends the real client to X-Forwarded-For and passes the client's own
        // `Forwarded` through untouched: only X-Forwarded-For (the default) is read.
        let r = ip_resolver();
        let req = request("10.0.0.1:80", &[("forwarded", "for=1.1.1.1"), ("x-forwarded-for", "198.51.100.9")]);
        assert_eq!(r.resolve(&req).as_str(), "ip:198.51.100.9");
        let req = request("10.0.0.1:80", &[("forwarded", "for=1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(r.resolve(&req).as_str(), "ip:10.0.0.1");
    }

    #[test]
    fn x_real_ip_is_one_address_from_the_proxy() {
        let r = ClientKeyResolver::builder()
            .peer_ip()
            .trusted_proxies(["10.0.0.0/8"])
            .forwarding_header(ForwardingHeader::XRealIp)
            .build()
            .unwrap();
        let one = request("10.0.0.1:80", &[("x-real-ip", "198.51.100.9"), ("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(r.resolve(&one).as_str(), "ip:198.51.100.9");
        // Two values: the proxy appended instead of overwriting; neither is believed.
        let two = request("10.0.0.1:80", &[("x-real-ip", "6.6.6.6"), ("x-real-ip", "198.51.100.9")]);
        assert_eq!(r.resolve(&two).as_str(), "ip:10.0.0.1");
        // From an untrusted peer the header is ignored.
        let direct = request("203.0.113.7:1", &[("x-real-ip", "6.6.6.6")]);
        assert_eq!(r.resolve(&direct).as_str(), "ip:203.0.113.7");
    }

    #[test]
    fn malformed_hop_stops_the_walk_at_the_last_trusted_hop() {
        let r = ip_resolver();
        let req = request("10.0.0.1:80", &[("x-forwarded-for", "7.7.7.7, not-an-ip")]);
        assert_eq!(r.resolve(&req).as_str(), "ip:10.0.0.1");
    }

    #[test]
    fn all_trusted_chain_uses_the_leftmost_hop() {
        let r = ip_resolver();
        let req = request("10.0.0.1:80", &[("x-forwarded-for", "10.1.1.1, 10.0.0.3")]);
        assert_eq!(r.resolve(&req).as_str(), "ip:10.1.1.1");
    }

    #[test]
    fn ipv6_clients_are_grouped_by_prefix() {
        let r = ip_resolver();
        let a = r.resolve(&request("[2001:db8:1:2:aaaa::1]:1", &[]));
        let b = r.resolve(&request("[2001:db8:1:2:bbbb::9]:1", &[]));
        let c = r.resolve(&request("[2001:db8:1:3::1]:1", &[]));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn sources_are_tried_in_order_and_api_keys_are_digested() {
        let r = ClientKeyResolver::builder()
            .api_key("x-api-key")
            .known_api_keys(["secret"])
            .header("x-client-id")
            .peer_ip()
            .build()
            .unwrap();
        let by_key = r.resolve(&request("192.0.2.1:1", &[("x-api-key", "secret"), ("x-client-id", "c1")]));
        assert!(by_key.as_str().starts_with("key:"));
        assert!(!by_key.as_str().contains("secret"));
        assert_eq!(by_key.as_str().len(), "key:".len() + 32);
        let by_id = r.resolve(&request("192.0.2.1:1", &[("x-client-id", "c1")]));
        assert_eq!(by_id.as_str(), "id:c1");
        let by_ip = r.resolve(&request("192.0.2.1:1", &[]));
        assert_eq!(by_ip.as_str(), "ip:192.0.2.1");
    }

    #[test]
    fn an_unknown_api_key_is_no_key() {
        let r = ClientKeyResolver::builder().api_key("x-api-key").known_api_keys(["k-1"]).peer_ip().build().unwrap();
        let known = r.resolve(&request("192.0.2.1:1", &[("x-api-key", "k-1")]));
        assert_eq!(known.as_str(), format!("key:{}", api_key_digest("k-1")));
        for minted in ["k-2", "k-1 ", "anything"] {
            let got = r.resolve(&request("192.0.2.1:1", &[("x-api-key", minted)]));
            assert_eq!(got.as_str(), "ip:192.0.2.1", "{minted:?}");
        }
        assert!(r.is_known_api_key("k-1"));
        assert!(!r.is_known_api_key("k-2"));
    }

    #[test]
    fn the_default_resolver_ignores_client_chosen_headers() {
        let r = ClientKeyResolver::default();
        let plain = r.resolve(&request("203.0.113.7:5000", &[]));
        for (k, v) in [("x-client-id", "fresh-1"), ("x-api-key", "made-up"), ("forwarded", "for=1.1.1.1")] {
            assert_eq!(r.resolve(&request("203.0.113.7:5000", &[(k, v)])), plain);
        }
    }

    #[test]
    fn malformed_or_oversized_header_values_fall_through() {
        let r = ClientKeyResolver::builder().header("x-client-id").peer_ip().max_value_len(8).build().unwrap();
        let long = r.resolve(&request("192.0.2.1:1", &[("x-client-id", "012345678")]));
        assert_eq!(long.as_str(), "ip:192.0.2.1");
        let spaced = r.resolve(&request("192.0.2.1:1", &[("x-client-id", "a b")]));
        assert_eq!(spaced.as_str(), "ip:192.0.2.1");
    }

    #[test]
    fn principal_and_anonymous() {
        let r = ClientKeyResolver::builder().principal().build().unwrap();
        let mut req = http::Request::new(());
        assert!(r.resolve(&req).is_anonymous());
        req.extensions_mut().insert(Principal(Arc::from("alice")));
        assert_eq!(r.resolve(&req).as_str(), "principal:alice");
    }

    #[test]
    fn invalid_configuration_fails_at_build() {
        let field = |b: ClientKeyResolverBuilder| b.build().unwrap_err().field().to_owned();
        assert_eq!(field(ClientKeyResolver::builder().peer_ip().trusted_proxies(["10.0.0.0/33"])), "trusted_proxies");
        assert_eq!(field(ClientKeyResolver::builder()), "sources");
        assert_eq!(field(ClientKeyResolver::builder().header("bad header")), "sources");
        assert_eq!(field(ClientKeyResolver::builder().peer_ip().ipv6_prefix(129)), "ipv6_prefix");
        // An API-key source with no table would accept any key.
        assert_eq!(field(ClientKeyResolver::builder().api_key("x-api-key")), "api_keys");
        let cfg: ClientKeyConfig = serde_json::from_str(
            r#"{"sources":[{"api_key":"x-api-key"},"peer_ip"],"api_keys":["k-1"],"trusted_proxies":["10.0.0.0/8"],
                "forwarding_header":"x-real-ip"}"#,
        )
        .unwrap();
        assert_eq!(cfg.sources.len(), 2);
        assert_eq!(cfg.forwarding_header, ForwardingHeader::XRealIp);
        assert!(!format!("{cfg:?}").contains("k-1"), "keys stay out of Debug");
        assert!(cfg.build().is_ok());
    }

    #[test]
    fn peer_keys_are_spelled_as_display_spells_the_address() {
        for octets in [[0, 0, 0, 0], [255, 255, 255, 255], [10, 0, 9, 99], [100, 101, 9, 10], [192, 0, 2, 1]] {
            let ip = IpAddr::from(octets);
            assert_eq!(&*peer_key(ip), format!("ip:{ip}"));
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(&*peer_key(v6), "ip:2001:db8::1");
    }
}
