//! The [`Db`] extractor.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use sqlx::{pool::PoolConnection, Database};

use super::DbPool;
use crate::PoolRejection;

/// The connection type of [`Db`]; `sqlx::Any` with the `any` feature.
macro_rules! db_struct {
    ($($default:tt)*) => {
        /// A pooled connection, taken from the [`DbPool`] in the axum state within its acquire
        /// timeout; otherwise the handler is not called and the client gets a 503
        /// ([`PoolRejection`]). Derefs to the driver's connection, so `query.fetch_one(&mut *db)`
        /// works. With the `any` feature the type parameter defaults to `sqlx::Any`.
        ///
        /// ```no_run
        /// # #[cfg(feature = "sqlite")] {
        /// use axum::{routing::get, Router};
        /// use phalanx_pools::{Db, DbPool};
        ///
        /// async fn count(mut db: Db<sqlx::Sqlite>) -> String {
        ///     let n: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *db).await.unwrap_or(0);
        ///     n.to_string()
        /// }
        ///
        /// # async fn run() -> Result<(), phalanx_pools::Error> {
        /// let pool = DbPool::<sqlx::Sqlite>::builder().url("sqlite::memory:").build().await?;
        /// let app: Router = Router::new().route("/count", get(count)).with_state(pool);
        /// # Ok(()) }
        /// # }
        /// ```
        pub struct Db<DB: Database $($default)*> {
            conn: PoolConnection<DB>,
            _held: Held,
        }
    };
}

#[cfg(feature = "any")]
db_struct!(= sqlx::Any);
#[cfg(not(feature = "any"))]
db_struct!();

/// Counts a connection as in use while a [`Db`] holds it.
pub(super) struct Held(pub(super) Arc<AtomicU64>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<DB: Database> Db<DB> {
    pub(super) fn new(conn: PoolConnection<DB>, in_use: &Arc<AtomicU64>) -> Self {
        in_use.fetch_add(1, Ordering::Relaxed);
        Db { conn, _held: Held(Arc::clone(in_use)) }
    }

    /// The sqlx pool connection (returned to the pool when dropped). From here on it no longer
    /// counts as in use in the pool's figures.
    pub fn into_inner(self) -> PoolConnection<DB> {
        self.conn
    }
}

impl<DB: Database> std::fmt::Debug for Db<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl<DB: Database> std::ops::Deref for Db<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<DB: Database> std::ops::DerefMut for Db<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<DB, S> FromRequestParts<S> for Db<DB>
where
    DB: Database,
    DbPool<DB>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = PoolRejection;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        DbPool::<DB>::from_ref(state).acquire().await
    }
}
