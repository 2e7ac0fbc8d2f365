//! Memory of the in-process store with 1,000,000 distinct keys, against the stated cap.
//!
//! `cargo bench -p phalanx-ratelimit --bench memory`

use std::{convert::Infallible, hint::black_box};

use futures_util::FutureExt;
use http::{Request, Response};
use phalanx_core::ClientKey;
use phalanx_ratelimit::{Policy, Quota, RateLimitLayer};
use tower::{Layer, ServiceExt};

const KEYS: usize = 1_000_000;
/// The stated cap: table bytes per live key of one policy.
const CAP_BYTES_PER_KEY: usize = 48;

/// Resident memory of this process, from /proc (Linux); `None` elsewhere.
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let layer = RateLimitLayer::builder().policy(Policy::new("per-client", Quota::per_hour(100))).build().unwrap();
    let service = layer.layer(tower::service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) }));
    // Keys are made up front so their strings are not counted.
    let keys: Vec<ClientKey> = (0..KEYS).map(|i| ClientKey::new(format!("id:client-{i:07}"))).collect();
    let before = resident_bytes();
    for key in &keys {
        let mut req = Request::new(());
        req.extensions_mut().insert(key.clone());
        let res = service.clone().oneshot(req).now_or_never().expect("ready at once").unwrap();
        black_box(res);
    }
    let after = resident_bytes();
    assert_eq!(layer.local_keys(), KEYS);
    let table = layer.local_bytes();
    println!(
        "ratelimit_memory: {KEYS} keys, table {:.1} MiB = {:.1} bytes/key (cap {CAP_BYTES_PER_KEY} bytes/key = {:.1} MiB)",
        table as f64 / (1 << 20) as f64,
        table as f64 / KEYS as f64,
        (CAP_BYTES_PER_KEY * KEYS) as f64 / (1 << 20) as f64,
    );
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        println!(
            "ratelimit_memory: resident memory grew {:.1} MiB = {:.1} bytes/key",
            grown as f64 / (1 << 20) as f64,
            grown as f64 / KEYS as f64
        );
    }
    assert!(table <= CAP_BYTES_PER_KEY * KEYS, "over the cap: {table} bytes");
}
