//! L1 keeps what it knows: Redis timeouts and a lost subscription never empty or shorten it,
//! the L2 circuit stops requests from waiting on a hung Redis, and a node whose subscription
//! was lost drops, once back, only what was invalidated meanwhile.

use std::time::Duration;

use fred::prelude::{ClientLike, Config, Pool};
use phalanx_cache::{EntryOptions, TieredCache};
use phalanx_core::{
    redis::{RedisHandle, RedisSettings},
    testing::{skip, unique_prefix, RedisServer},
};
use tokio::time::Instant;

/// A "Redis" that accepts connections and never answers (a hung server), on a port of this
/// crate's test range.
async fn hung_redis() -> u16 {
    for port in 17101..17120 {
        let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await else { continue };
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        return port;
    }
    panic!("no free port in 17101..17120");
}

#[tokio::test(start_paused = true)]
async fn redis_timeouts_never_flush_or_shorten_l1_and_the_circuit_stops_the_waiting() {
    let port = hung_redis().await;
    let settings = RedisSettings::from_url(format!("redis://127.0.0.1:{port}"))
        .with_command_timeout(std::time::Duration::from_millis(50));
    let cache: TieredCache<String, String> = TieredCache::builder()
        .redis(RedisHandle::connect(settings).unwrap())
        .namespace(unique_prefix("hung"))
        .default_ttl(Duration::from_secs(3600))
        .l2_read_timeout(Duration::from_millis(10))
        .l2_circuit(3, Duration::from_secs(1))
        .build()
        .unwrap();
    cache.insert_with("k".into(), "v".into(), EntryOptions::new().ttl(Duration::from_secs(3600))).await;
    let loaded = cache.get_with("loaded".into(), async { "L".to_owned() }).await;
    assert_eq!(loaded, "L");

    // Misses: a Redis that never completed a connection is skipped at once (the circuit is open
    // until the pool first connects); at most a few read deadlines are ever waited for.
    let started = Instant::now();
    for i in 0..100 {
        assert_eq!(cache.get(&format!("missing{i}")).await, None);
    }
    let waited = started.elapsed();
    assert!(waited <= Duration::from_millis(40), "3 timeouts of 10 ms, then no waiting: {waited:?}");
    assert!(cache.is_l2_circuit_open());
    let stats = cache.stats();
    assert!(stats.l2_short_circuits >= 97, "{stats:?}");

    // Ten minutes of a hung Redis: nothing in L1 is dropped or shortened.
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = cache.get(&"missing".to_owned()).await;
    }
    assert_eq!(cache.get_local("k").as_deref(), Some("v"));
    assert_eq!(cache.get_local("loaded").as_deref(), Some("L"));
    assert!(!cache.is_coherent(), "the channel is not subscribed");

    // After the cooldown one probe goes through at a time; the others do not wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let (p1, p2) = ("p1".to_owned(), "p2".to_owned());
    let (x, y) = tokio::join!(cache.get(&p1), cache.get(&p2));
    assert_eq!((x, y), (None, None));
    assert!(started.elapsed() <= Duration::from_millis(10), "one probe's deadline at most");
    assert!(cache.stats().l2_writes_dropped >= 1, "stores made while the circuit is open are dropped, counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_opens_the_circuit_at_once_keeps_l1_and_l2_returns_after() {
    let Some(server) = RedisServer::start() else {
        skip("a_hung_redis_opens_the_circuit_at_once_keeps_l1_and_l2_returns_after", "no redis-server binary");
        return;
    };
    let cache: TieredCache<String, String> = TieredCache::builder()
        .redis(
            RedisHandle::connect(
                RedisSettings::from_url(server.url()).with_command_timeout(std::time::Duration::from_millis(100)),
            )
            .unwrap(),
        )
        .namespace(unique_prefix("sigstop"))
        .l2_read_timeout(Duration::from_millis(20))
        .l2_circuit(3, Duration::from_millis(500))
        .build()
        .unwrap();
    until("subscribed", || cache.is_coherent()).await;
    until("pool connected", || !cache.is_l2_circuit_open()).await;
    cache.insert("k".into(), "v".into()).await;
    cache.flush().await;

    assert!(server.pause(), "SIGSTOP");
    let started = std::time::Instant::now();
    for i in 0..50 {
        assert_eq!(cache.get(&format!("missing{i}")).await, None);
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(200), "3 read deadlines of 20 ms, then none: {waited:?}");
    assert!(cache.is_l2_circuit_open());
    let stats = cache.stats();
    assert!(stats.fallbacks >= 3 && stats.l2_short_circuits >= 45, "{stats:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cache.get_local("k").as_deref(), Some("v"), "timeouts neither empty nor shorten L1");

    assert!(server.resume(), "SIGCONT");
    let started = std::time::Instant::now();
    let mut served = None;
    while started.elapsed() < Duration::from_secs(5) && served.is_none() {
        cache.insert("back".into(), "B".into()).await;
        cache.flush().await;
        cache.clear_local();
        served = cache.get(&"back".to_owned()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("L2 used again {:?} after SIGCONT", started.elapsed());
    assert_eq!(served.as_deref(), Some("B"), "L2 is used again within 5 s");
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(5), "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_drops_only_what_was_invalidated_meanwhile() {
    let Some(server) = RedisServer::start() else {
        skip("a_lost_subscription_drops_only_what_was_invalidated_meanwhile", "no redis-server binary");
        return;
    };
    let ns = unique_prefix("reconcile");
    let settings = RedisSettings::from_url(server.url()).with_command_timeout(std::time::Duration::from_millis(500));
    // Two handles with one node id: each ignores the other's messages as its own, so what
    // `writer` invalidates reaches `reader` only through the epoch kept in Redis, exactly as a
    // message lost while a subscription is down.
    let node = || -> TieredCache<String, String> {
        TieredCache::builder()
            .redis(RedisHandle::connect(settings.clone()).unwrap())
            .namespace(ns.clone())
            .node_id("same")
            .build()
            .unwrap()
    };
    let (reader, writer) = (node(), node());
    until("subscribed", || reader.is_coherent() && writer.is_coherent()).await;
    for (k, tag) in [("k1", "t1"), ("k2", "t2"), ("k3", "t3")] {
        reader.insert_with(k.into(), k.into(), EntryOptions::new().tag(tag)).await;
    }
    reader.flush().await;

    writer.invalidate_tag("t1").await;
    writer.remove(&"k3".to_owned()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(reader.get_local("k1").as_deref(), Some("k1"), "the invalidation was not heard");

    // The subscriber's connection drops; it reconnects, resubscribes and reconciles.
    let admin = Pool::new(Config::from_url(&server.url()).unwrap(), None, None, None, 1).unwrap();
    admin.init().await.unwrap();
    let killed: u64 = admin.next().custom(fred::cmd!("CLIENT"), vec!["KILL", "TYPE", "pubsub"]).await.unwrap();
    assert!(killed >= 1);
    until("stale entries dropped", || reader.get_local("k1").is_none() && reader.get_local("k3").is_none()).await;
    assert_eq!(reader.get_local("k2").as_deref(), Some("k2"), "what was not invalidated stays");
    until("coherent again", || reader.is_coherent()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_redis_could_not_take_is_sent_again_when_it_is_back() {
    let Some(mut server) = RedisServer::start() else {
        skip("an_invalidation_redis_could_not_take_is_sent_again_when_it_is_back", "no redis-server binary");
        return;
    };
    let ns = unique_prefix("replay");
    let settings = RedisSettings::from_url(server.url()).with_command_timeout(std::time::Duration::from_millis(200));
    let node = |id: &str| -> TieredCache<String, String> {
        TieredCache::builder()
            .redis(RedisHandle::connect(settings.clone()).unwrap())
            .namespace(ns.clone())
            .node_id(id)
            .build()
            .unwrap()
    };
    let (a, b) = (node("a"), node("b"));
    until("subscribed", || a.is_coherent() && b.is_coherent()).await;
    until("pools connected", || !a.is_l2_circuit_open() && !b.is_l2_circuit_open()).await;
    b.get_with_options("row".into(), EntryOptions::new().tag("item"), async { Ok::<_, ()>("old".to_owned()) })
        .await
        .unwrap();

    server.stop();
    a.invalidate_tag("item").await;
    assert_eq!(b.get_local("row").as_deref(), Some("old"), "B cannot hear it while Redis is gone");
    assert!(server.restart());
    until("the purge is sent again and reaches B", || b.get_local("row").is_none()).await;
}
