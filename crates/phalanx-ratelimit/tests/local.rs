//! The layer with the in-process store.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{from_client, json, send, status, Metrics};
use http::{header, Request, StatusCode};
use phalanx_core::{ClientKey, ClientKeyResolver, PeerAddr, StatusSource, Tier};
use phalanx_ratelimit::{Policy, Quota, RateLimitLayer, RATELIMIT, RATELIMIT_POLICY};
use sfv::{BareItem, ListEntry, Parser};

fn by_client_id() -> ClientKeyResolver {
    ClientKeyResolver::builder().header("x-client-id").build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn exactly_burst_plus_rate_times_t_pass_in_process() {
    // 10 per second, burst 5: over 3 s of hammering, 5 + 10 * 3 = 35 pass.
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_second(10).with_burst(5)))
        .key_resolver(by_client_id())
        .build()
        .unwrap();
    let mut passed = 0;
    for step in 0..=300 {
        if step > 0 {
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        for _ in 0..3 {
            if status(&layer, from_client("a")).await == StatusCode::OK {
                passed += 1;
            }
        }
    }
    assert_eq!(passed, 5 + 10 * 3);
    // Another key is untouched.
    assert_eq!(status(&layer, from_client("b")).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn limited_responses_are_problem_json_with_retry_after() {
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("per-client", Quota::per_minute(6).with_burst(1)))
        .key_resolver(by_client_id())
        .build()
        .unwrap();
    assert_eq!(status(&layer, from_client("a")).await, StatusCode::OK);
    tokio::time::advance(Duration::from_millis(2500)).await;
    let res = send(&layer, from_client("a")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    // One request per 10 s; 2.5 s have passed: 7.5 s to wait, rounded up.
    assert_eq!(res.headers()[header::RETRY_AFTER], "8");
    assert_eq!(res.headers()[&RATELIMIT], "\"per-client\";r=0;t=8");
    let doc = json(res).await;
    assert_eq!(doc["status"], 429);
    assert_eq!(doc["policy"], "per-client");
    assert_eq!(doc["type"], phalanx_core::problem::types::RATE_LIMITED);
}

#[tokio::test(start_paused = true)]
async fn spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    let resolver = ClientKeyResolver::builder().peer_ip().trusted_proxies(["10.0.0.0/8"]).build().unwrap();
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("per-ip", Quota::per_hour(2)))
        .key_resolver(resolver)
        .build()
        .unwrap();
    let request = |peer: &str, forwarded_for: &str| {
        let mut req = Request::builder().header("x-forwarded-for", forwarded_for).body(()).unwrap();
        req.extensions_mut().insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
        req
    };
    let statuses = [
        status(&layer, request("203.0.113.7:1000", "1.1.1.1")).await,
        status(&layer, request("203.0.113.7:1001", "2.2.2.2")).await,
        status(&layer, request("203.0.113.7:1002", "3.3.3.3")).await,
    ];
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    // Behind a trusted proxy the forwarded address is the key: three clients, three quotas.
    for (i, client) in ["1.1.1.1", "2.2.2.2", "3.3.3.3"].into_iter().enumerate() {
        assert_eq!(status(&layer, request(&format!("10.0.0.1:{i}"), client)).await, StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn every_policy_must_pass_and_tiers_select_quotas() {
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("per-minute", Quota::per_minute(100)).tier(Tier::Throttled, Quota::per_minute(1)))
        .policy(Policy::new("per-second", Quota::per_second(3)).tier(Tier::Premium, Quota::per_second(10)))
        .key_resolver(by_client_id())
        .build()
        .unwrap();
    let with_tier = |client: &str, tier: Tier| {
        let mut req = from_client(client);
        req.extensions_mut().insert(tier);
        req
    };
    let mut passed = [0; 3];
    for (i, tier) in [Tier::Standard, Tier::Premium, Tier::Throttled].into_iter().enumerate() {
        for _ in 0..20 {
            if status(&layer, with_tier(tier.as_str(), tier)).await == StatusCode::OK {
                passed[i] += 1;
            }
        }
    }
    assert_eq!(passed, [3, 10, 1]);
    // The 17 per-second denials did not charge the per-minute policy: 4 requests in all, one
    // second restored 1.67 of them, so 97 are left (a charged denial would have left 80).
    tokio::time::advance(Duration::from_secs(1)).await;
    let res = send(&layer, with_tier("standard", Tier::Standard)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let state = res.headers()[&RATELIMIT].to_str().unwrap().to_owned();
    assert!(state.starts_with("\"per-minute\";r=97;t=2, \"per-second\";r=2;t=1"), "{state}");
}

#[tokio::test(start_paused = true)]
async fn a_client_key_already_in_the_extensions_is_used() {
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_hour(1)))
        .key_resolver(by_client_id())
        .build()
        .unwrap();
    let classified = |header: &str| {
        let mut req = from_client(header);
        req.extensions_mut().insert(ClientKey::new("principal:alice"));
        req
    };
    assert_eq!(status(&layer, classified("x")).await, StatusCode::OK);
    assert_eq!(status(&layer, classified("y")).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status(&layer, from_client("y")).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn peer_ip_keys_match_the_resolver_spelling() {
    // The default key source is the peer IP, digested without allocating; a `ClientKey` put in
    // the extensions by ClassifyLayer for the same client must count against the same quota.
    let layer = RateLimitLayer::builder().policy(Policy::new("p", Quota::per_hour(2))).build().unwrap();
    let from_peer = || {
        let mut req = Request::new(());
        req.extensions_mut().insert(PeerAddr("198.51.100.23:80".parse::<SocketAddr>().unwrap()));
        req
    };
    assert_eq!(status(&layer, from_peer()).await, StatusCode::OK);
    let mut classified = from_peer();
    classified.extensions_mut().insert(ClientKey::new("ip:198.51.100.23"));
    assert_eq!(status(&layer, classified).await, StatusCode::OK);
    assert_eq!(status(&layer, from_peer()).await, StatusCode::TOO_MANY_REQUESTS);
}

fn parameter(entry: &ListEntry, name: &str) -> i64 {
    let ListEntry::Item(item) = entry else { panic!("an inner list: {entry:?}") };
    item.params.get(name).and_then(BareItem::as_int).unwrap_or_else(|| panic!("no integer {name} in {entry:?}"))
}

fn policy_name(entry: &ListEntry) -> &str {
    let ListEntry::Item(item) = entry else { panic!("an inner list: {entry:?}") };
    item.bare_item.as_str().expect("a policy name is a String item")
}

#[tokio::test(start_paused = true)]
async fn ratelimit_fields_parse_as_structured_field_lists() {
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("per-client", Quota::per_minute(1000).with_burst(3)))
        .policy(Policy::new("daily", Quota::new(5000, Duration::from_secs(86_400))))
        .key_resolver(by_client_id())
        .build()
        .unwrap();
    let mut responses = Vec::new();
    for _ in 0..4 {
        responses.push(send(&layer, from_client("a")).await);
    }
    let statuses: Vec<StatusCode> = responses.iter().map(|r| r.status()).collect();
    assert_eq!(statuses[2..], [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    for res in &responses[2..] {
        let policy = Parser::parse_list(res.headers()[&RATELIMIT_POLICY].as_bytes()).unwrap();
        assert_eq!(policy.iter().map(policy_name).collect::<Vec<_>>(), ["per-client", "daily"]);
        assert_eq!((parameter(&policy[0], "q"), parameter(&policy[0], "w")), (1000, 60));
        assert_eq!((parameter(&policy[1], "q"), parameter(&policy[1], "w")), (5000, 86_400));
        let state = Parser::parse_list(res.headers()[&RATELIMIT].as_bytes()).unwrap();
        assert_eq!(state.iter().map(policy_name).collect::<Vec<_>>(), ["per-client", "daily"]);
        assert_eq!(parameter(&state[0], "r"), 0);
        // Three requests at 60 ms each: fully restored in 0.18 s, rounded up.
        assert_eq!(parameter(&state[0], "t"), 1);
    }
    let allowed = Parser::parse_list(responses[2].headers()[&RATELIMIT].as_bytes()).unwrap();
    assert_eq!(parameter(&allowed[1], "r"), 4997);
    let limited = Parser::parse_list(responses[3].headers()[&RATELIMIT].as_bytes()).unwrap();
    assert_eq!(parameter(&limited[1], "r"), 4997, "the denial consumed nothing");
}

#[tokio::test(start_paused = true)]
async fn headers_can_be_turned_off() {
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_hour(1)))
        .key_resolver(by_client_id())
        .headers(false)
        .build()
        .unwrap();
    let ok = send(&layer, from_client("a")).await;
    let limited = send(&layer, from_client("a")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    for res in [ok, limited] {
        assert!(!res.headers().contains_key(&RATELIMIT));
        assert!(!res.headers().contains_key(&RATELIMIT_POLICY));
    }
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_counts_but_never_rejects() {
    let metrics = Metrics::new();
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_hour(2)))
        .key_resolver(by_client_id())
        .shadow(true)
        .meter(metrics.meter())
        .build()
        .unwrap();
    for _ in 0..5 {
        assert_eq!(status(&layer, from_client("a")).await, StatusCode::OK);
    }
    assert_eq!(metrics.decisions("p", "allowed"), (2, true));
    assert_eq!(metrics.decisions("p", "limited"), (3, true));
    let report = layer.report();
    assert_eq!(report["policies"]["p"]["limited"], 3);
    assert_eq!(report["shadow"], true);
}

#[tokio::test(start_paused = true)]
async fn decisions_are_counted_per_policy_and_outcome() {
    let metrics = Metrics::new();
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_hour(1)))
        .key_resolver(by_client_id())
        .meter(metrics.meter())
        .build()
        .unwrap();
    status(&layer, from_client("a")).await;
    status(&layer, from_client("a")).await;
    status(&layer, from_client("a")).await;
    assert_eq!(metrics.decisions("p", "allowed"), (1, false));
    assert_eq!(metrics.decisions("p", "limited"), (2, false));
    assert_eq!(layer.name(), "ratelimit");
    assert_eq!(layer.decisions("p", "limited"), 2);
    assert_eq!(layer.report()["store"], "local");
    // The layer registers itself as the `ratelimit` section.
    let registry = phalanx_core::StatusRegistry::new();
    registry.register(layer.clone());
    let sections = registry.sections();
    assert_eq!(sections[0].0, "ratelimit");
    assert_eq!(sections[0].1["policies"]["p"]["limited"], 2);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted() {
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_second(10)))
        .key_resolver(by_client_id())
        .build()
        .unwrap();
    for i in 0..5000 {
        status(&layer, from_client(&format!("c{i}"))).await;
    }
    assert_eq!(layer.local_keys(), 5000);
    // A key is fully restored 100 ms after its one request: then it is idle and may go.
    tokio::time::advance(Duration::from_millis(150)).await;
    layer.sweep_idle();
    assert_eq!(layer.local_keys(), 0);
}

