//! L1 hit ratio on a Zipf(1.0) trace with capacity at 1 % of the keys: TieredCache (moka,
//! TinyLFU admission, plus the doorkeeper) against an LRU (`lru` crate) of the same number of entries.
//!
//! `cargo bench -p phalanx-cache --bench zipf`

use std::num::NonZeroUsize;

use phalanx_cache::TieredCache;
use rand::{rngs::StdRng, Rng, SeedableRng};

const KEYS: usize = 100_000;
const CAPACITY: usize = KEYS / 100;
const REQUESTS: usize = 1_000_000;

/// Key ranks drawn with P(rank k) ∝ 1/k (inverse CDF by binary search).
fn zipf_trace(seed: u64) -> Vec<u64> {
    let mut cdf = Vec::with_capacity(KEYS);
    let mut sum = 0.0;
    for k in 1..=KEYS {
        sum += 1.0 / k as f64;
        cdf.push(sum);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    (0..REQUESTS)
        .map(|_| {
            let u = rng.random::<f64>() * sum;
            cdf.partition_point(|&c| c < u) as u64
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names neither bench skips this one.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"zipf".contains(a.as_str())) {
        return;
    }
    let seed = std::env::var("ZIPF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(42);
    let trace = zipf_trace(seed);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (moka_hits, lru_hits) = rt.block_on(async {
        // Size the byte cap to exactly CAPACITY entries: weigh one entry first.
        let probe: TieredCache<u64, ()> = TieredCache::builder().build().unwrap();
        probe.insert(1, ()).await;
        probe.run_pending_tasks();
        let weight = probe.stats().l1_bytes;
        let cache: TieredCache<u64, ()> = TieredCache::builder().max_bytes(weight * CAPACITY as u64).build().unwrap();
        let mut lru = lru::LruCache::<u64, ()>::new(NonZeroUsize::new(CAPACITY).unwrap());
        let (mut moka_hits, mut lru_hits) = (0usize, 0usize);
        for &key in &trace {
            if cache.get_local(&key).is_some() {
                moka_hits += 1;
            } else {
                cache.insert(key, ()).await;
            }
            if lru.get(&key).is_some() {
                lru_hits += 1;
            } else {
                lru.put(key, ());
            }
        }
        cache.run_pending_tasks();
        assert!(cache.stats().l1_entries as usize <= CAPACITY);
        (moka_hits, lru_hits)
    });
    let moka = moka_hits as f64 / REQUESTS as f64;
    let lru = lru_hits as f64 / REQUESTS as f64;
    println!("zipf(1.0): {KEYS} keys, capacity {CAPACITY} entries, {REQUESTS} requests");
    println!("  TieredCache L1 (moka, TinyLFU) hit ratio: {:.2} %", moka * 100.0);
    println!("  LRU (lru crate)                hit ratio: {:.2} %", lru * 100.0);
    println!("  difference: {:+.2} points (target: >= +10)", (moka - lru) * 100.0);
}
