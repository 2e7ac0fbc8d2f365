#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "db")]
mod db;
mod error;
mod health;
#[cfg(feature = "http-client")]
mod http_client;
mod metrics;
#[cfg(feature = "redis")]
mod redis;
mod rejection;
mod status;

#[cfg(feature = "db")]
#[cfg_attr(docsrs, doc(cfg(feature = "db")))]
pub use db::{Db, DbPool, DbPoolBuilder, DbPoolConfig};
pub use error::Error;
pub use health::{Health, HealthConfig, HealthSnapshot};
#[cfg(feature = "http-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
pub use http_client::{
    Http, HttpClient, HttpClientBuilder, HttpClientConfig, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT,
    HTTP_CLIENT_ACTIVE_REQUESTS, HTTP_CLIENT_REQUEST_DURATION,
};
pub use metrics::{Occupancy, ATTR_REASON, POOL_COMMAND_DURATION, POOL_ERRORS, POOL_HEALTH};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{Redis, RedisPool, RedisPoolBuilder, RedisPoolConfig};
pub use rejection::PoolRejection;
