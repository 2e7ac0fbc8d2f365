//! [`RedisPool`]: the pool handle, its acquisition, health check and `/status` section.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use fred::{clients::Pool, interfaces::ClientLike};
use phalanx_core::{redis::RedisHandle, StatusSource, TargetCheck};
use tokio::{task::JoinHandle, time::Instant};

use super::{Redis, RedisPoolBuilder, RedisPoolConfig};
use crate::{
    health::{Checked, Health, HealthTracker},
    metrics::{GaugeSource, Occupancy, PoolMetrics},
    status::pool_targets,
    Error, PoolRejection,
};

/// The shared Redis connections seen as a pool: bounded round trips, gauges, latency and error
/// counts, and a health check. Cheap to clone; put it in the axum state and take handles with
/// the [`Redis`] extractor.
///
/// Every client speaks RESP3 and pipelines (fred writes commands from many tasks onto one
/// connection without waiting for replies). Clients fail commands at once while disconnected
/// and reconnect forever with exponential backoff, so a Redis that goes away costs errors,
/// not waiting, and is used again as soon as it is back.
#[derive(Clone)]
pub struct RedisPool {
    pub(super) shared: Arc<RedisShared>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("name", &self.shared.config.name)
            .field("occupancy", &self.shared.occupancy())
            .field("health", &self.shared.health.state())
            .finish()
    }
}

pub(crate) struct RedisShared {
    pub(super) handle: RedisHandle,
    pub(super) config: RedisPoolConfig,
    pub(super) command_timeout: Duration,
    pub(super) metrics: PoolMetrics,
    pub(super) health: HealthTracker,
    pub(super) in_flight: AtomicU64,
    pub(super) acquisitions: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) connection_errors: AtomicU64,
    /// The event listeners on the shared clients, ended with the pool (the clients live on).
    pub(super) listeners: parking_lot::Mutex<Vec<JoinHandle<Result<(), fred::error::Error>>>>,
}

impl Drop for RedisShared {
    fn drop(&mut self) {
        for listener in self.listeners.get_mut().drain(..) {
            listener.abort();
        }
    }
}

impl RedisPool {
    /// A builder: give it the shared handle with [`RedisPoolBuilder::redis`].
    pub fn builder() -> RedisPoolBuilder {
        RedisPoolBuilder::default()
    }

    /// The pool of a configuration file's section over the Redis handle and meter of `deps`;
    /// fails naming `redis` when `deps` holds no handle.
    pub async fn from_config(config: &RedisPoolConfig, deps: &phalanx_core::Deps) -> Result<Self, Error> {
        let mut builder = Self::builder().config(config.clone()).meter(deps.meter_or_default());
        if let Some(handle) = deps.redis_handle() {
            builder = builder.redis(handle.clone());
        }
        builder.build().await
    }

    /// A handle on a connected client; while every client is reconnecting, waits up to the
    /// acquire timeout for one, then gives the 503 to send instead.
    pub async fn acquire(&self) -> Result<Redis, PoolRejection> {
        let s = &*self.shared;
        let retry_after = s.config.retry_after;
        let unavailable = |detail: &str| {
            s.metrics.error("unavailable");
            PoolRejection::Unavailable { pool: s.config.name.clone(), detail: detail.into(), retry_after }
        };
        if s.config.fail_fast_when_unhealthy && s.health.state() == Health::Unhealthy {
            return Err(unavailable("failing health checks"));
        }
        let started = Instant::now();
        let mut client = s.handle.pool().next_connected();
        if !client.is_connected() {
            let timeout = s.config.acquire_timeout;
            if tokio::time::timeout(timeout, client.wait_for_connect()).await.is_err() {
                s.metrics.acquire_timed_out(started.elapsed());
                return Err(unavailable("no connected client within the acquire timeout"));
            }
            client = s.handle.pool().next_connected();
        }
        s.acquisitions.fetch_add(1, Ordering::Relaxed);
        s.metrics.acquired(started.elapsed());
        Ok(Redis::new(client.clone(), Arc::clone(&self.shared)))
    }

    /// The fred pool underneath (the shared handle's).
    pub fn fred(&self) -> &Pool {
        self.shared.handle.pool()
    }

    /// The shared Redis handle.
    pub fn handle(&self) -> &RedisHandle {
        &self.shared.handle
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Its configuration.
    pub fn config(&self) -> &RedisPoolConfig {
        &self.shared.config
    }

    /// Connections and commands in flight now.
    pub fn occupancy(&self) -> Occupancy {
        self.shared.occupancy()
    }

    /// Its health now.
    pub fn health(&self) -> Health {
        self.shared.health.state()
    }

    /// Failures counted so far: failed or timed-out commands, connection errors, and requests
    /// refused while unavailable.
    pub fn errors(&self) -> u64 {
        self.shared.metrics.errors_total()
    }

    /// Connections established so far, the first of each client included (those made before
    /// the pool was built count as of the build).
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }
}

impl GaugeSource for RedisShared {
    /// `size` counts connected clients, `in_use` the commands in flight through [`Redis::run`];
    /// a pipelined connection carries many, so utilization above 1 is possible and means
    /// commands are queuing in the pipelines.
    fn occupancy(&self) -> Occupancy {
        let size = self.handle.pool().clients().iter().filter(|c| c.is_connected()).count() as u64;
        let in_use = self.in_flight.load(Ordering::Relaxed);
        Occupancy { size, idle: size.saturating_sub(in_use), in_use, max: self.handle.pool().size() as u64 }
    }

    fn health(&self) -> Health {
        self.health.state()
    }
}

impl Checked for RedisShared {
    fn tracker(&self) -> &HealthTracker {
        &self.health
    }

    async fn check(self: Arc<Self>) -> Result<(), String> {
        let client = self.handle.pool().next_connected();
        client.ping::<()>(None).await.map_err(|e| e.to_string())
    }
}

/// The pool's `/status` section, named by the pool (`redis`): connected clients, commands in
/// flight, utilization, acquisitions, acquire wait, round-trip latency, timeouts, errors,
/// connections and health; targets `pool.<name>.health != unhealthy` and, when configured,
/// `pool.<name>.utilization <= utilization_target`.
impl StatusSource for RedisPool {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn report(&self) -> serde_json::Value {
        let s = &*self.shared;
        let o = s.occupancy();
        serde_json::json!({
            "kind": "redis",
            "connected": o.size,
            "size": o.size,
            "max": o.max,
            "in_flight": o.in_use,
            "utilization": o.utilization(),
            "acquisitions": s.acquisitions.load(Ordering::Relaxed),
            "acquire_wait": s.metrics.acquire.report(),
            "commands": s.metrics.command.report(),
            "timeouts": s.metrics.timeouts_total(),
            "errors": s.metrics.errors_total(),
            "connection_errors": s.connection_errors.load(Ordering::Relaxed),
            "connects": s.reconnects.load(Ordering::Relaxed),
            "health": s.health.snapshot(),
        })
    }

    fn targets(&self) -> Vec<TargetCheck> {
        let c = &self.shared.config;
        pool_targets(&c.name, self.shared.occupancy().utilization(), c.utilization_target, self.shared.health.state())
    }
}
