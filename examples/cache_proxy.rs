//! A caching reverse proxy: CacheLayer (a shared HTTP cache, RFC 9111) in front of an HTTP/1.1
//! client that forwards every method, end-to-end header and body to an upstream origin.
//!
//! ```text
//! cargo run --release --example cache_proxy -- --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080
//!     [--redis redis://127.0.0.1:6379] [--default-ttl-ms 0] [--max-body-bytes 1048576]
//!     [--max-request-bytes 1048576] [--connect-timeout-ms 2000] [--read-timeout-ms 10000]
//! ```
//!
//! - Bodies stream in both directions. A request body over `--max-request-bytes` is answered
//!   413 (at once when `Content-Length` says so, else when the limit is crossed). A response
//!   body over `--max-body-bytes` streams through uncached.
//! - The upstream connection must be made within `--connect-timeout-ms`; its response head,
//!   and each later piece of its body, must come within `--read-timeout-ms` (504 for the head,
//!   the body is cut off after). A client sending its body slower than that is cut off too.
//! - Hop-by-hop fields (RFC 9110 §7.6.1: `Connection` and the fields it names, `Keep-Alive`,
//!   `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) are never forwarded, either way.
//! - Refusals are problem+json without upstream error texts or URLs (those go to the log), and
//!   a panic anywhere in the stack is a 500, not a dropped connection.
//!
//! Responses carry `X-Cache: HIT | MISS | STALE | REVALIDATED` and `Age`. With `--redis`, several
//! proxies share stored responses (L2) and purges (an unsafe method on one proxy purges the URI
//! on all of them).

use std::{
    convert::Infallible,
    future::Future as _,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use axum::{body::Body, Router};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use phalanx_cache::{CacheLayer, HttpStore, TieredCache};
use phalanx_core::{
    redis::{RedisHandle, RedisSettings},
    Problem,
};
use tower::{service_fn, Layer};
use tower_http::catch_panic::CatchPanicLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    upstream: Uri,
    listen: SocketAddr,
    redis: Option<String>,
    default_ttl_ms: u64,
    max_body_bytes: usize,
    max_request_bytes: u64,
    connect_timeout: Duration,
    read_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        upstream: Uri::from_static("http://127.0.0.1:8000"),
        listen: "127.0.0.1:8080".parse().expect("valid default"),
        redis: None,
        default_ttl_ms: 0,
        max_body_bytes: 1024 * 1024,
        max_request_bytes: 1024 * 1024,
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--upstream" => {
                let uri: Uri = value()?.parse().map_err(|e| format!("--upstream: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err("--upstream must be an http://host[:port] URL".into());
                }
                args.upstream = uri;
            }
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--redis" => args.redis = Some(value()?),
            "--default-ttl-ms" => args.default_ttl_ms = number(value()?)?,
            "--max-body-bytes" => {
                args.max_body_bytes = usize::try_from(number(value()?)?).map_err(|e| format!("{flag}: {e}"))?
            }
            "--max-request-bytes" => args.max_request_bytes = number(value()?)?,
            "--connect-timeout-ms" => args.connect_timeout = Duration::from_millis(number(value()?)?),
            "--read-timeout-ms" => args.read_timeout = Duration::from_millis(number(value()?)?),
            "-h" | "--help" => {
                return Err("usage: cache_proxy --upstream URL --listen ADDR [--redis URL] [--default-ttl-ms N] \
                            [--max-body-bytes N] [--max-request-bytes N] [--connect-timeout-ms N] \
                            [--read-timeout-ms N]"
                    .into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.connect_timeout.is_zero() || args.read_timeout.is_zero() {
        return Err("timeouts must be greater than 0".into());
    }
    Ok(args)
}

/// Fields that concern one connection only (RFC 9110 §7.6.1), never forwarded.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(name.as_str(), "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade")
        || name.as_str().starts_with("proxy-")
}

/// The end-to-end fields of `from`: without the hop-by-hop ones, the ones `Connection` names,
/// and `Host` (the client sets the upstream's).
fn end_to_end(from: &HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let mut to = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        if !hop_by_hop(name) && !named.contains(name) && name != header::HOST {
            to.append(name.clone(), value.clone());
        }
    }
    to
}

