//! HTTP server metrics for axum services, through OpenTelemetry.
//!
//! - [`MetricsLayer`] records `http.server.request.duration` and `http.server.active_requests`
//!   by matched route template, method and status; every unmatched path shares one label.
//! - [`PrometheusExporter`] installs an OpenTelemetry meter provider exporting to Prometheus and
//!   serves `/metrics`.
//! - [`StatusReport`] serves `/status`: rate, latency and errors over a recent window, process
//!   CPU and memory, each layer's registered section, and every target with whether it is met.
//!   With [`StatusReport::with_scaling`] and the measured per-pod capacity it adds
//!   `scaling_recommendations`: the HPA formula (`ceil(replicas × rate / target)`, held within
//!   the 0.1 tolerance) on this pod's recent request rate, scale up/down/hold, and why.
//!
//! ```
//! use axum::{routing::get, Router};
//! use phalanx_core::StatusRegistry;
//! use phalanx_metrics::{MetricsLayer, PrometheusExporter, StatusReport};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let exporter = PrometheusExporter::new("my-service")?;
//! let metrics = MetricsLayer::with_meter(&exporter.meter());
//! let status = StatusReport::new(metrics.stats(), StatusRegistry::new());
//!
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .merge(exporter.router("/metrics"))
//!     .merge(status.router("/status"))
//!     .layer(metrics);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod exporter;
mod layer;
mod process;
mod status;
mod window;

pub use exporter::{ExporterError, PrometheusExporter, PROMETHEUS_TEXT};
pub use layer::{HttpStats, MetricsBody, MetricsLayer, MetricsService, ResponseFuture};
pub use status::{
    LatencyTargets, ScalingAction, ScalingConfig, ScalingConfigError, ScalingRecommendation, StatusReport,
};
pub use window::WindowSummary;
