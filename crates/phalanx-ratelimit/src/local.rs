//! The in-process store: one TAT per (client key, policy) in a sharded map of 64-bit digests.
//!
//! Keys are kept as a 64-bit keyed digest of the client key (seeded at random per store, so
//! collisions cannot be chosen by clients; with a million keys the chance of any collision is
//! about 3 in 100 million), and values are a single `u64`, so an entry costs 16 bytes plus the
//! table's control byte and slack. An entry whose TAT is in the past means exactly the same as
//! no entry, so idle entries are dropped without changing any decision: each shard sweeps them
//! out whenever it has doubled since its last sweep.

use std::{
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    net::Ipv4Addr,
};

use hashbrown::HashMap;
use spin::{
    mutex::{SpinMutex, SpinMutexGuard},
    relax::Yield,
};

/// A shard's lock. Held for one table probe and a little arithmetic, so it is taken with one
/// atomic exchange and released with a plain store; a waiter yields its thread rather than
/// spinning on a holder the OS may have preempted.
pub(crate) type Mutex<T> = SpinMutex<T, Yield>;
type MutexGuard<'a, T> = SpinMutexGuard<'a, T>;

use crate::quota::{Gcra, Outcome, Verdict, OUTCOMES};

/// The most policies one layer evaluates together.
pub(crate) const MAX_POLICIES: usize = 8;

/// Shards never sweep below this many entries: small maps are cheap to keep.
const MIN_SWEEP: usize = 1024;

/// The verdict of each policy of a decision, without allocating.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Verdicts {
    len: usize,
    items: [Verdict; MAX_POLICIES],
}

impl Verdicts {
    pub(crate) fn push(&mut self, v: Verdict) {
        self.items[self.len] = v;
        self.len += 1;
    }

    /// No verdict at all (Redis gave no answer and nothing local was asked).
    pub(crate) fn none() -> Self {
        Self::default()
    }

    pub(crate) fn as_slice(&self) -> &[Verdict] {
        &self.items[..self.len]
    }

    /// The verdicts with their policy indexes.
    pub(crate) fn known(&self) -> impl Iterator<Item = (usize, &Verdict)> {
        self.as_slice().iter().enumerate()
    }

    /// The first denying policy.
    pub(crate) fn denied_by(&self) -> Option<usize> {
        self.as_slice().iter().position(|v| !v.allowed)
    }

    pub(crate) fn allowed(&self) -> bool {
        self.as_slice().iter().all(|v| v.allowed)
    }

    /// The longest wait any denying policy asks for.
    pub(crate) fn retry_after_us(&self) -> u64 {
        self.as_slice().iter().map(|v| v.retry_after_us).max().unwrap_or(0)
    }
}

/// Something stored that becomes meaningless at a known time.
pub(crate) trait Expiring: Copy {
    /// Microseconds since the epoch after which the entry may be dropped.
    fn expires_at(&self) -> u64;
}

impl Expiring for u64 {
    fn expires_at(&self) -> u64 {
        *self
    }
}

/// The keys are already uniform digests: hashing them again would only cost time.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type DigestMap<V> = HashMap<u64, V, BuildHasherDefault<IdentityHasher>>;

/// Keeps each shard's lock on its own cache line.
#[repr(align(64))]
struct Padded<T>(T);

pub(crate) struct Shard<V, E = ()> {
    map: DigestMap<V>,
    sweep_at: usize,
    /// Whatever else is kept per shard under the same lock.
    pub(crate) extra: E,
}

impl<V: Expiring, E> Shard<V, E> {
    pub(crate) fn get(&self, key: u64) -> Option<V> {
        self.map.get(&key).copied()
    }

    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.map.get_mut(&key)
    }

    pub(crate) fn insert(&mut self, key: u64, value: V, now: u64) {
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = value;
            return;
        }
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, v| v.expires_at() > now);
            let live = self.map.len();
            if self.map.capacity() > 4 * live.max(MIN_SWEEP) {
                self.map.shrink_to(2 * live);
            }
            self.sweep_at = (2 * live).max(MIN_SWEEP);
        }
        self.map.insert(key, value);
    }
}