/// Why a [`Guarded`] body stopped.
const OVER_LIMIT: u8 = 1;
const TOO_SLOW: u8 = 2;

/// A body with a size limit and a deadline for each piece; it records why it failed, so the
/// proxy can tell a client's too-large body (413) from an upstream failure (502).
struct Guarded<B> {
    inner: B,
    limit: u64,
    seen: u64,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// The deadline runs from the first poll (the upstream connection may take a while).
    polled: bool,
    failed: Arc<AtomicU8>,
}

impl<B> Guarded<B> {
    fn new(inner: B, limit: u64, idle: Duration) -> Self {
        Guarded {
            inner,
            limit,
            seen: 0,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            polled: false,
            failed: Arc::new(AtomicU8::new(0)),
        }
    }
}

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if !this.polled {
            this.polled = true;
            let deadline = tokio::time::Instant::now() + this.idle;
            this.deadline.as_mut().reset(deadline);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                this.failed.store(TOO_SLOW, Ordering::Relaxed);
                return Poll::Ready(Some(Err("body stalled".into())));
            }
        };
        let deadline = tokio::time::Instant::now() + this.idle;
        this.deadline.as_mut().reset(deadline);
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if this.seen > this.limit {
                        this.failed.store(OVER_LIMIT, Ordering::Relaxed);
                        return Poll::Ready(Some(Err("body over the limit".into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Clone)]
struct Upstream {
    client: Client<HttpConnector, Guarded<Body>>,
    base: Uri,
    max_request_bytes: u64,
    read_timeout: Duration,
}

fn refusal(status: StatusCode, title: &'static str) -> Response<Body> {
    let mut response = Problem::new(status).with_title(title).into_response::<Body>().map(Body::new);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn forward(upstream: Upstream, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > upstream.max_request_bytes) {
        return refusal(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    }
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut target = upstream.base.clone().into_parts();
    target.path_and_query = path.parse().ok();
    let Ok(target) = Uri::from_parts(target) else {
        return refusal(StatusCode::BAD_REQUEST, "Bad request target");
    };
    let body = Guarded::new(body, upstream.max_request_bytes, upstream.read_timeout);
    let failed = Arc::clone(&body.failed);
    let mut outgoing = Request::new(body);
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = target;
    *outgoing.headers_mut() = end_to_end(&parts.headers);
    let sent = tokio::time::timeout(upstream.read_timeout, upstream.client.request(outgoing)).await;
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            return match failed.load(Ordering::Relaxed) {
                OVER_LIMIT => refusal(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
                TOO_SLOW => refusal(StatusCode::REQUEST_TIMEOUT, "Request body too slow"),
                _ => {
                    tracing::warn!(%error, "upstream request failed");
                    refusal(StatusCode::BAD_GATEWAY, "Upstream unavailable")
                }
            };
        }
        Err(_) => {
            tracing::warn!(timeout_ms = upstream.read_timeout.as_millis() as u64, "upstream response head timed out");
            return refusal(StatusCode::GATEWAY_TIMEOUT, "Upstream timed out");
        }
    };
    let (parts, body) = response.into_parts();
    let body = Guarded::new(body, u64::MAX, upstream.read_timeout);
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = parts.status;
    *response.headers_mut() = end_to_end(&parts.headers);
    response
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let mut store = TieredCache::builder().namespace("phalanx:proxy");
    if let Some(url) = &args.redis {
        let redis = RedisHandle::connect(RedisSettings::from_url(url.clone())).unwrap_or_else(|e| panic!("{e}"));
        store = store.redis(redis);
    }
    let store: HttpStore = store.build().unwrap_or_else(|e| panic!("{e}"));
    let cache = CacheLayer::builder()
        .store(store)
        .default_ttl(Duration::from_millis(args.default_ttl_ms))
        .max_body_bytes(args.max_body_bytes)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(args.connect_timeout));
    connector.set_nodelay(true);
    let upstream = Upstream {
        client: Client::builder(TokioExecutor::new()).build(connector),
        base: args.upstream.clone(),
        max_request_bytes: args.max_request_bytes,
        read_timeout: args.read_timeout,
    };
    let origin = service_fn(move |request: Request<Body>| {
        let upstream = upstream.clone();
        async move { Ok::<_, Infallible>(forward(upstream, request).await) }
    });
    let panic_answer = |_: Box<dyn std::any::Any + Send>| -> Response<Body> {
        refusal(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
    };
    let app = Router::new().fallback_service(cache.layer(origin)).layer(CatchPanicLayer::custom(panic_answer));

    let listener = tokio::net::TcpListener::bind(args.listen).await.unwrap_or_else(|e| panic!("{}: {e}", args.listen));
    eprintln!("cache_proxy: {} -> {}", args.listen, args.upstream);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{any, get};
    use http_body_util::BodyExt;

    /// An origin on a free loopback port that echoes what it received as headers, answers with
    /// hop-by-hop fields of its own, and has a route that never answers.
    async fn origin() -> SocketAddr {
        let app = Router::new()
            .route(
                "/echo",
                any(|headers: HeaderMap, body: Bytes| async move {
                    let mut seen: Vec<String> = headers.keys().map(|k| k.as_str().to_owned()).collect();
                    seen.sort();
                    Response::builder()
                        .header("connection", "x-private")
                        .header("x-private", "secret")
                        .header("keep-alive", "timeout=5")
                        .header("proxy-authenticate", "Basic")
                        .header("x-seen", seen.join(","))
                        .header("x-body-len", body.len().to_string())
                        .body(Body::empty())
                        .unwrap()
                }),
            )
            .route("/hang", get(std::future::pending::<&'static str>));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    fn upstream(addr: SocketAddr, max_request_bytes: u64, read_timeout: Duration) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(500)));
        Upstream {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("http://{addr}").parse().unwrap(),
            max_request_bytes,
            read_timeout,
        }
    }

    async fn text(response: Response<Body>) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-trace"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("host", "client.example"),
            ("accept", "text/plain"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        let kept = end_to_end(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept"]);
    }

    #[tokio::test]
    async fn hop_by_hop_fields_are_not_forwarded_either_way() {
        let addr = origin().await;
        let request = Request::post("/echo")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("te", "trailers")
            .header("proxy-authorization", "Basic abc")
            .header("x-end", "1")
            .body(Body::from("hello"))
            .unwrap();
        let response = forward(upstream(addr, 1024, Duration::from_secs(5)), request).await;
        assert_eq!(response.status(), StatusCode::OK);
        let seen = response.headers()["x-seen"].to_str().unwrap().to_owned();
        assert!(seen.contains("x-end"), "{seen}");
        for hop in ["x-hop", "te", "proxy-authorization"] {
            assert!(!seen.split(',').any(|s| s == hop), "{hop} was forwarded: {seen}");
        }
        assert_eq!(response.headers()["x-body-len"], "5");
        for hop in ["x-private", "keep-alive", "proxy-authenticate", "connection"] {
            assert!(!response.headers().contains_key(hop), "{hop} reached the client");
        }
    }

    #[tokio::test]
    async fn a_request_body_over_the_limit_is_413_declared_or_streamed() {
        let addr = origin().await;
        let declared =
            Request::post("/echo").header("content-length", "2000").body(Body::from(vec![b'x'; 2000])).unwrap();
        let response = forward(upstream(addr, 1024, Duration::from_secs(5)), declared).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

        let chunks = futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 256]))));
        let streamed = Request::post("/echo").body(Body::from_stream(chunks)).unwrap();
        let response = forward(upstream(addr, 1024, Duration::from_secs(5)), streamed).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    }

    #[tokio::test]
    async fn a_silent_upstream_is_504_and_a_gone_one_502_without_its_address() {
        let addr = origin().await;
        let hang = Request::get("/hang").body(Body::empty()).unwrap();
        let response = forward(upstream(addr, 1024, Duration::from_millis(200)), hang).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);

        let gone = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let request = Request::get("/echo").body(Body::empty()).unwrap();
        let response = forward(upstream(gone, 1024, Duration::from_secs(2)), request).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body = text(response).await;
        assert!(!body.contains("127.0.0.1") && !body.contains(&gone.port().to_string()), "{body}");
    }
}
