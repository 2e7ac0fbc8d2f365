//! One test per RFC 9111 rule CacheLayer follows, through `tower::ServiceExt` with paused time.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use phalanx_cache::{CacheLayer, CacheLayerBuilder};
use tower::{Layer, Service, ServiceExt};

type OriginFn = dyn Fn(&Request<Body>, usize) -> Response<Full<Bytes>> + Send + Sync;

/// An origin whose answer is computed from the request and the call number (0-based).
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicUsize>,
    answer: Arc<OriginFn>,
    delay: Duration,
    /// The first call (0-based) that is delayed.
    delay_from: usize,
}

impl Origin {
    fn new(answer: impl Fn(&Request<Body>, usize) -> Response<Full<Bytes>> + Send + Sync + 'static) -> Self {
        Origin { calls: Arc::default(), answer: Arc::new(answer), delay: Duration::ZERO, delay_from: 0 }
    }

    fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Calls from number `from` on take `delay`; the ones before answer at once.
    fn delayed_from(mut self, from: usize, delay: Duration) -> Self {
        self.delay = delay;
        self.delay_from = from;
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request<Body>> for Origin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let response = (self.answer)(&req, n);
        let delay = if n >= self.delay_from { self.delay } else { Duration::ZERO };
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(response)
        })
    }
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (n, v) in headers {
        r.headers_mut().append(header::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r
}

fn numbered(headers: &'static [(&'static str, &'static str)]) -> Origin {
    Origin::new(move |_, n| reply(200, headers, &format!("v{n}")))
}

fn cache() -> CacheLayerBuilder {
    CacheLayer::builder()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut r = get(uri);
    for (n, v) in headers {
        r.headers_mut().append(header::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
    }
    r
}

struct Seen {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn x_cache(&self) -> &str {
        self.headers.get("x-cache").map_or("", |v| v.to_str().unwrap())
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
    fn age(&self) -> Option<u64> {
        self.headers.get(header::AGE).map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

async fn send<S>(svc: &S, req: Request<Body>) -> Seen
where
    S: Service<Request<Body>, Response = Response<phalanx_cache::http::CacheBody<Full<Bytes>>>, Error = Infallible>
        + Clone,
{
    let response = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Seen { status: parts.status, headers: parts.headers, body }
}

async fn sleep(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn stores_only_get_and_head_with_cacheable_status() {
    let origin = Origin::new(|req, n| match req.uri().path() {
        "/error" => reply(500, &[], &format!("e{n}")),
        "/created" => reply(201, &[], &format!("c{n}")),
        _ => reply(200, &[("cache-control", "max-age=60")], &format!("v{n}")),
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    assert_eq!(send(&svc, get("/a")).await.x_cache(), "MISS");
    let hit = send(&svc, get("/a")).await;
    assert_eq!((hit.x_cache(), hit.text()), ("HIT", "v0"));
    let head = send(&svc, Request::head("/a").body(Body::empty()).unwrap()).await;
    assert_eq!((head.x_cache(), head.body.len()), ("HIT", 0));
    assert_eq!(head.headers[header::CONTENT_LENGTH], "2");
    // No explicit freshness and not cacheable by default: not stored.
    send(&svc, get("/error")).await;
    assert_eq!(send(&svc, get("/error")).await.text(), "e2");
    send(&svc, get("/created")).await;
    assert_eq!(send(&svc, get("/created")).await.text(), "c4");
    // OPTIONS is neither stored nor answered from storage.
    let opt = send(&svc, Request::builder().method(Method::OPTIONS).uri("/a").body(Body::empty()).unwrap()).await;
    assert_eq!(opt.text(), "v5");
    assert_eq!(origin.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn no_store_and_private_responses_are_not_stored() {
    let origin = Origin::new(|req, n| match req.uri().path() {
        "/no-store" => reply(200, &[("cache-control", "no-store, max-age=60")], &format!("v{n}")),
        _ => reply(200, &[("cache-control", "private, max-age=60")], &format!("v{n}")),
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    for path in ["/no-store", "/private"] {
        send(&svc, get(path)).await;
        assert_eq!(send(&svc, get(path)).await.x_cache(), "MISS", "{path}");
    }
    assert_eq!(origin.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn authorization_is_stored_only_when_the_response_allows_it() {
    let origin = Origin::new(|req, n| match req.uri().path() {
        "/public" => reply(200, &[("cache-control", "public, max-age=60")], &format!("v{n}")),
        "/s-maxage" => reply(200, &[("cache-control", "s-maxage=60")], &format!("v{n}")),
        "/must" => reply(200, &[("cache-control", "max-age=60, must-revalidate")], &format!("v{n}")),
        _ => reply(200, &[("cache-control", "max-age=60")], &format!("v{n}")),
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    let auth = [("authorization", "Bearer x")];
    send(&svc, get_with("/plain", &auth)).await;
    assert_eq!(send(&svc, get_with("/plain", &auth)).await.x_cache(), "MISS");
    for path in ["/public", "/s-maxage", "/must"] {
        send(&svc, get_with(path, &auth)).await;
        assert_eq!(send(&svc, get_with(path, &auth)).await.x_cache(), "HIT", "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn set_cookie_responses_are_not_stored_unless_configured() {
    let headers: &[(&str, &str)] = &[("cache-control", "max-age=60"), ("set-cookie", "s=1")];
    let svc = cache().build().unwrap().layer(numbered(headers));
    send(&svc, get("/")).await;
    assert_eq!(send(&svc, get("/")).await.x_cache(), "MISS");
    let svc = cache().store_set_cookie(true).build().unwrap().layer(numbered(headers));
    send(&svc, get("/")).await;
    assert_eq!(send(&svc, get("/")).await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn freshness_comes_from_s_maxage_then_max_age_then_expires() {
    // Date is now: a Date in the past would add its distance to the age (RFC 9111 §4.2.3).
    let origin = Origin::new(|req, n| match req.uri().path() {
        "/s" => reply(200, &[("cache-control", "max-age=100, s-maxage=10")], &format!("v{n}")),
        "/m" => reply(200, &[("cache-control", "max-age=20")], &format!("v{n}")),
        _ => {
            let now = std::time::SystemTime::now();
            let date = httpdate::fmt_http_date(now);
            let expires = httpdate::fmt_http_date(now + Duration::from_secs(30));
            reply(200, &[("date", &date), ("expires", &expires)], &format!("v{n}"))
        }
    });
    let svc = cache().build().unwrap().layer(origin);
    for path in ["/s", "/m", "/e"] {
        send(&svc, get(path)).await;
    }
    sleep(9).await;
    for path in ["/s", "/m", "/e"] {
        assert_eq!(send(&svc, get(path)).await.x_cache(), "HIT", "{path} fresh at 9 s");
    }
    sleep(2).await;
    assert_eq!(send(&svc, get("/s")).await.x_cache(), "MISS", "s-maxage=10 wins over max-age=100");
    assert_eq!(send(&svc, get("/m")).await.x_cache(), "HIT");
    sleep(10).await;
    assert_eq!(send(&svc, get("/m")).await.x_cache(), "MISS", "max-age=20");
    assert_eq!(send(&svc, get("/e")).await.x_cache(), "HIT", "Expires - Date = 30 s");
    sleep(10).await;
    assert_eq!(send(&svc, get("/e")).await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn heuristic_freshness_only_when_configured() {
    let lm = || {
        Origin::new(|_, n| {
            let now = std::time::SystemTime::now();
            let (date, lm) = (httpdate::fmt_http_date(now), httpdate::fmt_http_date(now - Duration::from_secs(3600)));
            reply(200, &[("date", &date), ("last-modified", &lm)], &format!("v{n}"))
        })
    };
    let svc = cache().build().unwrap().layer(lm());
    send(&svc, get("/")).await;
    assert_eq!(send(&svc, get("/")).await.x_cache(), "MISS");
    let svc = cache().heuristic_freshness(true).build().unwrap().layer(lm());
    send(&svc, get("/")).await;
    sleep(359).await;
    assert_eq!(send(&svc, get("/")).await.x_cache(), "HIT", "10 % of an hour");
    sleep(2).await;
    assert_eq!(send(&svc, get("/")).await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn age_is_set_on_every_served_response() {
    let svc = cache().build().unwrap().layer(numbered(&[("cache-control", "max-age=60"), ("age", "5")]));
    let miss = send(&svc, get("/")).await;
    assert_eq!(miss.age(), Some(5));
    sleep(3).await;
    let hit = send(&svc, get("/")).await;
    assert_eq!((hit.x_cache(), hit.age()), ("HIT", Some(8)));
    sleep(52).await;
    assert_eq!(send(&svc, get("/")).await.x_cache(), "MISS", "age 60 reaches max-age");
}

#[tokio::test(start_paused = true)]
async fn request_directives_no_cache_max_age_min_fresh_are_honoured() {
    let origin = numbered(&[("cache-control", "max-age=60")]);
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/")).await;
    sleep(10).await;
    assert_eq!(send(&svc, get_with("/", &[("cache-control", "no-cache")])).await.text(), "v1");
    sleep(10).await;
    assert_eq!(send(&svc, get_with("/", &[("cache-control", "max-age=5")])).await.text(), "v2");
    assert_eq!(send(&svc, get_with("/", &[("cache-control", "max-age=5")])).await.x_cache(), "HIT");
    sleep(50).await;
    assert_eq!(send(&svc, get_with("/", &[("cache-control", "min-fresh=20")])).await.text(), "v3");
    assert_eq!(origin.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn request_max_stale_accepts_stale_responses() {
    let svc = cache().build().unwrap().layer(numbered(&[("cache-control", "max-age=10")]));
    send(&svc, get("/")).await;
    sleep(15).await;
    let stale = send(&svc, get_with("/", &[("cache-control", "max-stale=10")])).await;
    assert_eq!((stale.x_cache(), stale.text()), ("STALE", "v0"));
    let any = send(&svc, get_with("/", &[("cache-control", "max-stale")])).await;
    assert_eq!(any.x_cache(), "STALE");
    assert_eq!(send(&svc, get_with("/", &[("cache-control", "max-stale=2")])).await.text(), "v1");
}

#[tokio::test(start_paused = true)]
async fn request_only_if_cached_answers_504_when_nothing_is_stored() {
    let origin = numbered(&[("cache-control", "max-age=60")]);
    let svc = cache().build().unwrap().layer(origin.clone());
    let only = [("cache-control", "only-if-cached")];
    assert_eq!(send(&svc, get_with("/", &only)).await.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(origin.calls(), 0);
    send(&svc, get("/")).await;
    assert_eq!(send(&svc, get_with("/", &only)).await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn request_no_store_keeps_the_response_out_of_storage() {
    let origin = numbered(&[("cache-control", "max-age=60")]);
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get_with("/", &[("cache-control", "no-store")])).await;
    assert_eq!(send(&svc, get("/")).await.x_cache(), "MISS");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn vary_key_holds_the_selected_request_headers() {
    let origin = Origin::new(|req, _| {
        let lang = req.headers().get("accept-language").map_or("none", |v| v.to_str().unwrap()).to_owned();
        reply(200, &[("cache-control", "max-age=60"), ("vary", "Accept-Language")], &lang)
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(send(&svc, get_with("/", &en)).await.text(), "en");
    assert_eq!(send(&svc, get_with("/", &fr)).await.text(), "fr");
    let hit = send(&svc, get_with("/", &en)).await;
    assert_eq!((hit.x_cache(), hit.text()), ("HIT", "en"));
    let hit = send(&svc, get_with("/", &fr)).await;
    assert_eq!((hit.x_cache(), hit.text()), ("HIT", "fr"));
    assert_eq!(send(&svc, get("/")).await.text(), "none");
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn vary_star_never_matches() {
    let origin = numbered(&[("cache-control", "max-age=60"), ("vary", "*")]);
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/")).await;
    assert_eq!(send(&svc, get("/")).await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn stale_entries_are_revalidated_with_if_none_match_and_a_304_refreshes_headers() {
    let origin = Origin::new(|req, n| {
        if req.headers().get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"e1\"") {
            return reply(304, &[("cache-control", "max-age=10"), ("x-version", "2")], "");
        }
        reply(200, &[("cache-control", "max-age=10"), ("etag", "\"e1\""), ("x-version", "1")], &format!("v{n}"))
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/")).await;
    sleep(11).await;
    let revalidated = send(&svc, get("/")).await;
    assert_eq!((revalidated.x_cache(), revalidated.text()), ("REVALIDATED", "v0"));
    assert_eq!(revalidated.headers["x-version"], "2");
    let hit = send(&svc, get("/")).await;
    assert_eq!((hit.x_cache(), hit.text()), ("HIT", "v0"));
    assert_eq!(hit.headers["x-version"], "2");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_entries_are_revalidated_with_if_modified_since() {
    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    let origin = Origin::new(|req, n| {
        if req.headers().get(header::IF_MODIFIED_SINCE).is_some_and(|v| v == LM) {
            return reply(304, &[("cache-control", "max-age=10")], "");
        }
        reply(200, &[("cache-control", "max-age=10"), ("last-modified", LM)], &format!("v{n}"))
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/")).await;
    sleep(11).await;
    let r = send(&svc, get("/")).await;
    assert_eq!((r.x_cache(), r.text()), ("REVALIDATED", "v0"));
}

#[tokio::test(start_paused = true)]
async fn a_clients_conditional_request_is_answered_304_from_the_cache() {
    let origin = numbered(&[
        ("cache-control", "max-age=60"),
        ("etag", "W/\"abc\""),
        ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ]);
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/")).await;
    let r = send(&svc, get_with("/", &[("if-none-match", "\"x\", \"abc\"")])).await;
    assert_eq!((r.status, r.x_cache(), r.body.len()), (StatusCode::NOT_MODIFIED, "HIT", 0));
    let r = send(&svc, get_with("/", &[("if-none-match", "\"other\"")])).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&svc, get_with("/", &[("if-modified-since", "Sun, 06 Nov 1994 09:00:00 GMT")])).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_with_exactly_one_background_refresh() {
    let origin =
        numbered(&[("cache-control", "max-age=10, stale-while-revalidate=30")]).delayed(Duration::from_secs(1));
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/")).await;
    sleep(12).await;
    for _ in 0..5 {
        let r = send(&svc, get("/")).await;
        assert_eq!((r.x_cache(), r.text()), ("STALE", "v0"));
    }
    sleep(2).await;
    assert_eq!(origin.calls(), 2, "one refresh for five stale hits");
    let r = send(&svc, get("/")).await;
    assert_eq!((r.x_cache(), r.text()), ("HIT", "v1"));
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_stale_on_server_errors() {
    let origin = Origin::new(|_, n| {
        if n == 0 {
            reply(200, &[("cache-control", "max-age=10, stale-if-error=60")], "good")
        } else {
            reply(503, &[], "down")
        }
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/")).await;
    sleep(20).await;
    let r = send(&svc, get("/")).await;
    assert_eq!((r.status, r.x_cache(), r.text()), (StatusCode::OK, "STALE", "good"));
    sleep(60).await;
    assert_eq!(send(&svc, get("/")).await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn unsafe_methods_invalidate_the_target_uri_and_same_origin_locations() {
    let origin = Origin::new(|req, n| match *req.method() {
        Method::GET => reply(200, &[("cache-control", "max-age=60")], &format!("v{n}")),
        Method::POST => {
            reply(201, &[("location", "/items/2"), ("content-location", "http://other.example/items/3")], "")
        }
        Method::DELETE => reply(404, &[], ""),
        _ => reply(204, &[], ""),
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    // Keys hold the authority (from Host), so every request names it.
    let get = |path: &str| get_with(path, &[("host", "api.example")]);
    for path in ["/items/1", "/items/2", "/items/3"] {
        send(&svc, get(path)).await;
    }
    let put = Request::put("/items/1").header("host", "api.example").body(Body::empty()).unwrap();
    send(&svc, put).await;
    assert_eq!(send(&svc, get("/items/1")).await.x_cache(), "MISS");
    let post = Request::post("/items").header("host", "api.example").body(Body::empty()).unwrap();
    send(&svc, post).await;
    assert_eq!(send(&svc, get("/items/2")).await.x_cache(), "MISS", "Location is purged");
    assert_eq!(send(&svc, get("/items/3")).await.x_cache(), "HIT", "another origin's URI is not");
    let delete = Request::delete("/items/3").header("host", "api.example").body(Body::empty()).unwrap();
    send(&svc, delete).await;
    assert_eq!(send(&svc, get("/items/3")).await.x_cache(), "HIT", "an error response invalidates nothing");
}

#[tokio::test(start_paused = true)]
async fn default_ttl_and_key_function_apply_to_handlers_without_caching_headers() {
    let origin = numbered(&[]);
    let svc = cache()
        .default_ttl(Duration::from_secs(5))
        .key_fn(|uri, _| Some(uri.path().to_owned()))
        .build()
        .unwrap()
        .layer(origin.clone());
    send(&svc, get("/a?x=1")).await;
    let hit = send(&svc, get("/a?x=2")).await;
    assert_eq!((hit.x_cache(), hit.text()), ("HIT", "v0"), "the key ignores the query");
    sleep(6).await;
    assert_eq!(send(&svc, get("/a")).await.x_cache(), "MISS");
    // Handlers that do send caching headers are not overridden.
    let svc =
        cache().default_ttl(Duration::from_secs(5)).build().unwrap().layer(numbered(&[("cache-control", "no-store")]));
    send(&svc, get("/")).await;
    assert_eq!(send(&svc, get("/")).await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_size_cap_stream_through_uncached() {
    #[derive(Clone)]
    struct Streaming(Arc<AtomicUsize>);
    impl Service<Request<Body>> for Streaming {
        type Response = Response<
            StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>>,
        >;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<Body>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            let frames: Vec<_> = (0..8u8).map(|i| Ok(http_body::Frame::data(Bytes::from(vec![i; 100])))).collect();
            let mut r = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
            r.headers_mut().insert(header::CACHE_CONTROL, "max-age=60".parse().unwrap());
            std::future::ready(Ok(r))
        }
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = cache().max_body_bytes(350).build().unwrap().layer(Streaming(calls.clone()));
    for _ in 0..2 {
        let r = svc.clone().oneshot(get("/big")).await.unwrap();
        assert_eq!(r.headers()["x-cache"], "MISS");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 800);
        assert_eq!(&body[700..], &[7u8; 100]);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn responses_that_may_not_be_stored_stream_through_unbuffered() {
    // A no-store response whose body sends one frame and then never ends: the client gets the
    // response and the frame at once, since the cache need not read the body to pass it on.
    let svc = cache().build().unwrap().layer(tower::service_fn(|_: Request<Body>| async {
        let first = futures_util::stream::iter([Ok::<_, Infallible>(http_body::Frame::data(Bytes::from("first")))]);
        let body = StreamBody::new(futures_util::StreamExt::chain(first, futures_util::stream::pending()));
        let mut r = Response::new(body);
        r.headers_mut().insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
        Ok::<_, Infallible>(r)
    }));
    let r = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(get("/live")))
        .await
        .expect("the response is not held back until its body ends")
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    let mut body = r.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("first frame").unwrap();
    assert_eq!(frame.unwrap().into_data().unwrap(), "first");
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_response_may_not_be_stored_skips_coalescing_for_a_while() {
    // Each answer takes 1 s and may not be stored. Once the cache has seen that, ten concurrent
    // requests for the key all go straight to the origin: 1 s in all, not 1 s of waiting behind
    // one of them and then 1 s more.
    let origin =
        Origin::new(|_, _| reply(200, &[("cache-control", "no-store")], "live")).delayed(Duration::from_secs(1));
    let svc = cache().build().unwrap().layer(origin.clone());
    assert_eq!(send(&svc, get("/live")).await.x_cache(), "MISS");
    let started = tokio::time::Instant::now();
    let all = futures_util::future::join_all((0..10).map(|_| send(&svc, get("/live")))).await;
    assert!(all.iter().all(|seen| seen.x_cache() == "MISS" && seen.text() == "live"));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(origin.calls(), 11);
}

#[tokio::test(start_paused = true)]
async fn a_pass_expires_and_is_forgotten_on_purge() {
    // The first answer may not be stored; later ones may, for a minute.
    let origin = Origin::new(|_, n| match n {
        0 => reply(200, &[("cache-control", "no-store")], "v0"),
        _ => reply(200, &[("cache-control", "max-age=60")], &format!("v{n}")),
    });
    let layer = cache().pass_ttl(Duration::from_secs(5)).build().unwrap();
    let svc = layer.layer(origin.clone());
    assert_eq!(send(&svc, get("/a")).await.text(), "v0");
    sleep(1).await;
    // Within the pass: storable answers are passed on, not stored.
    assert_eq!(send(&svc, get("/a")).await.text(), "v1");
    assert_eq!(send(&svc, get("/a")).await.text(), "v2");
    sleep(5).await;
    let stored = send(&svc, get("/a")).await;
    assert_eq!((stored.x_cache(), stored.text()), ("MISS", "v3"));
    let hit = send(&svc, get("/a")).await;
    assert_eq!((hit.x_cache(), hit.text()), ("HIT", "v3"));
    assert_eq!(origin.calls(), 4);

    // A purge ends a pass at once.
    let origin = Origin::new(|_, n| match n {
        0 => reply(200, &[("cache-control", "no-store")], "w0"),
        _ => reply(200, &[("cache-control", "max-age=60")], &format!("w{n}")),
    });
    let svc = layer.layer(origin.clone());
    assert_eq!(send(&svc, get("/b")).await.text(), "w0");
    layer.purge("/b").await;
    assert_eq!(send(&svc, get("/b")).await.text(), "w1");
    assert_eq!(send(&svc, get("/b")).await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_by_the_request_alone_is_not_remembered() {
    // The client's own no-store keeps this answer out, not the answer itself: the next request
    // is cached as usual.
    let svc = cache().build().unwrap().layer(numbered(&[("cache-control", "max-age=60")]));
    assert_eq!(send(&svc, get_with("/c", &[("cache-control", "no-store")])).await.text(), "v0");
    assert_eq!(send(&svc, get("/c")).await.text(), "v1");
    let hit = send(&svc, get("/c")).await;
    assert_eq!((hit.x_cache(), hit.text()), ("HIT", "v1"));
}

#[tokio::test(start_paused = true)]
async fn x_cache_reports_and_purge_by_key_and_by_tag_remove_entries() {
    let origin = Origin::new(|req, n| {
        let tag = if req.uri().path() == "/a" { "item:a items" } else { "item:b, items" };
        reply(200, &[("cache-control", "max-age=60"), ("cache-tag", tag)], &format!("v{n}"))
    });
    let layer = cache().build().unwrap();
    let svc = layer.clone().layer(origin.clone());
    for path in ["/a", "/b"] {
        assert_eq!(send(&svc, get(path)).await.x_cache(), "MISS");
        assert_eq!(send(&svc, get(path)).await.x_cache(), "HIT");
    }
    layer.purge("/a").await;
    assert_eq!(send(&svc, get("/a")).await.x_cache(), "MISS");
    assert_eq!(send(&svc, get("/b")).await.x_cache(), "HIT");
    layer.purge_tag("item:b").await;
    assert_eq!(send(&svc, get("/b")).await.x_cache(), "MISS");
    layer.purge_tag("items").await;
    assert_eq!(send(&svc, get("/a")).await.x_cache(), "MISS");
    assert_eq!(send(&svc, get("/b")).await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_for_one_key_make_one_inner_call() {
    let origin = numbered(&[("cache-control", "max-age=60")]).delayed(Duration::from_millis(100));
    let layer = cache().build().unwrap();
    let svc = layer.clone().layer(origin.clone());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn({
                let svc = svc.clone();
                async move { send(&svc, get("/hot")).await.text().to_owned() }
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "v0");
    }
    assert_eq!(origin.calls(), 1);
    assert_eq!(layer.stats().http.coalesced, 49);
}

#[tokio::test(start_paused = true)]
async fn waiters_give_up_after_the_coalescing_timeout_and_call_the_inner_service() {
    let origin = numbered(&[("cache-control", "max-age=60")]).delayed(Duration::from_secs(10));
    let layer = cache().coalesce_timeout(Duration::from_secs(1)).build().unwrap();
    let svc = layer.clone().layer(origin.clone());
    let leader = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, get("/slow")).await }
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let follower = send(&svc, get("/slow")).await;
    assert_eq!(origin.calls(), 2, "the follower called the origin itself");
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(12), "it waited 1 s, not for the leader's 10 s");
    assert_eq!(follower.x_cache(), "MISS");
    leader.await.unwrap();
    assert!(layer.stats().http.misses >= 2);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_concurrent_requests_for_one_cold_key_make_one_inner_call() {
    let origin = numbered(&[("cache-control", "max-age=60")]).delayed(Duration::from_millis(50));
    let layer = cache().build().unwrap();
    let svc = layer.clone().layer(origin.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let svc = svc.clone();
        tasks.spawn(async move { svc.oneshot(get("/cold")).await.unwrap().status() });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!(origin.calls(), 1);
    let stats = layer.stats();
    assert_eq!(stats.http.misses, 1);
    assert!(stats.http.coalesced > 0);
}

// Transient refusals (503, 429) and origin failures under pressure.

#[tokio::test(start_paused = true)]
async fn a_transient_503_or_429_creates_no_pass_and_is_never_stored() {
    for (status, headers) in [
        (503, &[("retry-after", "1")][..]),
        (429, &[("retry-after", "1")][..]),
        // Even when it claims freshness, a refusal is not stored.
        (503, &[("cache-control", "max-age=60")][..]),
    ] {
        let origin = Origin::new(move |_, n| match n {
            0 => reply(status, headers, "busy"),
            _ => reply(200, &[("cache-control", "max-age=60")], &format!("v{n}")),
        });
        let svc = cache().build().unwrap().layer(origin.clone());
        let refused = send(&svc, get("/r")).await;
        assert_eq!(refused.status.as_u16(), status);
        let after = send(&svc, get("/r")).await;
        assert_eq!((after.status, after.text()), (StatusCode::OK, "v1"), "the refusal was not stored");
        let again = send(&svc, get("/r")).await;
        assert_eq!((again.x_cache(), again.text()), ("HIT", "v1"), "and no pass kept the 200 out");
        assert_eq!(origin.calls(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn no_server_error_creates_a_pass() {
    let origin = Origin::new(|_, n| match n {
        0 => reply(500, &[], "boom"),
        _ => reply(200, &[("cache-control", "max-age=60")], "ok"),
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    assert_eq!(send(&svc, get("/e")).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    send(&svc, get("/e")).await;
    assert_eq!(send(&svc, get("/e")).await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn coalescing_stays_on_for_a_cold_key_while_the_origin_refuses() {
    // Every answer is a shed that takes 1 s. Ten concurrent requests for the cold key make one
    // origin call: the others wait for it and get its refusal, Retry-After included.
    let origin =
        Origin::new(|_, _| reply(503, &[("retry-after", "2"), ("content-type", "application/problem+json")], "{}"))
            .delayed(Duration::from_secs(1));
    let layer = cache().build().unwrap();
    let svc = layer.clone().layer(origin.clone());
    assert_eq!(send(&svc, get("/cold")).await.status, StatusCode::SERVICE_UNAVAILABLE);
    let started = tokio::time::Instant::now();
    let all = futures_util::future::join_all((0..10).map(|_| send(&svc, get("/cold")))).await;
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(origin.calls(), 2, "one origin call for the ten");
    for seen in &all {
        assert_eq!(seen.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(seen.headers[header::RETRY_AFTER], "2");
    }
    assert_eq!(layer.stats().http.coalesced, 9);
}

#[tokio::test(start_paused = true)]
async fn a_shed_is_shared_only_with_followers_of_no_higher_priority() {
    // The origin sheds everything below critical, as admission does under overload. A critical
    // request that waited on a normal leader's load asks the origin itself, and gets its answer;
    // a normal one takes the leader's refusal.
    let origin = Origin::new(|req, _| match phalanx_core::Priority::of(req.extensions()) {
        phalanx_core::Priority::Critical => reply(200, &[("cache-control", "no-store")], "critical"),
        _ => reply(503, &[("retry-after", "1")], "shed"),
    })
    .delayed(Duration::from_secs(1));
    let svc = cache().build().unwrap().layer(origin.clone());
    let leader = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, get("/hot")).await.status }
    });
    tokio::task::yield_now().await;
    let mut critical = get("/hot");
    critical.extensions_mut().insert(phalanx_core::Priority::Critical);
    let (critical, normal) = tokio::join!(send(&svc, critical), send(&svc, get("/hot")));
    assert_eq!(leader.await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((critical.status, critical.text()), (StatusCode::OK, "critical"));
    assert_eq!(normal.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(origin.calls(), 2, "the leader's call and the critical follower's own");
}

#[tokio::test(start_paused = true)]
async fn a_429_is_not_handed_to_other_waiting_requests() {
    // A 429 may be about one client: each waiting request asks for itself once the leader is done.
    let origin = Origin::new(|_, _| reply(429, &[("retry-after", "1")], "slow down")).delayed(Duration::from_secs(1));
    let svc = cache().build().unwrap().layer(origin.clone());
    let all = futures_util::future::join_all((0..5).map(|_| send(&svc, get("/limited")))).await;
    assert!(all.iter().all(|seen| seen.status == StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(origin.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_is_served_when_the_origin_refuses_or_fails() {
    let origin = Origin::new(|_, n| match n {
        0 => reply(200, &[("cache-control", "max-age=10")], "good"),
        1 => reply(503, &[("retry-after", "1")], "shed"),
        2 => reply(429, &[], "limited"),
        _ => reply(500, &[], "broken"),
    });
    let svc = cache().error_grace(Duration::from_secs(30)).build().unwrap().layer(origin.clone());
    send(&svc, get("/s")).await;
    sleep(15).await;
    for _ in 0..3 {
        let r = send(&svc, get("/s")).await;
        assert_eq!((r.status, r.x_cache(), r.text()), (StatusCode::OK, "STALE", "good"));
    }
    assert_eq!(origin.calls(), 4);
    // Past freshness plus the grace: the origin's answer stands.
    sleep(30).await;
    assert_eq!(send(&svc, get("/s")).await.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_is_served_when_the_origin_times_out() {
    let origin = Origin::new(|_, n| reply(200, &[("cache-control", "max-age=10")], &format!("v{n}")))
        .delayed_from(1, Duration::from_secs(30));
    let svc = cache().origin_timeout(Duration::from_secs(2)).build().unwrap().layer(origin.clone());
    send(&svc, get("/t")).await;
    sleep(15).await;
    let started = tokio::time::Instant::now();
    let r = send(&svc, get("/t")).await;
    assert_eq!((r.x_cache(), r.text()), ("STALE", "v0"));
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_leader_is_too_slow_serves_the_stale_copy() {
    // The revalidation hangs for 30 s; the requests behind it wait the coalescing timeout, then
    // serve the stored copy instead of calling the origin themselves.
    let origin = Origin::new(|_, n| reply(200, &[("cache-control", "max-age=10")], &format!("v{n}")))
        .delayed_from(1, Duration::from_secs(30));
    let svc = cache().coalesce_timeout(Duration::from_secs(1)).build().unwrap().layer(origin.clone());
    send(&svc, get("/w")).await;
    sleep(15).await;
    let leader = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, get("/w")).await.text().to_owned() }
    });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let waiter = send(&svc, get("/w")).await;
    assert_eq!((waiter.x_cache(), waiter.text()), ("STALE", "v0"));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(origin.calls(), 2, "no second origin call");
    assert_eq!(leader.await.unwrap(), "v1");
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_is_not_served_on_refusal_when_must_revalidate_proxy_revalidate_no_cache_or_s_maxage() {
    for cc in ["max-age=10, must-revalidate", "max-age=10, proxy-revalidate", "no-cache", "s-maxage=10"] {
        let origin = Origin::new(move |_, n| match n {
            0 => reply(200, &[("cache-control", cc), ("etag", "\"a\"")], "good"),
            _ => reply(503, &[], "shed"),
        });
        let svc = cache().error_grace(Duration::from_secs(600)).build().unwrap().layer(origin.clone());
        send(&svc, get("/m")).await;
        sleep(15).await;
        let r = send(&svc, get("/m")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{cc}");
    }
}

// Hostile numbers from the origin.

#[tokio::test(start_paused = true)]
async fn huge_header_numbers_saturate_instead_of_panicking() {
    let origin = numbered(&[
        ("cache-control", "max-age=18446744073709551615, stale-while-revalidate=18446744073709551615"),
        ("cache-control", "stale-if-error=99999999999999999999999999"),
        ("age", "18446744073709551615"),
        ("expires", "Fri, 31 Dec 9999 23:59:59 GMT"),
    ]);
    let svc = cache().build().unwrap().layer(origin.clone());
    let first = send(&svc, get("/huge")).await;
    assert_eq!(first.status, StatusCode::OK);
    // Age 2^31 against max-age 2^31 (both saturated): stored, but not fresh.
    assert!(first.age().unwrap() >= 1 << 31);
    let origin = numbered(&[("cache-control", "max-age=18446744073709551615, stale-if-error=18446744073709551615")]);
    let svc = cache().build().unwrap().layer(origin.clone());
    assert_eq!(send(&svc, get("/huge")).await.x_cache(), "MISS");
    sleep(1_000_000).await;
    assert_eq!(send(&svc, get("/huge")).await.x_cache(), "HIT");
    assert_eq!(origin.calls(), 1);
}

// Stale-while-revalidate through an axum router.

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_refresh_keeps_the_path_parameters_of_an_axum_route() {
    use axum::{extract::Path, routing::get as route_get, Router};
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = Arc::clone(&calls);
        move |Path(id): Path<u32>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { ([("cache-control", "max-age=10, stale-while-revalidate=60")], format!("item {id} v{n}")) }
        }
    };
    let app = Router::new().route("/items/{id}", route_get(handler)).layer(cache().build().unwrap());
    let text = |r: Response<Body>| async move {
        let x = r.headers()["x-cache"].to_str().unwrap().to_owned();
        (x, String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
    };
    assert_eq!(text(app.clone().oneshot(get("/items/7")).await.unwrap()).await, ("MISS".into(), "item 7 v0".into()));
    sleep(12).await;
    assert_eq!(text(app.clone().oneshot(get("/items/7")).await.unwrap()).await, ("STALE".into(), "item 7 v0".into()));
    sleep(1).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the refresh reached the handler");
    assert_eq!(text(app.clone().oneshot(get("/items/7")).await.unwrap()).await, ("HIT".into(), "item 7 v1".into()));
}

// Keys.

#[tokio::test(start_paused = true)]
async fn the_key_is_the_target_uri_with_scheme_and_authority() {
    let origin = Origin::new(|req, n| {
        let host = req.headers().get(header::HOST).map_or("-", |h| h.to_str().unwrap()).to_owned();
        reply(200, &[("cache-control", "max-age=60")], &format!("{host} v{n}"))
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    assert_eq!(send(&svc, get_with("/p", &[("host", "a.example")])).await.text(), "a.example v0");
    assert_eq!(send(&svc, get_with("/p", &[("host", "b.example")])).await.text(), "b.example v1");
    assert_eq!(send(&svc, get_with("/p", &[("host", "A.Example")])).await.text(), "a.example v0");
    assert_eq!(send(&svc, get("http://b.example/p")).await.text(), "b.example v1");
    assert_eq!(send(&svc, get("https://b.example/p")).await.x_cache(), "MISS", "another scheme, another resource");

    let single = cache().single_host(true).build().unwrap().layer(origin.clone());
    send(&single, get_with("/p", &[("host", "a.example")])).await;
    assert_eq!(send(&single, get_with("/p", &[("host", "b.example")])).await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn cache_tag_is_never_sent_to_clients() {
    let origin = numbered(&[("cache-control", "max-age=60"), ("cache-tag", "item:1"), ("surrogate-key", "s1")]);
    let layer = cache().build().unwrap();
    let svc = layer.clone().layer(origin.clone());
    let miss = send(&svc, get("/tagged")).await;
    let hit = send(&svc, get("/tagged")).await;
    assert_eq!(hit.x_cache(), "HIT");
    for seen in [&miss, &hit] {
        assert!(!seen.headers.contains_key("cache-tag") && !seen.headers.contains_key("surrogate-key"));
    }
    layer.purge_tag("item:1").await;
    assert_eq!(send(&svc, get("/tagged")).await.text(), "v1", "the tag still purges");
    let uncached = Origin::new(|_, _| reply(200, &[("cache-control", "no-store"), ("cache-tag", "x")], "live"));
    let svc = cache().build().unwrap().layer(uncached);
    assert!(!send(&svc, get("/live")).await.headers.contains_key("cache-tag"));
}

#[tokio::test(start_paused = true)]
async fn declared_query_parameters_make_the_key_and_others_are_ignored_or_refused() {
    let origin = numbered(&[("cache-control", "max-age=60")]);
    let svc = cache().key_query(["page", "sort"]).build().unwrap().layer(origin.clone());
    assert_eq!(send(&svc, get("/list?page=1&r=123")).await.text(), "v0");
    assert_eq!(send(&svc, get("/list?r=999&page=1")).await.text(), "v0");
    assert_eq!(send(&svc, get("/list?sort=a&page=1")).await.text(), "v1");
    assert_eq!(send(&svc, get("/list?page=1&sort=a&utm=x")).await.text(), "v1", "order does not matter");
    assert_eq!(send(&svc, get("/list?page=2")).await.text(), "v2");
    assert_eq!(send(&svc, get("/list?r=1")).await.text(), "v3");
    assert_eq!(send(&svc, get("/list")).await.text(), "v3");

    let strict = cache().key_query(["page"]).unknown_query(phalanx_cache::http::UnknownQuery::Reject).build().unwrap();
    let svc = strict.layer(origin.clone());
    let refused = send(&svc, get("/list?page=1&r=5")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(origin.calls(), 4, "a refused query never reaches the handler");
    assert_eq!(send(&svc, get("/list?page=1")).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_million_distinct_query_strings_keep_memory_bounded() {
    // With the route's key parameters declared: one entry, one origin call.
    let origin = numbered(&[("cache-control", "max-age=3600")]);
    let layer = cache().key_query(["page"]).build().unwrap();
    let svc = layer.clone().layer(origin.clone());
    for i in 0..1_000_000u32 {
        let r = svc.clone().oneshot(get(&format!("/items?page=1&r={i}"))).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    layer.store().run_pending_tasks();
    assert_eq!(origin.calls(), 1);
    assert_eq!(layer.stats().l1_entries, 1);

    // Without: every query is an entry, and the store's byte budget bounds them (100,000 here,
    // each a miss, to keep the test short).
    let origin = numbered(&[("cache-control", "max-age=3600")]);
    let store = phalanx_cache::TieredCache::builder().max_bytes(1 << 20).build().unwrap();
    let layer = cache().store(store).build().unwrap();
    let svc = layer.clone().layer(origin.clone());
    for i in 0..100_000u32 {
        let r = svc.clone().oneshot(get(&format!("/items?r={i}"))).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        if i % 10_000 == 0 {
            layer.store().run_pending_tasks();
            assert!(layer.stats().l1_bytes <= 1 << 20);
        }
    }
    layer.store().run_pending_tasks();
    let stats = layer.stats();
    assert!(stats.l1_bytes <= 1 << 20, "{} bytes", stats.l1_bytes);
    assert!(stats.l1_entries < 20_000, "{} entries", stats.l1_entries);
}

// RFC gaps, one test per rule.

#[tokio::test(start_paused = true)]
async fn targeted_cdn_cache_control_takes_precedence_over_cache_control() {
    let origin = numbered(&[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60")]);
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/cdn")).await;
    let hit = send(&svc, get("/cdn")).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.headers[header::CACHE_CONTROL], "no-store", "Cache-Control still reaches the client");
    // An invalid targeted field is ignored: Cache-Control rules.
    let origin = numbered(&[("cache-control", "no-store"), ("cdn-cache-control", "max-age=60, =oops")]);
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/cdn")).await;
    assert_eq!(send(&svc, get("/cdn")).await.x_cache(), "MISS");
}

#[tokio::test(start_paused = true)]
async fn the_phalanx_target_field_beats_cdn_cache_control_and_stays_internal() {
    let origin = numbered(&[
        ("cdn-cache-control", "no-store"),
        ("phalanx-cache-control", "max-age=60"),
        ("cache-control", "private"),
    ]);
    let svc = cache().build().unwrap().layer(origin.clone());
    assert!(!send(&svc, get("/t")).await.headers.contains_key("phalanx-cache-control"));
    let hit = send(&svc, get("/t")).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert!(!hit.headers.contains_key("phalanx-cache-control"));
    // A field of the deployment's own choosing.
    let origin = numbered(&[("cache-control", "no-store"), ("edge-control", "max-age=60")]);
    let svc = cache().target_fields(["Edge-Control"]).build().unwrap().layer(origin.clone());
    send(&svc, get("/t")).await;
    assert_eq!(send(&svc, get("/t")).await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn stored_headers_named_in_connection_are_dropped() {
    let origin =
        numbered(&[("cache-control", "max-age=60"), ("connection", "x-hop, close"), ("x-hop", "1"), ("x-end", "2")]);
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/c")).await;
    let hit = send(&svc, get("/c")).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert!(!hit.headers.contains_key("x-hop") && !hit.headers.contains_key(header::CONNECTION));
    assert_eq!(hit.headers["x-end"], "2");
}

#[tokio::test(start_paused = true)]
async fn unsafe_methods_of_unknown_safety_invalidate_the_target_uri() {
    let origin = numbered(&[("cache-control", "max-age=60")]);
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/u")).await;
    let frob = Request::builder().method("FROB").uri("/u").body(Body::empty()).unwrap();
    send(&svc, frob).await;
    assert_eq!(send(&svc, get("/u")).await.x_cache(), "MISS");
    // OPTIONS is safe: no invalidation.
    let options = Request::builder().method(Method::OPTIONS).uri("/u").body(Body::empty()).unwrap();
    send(&svc, options).await;
    assert_eq!(send(&svc, get("/u")).await.x_cache(), "HIT");
}

#[tokio::test(start_paused = true)]
async fn interim_1xx_responses_are_never_stored() {
    let origin = Origin::new(|_, n| match n {
        0 => reply(103, &[("cache-control", "max-age=60"), ("link", "</a.css>; rel=preload")], ""),
        _ => reply(200, &[("cache-control", "max-age=60")], "final"),
    });
    let svc = cache().pass_ttl(Duration::ZERO).build().unwrap().layer(origin.clone());
    assert_eq!(send(&svc, get("/i")).await.status.as_u16(), 103);
    assert_eq!(send(&svc, get("/i")).await.text(), "final");
}

#[tokio::test(start_paused = true)]
async fn age_that_is_not_a_non_negative_integer_is_ignored_and_a_list_uses_its_first_member() {
    for (age, expected) in
        [("abc", 0), ("+5", 0), ("-5", 0), ("1.5", 0), ("30, 40", 30), ("99999999999999999999", 1 << 31)]
    {
        let origin =
            Origin::new(move |_, _| reply(200, &[("cache-control", "max-age=600000000000"), ("age", age)], "a"));
        let svc = cache().build().unwrap().layer(origin);
        assert_eq!(send(&svc, get("/a")).await.age(), Some(expected), "Age: {age}");
    }
}

#[tokio::test(start_paused = true)]
async fn range_requests_are_served_from_a_stored_complete_response() {
    let origin = Origin::new(|_, _| reply(200, &[("cache-control", "max-age=60"), ("etag", "\"e\"")], "0123456789"));
    let svc = cache().build().unwrap().layer(origin.clone());
    send(&svc, get("/r")).await;
    let part = send(&svc, get_with("/r", &[("range", "bytes=2-5")])).await;
    assert_eq!((part.status, part.text()), (StatusCode::PARTIAL_CONTENT, "2345"));
    assert_eq!(part.headers[header::CONTENT_RANGE], "bytes 2-5/10");
    assert_eq!(part.headers[header::CONTENT_LENGTH], "4");
    let suffix = send(&svc, get_with("/r", &[("range", "bytes=-3")])).await;
    assert_eq!((suffix.status, suffix.text()), (StatusCode::PARTIAL_CONTENT, "789"));
    let none = send(&svc, get_with("/r", &[("range", "bytes=10-")])).await;
    assert_eq!(none.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(none.headers[header::CONTENT_RANGE], "bytes */10");
    let stale_validator = send(&svc, get_with("/r", &[("range", "bytes=0-1"), ("if-range", "\"old\"")])).await;
    assert_eq!((stale_validator.status, stale_validator.text()), (StatusCode::OK, "0123456789"));
    let matching = send(&svc, get_with("/r", &[("range", "bytes=0-1"), ("if-range", "\"e\"")])).await;
    assert_eq!((matching.status, matching.text()), (StatusCode::PARTIAL_CONTENT, "01"));
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn apparent_age_is_computed_from_date() {
    let origin = Origin::new(|_, n| {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100));
        reply(200, &[("cache-control", "max-age=60"), ("date", &date)], &format!("v{n}"))
    });
    let svc = cache().build().unwrap().layer(origin.clone());
    let first = send(&svc, get("/d")).await;
    assert!(first.age().unwrap() >= 100, "Age {:?}", first.age());
    assert_eq!(send(&svc, get("/d")).await.x_cache(), "MISS", "100 s old against max-age 60: stale on arrival");
}
