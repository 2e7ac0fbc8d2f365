//! Twice the load the handler can take, 10 % critical and 90 % background, with paused time:
//! critical traffic succeeds, admitted requests finish within their class's queue deadline plus
//! the service time, and the excess is refused on arrival. (The real-time cost of a refusal is
//! measured by `benches/overload.rs`.)

mod common;

use std::{sync::Arc, time::Duration};

use common::{request, Capacity};
use http::StatusCode;
use parking_lot::Mutex;
use phalanx_admission::{AdmissionLayer, LimitConfig};
use phalanx_core::Priority;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const WORKERS: usize = 50;
const SERVICE_TIME: Duration = Duration::from_millis(20);
/// 50 workers × 20 ms = 2.5 requests per ms; twice that is offered.
const PER_MS: usize = 5;
const RUN: Duration = Duration::from_secs(4);
const CRITICAL_DEADLINE: Duration = Duration::from_millis(200);
const BACKGROUND_DEADLINE: Duration = Duration::from_millis(50);

struct Outcome {
    priority: Priority,
    status: StatusCode,
    latency: Duration,
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::test(start_paused = true)]
async fn at_twice_the_capacity_critical_succeeds_and_admitted_requests_stay_fast() {
    let capacity = Capacity::new(WORKERS, SERVICE_TIME);
    let layer = AdmissionLayer::builder()
        .limit(LimitConfig::fixed(WORKERS))
        .queue_timeout(Priority::Critical, CRITICAL_DEADLINE)
        .share(Priority::Background, 0.8)
        .max_queue(Priority::Background, 25)
        .queue_timeout(Priority::Background, BACKGROUND_DEADLINE)
        .build()
        .unwrap();
    let handle = layer.clone();
    let svc = layer.layer(capacity.service());
    let outcomes = Arc::new(Mutex::new(Vec::new()));

    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0usize;
    let mut tasks = Vec::new();
    while start.elapsed() < RUN {
        tick.tick().await;
        for _ in 0..PER_MS {
            let priority = if sent.is_multiple_of(10) { Priority::Critical } else { Priority::Background };
            sent += 1;
            let (svc, outcomes) = (svc.clone(), outcomes.clone());
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let res = svc.oneshot(request(priority)).await.unwrap();
                let latency = t0.elapsed();
                outcomes.lock().push(Outcome { priority, status: res.status(), latency });
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock());
    let critical: Vec<_> = outcomes.iter().filter(|o| o.priority == Priority::Critical).collect();
    let ok = critical.iter().filter(|o| o.status == StatusCode::OK).count();
    let success = ok as f64 / critical.len() as f64;
    assert!(success >= 0.999, "critical success {success:.4} ({ok} of {})", critical.len());

    for (priority, deadline) in [(Priority::Critical, CRITICAL_DEADLINE), (Priority::Background, BACKGROUND_DEADLINE)] {
        let admitted: Vec<_> = outcomes
            .iter()
            .filter(|o| o.priority == priority && o.status == StatusCode::OK)
            .map(|o| o.latency)
            .collect();
        let worst = *admitted.iter().max().unwrap();
        let p99 = p99(admitted);
        println!("{priority}: admitted p99 {p99:?}, max {worst:?}");
        assert!(worst <= deadline + SERVICE_TIME, "{priority}: admitted max {worst:?}");
    }

    let shed: Vec<_> =
        outcomes.iter().filter(|o| o.status == StatusCode::SERVICE_UNAVAILABLE).map(|o| o.latency).collect();
    let admitted = outcomes.len() - shed.len();
    // Roughly the capacity is used: 4 s × 2.5 per ms = 10,000, less the start.
    assert!(admitted >= 9_000, "admitted {admitted} of {}", outcomes.len());
    assert!(shed.len() >= 9_000, "shed {} of {}", shed.len(), outcomes.len());
    assert_eq!(p99(shed), Duration::ZERO, "99 % of the refusals are made on arrival, not after a wait");
    let s = handle.snapshot();
    assert_eq!((s.in_flight, s.queued), (0, 0));
}
