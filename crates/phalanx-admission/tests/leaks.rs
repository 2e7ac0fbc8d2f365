//! No slot is lost: 100,000 requests of every class, a quarter of them cancelled while queued or
//! running, bodies read or dropped, through an adaptive limit with eviction and deadlines.

mod common;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use common::{request, Rng};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use phalanx_admission::{AdmissionLayer, LimitConfig};
use phalanx_core::Priority;
use tower::{service_fn, Layer, ServiceExt};

const REQUESTS: u64 = 100_000;
const CLIENTS: u64 = 50;

#[tokio::test(start_paused = true)]
async fn no_permit_leaks_after_100_000_requests_with_cancellations() {
    let layer = AdmissionLayer::builder()
        .limit(LimitConfig::gradient2(16, 4, 64).with_window(Duration::from_millis(20)).with_min_window_samples(5))
        .max_queued_total(40)
        .queue_timeout(Priority::Background, Duration::from_millis(2))
        .build()
        .unwrap();
    let handle = layer.clone();
    let calls = Arc::new(AtomicU64::new(0));
    let inner = {
        let calls = calls.clone();
        service_fn(move |_req: Request<Empty<Bytes>>| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(n % 4)).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    };
    let svc = layer.layer(inner);
    let cancelled = Arc::new(AtomicU64::new(0));
    let shed = Arc::new(AtomicU64::new(0));

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let svc = svc.clone();
        let (cancelled, shed) = (cancelled.clone(), shed.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = Rng::new(c + 1);
            for _ in 0..REQUESTS / CLIENTS {
                let priority = Priority::ALL[rng.below(5) as usize];
                let call = svc.clone().oneshot(request(priority));
                match rng.below(8) {
                    // Cancelled after up to 5 ms: while queued, running or at once.
                    0 | 1 => {
                        let patience = Duration::from_millis(rng.below(6));
                        match tokio::time::timeout(patience, call).await {
                            Err(_) => drop(cancelled.fetch_add(1, Ordering::Relaxed)),
                            Ok(res) => drop(res),
                        }
                    }
                    // The body is dropped unread.
                    2 | 3 => drop(call.await.unwrap()),
                    // The body is read to its end.
                    _ => {
                        let res = call.await.unwrap();
                        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
                            shed.fetch_add(1, Ordering::Relaxed);
                        }
                        res.into_body().collect().await.unwrap();
                    }
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }

    let s = handle.snapshot();
    assert_eq!((s.in_flight, s.queued), (0, 0), "{s:?}");
    assert!(s.classes.iter().all(|c| c.in_flight == 0 && c.queued == 0), "{s:?}");
    let cancelled = cancelled.load(Ordering::Relaxed);
    let shed = shed.load(Ordering::Relaxed);
    assert!(cancelled > 1_000, "the run cancelled {cancelled} requests");
    assert!(shed > 100, "the run shed {shed} requests");

    // The whole limit is still there: as many requests as the limit are admitted together.
    let limit = s.limit;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = {
        let gate = gate.clone();
        layer.layer(service_fn(move |_req: Request<Empty<Bytes>>| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }
        }))
    };
    let tasks: Vec<_> = (0..limit).map(|_| tokio::spawn(held.clone().oneshot(request(Priority::Critical)))).collect();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(handle.snapshot().in_flight, limit);
    gate.add_permits(limit);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(handle.snapshot().in_flight, 0);
}
