//! The demo's own layers, built from its embedded configuration, tested through tower.

use std::net::SocketAddr;

use axum::{body::Body, extract::ConnectInfo, http::StatusCode, routing::get, Router};
use http::Request;
use phalanx::core::ClassifyLayer;
use tower::{ServiceBuilder, ServiceExt};

use crate::{
    config::{DemoConfig, EMBEDDED},
    state,
};

/// The demo's identity and rate-limit layers in front of a trivial route.
fn limited_app(config: &DemoConfig) -> Router {
    let resolver = state::key_config(config).build().unwrap();
    let classifier = state::classifier(config, resolver);
    let ratelimit = state::ratelimit(config, &phalanx::core::Deps::new()).unwrap();
    Router::new()
        .route("/items/{id}", get(|| async { "item" }))
        .layer(ServiceBuilder::new().layer(ClassifyLayer::new(classifier)).layer(ratelimit))
}

/// How many of 100 requests from `peer` are refused with 429; `header(i)` is added to request i.
async fn limited_of_100(app: &Router, peer: &str, header: impl Fn(usize) -> Option<(&'static str, String)>) -> usize {
    let peer: SocketAddr = peer.parse().unwrap();
    let mut limited = 0;
    for i in 0..100 {
        let mut req = Request::get("/items/1");
        if let Some((name, value)) = header(i) {
            req = req.header(name, value);
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let res = app.clone().oneshot(req).await.unwrap();
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    limited
}

#[tokio::test]
async fn a_fresh_client_id_or_unknown_api_key_per_request_is_limited_like_no_header() {
    let config = DemoConfig::from_toml(EMBEDDED).unwrap();
    let app = limited_app(&config);
    let plain = limited_of_100(&app, "192.0.2.1:4000", |_| None).await;
    let minted_ids = limited_of_100(&app, "192.0.2.2:4000", |i| Some(("x-client-id", format!("fresh-{i}")))).await;
    let minted_keys = limited_of_100(&app, "192.0.2.3:4000", |i| Some(("x-api-key", format!("made-up-{i}")))).await;
    let spoofed = limited_of_100(&app, "192.0.2.4:4000", |i| Some(("forwarded", format!("for=198.51.100.{i}")))).await;
    assert!(plain >= 50, "the per-client burst limit holds: {plain} of 100 limited");
    for (what, got) in [("client ids", minted_ids), ("API keys", minted_keys), ("Forwarded", spoofed)] {
        assert!(got.abs_diff(plain) <= 2, "fresh {what}: {got} limited, {plain} without them");
    }
}

#[tokio::test]
async fn a_known_api_key_is_its_own_client_with_its_tiers_quota() {
    let config = DemoConfig::from_toml(EMBEDDED).unwrap();
    let app = limited_app(&config);
    let anonymous = limited_of_100(&app, "192.0.2.10:4000", |_| None).await;
    // Same address, a premium key: a different client, with the premium tier's larger burst.
    let premium = limited_of_100(&app, "192.0.2.10:4000", |_| Some(("x-api-key", "demo-premium-key".into()))).await;
    assert!(anonymous >= 50);
    assert_eq!(premium, 0, "the premium key's burst of 200/s covers 100 requests");
}

#[test]
fn the_demo_identity_trusts_no_client_header() {
    let config = DemoConfig::from_toml(EMBEDDED).unwrap();
    let key = state::key_config(&config);
    assert!(
        !key.sources.iter().any(|s| matches!(s, phalanx::core::KeySource::Header(_))),
        "no client-id header source in the demo"
    );
    assert!(key.api_keys.iter().any(|k| k == "demo-premium-key"), "known keys come from the key table");
}

#[tokio::test]
async fn every_redis_url_scheme_reaches_the_shared_settings_and_builds() {
    for url in [
        "redis://127.0.0.1:17499",
        "rediss://127.0.0.1:17499",
        "redis-cluster://127.0.0.1:17497?node=127.0.0.1:17498",
        "rediss-cluster://127.0.0.1:17497?node=127.0.0.1:17498",
    ] {
        let mut config = DemoConfig::from_toml(EMBEDDED).unwrap();
        config.apply_env(|k| (k == "REDIS_URL").then(|| url.to_owned())).unwrap();
        let settings = state::redis_settings(&config).unwrap();
        assert_eq!(settings.url, url);
        assert_eq!(settings.is_cluster(), url.contains("-cluster"), "{url}");
        assert_eq!(settings.uses_tls(), url.starts_with("rediss"), "{url}");
        // Built, not connected: the URL is understood.
        settings.build_pool().unwrap_or_else(|e| panic!("{url}: {e}"));
        // The Redis pool of the handlers is built over the handle of the same settings.
        let handle =
            phalanx::core::redis::RedisHandle::unconnected(settings.clone()).unwrap_or_else(|e| panic!("{url}: {e}"));
        let deps = phalanx::core::Deps::new().redis(handle);
        phalanx::pools::RedisPool::from_config(&config.pools.redis, &deps)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    // A CA file for a plain URL is a configuration mistake, refused at start-up.
    let mut config = DemoConfig::from_toml(EMBEDDED).unwrap();
    config.redis_url = Some("redis://127.0.0.1:17499".into());
    config.redis_tls_ca_file = Some("/nonexistent/ca.pem".into());
    assert!(state::redis_settings(&config).unwrap().build_pool().is_err());
}

#[tokio::test]
async fn payloads_have_the_asked_size_up_to_a_mebibyte_and_are_cacheable() {
    use http_body_util::BodyExt;
    let max_age = std::time::Duration::from_secs(300);
    for bytes in [0, 1024, 65_536, crate::routes::MAX_PAYLOAD] {
        let res = crate::routes::payload_response(bytes, max_age);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[http::header::CACHE_CONTROL], "public, max-age=300");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len() as u64, bytes);
    }
    let res = crate::routes::payload_response(crate::routes::MAX_PAYLOAD + 1, max_age);
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()[http::header::CONTENT_TYPE], "application/problem+json");
}
