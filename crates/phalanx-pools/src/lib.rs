//! Axum extractors for pooled connections — [`Db`] (sqlx), [`Redis`] (fred) and [`Http`]
//! (reqwest-middleware) — that are bounded, instrumented and heal by themselves.
//!
//! A handler asks for a connection and either gets one within the pool's acquire timeout or
//! is never called: the client gets a fast `503` with `Retry-After` and an RFC 9457 problem
//! document ([`PoolRejection`]), never a `500` after 30 s. Every pool records
//! `phalanx.pool.{size,idle,in_use,utilization}` gauges, the `phalanx.pool.acquire.duration`
//! histogram and `phalanx.pool.acquire.timeouts`, runs a background health check
//! ([`Health`]), and reports itself in the `pools` section of `/status` ([`PoolsStatus`]).
//!
//! Extractors find their pool in the axum state through [`FromRef`](axum::extract::FromRef).
//!
//! ```
//! use axum::{extract::FromRef, routing::get, Router};
//! use phalanx_pools::{Db, DbPool, DbPoolConfig, PoolsStatus};
//!
//! #[derive(Clone, FromRef)]
//! struct AppState {
//!     db: DbPool<sqlx::Sqlite>,
//! }
//!
//! async fn answer(mut db: Db<sqlx::Sqlite>) -> String {
//!     let n: i64 = sqlx::query_scalar("SELECT 41 + 1").fetch_one(&mut *db).await.unwrap();
//!     n.to_string()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let db = DbPool::<sqlx::Sqlite>::new(DbPoolConfig::from_url("sqlite::memory:")).unwrap();
//! let status = PoolsStatus::new().with(db.clone()); // register in the StatusRegistry
//! let app: Router = Router::new().route("/answer", get(answer)).with_state(AppState { db });
//! # let _ = (app, status);
//! # }
//! ```
#![forbid(unsafe_code)]

mod db;
mod health;
mod http_client;
mod metrics;
mod redis;
mod rejection;
mod status;

pub use db::{Db, DbPool, DbPoolBuilder, DbPoolConfig};
pub use health::{Health, HealthConfig, HealthSnapshot};
pub use http_client::{
    Http, HttpClient, HttpClientBuilder, HttpClientConfig, RetryBudget, ATTR_SERVER_ADDRESS, ATTR_SERVER_PORT,
    HTTP_CLIENT_ACTIVE_REQUESTS, HTTP_CLIENT_REQUEST_DURATION,
};
pub use metrics::{Occupancy, ATTR_REASON, POOL_COMMAND_DURATION, POOL_ERRORS, POOL_HEALTH};
pub use redis::{Redis, RedisPool, RedisPoolBuilder, RedisPoolConfig};
pub use rejection::PoolRejection;
pub use status::{PoolReport, PoolsStatus};

/// A pool or client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid; the message says which field and why.
    #[error("invalid pool configuration: {0}")]
    Config(String),
    /// The client library refused to build the client.
    #[error("could not build the client: {0}")]
    Client(String),
}