/// One shard with its lock, on cache lines of its own.
type LockedShard<V, E> = Padded<Mutex<Shard<V, E>>>;

/// A map of digests to small values in independently locked shards, each shard with an `E`
/// beside its map.
pub(crate) struct ShardedMap<V, E = ()> {
    shards: Box<[LockedShard<V, E>]>,
    mask: u64,
}

impl<V: Expiring, E: Default> ShardedMap<V, E> {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let count = (cores * 16).next_power_of_two().clamp(16, 1024);
        let shards = (0..count)
            .map(|_| Padded(Mutex::new(Shard { map: DigestMap::default(), sweep_at: MIN_SWEEP, extra: E::default() })))
            .collect();
        ShardedMap { shards, mask: count as u64 - 1 }
    }

    /// Entries, table bytes and the fold of every `extra`, taking each shard's lock once: a
    /// status scrape costs each shard one short lock, however many figures it reports.
    pub(crate) fn snapshot<T>(&self, init: T, mut f: impl FnMut(T, &E) -> T) -> (usize, usize, T) {
        self.shards.iter().fold((0, 0, init), |(len, bytes, acc), s| {
            let shard = s.0.lock();
            #[cfg(test)]
            LOCKS_TAKEN.with(|n| n.set(n.get() + 1));
            (len + shard.map.len(), bytes + shard.map.allocation_size(), f(acc, &shard.extra))
        })
    }

    /// Shards, each with its own lock.
    #[cfg(test)]
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard of a digest. The shard is chosen from middle bits: the table inside uses the
    /// low bits for its buckets and the top seven as tags.
    pub(crate) fn lock(&self, digest: u64) -> MutexGuard<'_, Shard<V, E>> {
        #[cfg(test)]
        LOCKS_TAKEN.with(|n| n.set(n.get() + 1));
        self.shards[((digest >> 32) & self.mask) as usize].0.lock()
    }

    /// Entries held, idle ones not yet swept included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.snapshot((), |(), _| ()).0
    }

    /// Drop every expired entry now (the shards also do this by themselves as they grow).
    pub(crate) fn sweep(&self, now: u64) {
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock();
            shard.map.retain(|_, v| v.expires_at() > now);
            let live = shard.map.len();
            shard.map.shrink_to(2 * live);
            shard.sweep_at = (2 * live).max(MIN_SWEEP);
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Shard locks taken by this thread (unit tests count what a status report costs).
    pub(crate) static LOCKS_TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Add one shard's tally into a sum.
pub(crate) fn add_tally(mut sum: Tally, tally: &Tally) -> Tally {
    for (s, t) in sum.iter_mut().zip(tally) {
        for (s, t) in s.iter_mut().zip(t) {
            *s += t;
        }
    }
    sum
}

/// Decisions per policy and outcome made in one shard, counted under the shard's lock: a
/// decision costs no atomic operation on a line every core writes.
pub(crate) type Tally = [[u64; OUTCOMES]; MAX_POLICIES];

/// GCRA state of every (client, policy) pair seen recently, and the decisions made on it.
pub(crate) struct LocalStore {
    tats: ShardedMap<u64, Tally>,
    hasher: foldhash::quality::RandomState,
    /// Per-policy salts: a client's entries for different policies live in one shard (so a
    /// decision over several policies takes one lock) under different digests.
    salts: [u64; MAX_POLICIES],
}

impl LocalStore {
    pub(crate) fn new() -> Self {
        let hasher = foldhash::quality::RandomState::default();
        let salts = std::array::from_fn(|i| hasher.hash_one(("policy salt", i)) | 1);
        LocalStore { tats: ShardedMap::new(), hasher, salts }
    }

    /// The digest of a client key. An IPv4 key (`ip:a.b.c.d`) digests to the same value as
    /// [`LocalStore::digest_ipv4`] of its address, so a client keeps one entry whether its key
    /// was resolved by `ClassifyLayer` or by the limiter itself.
    pub(crate) fn digest(&self, key: &str) -> u64 {
        match key.strip_prefix("ip:").and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
            Some(ip) => self.digest_ipv4(ip),
            None => self.hasher.hash_one(key),
        }
    }

    /// The digest of the key of an IPv4 client, without spelling the key out.
    pub(crate) fn digest_ipv4(&self, ip: Ipv4Addr) -> u64 {
        self.hasher.hash_one(u32::from(ip))
    }

    /// Judge one request of client `digest` against every policy: all must allow, and only
    /// then is each TAT advanced. The decision is counted as `allowed_as` for every policy when
    /// all allow, else as limited for each policy that denied.
    pub(crate) fn decide(&self, digest: u64, gcras: &[Gcra], now: u64, allowed_as: Outcome, verdicts: &mut Verdicts) {
        if let [gcra] = gcras {
            return self.decide_one(digest, gcra, now, allowed_as, verdicts);
        }
        let mut tats = [0u64; MAX_POLICIES];
        let tats = &mut tats[..gcras.len()];
        let mut shard = self.tats.lock(digest);
        for (i, tat) in tats.iter_mut().enumerate() {
            *tat = shard.get(digest ^ self.salts[i]).unwrap_or(0);
        }
        if judge(gcras, tats, now, verdicts) {
            for (i, tat) in tats.iter().enumerate() {
                shard.insert(digest ^ self.salts[i], *tat, now);
                shard.extra[i][allowed_as as usize] += 1;
            }
        } else {
            for (i, v) in verdicts.as_slice().iter().enumerate() {
                if !v.allowed {
                    shard.extra[i][Outcome::Limited as usize] += 1;
                }
            }
        }
    }

    /// [`LocalStore::decide`] for a single policy: one probe of the table for a known key.
    fn decide_one(&self, digest: u64, gcra: &Gcra, now: u64, allowed_as: Outcome, verdicts: &mut Verdicts) {
        let key = digest ^ self.salts[0];
        let mut shard = self.tats.lock(digest);
        let verdict = match shard.get_mut(key) {
            Some(tat) => {
                let (verdict, new_tat) = gcra.check(*tat, now);
                if verdict.allowed {
                    *tat = new_tat;
                }
                verdict
            }
            None => {
                let (verdict, new_tat) = gcra.check(0, now);
                if verdict.allowed {
                    shard.insert(key, new_tat, now);
                }
                verdict
            }
        };
        let outcome = if verdict.allowed { allowed_as } else { Outcome::Limited };
        shard.extra[0][outcome as usize] += 1;
        verdicts.push(verdict);
    }

    /// Entries, table bytes and decisions per policy and outcome, each shard locked once.
    pub(crate) fn snapshot(&self) -> (usize, usize, Tally) {
        self.tats.snapshot(Tally::default(), add_tally)
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.tats.len()
    }

    #[cfg(test)]
    pub(crate) fn shard_count(&self) -> usize {
        self.tats.shard_count()
    }

    /// Drop idle entries now.
    pub(crate) fn sweep(&self, now: u64) {
        self.tats.sweep(now)
    }
}

