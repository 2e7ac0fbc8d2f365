//! The shared Redis handle against each deployment a user runs: a Redis Cluster (with a master
//! killed mid-test) and, with feature `tls`, a TLS-only server.

use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use phalanx_core::{
    redis::{bounded, connect_in_background, RedisSettings},
    testing::{skip, RedisCluster},
};

async fn until<T>(timeout: Duration, mut attempt: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(v) = attempt().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn the_pool_and_subscriber_work_on_a_cluster_and_survive_a_killed_master() {
    let Some(mut cluster) = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1)).await.unwrap() else {
        skip("the_pool_and_subscriber_work_on_a_cluster", "redis-server/redis-cli not found or no cluster");
        return;
    };
    let settings = RedisSettings::from_url(cluster.url()).with_command_timeout(std::time::Duration::from_millis(500));
    assert!(settings.is_cluster());
    let pool = settings.build_pool().unwrap();
    connect_in_background(&pool);
    pool.wait_for_connect().await.unwrap();

    // Keys spread over every master's slots.
    for i in 0..64 {
        let _: () = pool.set(format!("k{i}"), i, None, None, false).await.unwrap();
    }
    for i in 0..64 {
        let v: i64 = pool.get(format!("k{i}")).await.unwrap();
        assert_eq!(v, i);
    }

    // Classic pub/sub is cluster-wide: a message published through any node reaches a
    // subscriber connected to another.
    let subscriber = settings.builder().unwrap().build_subscriber_client().unwrap();
    connect_in_background(&subscriber);
    subscriber.wait_for_connect().await.unwrap();
    let mut messages = subscriber.message_rx();
    subscriber.subscribe("phx:channel").await.unwrap();
    let received = until(Duration::from_secs(5), async || {
        let _: i64 = pool.next().publish("phx:channel", "hello").await.ok()?;
        tokio::time::timeout(Duration::from_millis(200), messages.recv()).await.ok()?.ok()
    })
    .await
    .expect("a message published on the cluster reaches the subscriber");
    assert_eq!(received.value.as_string().as_deref(), Some("hello"));

    // Kill the master of one key: the round trip fails (bounded) until the replica takes over,
    // then the same pool serves that slot again without being rebuilt.
    let key = "k1".to_owned();
    let victim = cluster.master_of(&key).unwrap();
    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.kill(victim);
        assert!(cluster.wait_ok(Duration::from_secs(20)));
        cluster
    })
    .await
    .unwrap();
    // (A replica promoted before its first sync may have lost the key: a cache tolerates that,
    // so the test writes before it reads.)
    let served = until(Duration::from_secs(15), async || {
        let _: () = bounded(Duration::from_millis(500), pool.set(&key, 11, None, None, false)).await.ok()?;
        let v: Option<i64> = bounded(Duration::from_millis(500), pool.get(&key)).await.ok()?;
        v
    })
    .await;
    assert_eq!(served, Some(11), "the promoted replica serves the killed master's slot");
    let _: () = pool.set("k-after", 7, None, None, false).await.unwrap();
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn a_tls_server_is_reached_with_a_private_ca_and_refused_without_it() {
    use phalanx_core::testing::RedisServer;
    let Some(server) = tokio::task::spawn_blocking(RedisServer::start_tls).await.unwrap() else {
        skip("a_tls_server_is_reached_with_a_private_ca", "openssl or a TLS-capable redis-server not found");
        return;
    };
    assert!(server.url().starts_with("rediss://"));
    let mut settings = RedisSettings::from_url(server.url())
        .with_command_timeout(std::time::Duration::from_secs(1))
        .with_connect_timeout(std::time::Duration::from_secs(1));
    settings.tls_ca_file = server.ca_file();
    let pool = settings.build_pool().unwrap();
    connect_in_background(&pool);
    pool.wait_for_connect().await.unwrap();
    let _: () = pool.set("tls-key", "v", None, None, false).await.unwrap();
    let v: String = pool.get("tls-key").await.unwrap();
    assert_eq!(v, "v");

    // Trusting only the system's roots, the private CA's certificate is refused.
    let untrusted = RedisSettings::from_url(server.url()).with_connect_timeout(std::time::Duration::from_millis(500));
    let pool = untrusted.build_pool().unwrap();
    connect_in_background(&pool);
    let got: Result<Option<String>, _> = bounded(Duration::from_secs(1), pool.get("tls-key")).await;
    assert!(got.is_err(), "a certificate from an unknown CA must not be accepted");
}
