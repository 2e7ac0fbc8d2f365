//! Tag indexes in Redis stay bounded: members expire with their values and the index keys
//! with their last member; a purge unlinks in batches, never reading a whole set.

use std::time::Duration;

use fred::prelude::{ClientLike, Config, KeysInterface, Pool, SortedSetsInterface};
use phalanx_cache::{EntryOptions, TieredCache};
use phalanx_core::{
    redis::{RedisHandle, RedisSettings},
    testing::{redis_url, require_redis, unique_prefix},
};

/// Keys of the namespace, by SCAN (never KEYS on a shared server).
async fn keys_of(admin: &Pool, ns: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let (next, batch): (String, Vec<String>) = admin
            .next()
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor.clone(), "MATCH".into(), format!("{{{ns}}}:*"), "COUNT".into(), "1000".into()],
            )
            .await
            .unwrap();
        found.extend(batch);
        if next == "0" {
            return found;
        }
        cursor = next;
    }
}

async fn setup(test: &str) -> Option<(TieredCache<String, String>, Pool, String)> {
    require_redis(test)?;
    let ns = unique_prefix(test);
    let cache: TieredCache<String, String> = TieredCache::builder()
        .redis(
            RedisHandle::connect(
                RedisSettings::from_url(redis_url()).with_command_timeout(std::time::Duration::from_millis(2000)),
            )
            .unwrap(),
        )
        .namespace(ns.clone())
        .build()
        .unwrap();
    // Generous: a CI machine busy with other test binaries can be slow to subscribe.
    for _ in 0..1000 {
        if cache.is_coherent() {
            let admin = Pool::new(Config::from_url(&redis_url()).unwrap(), None, None, None, 1).unwrap();
            admin.init().await.unwrap();
            return Some((cache, admin, ns));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{test}: Redis answers PING, yet the cache never became coherent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_index_does_not_outgrow_the_live_values() {
    let Some((cache, admin, ns)) = setup("tags_bounded").await else { return };
    let short = || EntryOptions::new().ttl(Duration::from_secs(3));
    for i in 0..2000 {
        // Like `/items/1?r=<random>`: a new key each time, each with its own tag and a shared one.
        cache.insert_with(format!("items/1?r={i}"), "x".into(), short().tag("item:1").tag(format!("r:{i}"))).await;
        if i % 1000 == 999 {
            cache.flush().await;
        }
    }
    cache.flush().await;
    let shared_tag = format!("{{{ns}}}:t:item:1");
    assert_eq!(admin.next().zcard::<u64, _>(&shared_tag).await.unwrap(), 2000);
    assert!(keys_of(&admin, &ns).await.len() >= 4000);
    assert_eq!(cache.stats().l2_writes_dropped, 0);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    // One more store into the shared tag drops its expired members.
    cache.insert_with("items/1".into(), "live".into(), EntryOptions::new().tag("item:1")).await;
    cache.flush().await;
    assert_eq!(admin.next().zcard::<u64, _>(&shared_tag).await.unwrap(), 1, "expired members are dropped");
    let left = keys_of(&admin, &ns).await;
    // The live value, its one tag set, the epoch and the invalidation buckets.
    assert!(left.len() <= 4, "index keys expire with their values: {left:?}");
    assert!(admin.next().pttl::<i64, _>(&shared_tag).await.unwrap() > 0, "every tag set has a TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_of_a_large_tag_runs_in_batches_and_clears_every_value() {
    let Some((cache, admin, ns)) = setup("tags_purge").await else { return };
    for i in 0..1000 {
        cache.insert_with(format!("k{i}"), "x".into(), EntryOptions::new().tag("big")).await;
    }
    cache.insert_with("other".into(), "y".into(), EntryOptions::new().tag("small")).await;
    cache.flush().await;
    assert_eq!(keys_of(&admin, &ns).await.len(), 1000 + 1 + 2 + 2);
    cache.invalidate_tag("big").await;
    let left = keys_of(&admin, &ns).await;
    let mut left: Vec<&str> = left.iter().map(|k| k.rsplit_once('}').map_or(k.as_str(), |(_, rest)| rest)).collect();
    left.sort_unstable();
    assert_eq!(left, [":epoch", ":inv", ":t:small", ":v:other"]);
    assert_eq!(cache.stats().fallbacks, 0);
    cache.clear_local();
    assert_eq!(cache.get(&"k999".to_owned()).await, None);
    assert_eq!(cache.get(&"other".to_owned()).await.as_deref(), Some("y"));
}
