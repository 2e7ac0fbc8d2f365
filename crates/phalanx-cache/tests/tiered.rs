//! TieredCache rules, L1 only, with paused time.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::{
    data::{AggregatedMetrics, MetricData},
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
};
use phalanx_cache::{EntryOptions, TieredCache, TieredCacheConfig};
use phalanx_core::StatusSource;

fn cache() -> TieredCache<String, String> {
    TieredCache::builder().build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn get_with_runs_one_loader_for_concurrent_misses_of_a_key() {
    let cache = cache();
    let loads = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (cache, loads) = (cache.clone(), loads.clone());
        tasks.spawn(async move {
            cache
                .get_with("k".to_owned(), async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    "v".to_owned()
                })
                .await
        });
    }
    while let Some(v) = tasks.join_next().await {
        assert_eq!(v.unwrap(), "v");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.l1.coalesced, 199);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_own_ttl() {
    let cache = cache();
    cache.insert_with("short".into(), "s".into(), EntryOptions::new().ttl(Duration::from_secs(5))).await;
    cache.insert("default".into(), "d".into()).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(cache.get_local("short"), None);
    assert_eq!(cache.get_local("default").as_deref(), Some("d"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(cache.get_local("default"), None, "default TTL is 60 s");
    assert_eq!(cache.stats().l1.stale, 2);
}

#[tokio::test(start_paused = true)]
async fn invalidate_tag_removes_only_the_entries_carrying_it() {
    let cache = cache();
    cache.insert_with("a".into(), "1".into(), EntryOptions::new().tag("t1").tag("all")).await;
    cache.insert_with("b".into(), "2".into(), EntryOptions::new().tags(["t2", "all"])).await;
    cache.insert("c".into(), "3".into()).await;
    cache.invalidate_tag("t1").await;
    assert_eq!(cache.get_local("a"), None);
    assert!(cache.get_local("b").is_some());
    cache.invalidate_tag("all").await;
    assert_eq!(cache.get_local("b"), None);
    assert!(cache.get_local("c").is_some());
    // A re-inserted key is not removed by a tag its old value carried.
    cache.insert_with("a".into(), "1".into(), EntryOptions::new().tag("old")).await;
    cache.insert_with("a".into(), "1b".into(), EntryOptions::new().tag("new")).await;
    cache.invalidate_tag("old").await;
    assert_eq!(cache.get_local("a").as_deref(), Some("1b"));
}

#[tokio::test(start_paused = true)]
async fn remove_drops_a_key() {
    let cache = cache();
    cache.insert("a".into(), "1".into()).await;
    cache.remove(&"a".to_owned()).await;
    assert_eq!(cache.get(&"a".to_owned()).await, None);
}

#[tokio::test(start_paused = true)]
async fn increment_is_atomic_without_l2() {
    let cache = cache();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let cache = cache.clone();
        tasks.spawn(async move { cache.increment(&"hits".to_owned(), 2).await });
    }
    while tasks.join_next().await.is_some() {}
    assert_eq!(cache.increment(&"hits".to_owned(), 0).await, 200);
}

#[tokio::test(start_paused = true)]
async fn a_loader_error_reaches_its_caller_only_and_is_not_cached() {
    let cache = cache();
    let failed: Result<String, &str> =
        cache.get_with_options("k".into(), EntryOptions::new(), async { Err("db down") }).await;
    assert_eq!(failed, Err("db down"));
    assert_eq!(cache.get_local("k"), None);
    let ok: Result<String, &str> =
        cache.get_with_options("k".into(), EntryOptions::new(), async { Ok("v".into()) }).await;
    assert_eq!(ok.as_deref(), Ok("v"));
}

#[tokio::test]
async fn l1_is_weighed_in_bytes_under_its_memory_cap() {
    let cache: TieredCache<u32, Vec<u8>> = TieredCache::builder().max_bytes(100_000).build().unwrap();
    for i in 0..1000u32 {
        cache.insert(i, vec![1u8; 1000]).await;
    }
    cache.run_pending_tasks();
    let stats = cache.stats();
    assert!(stats.l1_bytes <= 100_000, "{} bytes held", stats.l1_bytes);
    assert!(stats.l1_entries < 100);
}

#[tokio::test]
async fn configuration_errors_are_reported_at_build_time() {
    let deps = phalanx_core::Deps::new();
    let bad = TieredCacheConfig::default().with_max_bytes(0);
    let err = TieredCache::<String, String>::from_config(&bad, &deps).unwrap_err();
    assert_eq!(err.field(), "max_bytes");
    let err =
        TieredCache::<String, String>::from_config(&TieredCacheConfig::default().with_target_hit_ratio(85.0), &deps)
            .unwrap_err();
    assert_eq!(err.field(), "target_hit_ratio", "ratios are fractions");
    let parsed: TieredCacheConfig =
        serde_json::from_str(r#"{"max_bytes": 1024, "namespace": "x", "time_to_idle": "90s"}"#).unwrap();
    assert_eq!(parsed.default_ttl, Duration::from_secs(60));
    assert_eq!(parsed.time_to_idle, Some(Duration::from_secs(90)));
    assert!(serde_json::from_str::<TieredCacheConfig>(r#"{"default_ttl_ms": 1000}"#).is_err(), "old names refused");
    assert!(serde_json::from_str::<TieredCacheConfig>(r#"{"default_ttl": 1000}"#).is_err(), "a bare number");
    assert!(TieredCache::<String, String>::from_config(&parsed, &deps).is_ok());
}

#[tokio::test]
async fn lookups_are_exported_with_level_and_result_and_status_judges_the_hit_ratio() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let cache: TieredCache<String, String> =
        TieredCache::builder().meter(provider.meter("test")).target_hit_ratio(0.85).build().unwrap();
    cache.get_with("k".into(), async { "v".to_owned() }).await;
    for _ in 0..9 {
        cache.get_with("k".into(), async { unreachable!("cached") }).await;
    }
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let mut l1_hits = None;
    for rm in &metrics {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == phalanx_core::names::CACHE_LOOKUPS) {
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                    for dp in sum.data_points() {
                        let attrs: Vec<String> = dp.attributes().map(|kv| kv.value.to_string()).collect();
                        if attrs.contains(&"l1".to_owned()) && attrs.contains(&"hit".to_owned()) {
                            l1_hits = Some(dp.value());
                        }
                    }
                }
            }
        }
    }
    assert_eq!(l1_hits, Some(9));
    assert_eq!(cache.name(), "cache");
    assert_eq!(cache.report()["l1"]["hits"], 9);
    let target = &cache.targets()[0];
    assert_eq!(target.name, "cache_hit_ratio");
    assert_eq!(target.target, ">= 0.85");
    assert_eq!(target.met, Some(true), "9 hits of 10: {:?}", target.value);
    let untargeted: TieredCache<String, String> = TieredCache::builder().build().unwrap();
    assert!(untargeted.targets().is_empty(), "no target unless configured");
    let registry = phalanx_core::StatusRegistry::new();
    registry.register(cache.clone());
    registry.register_as("row_cache", untargeted);
    let names: Vec<String> = registry.sections().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["cache", "row_cache"]);
}

#[tokio::test(start_paused = true)]
async fn followers_wait_for_a_slow_leader_and_none_is_shed_on_its_own() {
    let cache: TieredCache<String, String> =
        TieredCache::builder().coalesce_timeout(Duration::from_secs(5)).build().unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (cache, loads) = (cache.clone(), loads.clone());
        tasks.spawn(async move {
            cache
                .get_with("cold".to_owned(), async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    "v".to_owned()
                })
                .await
        });
    }
    while let Some(v) = tasks.join_next().await {
        assert_eq!(v.unwrap(), "v");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "999 followers waited 3 s for the one load");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(cache.stats().coalesce_timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn a_follower_stops_waiting_after_the_coalesce_timeout_and_loads_itself() {
    let cache: TieredCache<String, String> =
        TieredCache::builder().coalesce_timeout(Duration::from_secs(1)).build().unwrap();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with("k".to_owned(), async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "leader".to_owned()
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let mine = cache.get_with("k".to_owned(), async { "follower".to_owned() }).await;
    assert_eq!(mine, "follower");
    assert_eq!(started.elapsed(), Duration::from_secs(1), "gave up after the coalesce timeout");
    assert_eq!(cache.stats().coalesce_timeouts, 1);
    assert_eq!(cache.get_local("k").as_deref(), Some("follower"), "and stored what it loaded");
    assert_eq!(leader.await.unwrap(), "leader");
}
