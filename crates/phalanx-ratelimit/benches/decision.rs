//! Cost of one in-process decision, RateLimitLayer beside tower_governor on the same quota and
//! the same per-IP key, through `tower::ServiceExt::oneshot` on a trivial service.
//!
//! `cargo bench -p phalanx-ratelimit --bench decision -- --warm-up-time 1 --measurement-time 3`

use std::{
    convert::Infallible,
    hint::black_box,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Instant,
};

use axum::{body::Body, extract::ConnectInfo};
use criterion::Criterion;
use futures_util::FutureExt;
use http::{Request, Response};
use phalanx_core::identity::ClientKeyConfig;
use phalanx_ratelimit::{Policy, Quota, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};
use tower_governor::{governor::GovernorConfigBuilder, GovernorLayer};

/// Distinct client addresses the requests rotate through, so no key runs out of quota.
const CLIENTS: u32 = 1024;

fn request(i: u32) -> Request<Body> {
    let mut req = Request::new(Body::empty());
    let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i % CLIENTS)));
    req.extensions_mut().insert(ConnectInfo(SocketAddr::new(ip, 4000)));
    req
}

fn inner() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone {
    tower::service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) })
}

/// The same quota on both sides: a million per second per key, burst a million.
fn phalanx(headers: bool) -> RateLimitLayer {
    RateLimitLayer::builder()
        .policy(Policy::new("per-ip", Quota::per_second(1_000_000).with_burst(1_000_000)))
        .key_config(ClientKeyConfig::default())
        .headers(headers)
        .build()
        .unwrap()
}

/// tower_governor with the same quota: one cell per microsecond, burst a million, per peer IP;
/// `headers` adds its `x-ratelimit-limit`/`-remaining` fields (`use_headers`).
macro_rules! governor_layer {
    () => {
        GovernorLayer::<_, _, Body>::new(
            GovernorConfigBuilder::default().per_nanosecond(1000).burst_size(1_000_000).finish().unwrap(),
        )
    };
    (headers) => {
        GovernorLayer::<_, _, Body>::new(
            GovernorConfigBuilder::default().per_nanosecond(1000).burst_size(1_000_000).use_headers().finish().unwrap(),
        )
    };
}

/// One request through a service clone, as axum does it; the futures are ready at once.
fn one<S>(service: &S, i: u32) -> u16
where
    S: Service<Request<Body>, Error = Infallible> + Clone,
    S::Response: Status,
{
    let res = service.clone().oneshot(request(i)).now_or_never().expect("ready at once").unwrap();
    res.status()
}

trait Status {
    fn status(&self) -> u16;
}

impl<B> Status for Response<B> {
    fn status(&self) -> u16 {
        Response::status(self).as_u16()
    }
}

fn decision(c: &mut Criterion) {
    let ours = phalanx(false).layer(inner());
    let ours_headers = phalanx(true).layer(inner());
    let theirs = governor_layer!().layer(inner());
    let theirs_headers = governor_layer!(headers).layer(inner());
    assert_eq!(one(&ours, 0), 200);
    assert_eq!(one(&theirs, 0), 200);
    let mut group = c.benchmark_group("ratelimit_decision");
    let mut i = 0u32;
    let bare = inner();
    group.bench_function("no_limiter", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(one(&bare, i))
        })
    });
    group.bench_function("phalanx", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(one(&ours, i))
        })
    });
    group.bench_function("phalanx_with_headers", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(one(&ours_headers, i))
        })
    });
    group.bench_function("tower_governor", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(one(&theirs, i))
        })
    });
    group.bench_function("tower_governor_with_headers", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(one(&theirs_headers, i))
        })
    });
    group.finish();
}

/// Short rounds of each side in turn, many times over; each turn's three rounds ran within a few
/// milliseconds of each other, so a turn's ratios are little moved by the machine's noise, and
/// the median turn is reported. Besides the whole request, the limiter's own cost is compared:
/// each side's time less the time of the same request with no limiter at all. Without and with
/// each side's rate-limit response fields.
fn ratio() {
    let bare = inner();
    let ours = phalanx(false).layer(inner());
    let theirs = governor_layer!().layer(inner());
    let ours_headers = phalanx(true).layer(inner());
    let theirs_headers = governor_layer!(headers).layer(inner());
    let bare = |i| one(&bare, i);
    compare("", &bare, &|i| one(&ours, i), &|i| one(&theirs, i));
    compare(" with headers", &bare, &|i| one(&ours_headers, i), &|i| one(&theirs_headers, i));
}

type Side<'a> = &'a dyn Fn(u32) -> u16;

fn compare(what: &str, bare: Side<'_>, ours: Side<'_>, theirs: Side<'_>) {
    const ROUND: u32 = 10_000;
    const TURNS: usize = 201;
    let round = |f: Side<'_>| {
        let started = Instant::now();
        for i in 0..ROUND {
            black_box(f(i));
        }
        started.elapsed().as_nanos() as f64 / f64::from(ROUND)
    };
    let mut turns = Vec::with_capacity(TURNS);
    for turn in 0..TURNS {
        // Rotate which side goes first, so none always runs on a warmer or colder machine.
        let mut times = [0.0; 3];
        for k in 0..3 {
            let side = (turn + k) % 3;
            times[side] = round([bare, ours, theirs][side]);
        }
        turns.push(times);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let per_request = median(turns.iter().map(|[_, o, t]| o / t).collect());
    let own_cost = median(turns.iter().map(|[b, o, t]| (o - b) / (t - b)).collect());
    let [bare, ours, theirs] = [0, 1, 2].map(|side| median(turns.iter().map(|t| t[side]).collect()));
    println!(
        "ratelimit_decision{what}: no limiter {bare:.1} ns, phalanx {ours:.1} ns, tower_governor {theirs:.1} ns per \
         request (medians of {TURNS} turns); phalanx / tower_governor = {per_request:.2} per request, \
         {own_cost:.2} of the limiter's own cost"
    );
}

/// `DECISION_LOOP=<side> valgrind --tool=callgrind <bench binary>`: 100,000 requests (or
/// `DECISION_REQUESTS`) through one
/// side only (`no_limiter`, `phalanx`, `phalanx_with_headers`, `tower_governor`,
/// `tower_governor_with_headers`), for instruction counts that the machine's noise cannot move.
fn instruction_loop(side: &str) {
    fn run<S>(service: S)
    where
        S: Service<Request<Body>, Error = Infallible> + Clone,
        S::Response: Status,
    {
        let requests = std::env::var("DECISION_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000);
        (0..requests).for_each(|i| assert_eq!(one(&service, i), 200));
    }
    match side {
        "no_limiter" => run(inner()),
        "phalanx" => run(phalanx(false).layer(inner())),
        "phalanx_with_headers" => run(phalanx(true).layer(inner())),
        "tower_governor" => run(governor_layer!().layer(inner())),
        "tower_governor_with_headers" => run(governor_layer!(headers).layer(inner())),
        other => panic!("unknown side {other:?}"),
    }
}

fn main() {
    if let Ok(side) = std::env::var("DECISION_LOOP") {
        return instruction_loop(&side);
    }
    let mut criterion = Criterion::default().configure_from_args();
    decision(&mut criterion);
    criterion.final_summary();
    // `--list` and `--profile-time` (profiling one function) want nothing but criterion's part.
    if !std::env::args().any(|a| a == "--list" || a == "--profile-time") {
        ratio();
    }
}
