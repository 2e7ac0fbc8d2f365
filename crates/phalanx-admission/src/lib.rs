#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod body;
mod builder;
pub mod config;
mod future;
mod layer;
mod limit;
mod metrics;
mod service;
mod shared;
mod status;

pub use body::AdmissionBody;
pub use builder::AdmissionLayerBuilder;
pub use config::{
    AdmissionConfig, AimdConfig, Algorithm, ClassOverrides, ClassPolicy, ClassesConfig, Gradient2Config, LimitConfig,
};
pub use future::ResponseFuture;
pub use layer::AdmissionLayer;
pub use metrics::LIMITER_ATTR;
/// The error of [`AdmissionLayerBuilder::build`] and [`AdmissionLayer::from_config`]: the
/// setting that is wrong, and why.
pub use phalanx_core::ConfigError;
pub use service::AdmissionService;
pub use shared::{AdmissionPermit, ClassSnapshot, ShedReason, Snapshot};
