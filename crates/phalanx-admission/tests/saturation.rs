//! CPU saturation, simulated with paused time: every request of a 50-worker server becomes
//! three times slower for seconds at a time, whatever the concurrency (the machine is busy with
//! something else). The latency rises, but shrinking the limit would not bring it down, only
//! idle the workers. The adaptive limit must keep the goodput near what the best fixed limit
//! (the worker count) achieves, and shed the low classes first.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{request, Capacity};
use http::StatusCode;
use phalanx_admission::{AdmissionLayer, LimitConfig};
use phalanx_core::Priority;
use tower::{Layer, ServiceExt};

const WORKERS: usize = 50;
const SERVICE_TIME: Duration = Duration::from_millis(50);

/// Answers per class: (ok, refused).
#[derive(Default)]
struct Tally {
    ok: [AtomicU64; 5],
    refused: [AtomicU64; 5],
}

/// `clients` closed-loop clients with think time 0 (a refused client tries again after 5 ms),
/// the class of client `i` given by `class_of(i)`, while the service time alternates every 2 s
/// between 1× and 3× for `span`. Returns the tally.
async fn run(layer: AdmissionLayer, clients: usize, class_of: fn(usize) -> Priority, span: Duration) -> Arc<Tally> {
    let capacity = Capacity::new(WORKERS, SERVICE_TIME);
    let handle = layer.clone();
    let svc = layer.layer(capacity.service());
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (svc, tally, stop) = (svc.clone(), tally.clone(), stop.clone());
        let priority = class_of(i);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let res = svc.clone().oneshot(request(priority)).await.unwrap();
                if res.status() == StatusCode::OK {
                    tally.ok[priority.index()].fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.refused[priority.index()].fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    let end = tokio::time::Instant::now() + span;
    let mut slow = false;
    while tokio::time::Instant::now() < end {
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if std::env::var_os("TRACE_LIMIT").is_some() {
                print!("{} ", handle.snapshot().limit);
            }
        }
        slow = !slow;
        capacity.set_service_time(if slow { SERVICE_TIME * 3 } else { SERVICE_TIME });
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    tally
}

fn layer(limit: LimitConfig) -> AdmissionLayer {
    AdmissionLayer::builder().limit(limit).build().unwrap()
}

fn ok(t: &Arc<Tally>) -> u64 {
    t.ok.iter().map(|n| n.load(Ordering::Relaxed)).sum()
}

#[tokio::test(start_paused = true)]
async fn under_cpu_saturation_the_adaptive_limit_keeps_goodput_near_the_best_fixed_limit() {
    let span = Duration::from_secs(30);
    let peak = ok(&run(layer(LimitConfig::fixed(WORKERS)), 200, |_| Priority::Normal, span).await);
    // The crate's defaults: Gradient2, initial 20, min 1.
    let adaptive = ok(&run(layer(LimitConfig::default()), 200, |_| Priority::Normal, span).await);
    let aimd =
        ok(&run(layer(LimitConfig::aimd(20, 1, 1000, SERVICE_TIME * 13 / 10)), 200, |_| Priority::Normal, span).await);
    println!("goodput: fixed {WORKERS} {peak}, gradient2 {adaptive}, aimd {aimd}");
    assert!(adaptive * 10 >= peak * 8, "gradient2: {adaptive} of the best fixed limit's {peak}");
    assert!(aimd * 10 >= peak * 8, "aimd: {aimd} of the best fixed limit's {peak}");
}

#[tokio::test(start_paused = true)]
async fn under_cpu_saturation_the_low_classes_are_shed_first_and_critical_succeeds() {
    // 5 % critical, 45 % normal, 50 % background.
    let class_of = |i: usize| match i % 20 {
        0 => Priority::Critical,
        1..=9 => Priority::Normal,
        _ => Priority::Background,
    };
    let tally = run(layer(LimitConfig::default()), 200, class_of, Duration::from_secs(30)).await;
    let rate = |p: Priority| {
        let (ok, refused) =
            (tally.ok[p.index()].load(Ordering::Relaxed), tally.refused[p.index()].load(Ordering::Relaxed));
        println!("{p:?}: {ok} ok, {refused} refused");
        ok as f64 / (ok + refused).max(1) as f64
    };
    let (critical, normal, background) = (rate(Priority::Critical), rate(Priority::Normal), rate(Priority::Background));
    assert!(critical >= 0.999, "critical success {critical}");
    assert!(normal > background, "normal {normal} vs background {background}");
}
