//! `BreakerMiddleware` against a real local HTTP server that fails on command and counts the
//! connections and requests it accepts.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::State as Extract, http::StatusCode, routing::get, serve::ListenerExt, Router};
use phalanx_breaker::{BreakerConfig, BreakerMiddleware, BreakerRegistry, CallNotPermitted, State};
use reqwest_middleware::ClientWithMiddleware;

#[derive(Clone, Default)]
struct Server {
    status: Arc<AtomicU16>,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    /// Serve on 127.0.0.1:0 until the test ends.
    async fn start() -> (Server, SocketAddr) {
        let server = Server::default();
        server.answer(StatusCode::OK);
        let app = Router::new()
            .route(
                "/",
                get(|Extract(s): Extract<Server>| async move {
                    s.requests.fetch_add(1, Ordering::SeqCst);
                    StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap()
                }),
            )
            .with_state(server.clone());
        let connections = server.connections.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = listener.tap_io(move |_| {
            connections.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (server, addr)
    }

    fn answer(&self, status: StatusCode) {
        self.status.store(status.as_u16(), Ordering::SeqCst);
    }

    fn counts(&self) -> (usize, usize) {
        (self.connections.load(Ordering::SeqCst), self.requests.load(Ordering::SeqCst))
    }
}

fn client(registry: &BreakerRegistry) -> ClientWithMiddleware {
    // No idle connections kept: every request that reaches the network opens one, so the
    // server's connection count shows every attempt.
    let inner = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    reqwest_middleware::ClientBuilder::new(inner).with(BreakerMiddleware::new(registry.clone())).build()
}

fn config() -> BreakerConfig {
    BreakerConfig::default()
        .with_count_window(4)
        .with_minimum_number_of_calls(4)
        .with_permitted_calls_in_half_open(2)
        .with_wait_in_open(Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_after_the_threshold_attempts_no_connection_while_open_and_closes_after_healthy_probes() {
    let (server, addr) = Server::start().await;
    let registry = BreakerRegistry::builder().config(config()).build().unwrap();
    let client = client(&registry);
    let url = format!("http://{addr}/");

    server.answer(StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..4 {
        let res = client.get(&url).send().await.expect("the failing upstream answers");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let breaker = registry.get(&addr.to_string()).expect("one breaker per upstream host:port");
    assert_eq!(breaker.state(), State::Open);
    let before = server.counts();
    assert_eq!(before, (4, 4));

    // Open: refused at once, nothing reaches the server.
    for _ in 0..10 {
        let err = client.get(&url).send().await.unwrap_err();
        assert!(err.is_middleware(), "{err}");
        let reqwest_middleware::Error::Middleware(inner) = &err else { unreachable!() };
        let refused = inner.downcast_ref::<CallNotPermitted>().expect("the breaker's refusal");
        assert_eq!(refused.state, State::Open);
        assert!(refused.retry_after <= Duration::from_secs(1));
    }
    assert_eq!(server.counts(), before, "no connection attempted while open");

    // Healthy again; after the wait two probes go through and close the breaker.
    server.answer(StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1050)).await;
    for _ in 0..2 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(server.counts(), (6, 6));
    assert_eq!(client.get(&url).send().await.unwrap().status(), StatusCode::OK);
    let calls = breaker.call_counts();
    assert_eq!((calls.failure, calls.success, calls.rejected), (4, 3, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_probes_reopen_and_hosts_have_separate_breakers() {
    let (bad, bad_addr) = Server::start().await;
    let (good, good_addr) = Server::start().await;
    let registry = BreakerRegistry::builder().config(config()).build().unwrap();
    let client = client(&registry);

    bad.answer(StatusCode::INTERNAL_SERVER_ERROR);
    for _ in 0..4 {
        client.get(format!("http://{bad_addr}/")).send().await.unwrap();
    }
    assert!(client.get(format!("http://{bad_addr}/")).send().await.is_err());
    assert_eq!(client.get(format!("http://{good_addr}/")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(good.counts(), (1, 1));

    tokio::time::sleep(Duration::from_millis(1050)).await;
    for _ in 0..2 {
        assert_eq!(
            client.get(format!("http://{bad_addr}/")).send().await.unwrap().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(registry.get(&bad_addr.to_string()).unwrap().state(), State::Open, "failed probes reopen");
    assert_eq!(bad.counts(), (6, 6));
    assert!(client.get(format!("http://{bad_addr}/")).send().await.is_err());
    assert_eq!(bad.counts(), (6, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_failures() {
    // A port with nothing listening: every attempt is refused by the OS.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let registry = BreakerRegistry::builder().config(config()).build().unwrap();
    let client = client(&registry);
    for _ in 0..4 {
        let err = client.get(format!("http://{addr}/")).send().await.unwrap_err();
        assert!(!err.is_middleware(), "a transport error: {err}");
    }
    let err = client.get(format!("http://{addr}/")).send().await.unwrap_err();
    assert!(err.is_middleware(), "now refused by the breaker: {err}");
    assert_eq!(registry.get(&addr.to_string()).unwrap().call_counts().failure, 4);
}
