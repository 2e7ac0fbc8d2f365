//! Per-call cost of the breaker in the closed state, and the latency of a refused call, side by
//! side with tower-resilience's circuit breaker: same configuration (count window of 100,
//! minimum 100 calls, 50 % failure rate, 60 s slow-call duration), same trivial service, both
//! polled to completion without an executor (inside a Tokio runtime context).
//!
//! `cargo bench -p phalanx-breaker --bench breaker -- --warm-up-time 1 --measurement-time 3`
//! prints criterion's figures, then the ratios.

use std::{
    convert::Infallible,
    future::{ready, Ready},
    hint::black_box,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use criterion::Criterion;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use phalanx_breaker::{BreakerConfig, CallOutcome, CircuitBreaker, CircuitBreakerLayer};
use tower::{Layer, Service, ServiceExt};

const WAIT_IN_OPEN: Duration = Duration::from_secs(3600);
const SLOW: Duration = Duration::from_secs(60);

/// The trivial service: 200, or 500 while `failing` is set.
#[derive(Clone)]
struct Trivial {
    failing: Arc<AtomicBool>,
}

impl Service<Request<()>> for Trivial {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let mut res = Response::new(());
        if self.failing.load(Ordering::Relaxed) {
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        ready(Ok(res))
    }
}

fn phalanx_breaker() -> CircuitBreaker {
    let config = BreakerConfig::default()
        .with_count_window(100)
        .with_minimum_number_of_calls(100)
        .with_failure_rate_threshold(0.5)
        .with_slow_call_duration(SLOW)
        .with_wait_in_open(WAIT_IN_OPEN);
    CircuitBreaker::new("bench", config).unwrap()
}

macro_rules! peer_layer {
    () => {
        tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
            .sliding_window_size(100)
            .minimum_number_of_calls(100)
            .failure_rate_threshold(0.5)
            .slow_call_duration_threshold(SLOW)
            .wait_duration_in_open(WAIT_IN_OPEN)
            .classify_response(|res: &Response<()>| res.status().is_server_error())
            .build()
            .unwrap()
    };
}

/// One request: readiness, call, the response future polled once to completion.
fn one<S>(svc: &mut S) -> Result<S::Response, S::Error>
where
    S: Service<Request<()>>,
{
    let svc = svc.ready().now_or_never().expect("ready at once").ok().expect("ready");
    svc.call(Request::new(())).now_or_never().expect("completes at once")
}

fn closed(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker_closed_call");
    let failing = Arc::new(AtomicBool::new(false));

    let mut bare = Trivial { failing: failing.clone() };
    group.bench_function("bare_service", |b| b.iter(|| black_box(one(&mut bare).is_ok())));

    let breaker = phalanx_breaker();
    let mut ours = CircuitBreakerLayer::new(breaker.clone()).layer(Trivial { failing: failing.clone() });
    group.bench_function("phalanx", |b| b.iter(|| black_box(one(&mut ours).is_ok())));

    let mut peer = peer_layer!().layer(Trivial { failing: failing.clone() });
    group.bench_function("tower_resilience", |b| b.iter(|| black_box(one(&mut peer).is_ok())));

    group.bench_function("phalanx_permit_only", |b| {
        b.iter(|| breaker.try_acquire().expect("closed").record(black_box(CallOutcome::Success)))
    });
    group.finish();
}

fn rejected(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker_rejected_call");
    let failing = Arc::new(AtomicBool::new(true));

    let breaker = phalanx_breaker();
    let mut ours = CircuitBreakerLayer::new(breaker.clone()).layer(Trivial { failing: failing.clone() });
    let mut peer = peer_layer!().layer(Trivial { failing: failing.clone() });
    for _ in 0..100 {
        let _ = one(&mut ours);
        let _ = one(&mut peer);
    }
    assert_eq!(one(&mut ours).unwrap().status(), StatusCode::SERVICE_UNAVAILABLE, "phalanx breaker is open");
    assert!(one(&mut peer).is_err(), "peer breaker is open");

    group.bench_function("phalanx", |b| b.iter(|| black_box(one(&mut ours).is_ok())));
    group.bench_function("tower_resilience", |b| b.iter(|| black_box(one(&mut peer).is_err())));
    group.bench_function("phalanx_permit_only", |b| b.iter(|| black_box(breaker.try_acquire().is_err())));
    group.finish();
}

fn output_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("criterion")
}

/// The time per iteration (ns) criterion reported in this run: the slope estimate where it
/// fitted one, else the mean.
fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let path = output_dir().join(group).join(id).join("new/estimates.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    doc["slope"]["point_estimate"].as_f64().or_else(|| doc["mean"]["point_estimate"].as_f64())
}

fn print_ratios() {
    println!("\nphalanx-breaker vs tower-resilience-circuitbreaker (time per call, same run)");
    for (group, what) in [("breaker_closed_call", "closed-state call"), ("breaker_rejected_call", "rejected call")] {
        let bare = mean_ns(group, "bare_service");
        let (Some(ours), Some(peer)) = (mean_ns(group, "phalanx"), mean_ns(group, "tower_resilience")) else {
            continue;
        };
        let overhead =
            |t: f64| bare.map_or(String::new(), |b| format!(" (overhead over the bare service {:.1} ns)", t - b));
        println!("  {what}: phalanx {ours:.1} ns{}, tower-resilience {peer:.1} ns{}", overhead(ours), overhead(peer));
        println!("  {what}: tower-resilience / phalanx = {:.2}x", peer / ours);
        if let Some(permit) = mean_ns(group, "phalanx_permit_only") {
            println!("  {what}: phalanx permit alone (no service, no response) {permit:.1} ns");
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _context = runtime.enter();
    let mut c = Criterion::default().output_directory(&output_dir()).configure_from_args();
    closed(&mut c);
    rejected(&mut c);
    c.final_summary();
    print_ratios();
}
