//! Client identity: who a request counts against.
//!
//! A [`ClientKeyResolver`] tries its [`KeySource`]s in order and returns the first that yields
//! a key; with none, the request is [`ClientKey::anonymous`]. The peer IP is the socket's
//! address (axum's `ConnectInfo<SocketAddr>` or [`PeerAddr`]); `Forwarded` / `X-Forwarded-For`
//! are read only when that peer is inside a configured trusted-proxy CIDR, and then walked from
//! the right, skipping trusted hops, so a client cannot choose its own address by sending the
//! header itself.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use axum::extract::ConnectInfo;
use http::{header::HeaderName, Extensions, HeaderMap};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

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
    Header(HeaderName),
    /// An API key header; the key is stored only as a digest, never in clear.
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

/// Serde form of a [`ClientKeyResolver`]:
///
/// ```toml
/// sources = [{ api_key = "x-api-key" }, { header = "x-client-id" }, "peer_ip"]
/// trusted_proxies = ["10.0.0.0/8", "127.0.0.1/32"]
/// ipv6_prefix = 64
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientKeyConfig {
    /// Sources tried in order. Default: `["peer_ip"]`.
    pub sources: Vec<KeySource>,
    /// CIDRs of the proxies whose forwarding headers are believed. Default: none.
    pub trusted_proxies: Vec<IpNet>,
    /// IPv6 peers are grouped by this prefix length. Default: 64.
    pub ipv6_prefix: u8,
    /// Longest accepted header value, in bytes. Default: 128.
    pub max_value_len: usize,
}

impl Default for ClientKeyConfig {
    fn default() -> Self {
        ClientKeyConfig {
            sources: vec![KeySource::PeerIp],
            trusted_proxies: Vec::new(),
            ipv6_prefix: 64,
            max_value_len: 128,
        }
    }
}

impl ClientKeyConfig {
    /// Build the resolver; fails on an IPv6 prefix above 128 or an empty source list.
    pub fn build(self) -> Result<ClientKeyResolver, String> {
        if self.ipv6_prefix > 128 {
            return Err(format!("ipv6_prefix {} is above 128", self.ipv6_prefix));
        }
        if self.sources.is_empty() {
            return Err("a client key resolver needs at least one source".into());
        }
        if self.max_value_len == 0 {
            return Err("max_value_len must be at least 1".into());
        }
        Ok(ClientKeyResolver { inner: Arc::new(self) })
    }
}

/// Resolves the [`ClientKey`] of a request. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientKeyResolver {
    inner: Arc<ClientKeyConfig>,
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
    error: Option<String>,
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
        &self.inner
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
        self.inner.sources.iter().find_map(|source| match source {
            KeySource::Header(name) => {
                self.header_value(headers, name).map(|v| ClientKey(Arc::from(format!("id:{v}"))))
            }
            KeySource::ApiKey(name) => {
                self.header_value(headers, name).map(|v| ClientKey(Arc::from(format!("key:{}", api_key_digest(v)))))
            }
            KeySource::Principal => {
                extensions.get::<Principal>().map(|p| ClientKey(Arc::from(format!("principal:{}", p.0))))
            }
            KeySource::PeerIp => {
                self.client_ip(headers, extensions).map(|ip| ClientKey(Arc::from(format!("ip:{}", self.group(ip)))))
            }
        })
    }

    /// A valid header value: visible ASCII only, within the length cap. Anything else is ignored
    /// (the next source is tried), so a malformed header cannot mint keys of its choice.
    fn header_value<'a>(&self, headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
        let value = headers.get(name)?.as_bytes();
        let ok = !value.is_empty()
            && value.len() <= self.inner.max_value_len
            && value.iter().all(|b| (0x21..=0x7e).contains(b));
        ok.then(|| std::str::from_utf8(value).ok()).flatten()
    }

    fn group(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) if self.inner.ipv6_prefix < 128 => {
                let bits = u128::from(v6);
                let mask = if self.inner.ipv6_prefix == 0 { 0 } else { u128::MAX << (128 - self.inner.ipv6_prefix) };
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
            other => other,
        }
    }

    /// Whether an address is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.inner.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client's IP: the peer's, or, when the peer is a trusted proxy, the rightmost
    /// untrusted hop of `Forwarded` (preferred) or `X-Forwarded-For`. `None` without a peer address.
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
        let hops = if headers.contains_key(http::header::FORWARDED) {
            forwarded_for_hops(headers)
        } else {
            x_forwarded_for_hops(headers)
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
            Err(_) => self.fail(format!("invalid header name {name:?}")),
        }
    }

    /// Add an API-key header source.
    pub fn api_key(self, name: &str) -> Self {
        match HeaderName::try_from(name) {
            Ok(h) => self.source(KeySource::ApiKey(h)),
            Err(_) => self.fail(format!("invalid header name {name:?}")),
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
                Err(_) => return self.fail(format!("invalid trusted proxy CIDR {cidr:?}")),
            }
        }
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

    fn fail(mut self, msg: String) -> Self {
        self.error.get_or_insert(msg);
        self
    }

    /// Build; fails on an invalid header name, CIDR or prefix, or with no source.
    pub fn build(self) -> Result<ClientKeyResolver, String> {
        match self.error {
            Some(e) => Err(e),
            None => self.config.build(),
        }
    }
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
    fn forwarded_header_is_preferred_and_parses_ipv6_with_port() {
        let r = ip_resolver();
        let req = request(
            "[::1]:80",
            &[("forwarded", r#"for="[2001:db8:cafe::17]:4711";proto=https"#), ("x-forwarded-for", "5.5.5.5")],
        );
        assert_eq!(r.resolve(&req).as_str(), "ip:2001:db8:cafe::");
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
        let r = ClientKeyResolver::builder().api_key("x-api-key").header("x-client-id").peer_ip().build().unwrap();
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
        assert!(ClientKeyResolver::builder().peer_ip().trusted_proxies(["10.0.0.0/33"]).build().is_err());
        assert!(ClientKeyResolver::builder().build().is_err());
        assert!(ClientKeyResolver::builder().header("bad header").build().is_err());
        let cfg: ClientKeyConfig =
            serde_json::from_str(r#"{"sources":[{"api_key":"x-api-key"},"peer_ip"],"trusted_proxies":["10.0.0.0/8"]}"#)
                .unwrap();
        assert_eq!(cfg.sources.len(), 2);
        assert!(cfg.build().is_ok());
    }
}
