//! [`DbPool`]: the pool handle, its acquisition, health check and `/status` section.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use phalanx_core::{StatusSource, TargetCheck};
use sqlx::{Database, Executor, Pool};
use tokio::time::Instant;

use super::{Db, DbPoolBuilder, DbPoolConfig};
use crate::{
    health::{Checked, Health, HealthTracker},
    metrics::{GaugeSource, Occupancy, PoolMetrics},
    status::pool_targets,
    Error, PoolRejection,
};

/// An instrumented sqlx pool: bounded acquisition, gauges, an acquire-wait histogram, and a
/// background health check. Cheap to clone (clones share the pool); put it in the axum state
/// and take connections with the [`Db`] extractor.
///
/// Generic over the sqlx [`Database`]: `DbPool<sqlx::Any>` lets the same handlers run on
/// SQLite or PostgreSQL chosen by URL (call `sqlx::any::install_default_drivers()` first).
pub struct DbPool<DB: Database> {
    pub(super) shared: Arc<DbShared<DB>>,
}

impl<DB: Database> Clone for DbPool<DB> {
    fn clone(&self) -> Self {
        DbPool { shared: Arc::clone(&self.shared) }
    }
}

impl<DB: Database> std::fmt::Debug for DbPool<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPool")
            .field("name", &self.shared.config.name)
            .field("occupancy", &self.occupancy())
            .field("health", &self.health())
            .finish()
    }
}

pub(super) struct DbShared<DB: Database> {
    pub(super) pool: Pool<DB>,
    pub(super) config: DbPoolConfig,
    pub(super) metrics: PoolMetrics,
    pub(super) health: HealthTracker,
    pub(super) opened: Arc<AtomicU64>,
    pub(super) in_use: Arc<AtomicU64>,
    pub(super) acquisitions: AtomicU64,
}

impl<DB: Database> DbPool<DB> {
    /// A builder: every setting defaults as in [`DbPoolConfig`]; give it a URL.
    pub fn builder() -> DbPoolBuilder<DB> {
        DbPoolBuilder::default()
    }

    /// The pool of a configuration file's section, recording through the meter of `deps`.
    pub async fn from_config(config: &DbPoolConfig, deps: &phalanx_core::Deps) -> Result<Self, Error>
    where
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        Self::builder().config(config.clone()).meter(deps.meter_or_default()).build().await
    }

    /// A connection within the acquire timeout, or the 503 to send instead.
    pub async fn acquire(&self) -> Result<Db<DB>, PoolRejection> {
        let s = &*self.shared;
        if s.config.fail_fast_when_unhealthy && s.health.state() == Health::Unhealthy {
            s.metrics.error("unavailable");
            return Err(self.rejection("failing health checks".into()));
        }
        let started = Instant::now();
        let result = s.pool.acquire().await;
        let waited = started.elapsed();
        match result {
            Ok(conn) => {
                s.acquisitions.fetch_add(1, Ordering::Relaxed);
                s.metrics.acquired(waited);
                Ok(Db::new(conn, &s.in_use))
            }
            Err(sqlx::Error::PoolTimedOut) if s.pool.size() < s.config.max_connections => {
                // There was room to open a connection and still none came: the database is slow
                // or unreachable, which more waiting would not fix. Not a trip: a database that
                // is only slow to accept (a reconnect storm after a restart) would be kept down
                // by it; the health check decides.
                s.metrics.error("unavailable");
                Err(self.rejection(format!("no connection could be opened within {} ms", waited.as_millis())))
            }
            Err(sqlx::Error::PoolTimedOut) => {
                s.metrics.acquire_timed_out(waited);
                s.health.note_pressure();
                Err(PoolRejection::Exhausted { pool: s.config.name.clone(), waited, retry_after: self.retry_after() })
            }
            Err(e) => {
                s.metrics.error("error");
                Err(self.unavailable(e.to_string()))
            }
        }
    }

    fn retry_after(&self) -> Duration {
        self.shared.config.retry_after
    }

    /// An acquisition just failed with the database's own error (refused credentials, a broken
    /// handshake, a closed pool): the pool trips to unhealthy.
    fn unavailable(&self, detail: String) -> PoolRejection {
        tracing::warn!(pool = %self.shared.config.name, %detail, "database unavailable");
        self.shared.health.trip(detail.clone());
        self.rejection(detail)
    }

    fn rejection(&self, detail: String) -> PoolRejection {
        PoolRejection::Unavailable { pool: self.shared.config.name.clone(), detail, retry_after: self.retry_after() }
    }

    /// Tell the pool about an error a query on one of its connections returned. An error that
    /// says the database or the connection to it is gone (I/O, TLS, a closed pool, PostgreSQL's
    /// connection-exception and operator-intervention classes such as `57P01` on shutdown) makes
    /// the pool unhealthy at once, so that, with `fail_fast_when_unhealthy`, the requests that
    /// follow get their 503 at once rather than each waiting out the acquire timeout. Returns
    /// whether it did. Errors of the query itself (constraints, syntax, no rows) change nothing.
    pub fn observe_error(&self, error: &sqlx::Error) -> bool {
        if !is_connection_failure(error) {
            return false;
        }
        self.shared.metrics.error("unavailable");
        tracing::warn!(pool = %self.shared.config.name, %error, "database connection failed");
        self.shared.health.trip(error.to_string());
        true
    }

    /// The sqlx pool underneath. Connections used through it directly are not counted in
    /// `in_use` nor in the acquire metrics: take them with [`DbPool::acquire`] or [`Db`].
    pub fn sqlx(&self) -> &Pool<DB> {
        &self.shared.pool
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Its configuration.
    pub fn config(&self) -> &DbPoolConfig {
        &self.shared.config
    }

    /// How full it is now.
    pub fn occupancy(&self) -> Occupancy {
        self.shared.occupancy()
    }

    /// Its health now.
    pub fn health(&self) -> Health {
        self.shared.health.state()
    }

    /// Acquisitions that timed out so far.
    pub fn timeouts(&self) -> u64 {
        self.shared.metrics.timeouts_total()
    }

    /// Failed acquisitions (other than timeouts) so far.
    pub fn errors(&self) -> u64 {
        self.shared.metrics.errors_total()
    }

    /// Connections opened so far (replacements of dead ones included).
    pub fn connections_opened(&self) -> u64 {
        self.shared.opened.load(Ordering::Relaxed)
    }
}

