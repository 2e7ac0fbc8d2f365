//! The pool extractors: `Db` (SQLite by default, PostgreSQL when `DATABASE_URL` is set, the
//! same handler code), `Redis` (`REDIS_URL`, default the local server) and `Http` (calls an
//! in-process upstream through retries and a per-upstream circuit breaker). `/status` shows
//! the pools; a 503 problem+json comes back at once when a pool cannot serve.
//!
//! ```sh
//! cargo run --example pools
//! curl localhost:3000/db; curl localhost:3000/redis; curl localhost:3000/http; curl localhost:3000/status
//! ```

use std::net::SocketAddr;

use axum::{
    extract::{FromRef, State},
    routing::get,
    Json, Router,
};
use fred::interfaces::KeysInterface;
use phalanx::{
    breaker::BreakerRegistry,
    core::StatusSource,
    pools::{
        Db, DbPool, DbPoolConfig, Http, HttpClient, HttpClientConfig, PoolsStatus, Redis, RedisPool, RedisPoolConfig,
    },
};

#[derive(Clone)]
struct AppState {
    db: DbPool<sqlx::Any>,
    redis: RedisPool,
    http: HttpClient,
    upstream: Upstream,
    pools: Pools,
}

// Each extractor finds its part of the state through `FromRef`.
macro_rules! from_state {
    ($($field:ident: $ty:ty),*) => {$(
        impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        }
    )*};
}
from_state!(db: DbPool<sqlx::Any>, redis: RedisPool, http: HttpClient, upstream: Upstream, pools: Pools);

#[derive(Clone)]
struct Upstream(SocketAddr);

#[derive(Clone)]
struct Pools(PoolsStatus);

/// The same code runs on SQLite and PostgreSQL: `Db` is `Db<sqlx::Any>`.
async fn query_db(mut db: Db) -> String {
    match sqlx::query_scalar::<_, i64>("SELECT CAST(40 + 2 AS BIGINT)").fetch_one(&mut *db).await {
        Ok(n) => format!("the database says {n}\n"),
        Err(e) => format!("query failed: {e}\n"),
    }
}

async fn count_visit(redis: Redis) -> String {
    match redis.run(|c| async move { c.incr::<i64, _>("phalanx:example:visits").await }).await {
        Ok(n) => format!("visit number {n}\n"),
        Err(e) => format!("redis failed: {e}\n"),
    }
}

async fn call_upstream(Http(client): Http, State(Upstream(addr)): State<Upstream>) -> String {
    match client.get(format!("http://{addr}/quote")).send().await {
        Ok(res) => res.text().await.unwrap_or_default(),
        Err(e) => format!("upstream failed: {e}\n"),
    }
}

async fn status(State(Pools(pools)): State<Pools>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "pools": pools.report(), "targets": pools.targets() }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    sqlx::any::install_default_drivers();
    // The in-process upstream the Http client calls.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(async move {
        let app = Router::new().route("/quote", get(|| async { "pools are bounded\n" }));
        let _ = axum::serve(upstream, app).await;
    });

    let db_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".into());
    let db = DbPool::<sqlx::Any>::new(DbPoolConfig::from_url(db_url))?;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = RedisPool::new(RedisPoolConfig::from_url(redis_url))?;
    let breakers = BreakerRegistry::builder().build()?;
    let http_client = HttpClient::builder(HttpClientConfig::default()).breaker(breakers).build()?;

    let pools = PoolsStatus::new().with(db.clone()).with(redis.clone()).with(http_client.clone());
    let state = AppState { db, redis, http: http_client, upstream: Upstream(upstream_addr), pools: Pools(pools) };
    let app = Router::new()
        .route("/db", get(query_db))
        .route("/redis", get(count_visit))
        .route("/http", get(call_upstream))
        .route("/status", get(status))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
