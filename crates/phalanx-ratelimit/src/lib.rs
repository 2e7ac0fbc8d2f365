#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod clock;
mod config;
mod decision;
mod future;
mod layer;
mod local;
mod metrics;
mod quota;
#[cfg(feature = "redis")]
mod redis;
mod service;
mod status;

pub use builder::RateLimitLayerBuilder;
pub use clock::Clock;
pub use config::{PolicyConfig, QuotaConfig, RateLimitConfig, RedisLimitConfig};
pub use decision::{RATELIMIT, RATELIMIT_POLICY};
pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use quota::{Policy, Quota};
pub use service::RateLimitService;
