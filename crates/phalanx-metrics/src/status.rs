//! The `/status` performance report: the HTTP figures over a recent window, the process, each
//! registered layer's section, and every target with whether it is met now.

use std::sync::Arc;

use axum::{response::IntoResponse, routing::get, Json, Router};
use phalanx_core::{StatusRegistry, TargetCheck};
use serde_json::{json, Value};

use crate::{process, HttpStats};

/// The latency targets judged from the HTTP figures.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyTargets {
    /// Mean latency must stay below this, in ms. Default 200.
    pub avg_ms: f64,
    /// p99 latency must stay below this, in ms. Default 500.
    pub p99_ms: f64,
}

impl Default for LatencyTargets {
    fn default() -> Self {
        LatencyTargets { avg_ms: 200.0, p99_ms: 500.0 }
    }
}

/// Builds the `/status` report. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusReport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HttpStats,
    registry: StatusRegistry,
    targets: LatencyTargets,
    cpu: process::CpuMeter,
}

impl StatusReport {
    /// A report over these HTTP figures and registered sections.
    pub fn new(http: HttpStats, registry: StatusRegistry) -> Self {
        Self::with_targets(http, registry, LatencyTargets::default())
    }

    /// A report judging these latency targets.
    pub fn with_targets(http: HttpStats, registry: StatusRegistry, targets: LatencyTargets) -> Self {
        StatusReport { inner: Arc::new(Inner { http, registry, targets, cpu: process::CpuMeter::default() }) }
    }

    /// The report as JSON.
    pub fn render(&self) -> Value {
        let inner = &*self.inner;
        let recent = inner.http.recent();
        let mut targets = vec![
            TargetCheck::below("avg_latency_ms", recent.avg_ms, inner.targets.avg_ms),
            TargetCheck::below("p99_latency_ms", recent.p99_ms, inner.targets.p99_ms),
        ];
        targets.extend(inner.registry.targets());
        let all_met = targets.iter().all(|t| t.met != Some(false));
        let mut report = json!({
            "http": {
                "window_s": recent.window_s,
                "requests": recent.requests,
                "request_rate": recent.rate,
                "active_requests": inner.http.active(),
                "error_rate": recent.error_rate,
                "latency_ms": { "avg": recent.avg_ms, "p50": recent.p50_ms, "p99": recent.p99_ms, "max": recent.max_ms },
            },
            "process": {
                "cpu_percent": inner.cpu.percent(),
                "rss_bytes": process::rss_bytes(),
            },
            "targets": targets,
            "targets_met": all_met,
        });
        for (name, section) in inner.registry.sections() {
            report[name] = section;
        }
        report
    }

    /// A router serving the report at `path`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self, path: &str) -> Router<S> {
        let report = self.clone();
        Router::new().route(
            path,
            get(move || {
                let report = report.clone();
                async move { Json(report.render()).into_response() }
            }),
        )
    }
}
