//! The per-class gauges and the shed counter, read through an in-memory exporter, and the
//! `/status` section.

mod common;

use std::time::Duration;

use common::{request, Capacity};
use http::StatusCode;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::{
    data::{AggregatedMetrics, MetricData},
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
};
use phalanx_admission::{AdmissionLayer, LimitConfig, LIMITER_ATTR};
use phalanx_core::{names, Priority};
use tower::{Layer, ServiceExt};

/// `(name, priority, reason, value)` of every u64 data point.
fn points(exporter: &InMemoryMetricExporter) -> Vec<(String, String, String, u64)> {
    let mut out = Vec::new();
    let batches = exporter.get_finished_metrics().unwrap();
    let Some(last) = batches.last() else { return out };
    for scope in last.scope_metrics() {
        for metric in scope.metrics() {
            let attr = |attrs: Vec<&opentelemetry::KeyValue>, key: &str| {
                attrs.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string()).unwrap_or_default()
            };
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                    for p in g.data_points() {
                        let attrs: Vec<_> = p.attributes().collect();
                        assert_eq!(attr(attrs.clone(), LIMITER_ATTR), "api");
                        out.push((metric.name().to_owned(), attr(attrs, "priority"), String::new(), p.value()));
                    }
                }
                AggregatedMetrics::U64(MetricData::Sum(s)) => {
                    for p in s.data_points() {
                        let attrs: Vec<_> = p.attributes().collect();
                        out.push((
                            metric.name().to_owned(),
                            attr(attrs.clone(), "priority"),
                            attr(attrs, "reason"),
                            p.value(),
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn value(points: &[(String, String, String, u64)], name: &str, priority: &str, reason: &str) -> Option<u64> {
    points.iter().find(|p| p.0 == name && p.1 == priority && p.2 == reason).map(|p| p.3)
}

#[tokio::test(start_paused = true)]
async fn gauges_read_the_shared_state_and_sheds_are_counted_by_reason() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let layer = AdmissionLayer::builder()
        .name("api")
        .limit(LimitConfig::fixed(10))
        .share(Priority::Low, 0.3)
        .max_queue(Priority::Low, 2)
        .meter(provider.meter("test"))
        .build()
        .unwrap();
    let handle = layer.clone();
    let capacity = Capacity::new(100, Duration::from_secs(10));
    let svc = layer.layer(capacity.service());

    // 3 low requests run (30 % of 10), 2 wait, the sixth finds the queue full.
    let tasks: Vec<_> = (0..5).map(|_| tokio::spawn(svc.clone().oneshot(request(Priority::Low)))).collect();
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let res = svc.clone().oneshot(request(Priority::Low)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);

    provider.force_flush().unwrap();
    let p = points(&exporter);
    assert_eq!(value(&p, names::ADMISSION_IN_FLIGHT, "low", ""), Some(3));
    assert_eq!(value(&p, names::ADMISSION_QUEUED, "low", ""), Some(2));
    assert_eq!(value(&p, names::ADMISSION_LIMIT, "low", ""), Some(3));
    assert_eq!(value(&p, names::ADMISSION_LIMIT, "critical", ""), Some(10));
    assert_eq!(value(&p, names::ADMISSION_IN_FLIGHT, "critical", ""), Some(0));
    assert_eq!(value(&p, names::ADMISSION_SHED, "low", "queue_full"), Some(1));

    // The two waiters reach their deadline (low: 100 ms) with the share used up.
    for t in tasks.into_iter().skip(3) {
        assert_eq!(t.await.unwrap().unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    provider.force_flush().unwrap();
    let p = points(&exporter);
    assert_eq!(value(&p, names::ADMISSION_SHED, "low", "share"), Some(2));
    assert_eq!(value(&p, names::ADMISSION_QUEUED, "low", ""), Some(0));

    let registry = phalanx_core::StatusRegistry::new();
    registry.register(handle.clone());
    let (name, report) = registry.sections().remove(0);
    assert_eq!(name, "admission");
    assert_eq!(report["name"], "api");
    let low = &report["classes"]["low"];
    assert_eq!(report["limit"], 10);
    assert_eq!(report["algorithm"], "fixed");
    assert_eq!(low["in_flight"], 3);
    assert_eq!(low["admitted"], 3);
    assert_eq!(low["shed"]["share"], 2);
    assert_eq!(low["shed"]["queue_full"], 1);
}

#[tokio::test(start_paused = true)]
async fn from_config_records_through_the_meter_of_the_deps() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let config: phalanx_admission::AdmissionConfig = toml::from_str(
        r#"
        name = "api"
        retry_after = "3s"
        [limit]
        algorithm = "fixed"
        initial = 1
        [classes.low]
        max_queue = 0
        "#,
    )
    .unwrap();
    let deps = phalanx_core::Deps::new().meter(provider.meter("test"));
    let layer = AdmissionLayer::from_config(&config, &deps).unwrap();
    assert_eq!(layer.limiter_name(), "api");
    let capacity = Capacity::new(10, Duration::from_secs(10));
    let svc = layer.layer(capacity.service());
    let running = tokio::spawn(svc.clone().oneshot(request(Priority::Low)));
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    let res = svc.clone().oneshot(request(Priority::Low)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "3");
    provider.force_flush().unwrap();
    let p = points(&exporter);
    let shed: u64 = ["share", "queue_full", "deadline"]
        .iter()
        .filter_map(|reason| value(&p, names::ADMISSION_SHED, "low", reason))
        .sum();
    assert_eq!(shed, 1, "recorded through the meter of the deps: {p:?}");
    running.abort();

    let bad = AdmissionLayer::from_config(&config.clone().with_limit(LimitConfig::gradient2(5, 10, 20)), &deps);
    assert_eq!(bad.unwrap_err().field(), "limit.initial");
}
