//! The pool extractors: `Db` (SQLite by default, PostgreSQL when `DATABASE_URL` is set, the
//! same handler code), `Redis` (`REDIS_URL`, default the local server) and `Http` (calls an
//! in-process upstream through retries and a per-upstream circuit breaker). `/status` shows
//! the pools, each a section of the registry; a 503 problem+json comes back at once when a pool
//! cannot serve. The Redis pool is built over the process's one `RedisHandle`.
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
    core::{
        redis::{RedisHandle, RedisSettings},
        StatusRegistry,
    },
    pools::{Db, DbPool, Http, HttpClient, Redis, RedisPool},
};

#[derive(Clone)]
struct AppState {
    db: DbPool<sqlx::Any>,
    redis: RedisPool,
    http: HttpClient,
    upstream: Upstream,
    status: StatusRegistry,
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
from_state!(db: DbPool<sqlx::Any>, redis: RedisPool, http: HttpClient, upstream: Upstream, status: StatusRegistry);

#[derive(Clone)]
struct Upstream(SocketAddr);

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

async fn status_report(State(status): State<StatusRegistry>) -> Json<serde_json::Value> {
    let sections: serde_json::Map<String, serde_json::Value> = status.sections().into_iter().collect();
    Json(serde_json::json!({ "sections": sections, "targets": status.targets() }))
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
    let db = DbPool::<sqlx::Any>::builder().url(db_url).build().await?;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis_handle = RedisHandle::connect(RedisSettings::from_url(redis_url))?;
    let redis = RedisPool::builder().redis(redis_handle).build().await?;
    let breakers = BreakerRegistry::builder().build()?;
    let http_client = HttpClient::builder().breaker(breakers).build().await?;

    let status = StatusRegistry::new();
    status.register(db.clone());
    status.register(redis.clone());
    status.register(http_client.clone());
    let state = AppState { db, redis, http: http_client, upstream: Upstream(upstream_addr), status };
    let app = Router::new()
        .route("/db", get(query_db))
        .route("/redis", get(count_visit))
        .route("/http", get(call_upstream))
        .route("/status", get(status_report))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
