//! A caching reverse proxy: CacheLayer (a shared HTTP cache, RFC 9111) in front of a reqwest
//! client that forwards every method, header and body to an upstream origin.
//!
//! ```text
//! cargo run --release --example cache_proxy -- --upstream http://127.0.0.1:8000 --listen 127.0.0.1:8080
//!     [--redis redis://127.0.0.1:6379] [--default-ttl-ms 0] [--max-body-bytes 1048576]
//! ```
//!
//! Responses carry `X-Cache: HIT | MISS | STALE | REVALIDATED` and `Age`. With `--redis`, several
//! proxies share stored responses (L2) and purges (an unsafe method on one proxy purges the URI
//! on all of them).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{body::Body, Router};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use phalanx_cache::{CacheLayer, HttpStore, TieredCache};
use phalanx_core::redis::RedisSettings;
use tower::{service_fn, Layer};

struct Args {
    upstream: String,
    listen: SocketAddr,
    redis: Option<String>,
    default_ttl_ms: u64,
    max_body_bytes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        upstream: "http://127.0.0.1:8000".into(),
        listen: "127.0.0.1:8080".parse().expect("valid default"),
        redis: None,
        default_ttl_ms: 0,
        max_body_bytes: 1024 * 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--upstream" => args.upstream = value()?.trim_end_matches('/').to_owned(),
            "--listen" => args.listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--redis" => args.redis = Some(value()?),
            "--default-ttl-ms" => {
                args.default_ttl_ms = value()?.parse().map_err(|e| format!("--default-ttl-ms: {e}"))?
            }
            "--max-body-bytes" => {
                args.max_body_bytes = value()?.parse().map_err(|e| format!("--max-body-bytes: {e}"))?
            }
            "-h" | "--help" => {
                return Err("usage: cache_proxy --upstream URL --listen ADDR [--redis URL] [--default-ttl-ms N] \
                            [--max-body-bytes N]"
                    .into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Hop-by-hop fields are the proxy's own business, not the origin's (RFC 9110 §7.6.1); `Host`
/// and `Content-Length` are set again by the client.
fn forwardable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if forwardable(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

async fn forward(client: reqwest::Client, upstream: String, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let body: Bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return error_response(StatusCode::BAD_REQUEST, format!("reading the request body: {e}")),
    };
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    let sent = client.request(parts.method, format!("{upstream}{path}")).headers(headers).body(body).send().await;
    let upstream_response = match sent {
        Ok(r) => r,
        Err(e) => return error_response(StatusCode::BAD_GATEWAY, format!("upstream: {e}")),
    };
    let status = upstream_response.status();
    let mut response_headers = HeaderMap::new();
    copy_headers(upstream_response.headers(), &mut response_headers);
    let body = match upstream_response.bytes().await {
        Ok(b) => b,
        Err(e) => return error_response(StatusCode::BAD_GATEWAY, format!("upstream body: {e}")),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    response
}

fn error_response(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CACHE_CONTROL, "no-store".parse().expect("valid"));
    response
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let mut store = TieredCache::builder().namespace("phalanx:proxy");
    if let Some(url) = &args.redis {
        store = store.redis(RedisSettings::from_url(url.clone()));
    }
    let store: HttpStore = store.build().unwrap_or_else(|e| panic!("{e}"));
    let cache = CacheLayer::builder()
        .store(store)
        .default_ttl(Duration::from_millis(args.default_ttl_ms))
        .max_body_bytes(args.max_body_bytes)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    let client = reqwest::Client::builder().build().expect("http client");
    let upstream = args.upstream.clone();
    let origin = service_fn(move |request: Request<Body>| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move { Ok::<_, Infallible>(forward(client, upstream, request).await) }
    });
    let app = Router::new().fallback_service(cache.layer(origin));

    let listener = tokio::net::TcpListener::bind(args.listen).await.unwrap_or_else(|e| panic!("{}: {e}", args.listen));
    eprintln!("cache_proxy: {} -> {}", args.listen, args.upstream);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server");
}