impl<DB: Database> GaugeSource for DbShared<DB> {
    fn occupancy(&self) -> Occupancy {
        let size = u64::from(self.pool.size());
        let in_use = self.in_use.load(Ordering::Relaxed);
        let idle = (self.pool.num_idle() as u64).min(size.saturating_sub(in_use));
        Occupancy { size, idle, in_use, max: u64::from(self.config.max_connections) }
    }

    fn health(&self) -> Health {
        self.health.state()
    }
}

impl<DB: Database> Checked for DbShared<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    fn tracker(&self) -> &HealthTracker {
        &self.health
    }

    async fn check(self: Arc<Self>) -> Result<(), String> {
        let mut conn = self.pool.acquire().await.map_err(|e| e.to_string())?;
        conn.execute("SELECT 1").await.map(drop).map_err(|e| e.to_string())
    }

    fn saturated(&self) -> bool {
        self.in_use.load(Ordering::Relaxed) >= u64::from(self.config.max_connections)
    }

    fn progress(&self) -> u64 {
        self.acquisitions.load(Ordering::Relaxed)
    }
}

/// The pool's `/status` section, named by the pool (`db`): size, idle, in use, utilization
/// (of max and of open), acquisitions, acquire wait, timeouts, errors, connections opened and
/// health; targets `pool.<name>.health != unhealthy` and, when configured,
/// `pool.<name>.utilization <= utilization_target`.
impl<DB: Database> StatusSource for DbPool<DB> {
    fn name(&self) -> &str {
        &self.shared.config.name
    }

    fn report(&self) -> serde_json::Value {
        let s = &*self.shared;
        let o = s.occupancy();
        serde_json::json!({
            "kind": "sql",
            "size": o.size,
            "idle": o.idle,
            "in_use": o.in_use,
            "max": o.max,
            "min": s.config.min_connections,
            "utilization": o.utilization(),
            "utilization_of_open": o.utilization_of_open(),
            "acquisitions": s.acquisitions.load(Ordering::Relaxed),
            "acquire_timeout_ms": s.config.acquire_timeout.as_secs_f64() * 1000.0,
            "acquire_wait": s.metrics.acquire.report(),
            "timeouts": s.metrics.timeouts_total(),
            "errors": s.metrics.errors_total(),
            "connections_opened": s.opened.load(Ordering::Relaxed),
            "health": s.health.snapshot(),
        })
    }

    fn targets(&self) -> Vec<TargetCheck> {
        let c = &self.shared.config;
        pool_targets(&c.name, self.occupancy().utilization(), c.utilization_target, self.health())
    }
}

/// Whether an error says the database (or the way to it) is gone, rather than that one query
/// was wrong.
fn is_connection_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        // SQLSTATE classes 08 (connection exception) and 57 (operator intervention: shutdown,
        // crash, cannot connect now).
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}
