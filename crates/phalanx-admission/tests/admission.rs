//! Queueing order, deadlines, shares, eviction and permit release, through `tower::ServiceExt`
//! with paused time.

mod common;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use common::{request, shed_reason, tagged};
use http::{header, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use parking_lot::Mutex;
use phalanx_admission::{AdmissionLayer, LimitConfig, ShedReason};
use phalanx_core::{problem::types, Priority};
use tokio::{
    sync::{mpsc, Semaphore},
    time::Instant,
};
use tower::{service_fn, util::BoxCloneService, Layer, ServiceExt};

type GatedService = BoxCloneService<Request<Empty<Bytes>>, Response<String>, Infallible>;

/// A handler that records each request's `x-id` on entry and then waits for the test to open
/// the gate once for it.
#[derive(Clone)]
struct Gate {
    order: Arc<Mutex<Vec<String>>>,
    gate: Arc<Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { order: Arc::default(), gate: Arc::new(Semaphore::new(0)) }
    }
}

impl Gate {
    fn service(&self) -> GatedService {
        let me = self.clone();
        BoxCloneService::new(service_fn(move |req: Request<Empty<Bytes>>| {
            let me = me.clone();
            async move {
                let id = req.headers().get("x-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                me.order.lock().push(id);
                me.gate.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(Response::new(String::from("done")))
            }
        }))
    }

    fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

/// Let spawned tasks run until the limiter shows `in_flight + queued == n`.
async fn settle(handle: &AdmissionLayer, n: usize) {
    for _ in 0..1000 {
        let s = handle.snapshot();
        if s.in_flight + s.queued == n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("limiter never reached {n} requests: {:?}", handle.snapshot());
}

fn patient(mut builder: phalanx_admission::AdmissionLayerBuilder) -> phalanx_admission::AdmissionLayerBuilder {
    for p in Priority::ALL {
        builder = builder.share(p, 1.0).queue_timeout(p, Duration::from_secs(60));
    }
    builder
}

#[tokio::test(start_paused = true)]
async fn queued_requests_are_admitted_highest_class_first_and_fifo_within_a_class() {
    let layer = patient(AdmissionLayer::builder().limit(LimitConfig::fixed(1))).build().unwrap();
    let handle = layer.clone();
    let gate = Gate::default();
    let svc = layer.layer(gate.service());
    let arrivals = [
        (Priority::Normal, "first"),
        (Priority::Background, "bg1"),
        (Priority::Normal, "n1"),
        (Priority::Critical, "c1"),
        (Priority::Background, "bg2"),
        (Priority::Critical, "c2"),
        (Priority::High, "h1"),
        (Priority::Low, "l1"),
    ];
    let mut tasks = Vec::new();
    for (i, (p, id)) in arrivals.into_iter().enumerate() {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(tagged(p, id)).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{id}");
        }));
        settle(&handle, i + 1).await;
    }
    assert_eq!(handle.snapshot().queued, 7);
    gate.open(arrivals.len());
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*gate.order.lock(), ["first", "c1", "c2", "h1", "n1", "l1", "bg1", "bg2"]);
    let s = handle.snapshot();
    assert_eq!((s.in_flight, s.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_shed_at_its_deadline_and_a_full_queue_sheds_at_once() {
    let layer = AdmissionLayer::builder()
        .limit(LimitConfig::fixed(1))
        .queue_timeout(Priority::Normal, Duration::from_millis(100))
        .max_queue(Priority::Normal, 1)
        .retry_after(Duration::from_secs(2))
        .build()
        .unwrap();
    let handle = layer.clone();
    let gate = Gate::default();
    let svc = layer.layer(gate.service());

    let busy = tokio::spawn(svc.clone().oneshot(request(Priority::Normal)));
    settle(&handle, 1).await;
    let start = Instant::now();
    let waiter = tokio::spawn(svc.clone().oneshot(request(Priority::Normal)));
    settle(&handle, 2).await;

    let res = svc.clone().oneshot(request(Priority::Normal)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "a full queue refuses at once");
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    assert!(res.extensions().get::<phalanx_core::problem::LoadShed>().is_some(), "a shed is marked for the breaker");
    let (status, reason, retry) = shed_reason(res).await;
    assert_eq!((status, reason.as_str(), retry.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, "queue_full", Some("2")));

    let res = waiter.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100), "shed exactly at the class deadline");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["type"], types::OVERLOADED);
    assert_eq!(doc["status"], 503);
    assert_eq!(doc["reason"], "deadline");
    assert_eq!(doc["priority"], "normal");

    assert_eq!(handle.shed_count(Priority::Normal, ShedReason::Deadline), 1);
    assert_eq!(handle.shed_count(Priority::Normal, ShedReason::QueueFull), 1);
    gate.open(1);
    assert_eq!(busy.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(handle.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_class_is_held_to_its_share_and_cannot_starve_critical_traffic() {
    let layer = AdmissionLayer::builder()
        .limit(LimitConfig::fixed(10))
        .share(Priority::Background, 0.2)
        .queue_timeout(Priority::Background, Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.clone();
    let gate = Gate::default();
    let svc = layer.layer(gate.service());

    let mut background = Vec::new();
    for i in 0..5 {
        background.push(tokio::spawn(svc.clone().oneshot(request(Priority::Background))));
        settle(&handle, i + 1).await;
    }
    let s = handle.snapshot();
    let bg = s.classes[Priority::Background.index()];
    assert_eq!((bg.in_flight, bg.limit, bg.queued), (2, 2, 3), "background holds 20 % of 10");

    // Critical traffic finds the rest of the limit free, at once.
    let mut critical = Vec::new();
    for i in 0..8 {
        critical.push(tokio::spawn(svc.clone().oneshot(request(Priority::Critical))));
        settle(&handle, 6 + i).await;
    }
    let s = handle.snapshot();
    assert_eq!(s.classes[Priority::Critical.index()].in_flight, 8);
    assert_eq!(s.in_flight, 10);

    // The waiting background requests are shed at their deadline, while the limit is full.
    for t in background.drain(2..) {
        let (status, reason, _) = shed_reason(t.await.unwrap().unwrap()).await;
        assert_eq!((status, reason.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "deadline"));
    }
    gate.open(10);
    for t in critical.into_iter().chain(background) {
        assert_eq!(t.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    // With room in the limit but none in its share, a background waiter is shed for its share.
    let _held: Vec<_> = (0..2).map(|_| tokio::spawn(svc.clone().oneshot(request(Priority::Background)))).collect();
    settle(&handle, 2).await;
    let res = svc.clone().oneshot(request(Priority::Background)).await.unwrap();
    let (_, reason, _) = shed_reason(res).await;
    assert_eq!(reason, "share");
    assert_eq!(handle.shed_count(Priority::Background, ShedReason::Share), 1);
    gate.open(2);
}

#[tokio::test(start_paused = true)]
async fn a_full_total_queue_evicts_the_newest_waiter_of_the_lowest_class() {
    let layer = patient(AdmissionLayer::builder().limit(LimitConfig::fixed(1)).max_queued_total(2)).build().unwrap();
    let handle = layer.clone();
    let gate = Gate::default();
    let svc = layer.layer(gate.service());
    let busy = tokio::spawn(svc.clone().oneshot(tagged(Priority::Normal, "busy")));
    settle(&handle, 1).await;
    let low = tokio::spawn(svc.clone().oneshot(tagged(Priority::Low, "low")));
    settle(&handle, 2).await;
    let bg = tokio::spawn(svc.clone().oneshot(tagged(Priority::Background, "bg")));
    settle(&handle, 3).await;

    let critical = tokio::spawn(svc.clone().oneshot(tagged(Priority::Critical, "critical")));
    let (status, reason, _) = shed_reason(bg.await.unwrap().unwrap()).await;
    assert_eq!((status, reason.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "queue_full"));
    settle(&handle, 3).await;

    // Nothing lower than low is left to evict: another low request is refused.
    let (_, reason, _) = shed_reason(svc.clone().oneshot(request(Priority::Low)).await.unwrap()).await;
    assert_eq!(reason, "queue_full");

    gate.open(3);
    for t in [busy, critical, low] {
        assert_eq!(t.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(*gate.order.lock(), ["busy", "critical", "low"]);
    assert_eq!(handle.shed_count(Priority::Background, ShedReason::QueueFull), 1);
    assert_eq!(handle.shed_count(Priority::Low, ShedReason::QueueFull), 1);
}

/// A body that yields what the test sends, until the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

#[tokio::test(start_paused = true)]
async fn the_permit_lives_until_the_body_ends_or_is_dropped() {
    let layer = AdmissionLayer::builder().limit(LimitConfig::fixed(1)).build().unwrap();
    let handle = layer.clone();
    let senders = Arc::new(Mutex::new(Vec::new()));
    let inner = {
        let senders = senders.clone();
        service_fn(move |_req: Request<Empty<Bytes>>| {
            let (tx, rx) = mpsc::channel(4);
            senders.lock().push(tx);
            async move { Ok::<_, Infallible>(Response::new(ChannelBody(rx))) }
        })
    };
    let svc = layer.layer(inner);

    // Streamed to the end.
    let res = svc.clone().oneshot(request(Priority::Normal)).await.unwrap();
    assert!(res.body().holds_guard());
    assert_eq!(handle.snapshot().in_flight, 1, "headers sent, body still streaming");
    let tx = senders.lock().pop().unwrap();
    tx.send(Bytes::from_static(b"chunk")).await.unwrap();
    drop(tx);
    let mut body = res.into_body();
    assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "chunk");
    assert_eq!(handle.snapshot().in_flight, 1);
    assert!(body.frame().await.is_none());
    assert_eq!(handle.snapshot().in_flight, 0, "released at the body's end, before it is dropped");
    drop(body);

    // Dropped half-way (the client went away).
    let res = svc.clone().oneshot(request(Priority::Normal)).await.unwrap();
    assert_eq!(handle.snapshot().in_flight, 1);
    drop(res);
    assert_eq!(handle.snapshot().in_flight, 0);

    // Cancelled while waiting in the queue, and while the handler runs.
    let held = svc.clone().oneshot(request(Priority::Normal)).await.unwrap();
    let waiting = tokio::spawn(svc.clone().oneshot(request(Priority::Normal)));
    settle(&handle, 2).await;
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(handle.snapshot().queued, 0, "a cancelled waiter leaves the queue");
    drop(held);

    let stuck =
        service_fn(|_req: Request<Empty<Bytes>>| std::future::pending::<Result<Response<String>, Infallible>>());
    let svc = layer.layer(stuck);
    let running = tokio::spawn(svc.oneshot(request(Priority::Normal)));
    settle(&handle, 1).await;
    running.abort();
    let _ = running.await;
    assert_eq!(handle.snapshot().in_flight, 0, "a cancelled call gives its slot back");
}

#[tokio::test(start_paused = true)]
async fn the_limit_is_shared_by_every_clone_without_poll_ready() {
    let layer = patient(AdmissionLayer::builder().limit(LimitConfig::fixed(2))).build().unwrap();
    let handle = layer.clone();
    let gate = Gate::default();
    let svc = layer.layer(gate.service());
    // Clones that were never polled for readiness, as axum's router uses them.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let mut clone = svc.clone();
            tokio::spawn(async move { tower::Service::call(&mut clone, request(Priority::Normal)).await })
        })
        .collect();
    settle(&handle, 3).await;
    let s = handle.snapshot();
    assert_eq!((s.in_flight, s.queued), (2, 1));
    gate.open(3);
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn in_an_axum_router_the_classifiers_priority_orders_the_queue() {
    use axum::{body::Body, routing::get, Router};
    use phalanx_core::{Classifier, ClassifyLayer};

    let layer = patient(AdmissionLayer::builder().limit(LimitConfig::fixed(1))).build().unwrap();
    let handle = layer.clone();
    let order = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let work = {
        let (order, gate) = (order.clone(), gate.clone());
        move |req: Request<Body>| {
            let (order, gate) = (order.clone(), gate.clone());
            async move {
                order.lock().push(req.headers()["x-id"].to_str().unwrap().to_owned());
                gate.acquire().await.unwrap().forget();
                "done"
            }
        }
    };
    let app = Router::new()
        .route("/work", get(work))
        .layer(layer)
        // This service trusts its callers to raise their class up to `high`.
        .layer(ClassifyLayer::new(
            Classifier::builder().priority_header("x-priority").max_header_priority(Priority::High).build(),
        ));
    let call = |id: &'static str, priority: Option<&'static str>| {
        let mut req = Request::get("/work").header("x-id", id);
        if let Some(p) = priority {
            req = req.header("x-priority", p);
        }
        // The task drops the response (and its body, which holds the slot) as soon as it has it.
        let call = app.clone().oneshot(req.body(Body::empty()).unwrap());
        tokio::spawn(async move { call.await.unwrap().status() })
    };
    let mut tasks = vec![call("first", None)];
    settle(&handle, 1).await;
    tasks.push(call("low", Some("low")));
    settle(&handle, 2).await;
    tasks.push(call("normal", None));
    settle(&handle, 3).await;
    tasks.push(call("high", Some("high")));
    settle(&handle, 4).await;
    let s = handle.snapshot();
    let queued: Vec<usize> = s.classes.iter().map(|c| c.queued).collect();
    assert_eq!(queued, [0, 1, 1, 1, 0], "critical, high, normal, low, background");
    gate.add_permits(4);
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(*order.lock(), ["first", "high", "normal", "low"]);
}
