//! Overload in real time: a handler with 50 workers and a 20 ms service time (2,500 requests
//! per second) is offered 5,000 requests per second for 3 s, 10 % critical and 90 %
//! background. Reports critical success, admitted latency per class and how long a refusal
//! takes, with a fixed and an adaptive limit, and without admission control for contrast.
//!
//! `cargo bench -p phalanx-admission --bench overload`

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use parking_lot::Mutex;
use phalanx_admission::{AdmissionLayer, Gradient2Config, LimitConfig};
use phalanx_core::Priority;
use tokio::sync::Semaphore;
use tower::{service_fn, util::BoxCloneService, Layer, ServiceExt};

const WORKERS: usize = 50;
const SERVICE_TIME: Duration = Duration::from_millis(20);
const PER_MS: usize = 5;
const RUN: Duration = Duration::from_secs(3);
const CRITICAL_DEADLINE: Duration = Duration::from_millis(200);
const BACKGROUND_DEADLINE: Duration = Duration::from_millis(50);

type Svc = BoxCloneService<Request<Empty<Bytes>>, Response<()>, Infallible>;

fn handler(
) -> impl tower::Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    let workers = Arc::new(Semaphore::new(WORKERS));
    service_fn(move |_req: Request<Empty<Bytes>>| {
        let workers = workers.clone();
        async move {
            let _worker = workers.acquire().await.unwrap();
            tokio::time::sleep(SERVICE_TIME).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    })
}

fn admission(limit: LimitConfig) -> AdmissionLayer {
    AdmissionLayer::builder()
        .limit(limit)
        .queue_timeout(Priority::Critical, CRITICAL_DEADLINE)
        .share(Priority::Background, 0.8)
        .max_queue(Priority::Background, 25)
        .queue_timeout(Priority::Background, BACKGROUND_DEADLINE)
        .build()
        .unwrap()
}

#[derive(Default)]
struct Tally {
    critical_sent: u64,
    critical_ok: u64,
    admitted: [Option<Histogram<u64>>; 2],
    shed: Option<Histogram<u64>>,
    shed_count: u64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

async fn run(name: &str, svc: Svc) {
    let tally = Arc::new(Mutex::new(Tally {
        admitted: [Some(hist()), Some(hist())],
        shed: Some(hist()),
        ..Default::default()
    }));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0usize;
    let mut tasks = Vec::with_capacity(PER_MS * RUN.as_millis() as usize);
    while start.elapsed() < RUN {
        tick.tick().await;
        for _ in 0..PER_MS {
            let priority = if sent.is_multiple_of(10) { Priority::Critical } else { Priority::Background };
            sent += 1;
            let (svc, tally) = (svc.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                let mut req = Request::new(Empty::new());
                req.extensions_mut().insert(priority);
                let t0 = Instant::now();
                let res = svc.oneshot(req).await.unwrap();
                let micros = (t0.elapsed().as_micros() as u64).max(1);
                let mut t = tally.lock();
                let critical = priority == Priority::Critical;
                t.critical_sent += u64::from(critical);
                if res.status() == StatusCode::OK {
                    t.critical_ok += u64::from(critical);
                    t.admitted[usize::from(!critical)].as_mut().unwrap().record(micros).unwrap();
                } else {
                    t.shed_count += 1;
                    t.shed.as_mut().unwrap().record(micros).unwrap();
                }
            }));
        }
    }
    let offered = sent as f64 / start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    let t = tally.lock();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let [crit, bg] = [t.admitted[0].as_ref().unwrap(), t.admitted[1].as_ref().unwrap()];
    let shed = t.shed.as_ref().unwrap();
    println!(
        "{name:<28} offered {offered:>6.0}/s | critical ok {:>7.3} % ({} of {}) | admitted p99 ms: critical {:>7.2} \
         background {:>7.2} (max {:>7.2}) | shed {:>5} p50 {:.3} ms p99 {:.3} ms",
        100.0 * t.critical_ok as f64 / t.critical_sent.max(1) as f64,
        t.critical_ok,
        t.critical_sent,
        ms(crit, 0.99),
        ms(bg, 0.99),
        ms(bg, 1.0).max(ms(crit, 1.0)),
        t.shed_count,
        ms(shed, 0.5),
        ms(shed, 0.99),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        println!(
            "capacity {WORKERS} workers x {SERVICE_TIME:?} = {:.0}/s; deadlines critical {CRITICAL_DEADLINE:?}, \
             background {BACKGROUND_DEADLINE:?}",
            WORKERS as f64 / SERVICE_TIME.as_secs_f64()
        );
        let fixed = admission(LimitConfig::fixed(WORKERS));
        run("admission fixed(50)", BoxCloneService::new(fixed.layer(handler()).map_response(|r| r.map(|_| ())))).await;
        let adaptive = admission(
            LimitConfig::gradient2(WORKERS, 5, 500).with_gradient2(Gradient2Config::default().with_tolerance(1.1)),
        );
        run("admission gradient2", BoxCloneService::new(adaptive.layer(handler()).map_response(|r| r.map(|_| ()))))
            .await;
        println!("  (gradient2 limit at the end: {})", adaptive.limit());
        run("no admission control", BoxCloneService::new(handler().map_response(|r| r.map(|_| ())))).await;
    });
}
