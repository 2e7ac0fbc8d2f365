//! The [`Redis`] extractor.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use fred::{clients::Client, error::Error as FredError};
use http::request::Parts;
use phalanx_core::redis::{bounded, RedisFailure};
use tokio::time::Instant;

use super::{pool::RedisShared, RedisPool};
use crate::PoolRejection;

/// A handle on a connected client of the [`RedisPool`] in the axum state. Run commands through
/// [`Redis::run`] (bounded by the command timeout, timed, errors counted); it also derefs to
/// the fred [`Client`] for anything else.
///
/// ```no_run
/// use fred::interfaces::KeysInterface;
/// use phalanx_pools::Redis;
///
/// async fn visits(redis: Redis) -> String {
///     match redis.run(|c| async move { c.incr::<i64, _>("visits").await }).await {
///         Ok(n) => n.to_string(),
///         Err(_) => "unknown".into(),
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Redis {
    client: Client,
    shared: Arc<RedisShared>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("pool", &self.shared.config.name).finish_non_exhaustive()
    }
}

struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Redis {
    pub(super) fn new(client: Client, shared: Arc<RedisShared>) -> Self {
        Redis { client, shared }
    }

    /// Run a round trip (a command, or a pipeline) within the pool's command timeout; its
    /// latency is recorded and a failure counted (`timeout` or `error`).
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisFailure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        let s = &*self.shared;
        s.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&s.in_flight);
        let started = Instant::now();
        let result = bounded(s.command_timeout, f(self.client.clone())).await;
        s.metrics.round_trip(started.elapsed());
        match &result {
            Ok(_) => {}
            Err(RedisFailure::Timeout) => s.metrics.error("timeout"),
            Err(RedisFailure::Error(_)) => s.metrics.error("error"),
        }
        result
    }

    /// The fred client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl std::ops::Deref for Redis {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl<S> FromRequestParts<S> for Redis
where
    RedisPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = PoolRejection;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        RedisPool::from_ref(state).acquire().await
    }
}

/// `Option<Redis>`: for handlers that use Redis when they can (a counter, a cache) and do
/// without it otherwise. `None` when the state holds no pool (`Option<RedisPool>` is `None`:
/// Redis not configured) or when no client could be had in time (the failure is still counted).
impl<S> OptionalFromRequestParts<S> for Redis
where
    Option<RedisPool>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        match Option::<RedisPool>::from_ref(state) {
            Some(pool) => Ok(pool.acquire().await.ok()),
            None => Ok(None),
        }
    }
}