#[tokio::test]
async fn works_as_an_axum_route_layer() {
    use axum::{routing::get, Router};
    use tower::ServiceExt;
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_hour(2)))
        .key_resolver(by_client_id())
        .build()
        .unwrap();
    let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(layer);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let req = Request::builder().uri("/").header("x-client-id", "a").body(axum::body::Body::empty()).unwrap();
        statuses.push(app.clone().oneshot(req).await.unwrap().status());
    }
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
}

#[test]
fn invalid_layers_fail_at_build() {
    assert!(RateLimitLayer::builder().build().is_err());
    let twice = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_second(1)))
        .policy(Policy::new("p", Quota::per_second(2)))
        .build();
    let error = twice.unwrap_err();
    assert_eq!(error.field(), "policies[1].name");
    assert!(error.to_string().contains("defined twice"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_decisions_on_one_key_pass_exactly_the_burst_and_are_all_counted() {
    // Time stands still, so exactly the burst passes however the 8 × 500 requests interleave.
    let layer = RateLimitLayer::builder()
        .policy(Policy::new("p", Quota::per_hour(1000)))
        .key_resolver(by_client_id())
        .clock(phalanx_ratelimit::Clock::manual(Duration::from_secs(1_000_000)))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let layer = layer.clone();
            tokio::spawn(async move {
                let mut passed = 0;
                for _ in 0..500 {
                    if status(&layer, from_client("shared")).await == StatusCode::OK {
                        passed += 1;
                    }
                }
                passed
            })
        })
        .collect();
    let mut passed = 0;
    for task in tasks {
        passed += task.await.unwrap();
    }
    assert_eq!(passed, 1000);
    assert_eq!(layer.decisions("p", "allowed"), 1000);
    assert_eq!(layer.decisions("p", "limited"), 3000);
}
