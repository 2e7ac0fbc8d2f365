//! Acquire + release latency of the instrumented pool against the bare sqlx pool with the
//! same options, in the same run.
//!
//! `cargo bench -p phalanx-pools --bench acquire -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // criterion_group! defines an undocumented function

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use phalanx_pools::{DbPool, DbPoolConfig};
use sqlx::{pool::PoolOptions, Connection, Database, Executor};

fn config(url: &str, test_before_acquire: bool) -> DbPoolConfig {
    DbPoolConfig::default()
        .with_name("bench")
        .with_url(url)
        .with_min_connections(4)
        .with_max_connections(4)
        .with_test_before_acquire(test_before_acquire)
}

fn bare<DB: Database>(config: &DbPoolConfig) -> sqlx::Pool<DB> {
    PoolOptions::<DB>::new()
        .min_connections(config.min_connections)
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(config.test_before_acquire)
        .connect_lazy(config.url.as_deref().unwrap())
        .unwrap()
}

fn compare<DB: Database>(c: &mut Criterion, group: &str, url: &str, test_before_acquire: bool)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(InMemoryMetricExporter::default()).build())
        .build();
    let config = config(url, test_before_acquire);
    let (bare, instrumented) = rt.block_on(async {
        let bare = bare::<DB>(&config);
        let instrumented =
            DbPool::<DB>::builder().config(config.clone()).meter(provider.meter("bench")).build().await.unwrap();
        // Warm both pools to the same number of open connections.
        for _ in 0..config.max_connections {
            drop(bare.acquire().await.unwrap());
            drop(instrumented.acquire().await.unwrap());
        }
        (bare, instrumented)
    });
    let mut g = c.benchmark_group(group);
    g.bench_function("sqlx", |b| b.to_async(&rt).iter(|| async { drop(bare.acquire().await.unwrap()) }));
    g.bench_function("phalanx", |b| b.to_async(&rt).iter(|| async { drop(instrumented.acquire().await.unwrap()) }));
    g.finish();
}

fn benches(c: &mut Criterion) {
    compare::<sqlx::Sqlite>(c, "acquire/sqlite", "sqlite::memory:", false);
    let pg = phalanx_core::testing::postgres_url();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reachable = rt.block_on(async {
        matches!(tokio::time::timeout(Duration::from_secs(2), sqlx::PgConnection::connect(&pg)).await, Ok(Ok(_)))
    });
    if reachable {
        compare::<sqlx::Postgres>(c, "acquire/postgres", &pg, true);
    } else {
        eprintln!("acquire/postgres skipped: no PostgreSQL at {pg}");
    }
}

criterion_group!(acquire, benches);
criterion_main!(acquire);