/// Judge one request given each policy's stored TAT (in `tats`), pushing each verdict. When
/// every policy allows, `tats` is left holding the TATs to store and `true` is returned. A
/// denial consumes nothing, so a policy that would have passed reports its state as is.
pub(crate) fn judge(gcras: &[Gcra], tats: &mut [u64], now: u64, verdicts: &mut Verdicts) -> bool {
    let first = verdicts.len;
    let mut allowed = true;
    for (gcra, tat) in gcras.iter().zip(tats.iter()) {
        let (verdict, _) = gcra.check(*tat, now);
        allowed &= verdict.allowed;
        verdicts.push(verdict);
    }
    for (i, (gcra, tat)) in gcras.iter().zip(tats.iter_mut()).enumerate() {
        let verdict = &mut verdicts.items[first + i];
        if allowed {
            *tat = gcra.check(*tat, now).1;
        } else if verdict.allowed {
            *verdict = gcra.unconsumed(*tat, now);
        }
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Quota;

    impl LocalStore {
        fn verdicts(&self, digest: u64, gcras: &[Gcra], now: u64) -> Verdicts {
            let mut v = Verdicts::default();
            self.decide(digest, gcras, now, Outcome::Allowed, &mut v);
            v
        }
    }

    #[test]
    fn all_policies_must_pass_and_a_denial_consumes_nothing() {
        let store = LocalStore::new();
        let wide = Quota::per_second(100).gcra("wide").unwrap();
        let narrow = Quota::per_second(1).with_burst(2).gcra("narrow").unwrap();
        let d = store.digest("id:a");
        let now = 1_000_000_000;
        assert!(store.verdicts(d, &[wide, narrow], now).allowed());
        assert!(store.verdicts(d, &[wide, narrow], now).allowed());
        let denied = store.verdicts(d, &[wide, narrow], now);
        assert!(!denied.allowed());
        assert_eq!(denied.as_slice()[0].remaining(&wide), 98, "the wide policy was not charged for the denial");
        assert_eq!(denied.retry_after_us(), 1_000_000);
        assert!(store.verdicts(store.digest("id:b"), &[wide, narrow], now).allowed());
    }

    #[test]
    fn an_ipv4_key_digests_like_its_address() {
        let store = LocalStore::new();
        let ip = Ipv4Addr::new(192, 168, 10, 7);
        assert_eq!(store.digest("ip:192.168.10.7"), store.digest_ipv4(ip));
        assert_ne!(store.digest("ip:192.168.10.8"), store.digest_ipv4(ip));
        assert_ne!(store.digest("id:192.168.10.7"), store.digest_ipv4(ip));
        assert_ne!(store.digest("ip:2001:db8::/64"), store.digest("ip:2001:db8:0:1::/64"));
    }

    #[test]
    fn one_policy_decides_like_several() {
        let one = LocalStore::new();
        let g = Quota::per_second(10).with_burst(3).gcra("p").unwrap();
        let now = 7_000_000_000;
        let d = one.digest("id:a");
        let mut reference = [0u64];
        for step in 0..20u64 {
            let at = now + step * 40_000;
            let got = one.verdicts(d, &[g], at);
            let mut expected = Verdicts::default();
            let allowed = judge(&[g], &mut reference, at, &mut expected);
            assert_eq!(got.allowed(), allowed, "step {step}");
            assert_eq!(got.as_slice()[0].remaining(&g), expected.as_slice()[0].remaining(&g), "step {step}");
            assert_eq!(got.retry_after_us(), expected.retry_after_us(), "step {step}");
        }
    }

    #[test]
    fn idle_entries_are_swept_without_changing_decisions() {
        let store = LocalStore::new();
        let g = Quota::per_second(10).gcra("p").unwrap();
        let now = 5_000_000_000;
        for i in 0..50_000 {
            store.verdicts(store.digest(&format!("id:{i}")), &[g], now);
        }
        assert_eq!(store.len(), 50_000);
        // 100 ms later every key is idle again: new keys push the old ones out as shards grow.
        for i in 0..50_000 {
            store.verdicts(store.digest(&format!("id:new{i}")), &[g], now + 1_000_000);
        }
        assert!(store.len() < 100_000, "idle keys were swept: {}", store.len());
        store.sweep(now + 2_000_000);
        assert_eq!(store.len(), 0);
    }
}
