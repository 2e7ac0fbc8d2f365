//! The `/status` performance report: the HTTP figures over a recent window, the process, each
//! registered layer's section, and every target with whether it is met now.

use std::sync::Arc;

use axum::{response::IntoResponse, routing::get, Json, Router};
use phalanx_core::{ConfigError, StatusRegistry, TargetCheck};
use serde_json::{json, Value};

use crate::{process, Error, HttpStats};

/// What `/status` needs to recommend a replica count: the HPA's formula on this pod's request
/// rate (`desired = ceil(replicas × rate / target)`, nothing done within the tolerance).
///
/// ```toml
/// capacity_rps = 1000
/// target_utilization = 0.6
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ScalingConfig {
    /// The measured per-pod capacity: the highest request rate at which one pod meets the
    /// latency targets, req/s. Required (0 = no recommendation).
    pub capacity_rps: f64,
    /// The HPA's per-pod target as a fraction of the capacity (headroom). Default 0.7.
    pub target_utilization: f64,
    /// The replicas now serving, when the pod is told (else the recommendation is per this
    /// pod's share: how many pods its load alone implies). Default 1.
    pub replicas: u32,
    /// The HPA tolerance. Default 0.1.
    pub tolerance: f64,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        ScalingConfig { capacity_rps: 0.0, target_utilization: 0.7, replicas: 1, tolerance: 0.1 }
    }
}

/// Scale up, down, or hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingAction {
    /// More replicas are needed.
    ScaleUp,
    /// Fewer replicas would do.
    ScaleDown,
    /// Within the tolerance: keep the count.
    Hold,
}

/// The `scaling_recommendations` section of `/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScalingRecommendation {
    /// This pod's request rate over the recent window, req/s.
    pub request_rate: f64,
    /// The per-pod target, req/s (capacity × target utilization).
    pub target_rps: f64,
    /// The measured per-pod capacity, req/s.
    pub capacity_rps: f64,
    /// request rate / target.
    pub ratio: f64,
    /// The replicas serving now (as configured).
    pub current_replicas: u32,
    /// `ceil(current × ratio)`, or the current count within the tolerance.
    pub desired_replicas: u32,
    /// Pods at full capacity the load needs: `ceil(current × rate / capacity)`.
    pub minimum_replicas: u32,
    /// What to do.
    pub action: ScalingAction,
    /// Why, in words.
    pub reason: String,
}

impl ScalingConfig {
    /// A configuration for this measured per-pod capacity (req/s), the other fields at their
    /// defaults.
    pub fn new(capacity_rps: f64) -> Self {
        ScalingConfig { capacity_rps, ..Self::default() }
    }

    /// Set the HPA's per-pod target as a fraction of the capacity.
    pub fn with_target_utilization(mut self, fraction: f64) -> Self {
        self.target_utilization = fraction;
        self
    }

    /// Set the replicas now serving.
    pub fn with_replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }

    /// Set the HPA tolerance, a fraction.
    pub fn with_tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Checks the values; `/status` refuses to start on a bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &'static str| Err(ConfigError::new(field, reason));
        if !self.capacity_rps.is_finite() || self.capacity_rps <= 0.0 {
            return bad("scaling.capacity_rps", "must be a number > 0");
        }
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            return bad("scaling.target_utilization", "must be a fraction in (0, 1]");
        }
        if self.replicas == 0 {
            return bad("scaling.replicas", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.tolerance) {
            return bad("scaling.tolerance", "must be a fraction in [0, 1)");
        }
        Ok(())
    }

    /// The HPA's decision for a pod serving `rate` req/s, as the controller would take it if
    /// every pod saw the same rate.
    pub fn recommend(&self, rate: f64) -> ScalingRecommendation {
        let rate = if rate.is_finite() && rate > 0.0 { rate } else { 0.0 };
        let target = self.capacity_rps * self.target_utilization;
        let ratio = rate / target;
        let current = self.replicas;
        // Saturate: a hostile or absurd rate must not wrap the count.
        let ceil = |x: f64| x.ceil().clamp(0.0, u32::MAX as f64) as u32;
        let minimum = ceil(current as f64 * rate / self.capacity_rps).max(1);
        let (desired, action, reason) = if (1.0 - ratio).abs() <= self.tolerance {
            (
                current,
                ScalingAction::Hold,
                format!(
                    "{rate:.0} req/s per pod is {ratio:.2}× the target {target:.0} req/s, within the ±{} tolerance",
                    self.tolerance
                ),
            )
        } else {
            let desired = ceil(current as f64 * ratio).max(1);
            let (action, verb) = match desired.cmp(&current) {
                std::cmp::Ordering::Greater => (ScalingAction::ScaleUp, "above"),
                std::cmp::Ordering::Less => (ScalingAction::ScaleDown, "below"),
                std::cmp::Ordering::Equal => (ScalingAction::Hold, "off"),
            };
            (
                desired,
                action,
                format!(
                    "{rate:.0} req/s per pod is {ratio:.2}× the target {target:.0} req/s ({:.0} % of the measured capacity {:.0} req/s), {verb} it by more than the ±{} tolerance: ceil({current} × {ratio:.2}) = {desired}",
                    self.target_utilization * 100.0,
                    self.capacity_rps,
                    self.tolerance
                ),
            )
        };
        ScalingRecommendation {
            request_rate: rate,
            target_rps: target,
            capacity_rps: self.capacity_rps,
            ratio,
            current_replicas: current,
            desired_replicas: desired,
            minimum_replicas: minimum,
            action,
            reason,
        }
    }
}

/// Builds the `/status` report: the figures of a [`crate::MetricsLayer`] (judged against its
/// latency targets, if any) and every section of a [`StatusRegistry`]. Layers, caches and
/// pools join the report one way: `registry.register(layer.clone())`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusReport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HttpStats,
    registry: StatusRegistry,
    cpu: process::CpuMeter,
    scaling: Option<ScalingConfig>,
}

impl StatusReport {
    /// A report over these HTTP figures and registered sections.
    pub fn new(http: HttpStats, registry: StatusRegistry) -> Self {
        StatusReport { inner: Arc::new(Inner { http, registry, cpu: process::CpuMeter::default(), scaling: None }) }
    }

    /// Adds the `scaling_recommendations` section: the replicas this pod's load implies.
    pub fn with_scaling(self, scaling: ScalingConfig) -> Result<Self, Error> {
        scaling.validate()?;
        let i = &*self.inner;
        Ok(StatusReport {
            inner: Arc::new(Inner {
                http: i.http.clone(),
                registry: i.registry.clone(),
                cpu: process::CpuMeter::default(),
                scaling: Some(scaling),
            }),
        })
    }

    /// The report as JSON.
    pub fn render(&self) -> Value {
        let inner = &*self.inner;
        let recent = inner.http.recent();
        let latency = inner.http.targets();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let mut targets = Vec::new();
        if let Some(avg) = latency.avg {
            targets.push(TargetCheck::below("avg_latency_ms", recent.avg_ms, ms(avg)));
        }
        if let Some(p99) = latency.p99 {
            targets.push(TargetCheck::below("p99_latency_ms", recent.p99_ms, ms(p99)));
        }
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
        if let Some(scaling) = &inner.scaling {
            report["scaling_recommendations"] = json!(scaling.recommend(recent.rate));
        }
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
