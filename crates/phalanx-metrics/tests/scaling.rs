//! `scaling_recommendations` in `/status`: the HPA formula on this pod's request rate.

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use phalanx_core::StatusRegistry;
use phalanx_metrics::{MetricsLayer, ScalingAction, ScalingConfig, StatusReport};
use tower::ServiceExt;

fn config(capacity: f64, replicas: u32) -> ScalingConfig {
    ScalingConfig::new(capacity).with_replicas(replicas)
}

#[test]
fn desired_is_ceil_of_current_times_ratio() {
    // Target 0.7 × 1000 = 700 req/s; 4 pods at 1050 req/s each → ratio 1.5 → 6.
    let r = config(1000.0, 4).recommend(1050.0);
    assert_eq!(r.target_rps, 700.0);
    assert!((r.ratio - 1.5).abs() < 1e-9);
    assert_eq!(r.desired_replicas, 6);
    assert_eq!(r.action, ScalingAction::ScaleUp);
    // At full capacity 4 × 1050 / 1000 = 4.2 → 5 pods is the minimum that meets the targets.
    assert_eq!(r.minimum_replicas, 5);
    assert!(r.reason.contains("ceil(4 × 1.50) = 6"), "{}", r.reason);
}

#[test]
fn within_tolerance_holds() {
    for rate in [631.0, 700.0, 769.0] {
        let r = config(1000.0, 10).recommend(rate);
        assert_eq!((r.action, r.desired_replicas), (ScalingAction::Hold, 10), "rate {rate}");
        assert!(r.reason.contains("tolerance"));
    }
    let r = config(1000.0, 10).recommend(780.0);
    assert_eq!((r.action, r.desired_replicas), (ScalingAction::ScaleUp, 12));
}

#[test]
fn low_load_scales_down_but_never_below_one() {
    let r = config(1000.0, 10).recommend(140.0);
    assert_eq!((r.action, r.desired_replicas), (ScalingAction::ScaleDown, 2));
    let r = config(1000.0, 3).recommend(0.0);
    assert_eq!((r.action, r.desired_replicas), (ScalingAction::ScaleDown, 1));
    // A non-finite rate is read as no load, and a huge one saturates instead of wrapping.
    assert_eq!(config(1000.0, 3).recommend(f64::NAN).request_rate, 0.0);
    assert_eq!(config(1.0, u32::MAX).recommend(1e300).desired_replicas, u32::MAX);
}

#[test]
fn invalid_configuration_is_refused() {
    let report = || StatusReport::new(MetricsLayer::new().stats(), StatusRegistry::new());
    assert!(report().with_scaling(config(0.0, 1)).is_err());
    assert!(report().with_scaling(config(f64::INFINITY, 1)).is_err());
    assert!(report().with_scaling(config(100.0, 0)).is_err());
    assert!(report().with_scaling(config(100.0, 1).with_target_utilization(1.5)).is_err());
    assert!(report().with_scaling(config(100.0, 1).with_tolerance(-0.1)).is_err());
}

#[tokio::test]
async fn status_carries_the_recommendation_from_the_live_rate() {
    let metrics = MetricsLayer::new();
    // A capacity of 1 req/s: the requests below are far more than one pod's share.
    let status = StatusReport::new(metrics.stats(), StatusRegistry::new()).with_scaling(config(1.0, 2)).unwrap();
    let app = Router::new().route("/work", get(|| async { "ok" })).merge(status.router("/status")).layer(metrics);
    for _ in 0..50 {
        let res = app.clone().oneshot(Request::get("/work").body(Body::empty()).unwrap()).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let res = app.clone().oneshot(Request::get("/status").body(Body::empty()).unwrap()).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let rec = &body["scaling_recommendations"];
    let rate = body["http"]["request_rate"].as_f64().unwrap();
    assert!(rate > 1.0, "{body}");
    assert_eq!(rec["request_rate"].as_f64().unwrap(), rate);
    assert_eq!(rec["action"], "scale_up", "{rec}");
    assert_eq!(rec["current_replicas"], 2);
    assert_eq!(rec["desired_replicas"].as_u64().unwrap(), (2.0 * rate / 0.7).ceil() as u64, "{rec}");
    // Without the configuration there is no section.
    let plain = StatusReport::new(MetricsLayer::new().stats(), StatusRegistry::new()).render();
    assert!(plain.get("scaling_recommendations").is_none());
}
