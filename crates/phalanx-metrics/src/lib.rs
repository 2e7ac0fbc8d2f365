#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod body;
mod builder;
mod config;
mod error;
mod exporter;
mod future;
mod layer;
mod process;
mod service;
mod status;
mod window;

pub use body::{MetricsBody, RequestGuard};
pub use builder::MetricsLayerBuilder;
pub use config::{LatencyTargets, MetricsConfig};
pub use error::Error;
pub use exporter::{PrometheusExporter, PROMETHEUS_TEXT};
pub use future::ResponseFuture;
pub use layer::{HttpStats, MetricsLayer};
pub use service::MetricsService;
pub use status::{ScalingAction, ScalingConfig, ScalingRecommendation, StatusReport};
pub use window::WindowSummary;
