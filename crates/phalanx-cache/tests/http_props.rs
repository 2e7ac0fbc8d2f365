//! Property tests: arbitrary origin and client header values through CacheLayer never panic
//! and always give a well-formed answer.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use phalanx_cache::CacheLayer;
use proptest::prelude::*;
use tower::{Layer, ServiceExt};

const BODY: &str = "0123456789abcdefghij";

/// Values that tend to break parsers: huge and negative numbers, directives with odd
/// arguments, dates, lists, and arbitrary visible text or bytes.
fn hostile_value() -> impl Strategy<Value = HeaderValue> {
    let number = prop_oneof![
        Just("18446744073709551615".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("99999999999999999999999999999".to_owned()),
        Just("2147483648".to_owned()),
        Just("-1".to_owned()),
        Just("+5".to_owned()),
        Just("1.5".to_owned()),
        Just("".to_owned()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..100).prop_map(|n| n.to_string()),
    ];
    let directive = prop_oneof![
        Just("max-age"),
        Just("s-maxage"),
        Just("stale-while-revalidate"),
        Just("stale-if-error"),
        Just("max-stale"),
        Just("min-fresh"),
        Just("no-cache"),
        Just("no-store"),
        Just("must-revalidate"),
        Just("public"),
        Just("private"),
        Just("only-if-cached"),
        Just("bytes"),
        Just("W/\"x\""),
        Just("\"e\""),
        Just("*"),
    ];
    let member = (directive, proptest::option::of(number.clone()))
        .prop_map(|(d, n)| n.map_or_else(|| d.to_owned(), |n| format!("{d}={n}")));
    let list = proptest::collection::vec(member, 0..5).prop_map(|m| m.join(", "));
    let range = (proptest::option::of(number.clone()), proptest::option::of(number.clone()))
        .prop_map(|(a, b)| format!("bytes={}-{}", a.unwrap_or_default(), b.unwrap_or_default()));
    let date = prop_oneof![
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
        Just("Thu, 01 Jan 1970 00:00:00 GMT".to_owned()),
        Just("Sun, 06 Nov 1994 08:49:37 GMT".to_owned()),
        Just("not a date".to_owned()),
    ];
    let text = "[ -~]{0,60}";
    let bytes = proptest::collection::vec(any::<u8>(), 0..40)
        .prop_filter_map("a header value", |b| HeaderValue::from_bytes(&b).ok());
    prop_oneof![
        3 => list.prop_map(|s| HeaderValue::try_from(s).unwrap()),
        2 => number.prop_map(|s| HeaderValue::try_from(s).unwrap()),
        1 => range.prop_map(|s| HeaderValue::try_from(s).unwrap()),
        1 => date.prop_map(|s| HeaderValue::try_from(s).unwrap()),
        1 => text.prop_map(|s| HeaderValue::try_from(s).unwrap()),
        1 => bytes,
    ]
}

const ORIGIN_FIELDS: &[&str] = &[
    "cache-control",
    "cdn-cache-control",
    "phalanx-cache-control",
    "age",
    "expires",
    "date",
    "last-modified",
    "etag",
    "vary",
    "connection",
    "retry-after",
    "cache-tag",
];

const CLIENT_FIELDS: &[&str] =
    &["cache-control", "range", "if-range", "if-none-match", "if-modified-since", "host", "accept", "authorization"];

fn fields(names: &'static [&'static str]) -> impl Strategy<Value = Vec<(HeaderName, HeaderValue)>> {
    proptest::collection::vec(
        (proptest::sample::select(names).prop_map(HeaderName::from_static), hostile_value()),
        0..8,
    )
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(203),
        Just(204),
        Just(206),
        Just(304),
        Just(404),
        Just(429),
        Just(500),
        Just(503),
        Just(103)
    ]
}

#[derive(Debug, Clone)]
struct Step {
    status: u16,
    origin: Vec<(HeaderName, HeaderValue)>,
    client: Vec<(HeaderName, HeaderValue)>,
    query: String,
    wait_s: u64,
    method: &'static str,
}

fn step() -> impl Strategy<Value = Step> {
    (
        status(),
        fields(ORIGIN_FIELDS),
        fields(CLIENT_FIELDS),
        "[a-z0-9=&%]{0,12}",
        prop_oneof![Just(0u64), 0u64..100, Just(1 << 40)],
        proptest::sample::select(&["GET", "GET", "GET", "HEAD", "PUT", "FROB"][..]),
    )
        .prop_map(|(status, origin, client, query, wait_s, method)| Step {
            status,
            origin,
            client,
            query,
            wait_s,
            method,
        })
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(async move {
        let plan = Arc::new(parking_lot::Mutex::new(std::collections::VecDeque::<Step>::new()));
        let origin = {
            let plan = Arc::clone(&plan);
            tower::service_fn(move |_req: Request<Body>| {
                let next = plan.lock().pop_front();
                async move {
                    let mut r = Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
                    if let Some(step) = next {
                        *r.status_mut() = StatusCode::from_u16(step.status).unwrap();
                        for (n, v) in step.origin {
                            r.headers_mut().append(n, v);
                        }
                    }
                    Ok::<_, Infallible>(r)
                }
            })
        };
        let layer = CacheLayer::builder()
            .default_ttl(Duration::from_secs(5))
            .origin_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let svc = layer.layer(origin);
        for step in steps {
            tokio::time::sleep(Duration::from_secs(step.wait_s)).await;
            let uri = if step.query.is_empty() { "/p".to_owned() } else { format!("/p?{}", step.query) };
            let mut req = Request::builder().method(step.method).uri(uri).body(Body::empty()).unwrap();
            for (n, v) in &step.client {
                req.headers_mut().append(n.clone(), v.clone());
            }
            plan.lock().push_back(step.clone());
            let response = svc.clone().oneshot(req).await.unwrap();
            plan.lock().clear();
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let from_storage = parts.headers.get("x-cache").is_some_and(|x| x != "MISS");
            if from_storage && parts.status != StatusCode::RANGE_NOT_SATISFIABLE {
                // The cache's own Age (a pass-through carries the origin's as it came).
                let age = parts.headers.get(header::AGE).and_then(|a| a.to_str().ok()?.parse::<u64>().ok());
                prop_assert!(age.is_some(), "Age is a non-negative integer: {:?}", parts.headers.get(header::AGE));
            }
            prop_assert!(!parts.headers.contains_key("cache-tag"), "Cache-Tag is internal");
            match parts.status {
                StatusCode::PARTIAL_CONTENT if step.method == "GET" => {
                    let range = parts.headers.get(header::CONTENT_RANGE);
                    // A 206 the origin made is passed on as it is; one the cache made names its part.
                    if let Some(range) = range.and_then(|r| r.to_str().ok()).filter(|r| r.starts_with("bytes ")) {
                        let (span, total) = range["bytes ".len()..].split_once('/').unwrap();
                        let (a, b) = span.split_once('-').unwrap();
                        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                        prop_assert_eq!(total, BODY.len().to_string());
                        prop_assert_eq!(&body[..], &BODY.as_bytes()[a..=b]);
                    }
                }
                StatusCode::OK if step.method == "GET" => prop_assert_eq!(&body[..], BODY.as_bytes()),
                _ => {}
            }
            if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
                if step.method == "GET" && parts.status != StatusCode::NOT_MODIFIED {
                    prop_assert_eq!(len.to_str().unwrap(), body.len().to_string());
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_headers_through_the_cache_never_panic_and_answer_well_formed(
        steps in proptest::collection::vec(step(), 1..6)
    ) {
        run(steps)?;
    }
}
