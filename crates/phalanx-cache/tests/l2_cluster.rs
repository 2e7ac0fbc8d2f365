//! TieredCache on a private Redis Cluster (3 masters, one replica each): L2 shared across
//! nodes, tag purges and invalidations reaching every node, and a master killed mid-test.

use std::time::{Duration, Instant};

use phalanx_cache::{EntryOptions, TieredCache};
use phalanx_core::{
    redis::{RedisHandle, RedisSettings},
    testing::{skip, unique_prefix, RedisCluster},
};

type Node = TieredCache<String, String>;

fn node(url: &str, ns: &str, id: &str) -> Node {
    TieredCache::builder()
        .redis(
            RedisHandle::connect(
                RedisSettings::from_url(url).with_command_timeout(std::time::Duration::from_millis(500)),
            )
            .unwrap(),
        )
        .namespace(ns)
        .node_id(id)
        .l2_read_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `writer` stores, `reader` reads it from L2 (its L1 cleared), retried for up to 20 s.
async fn served_from_l2(writer: &Node, reader: &Node, key: &str, value: &str, tag: Option<&str>) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let options = tag.map_or_else(EntryOptions::new, |t| EntryOptions::new().tag(t));
        writer.insert_with(key.into(), value.into(), options).await;
        writer.flush().await;
        reader.clear_local();
        if let Some(v) = reader.get(&key.to_owned()).await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_cache_on_a_cluster_shares_l2_purges_tags_and_survives_a_master_failover() {
    let Some(mut cluster) = RedisCluster::start(3, 1) else {
        skip("tiered_cache_on_a_cluster_shares_l2_purges_tags_and_survives_a_master_failover", "no cluster");
        return;
    };
    let url = cluster.url();
    let ns = unique_prefix("cluster");
    let (a, b) = (node(&url, &ns, "a"), node(&url, &ns, "b"));
    until("subscribed", Duration::from_secs(10), || a.is_coherent() && b.is_coherent()).await;
    // The pools connect to every master in the background: until they have, a store may be
    // dropped (counted), so the first one is retried.
    let served = served_from_l2(&a, &b, "row:1", "v1", Some("item:1")).await;
    assert_eq!(served.as_deref(), Some("v1"), "L2 hit across two caches");
    let before = (a.stats(), b.stats());

    // Tag purge on B: A's L1 is dropped through the channel, L2 cleared.
    assert_eq!(a.get_local("row:1").as_deref(), Some("v1"));
    b.invalidate_tag("item:1").await;
    until("purge reaches A", Duration::from_secs(2), || a.get_local("row:1").is_none()).await;
    assert_eq!(a.get(&"row:1".to_owned()).await, None);

    // Key invalidation across nodes: B's insert drops A's copy.
    a.get_with("row:2".into(), async { "old".to_owned() }).await;
    a.flush().await;
    b.insert("row:2".into(), "new".into()).await;
    b.flush().await;
    until("insert reaches A", Duration::from_secs(2), || a.get_local("row:2").is_none()).await;
    assert_eq!(a.get(&"row:2".to_owned()).await.as_deref(), Some("new"));
    for (now, then) in [(a.stats(), before.0), (b.stats(), before.1)] {
        assert_eq!((now.fallbacks, now.l2_writes_dropped), (then.fallbacks, then.l2_writes_dropped), "{now:?}");
    }

    // The master serving the namespace's slot is killed: L1 keeps serving, and once a replica
    // has taken over, L2 is written and read again.
    let master = cluster.master_of(&format!("{{{ns}}}")).expect("slot owner");
    cluster.kill(master);
    assert_eq!(a.get_local("row:2").as_deref(), Some("new"), "L1 is kept through the failover");
    assert!(cluster.wait_ok(Duration::from_secs(20)), "a replica takes over");
    let started = Instant::now();
    let served = served_from_l2(&b, &a, "row:3", "after failover", None).await;
    eprintln!("L2 served again {:?} after the cluster was ok", started.elapsed());
    assert_eq!(served.as_deref(), Some("after failover"));
    assert_eq!(b.get_local("row:2").as_deref(), Some("new"), "L1 was not emptied by the failover");
}
