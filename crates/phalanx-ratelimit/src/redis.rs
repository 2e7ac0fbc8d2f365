//! The Redis store: each node leases a slice of every active key's quota from Redis and decides
//! locally; leases are refilled, credits charged and node counts announced by one background
//! task, so a request never waits on Redis.
//!
//! Per (client, policy) Redis keeps the GCRA theoretical arrival time (TAT). A lease of `k`
//! tokens advances it by `k` emission intervals, only as far as GCRA allows, so Redis never
//! grants more than the quota. A node that meets a key for the first time may spend a credit of
//! one lease before Redis has answered; that credit is charged to Redis unconditionally at the
//! key's first synchronisation. See the crate README for the resulting bound.

use std::{
    hash::BuildHasher as _,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use fred::types::scripts::Script;
use phalanx_core::{redis::RedisHandle, ClientKey, Tier};
use tokio::sync::Notify;

use crate::{
    clock::Clock,
    config::RedisLimitConfig,
    local::{add_tally, Expiring, Mutex, ShardedMap, Tally, Verdicts, MAX_POLICIES},
    quota::{Gcra, Outcome, Verdict, OUTCOMES},
};

/// Charges a node's credit and grants it a lease, for every policy of one client (one hash
/// slot). KEYS: one per policy. ARGV[1]: now in microseconds, or -1 to read the server's
/// clock; then per policy its emission interval, tolerance, the tokens to charge unconditionally
/// (the credit spent before this node had heard from Redis) and the tokens wanted. A lease is
/// granted only as far as GCRA allows. Returns `{now, granted_1, tat_1, ..., granted_n, tat_n}`;
/// each key expires when its quota is fully restored.
const LEASE_LUA: &str = r"
local now = tonumber(ARGV[1])
if now < 0 then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local result = {now}
for i = 1, #KEYS do
  local emission = tonumber(ARGV[4 * i - 2])
  local tolerance = tonumber(ARGV[4 * i - 1])
  local charge = tonumber(ARGV[4 * i])
  local want = tonumber(ARGV[4 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  tat = tat + charge * emission
  local granted = math.floor((now + tolerance - tat) / emission)
  if granted < 0 then granted = 0 end
  if granted > want then granted = want end
  tat = tat + granted * emission
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
  end
  result[2 * i] = granted
  result[2 * i + 1] = tat
end
return result
";

/// Announces a node and counts the live ones, on Redis's clock. KEYS[1]: the node set (one
/// slot). ARGV: the node's id, the announcement's lifetime in milliseconds.
const HEARTBEAT_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
";

/// How often a failing Redis is probed.
const PROBE: Duration = Duration::from_millis(100);

/// Synchronisations sent in one round at most; the rest wait for the next round.
const MAX_BATCH: usize = 512;

/// The Redis store of one layer, before it runs: the process's shared handle and the store's
/// settings (checked by the layer's builder).
pub(crate) struct RedisStore {
    redis: RedisHandle,
    prefix: String,
    deadline: Duration,
    server_time: bool,
    lease_fraction: f64,
    heartbeat: Duration,
    down_after: Duration,
    max_queue: usize,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("deadline", &self.deadline)
            .field("server_time", &self.server_time)
            .field("lease_fraction", &self.lease_fraction)
            .field("heartbeat", &self.heartbeat)
            .field("down_after", &self.down_after)
            .finish()
    }
}

impl RedisStore {
    /// A store on the shared handle with these (already validated) settings.
    pub(crate) fn new(redis: RedisHandle, config: &RedisLimitConfig) -> Self {
        RedisStore {
            redis,
            prefix: config.prefix.clone(),
            deadline: config.deadline,
            server_time: config.server_time,
            lease_fraction: config.lease_fraction,
            heartbeat: config.heartbeat,
            down_after: config.down_after,
            max_queue: config.max_queue,
        }
    }

    /// The lease of each policy per tier: `lease_fraction` of its burst, at least one token.
    fn leases(&self, gcras: &[[Gcra; MAX_POLICIES]; 4], policies: usize) -> [[u32; MAX_POLICIES]; 4] {
        let mut leases = [[1u32; MAX_POLICIES]; 4];
        for (row, gcras) in leases.iter_mut().zip(gcras) {
            for (lease, gcra) in row.iter_mut().zip(&gcras[..policies]) {
                let burst = gcra.tolerance_us / gcra.emission_us;
                *lease = ((burst as f64 * self.lease_fraction) as u64).clamp(1, u64::from(u32::MAX / 2)) as u32;
            }
        }
        leases
    }

    /// The running store, for a layer with these policies on this clock.
    pub(crate) fn start(self, names: &[&str], gcras: &[[Gcra; MAX_POLICIES]; 4], clock: Clock) -> Arc<Leases> {
        let leases = self.leases(gcras, names.len());
        // An entry outlives its key's idleness by the longest full-restore time of any tier, so
        // a client that keeps coming keeps its entry and its credit is not granted twice.
        let idle_us = gcras.iter().flat_map(|row| &row[..names.len()]).map(|g| g.tolerance_us).max().unwrap_or(0);
        let node_id = format!("{:016x}", foldhash::quality::RandomState::default().hash_one(std::process::id()));
        let leases = Arc::new_cyclic(|me| Leases {
            me: me.clone(),
            lease_script: Script::from_lua(LEASE_LUA),
            heartbeat_script: Script::from_lua(HEARTBEAT_LUA),
            nodes_key: format!("{}:{{nodes}}", self.prefix),
            policy_names: names.iter().map(|n| n.to_string()).collect(),
            gcras: *gcras,
            policies: names.len(),
            leases,
            idle_us: idle_us.max(1_000_000),
            node_id,
            clock,
            entries: ShardedMap::new(),
            queue: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            down: AtomicBool::new(false),
            nodes: AtomicU32::new(1),
            in_flight: AtomicUsize::new(0),
            syncs: AtomicU64::new(0),
            sync_failures: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            store: self,
        });
        leases.ensure_task();
        leases
    }
}

/// What a node knows of one client on Redis.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Tokens this node may still spend, per policy.
    balance: [i32; MAX_POLICIES],
    /// Our clock's time at which each policy's quota is fully restored, as of the last sync.
    reset_at: [u64; MAX_POLICIES],
    /// No sync before this: Redis said the quota has no token for us until then.
    retry_at: u64,
    /// When the entry may be dropped.
    expires: u64,
    /// The credit of a new entry has been charged to Redis.
    charged: bool,
    /// A sync is queued or in flight.
    syncing: bool,
}

impl Expiring for Lease {
    fn expires_at(&self) -> u64 {
        if self.syncing {
            u64::MAX
        } else {
            self.expires
        }
    }
}

/// A key waiting for a synchronisation.
struct Job {
    digest: u64,
    key: ClientKey,
    tier: Tier,
}

/// The running Redis store of one layer.
pub(crate) struct Leases {
    /// Itself, for the background task (which holds it weakly).
    me: Weak<Leases>,
    store: RedisStore,
    lease_script: Script,
    heartbeat_script: Script,
    nodes_key: String,
    policy_names: Box<[String]>,
    gcras: [[Gcra; MAX_POLICIES]; 4],
    policies: usize,
    leases: [[u32; MAX_POLICIES]; 4],
    idle_us: u64,
    node_id: String,
    clock: Clock,
    entries: ShardedMap<Lease, Tally>,
    queue: Mutex<Vec<Job>>,
    wake: Arc<Notify>,
    started: AtomicBool,
    down: AtomicBool,
    nodes: AtomicU32,
    in_flight: AtomicUsize,
    syncs: AtomicU64,
    sync_failures: AtomicU64,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.store.fmt(f)
    }
}

impl Leases {
    /// The Redis key of one (client, policy) pair. The client key is a hash tag, so on a
    /// cluster every policy of one client lives in one slot and one script updates them all.
    fn redis_key(&self, client: &str, policy: &str) -> String {
        format!("{}:{{{client}}}:{policy}", self.store.prefix)
    }

    /// Whether Redis has failed for longer than `down_after`: the caller decides by fallback.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// The live nodes last counted on Redis (at least 1).
    pub(crate) fn nodes(&self) -> u32 {
        self.nodes.load(Ordering::Relaxed).max(1)
    }

    /// Decide one request from this node's lease of the client's quota, never waiting. Returns
    /// whether it passes; queues a background sync when the lease runs low.
    pub(crate) fn decide(&self, key: &ClientKey, digest: u64, tier: Tier, now: u64, verdicts: &mut Verdicts) -> bool {
        let gcras = &self.gcras[tier as usize][..self.policies];
        let leases = &self.leases[tier as usize];
        let mut shard = self.entries.lock(digest);
        let mut entry = shard.get(digest).unwrap_or(Lease {
            balance: std::array::from_fn(|i| leases[i] as i32),
            reset_at: [0; MAX_POLICIES],
            retry_at: 0,
            expires: 0,
            charged: false,
            syncing: false,
        });
        let allowed = entry.balance[..self.policies].iter().all(|b| *b >= 1);
        for (i, gcra) in gcras.iter().enumerate() {
            let reset = entry.reset_at[i].saturating_sub(now).max(gcra.emission_us).min(gcra.tolerance_us);
            let verdict = if allowed {
                entry.balance[i] -= 1;
                Verdict { allowed: true, reset_us: reset, retry_after_us: 0 }
            } else if entry.balance[i] >= 1 {
                Verdict { allowed: true, reset_us: reset, retry_after_us: 0 }
            } else {
                let retry = entry.retry_at.saturating_sub(now).max(gcra.emission_us);
                Verdict { allowed: false, reset_us: reset, retry_after_us: retry }
            };
            verdicts.push(verdict);
        }
        let low = (0..self.policies).any(|i| 2 * i64::from(entry.balance[i]) <= i64::from(leases[i]));
        let sync = !entry.syncing && now >= entry.retry_at && (!entry.charged || low);
        entry.syncing |= sync;
        entry.expires = now.saturating_add(self.idle_us);
        shard.insert(digest, entry, now);
        if allowed {
            (0..self.policies).for_each(|i| shard.extra[i][Outcome::Allowed as usize] += 1);
        } else {
            for (i, v) in verdicts.as_slice().iter().enumerate() {
                if !v.allowed {
                    shard.extra[i][Outcome::Limited as usize] += 1;
                }
            }
        }
        drop(shard);
        if sync {
            self.enqueue(Job { digest, key: key.clone(), tier });
        }
        allowed
    }

    fn enqueue(&self, job: Job) {
        let digest = job.digest;
        let queued = {
            let mut queue = self.queue.lock();
            let room = queue.len() < self.store.max_queue;
            if room {
                queue.push(job);
            }
            room
        };
        if queued {
            self.ensure_task();
            self.wake.notify_one();
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(entry) = self.entries.lock(digest).get_mut(digest) {
                entry.syncing = false;
            }
        }
    }

    /// Start the background task if it is not running (it needs a tokio runtime; without one,
    /// the next sync request tries again).
    fn ensure_task(self: &Leases) {
        if self.started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        // The task holds the store weakly: it ends when the layer is dropped.
        handle.spawn(background(self.me.clone()));
    }

    /// One synchronisation round of the keys queued now: every sync is sent at once (fred
    /// pipelines them) and the round is bounded by the deadline. `None` when nothing was queued.
    async fn sync_round(&self) -> Option<bool> {
        let jobs: Vec<Job> = {
            let mut queue = self.queue.lock();
            let n = queue.len().min(MAX_BATCH);
            queue.drain(..n).collect()
        };
        if jobs.is_empty() {
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let now = self.clock.now_us();
        let mut calls = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let gcras = &self.gcras[job.tier as usize][..self.policies];
            let leases = &self.leases[job.tier as usize];
            let Some(entry) = self.entries.lock(job.digest).get(job.digest) else { continue };
            let keys: Vec<String> =
                self.policy_names.iter().map(|name| self.redis_key(job.key.as_str(), name)).collect();
            let mut args: Vec<i64> = Vec::with_capacity(1 + 4 * self.policies);
            args.push(if self.store.server_time { -1 } else { now as i64 });
            for (i, gcra) in gcras.iter().enumerate() {
                args.push(gcra.emission_us as i64);
                args.push(gcra.tolerance_us as i64);
                args.push(if entry.charged { 0 } else { i64::from(leases[i]) });
                args.push(i64::from((leases[i] as i32).saturating_sub(entry.balance[i]).max(0)));
            }
            let client = self.store.redis.pool().next();
            let deadline = self.store.deadline;
            calls.push(async move {
                let call = self.lease_script.evalsha_with_reload::<Vec<i64>, _, _>(client, keys, args);
                (job, tokio::time::timeout(deadline, call).await)
            });
        }
        // Each call has the deadline; the round counts as failed only when no call succeeded,
        // so a Redis that is slow under load keeps serving the calls it can.
        let replies = futures_util::future::join_all(calls).await;
        let mut ok = replies.is_empty();
        for (job, reply) in replies {
            match reply {
                Ok(Ok(reply)) if reply.len() == 1 + 2 * self.policies => {
                    ok = true;
                    self.apply(job, &reply);
                }
                _ => self.release(job.digest),
            }
        }
        self.syncs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        if !ok {
            self.sync_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        Some(ok)
    }

    /// Credit a lease from Redis's reply to a key's entry.
    fn apply(&self, job: &Job, reply: &[i64]) {
        let now = self.clock.now_us();
        let script_now = reply[0];
        let gcras = &self.gcras[job.tier as usize][..self.policies];
        let mut shard = self.entries.lock(job.digest);
        let Some(entry) = shard.get_mut(job.digest) else { return };
        let mut retry_at = 0;
        for (i, gcra) in gcras.iter().enumerate() {
            let granted = reply[1 + 2 * i].clamp(0, i64::from(i32::MAX)) as i32;
            // Redis's TAT as a distance from Redis's now, so node clocks need not agree.
            let ahead = reply[2 + 2 * i].saturating_sub(script_now).max(0) as u64;
            entry.balance[i] = entry.balance[i].saturating_add(granted);
            entry.reset_at[i] = now.saturating_add(ahead);
            if entry.balance[i] < 1 {
                // The next token is free when the TAT is back within the tolerance.
                let wait = ahead.saturating_sub(gcra.tolerance_us).saturating_add(gcra.emission_us);
                retry_at = retry_at.max(now.saturating_add(wait));
            }
        }
        entry.retry_at = retry_at;
        entry.charged = true;
        entry.syncing = false;
    }

    /// A sync gave no answer: the key may ask again.
    fn release(&self, digest: u64) {
        if let Some(entry) = self.entries.lock(digest).get_mut(digest) {
            entry.syncing = false;
        }
    }

    /// Announce this node and count the live ones.
    async fn heartbeat(&self) -> bool {
        let ttl_ms = (3 * self.store.heartbeat.as_millis()).max(1) as i64;
        let args: Vec<String> = vec![self.node_id.clone(), ttl_ms.to_string()];
        let client = self.store.redis.pool().next();
        let call = self.heartbeat_script.evalsha_with_reload::<i64, _, _>(client, vec![self.nodes_key.clone()], args);
        match tokio::time::timeout(self.store.deadline, call).await {
            Ok(Ok(count)) => {
                self.nodes.store(count.clamp(1, i64::from(u32::MAX)) as u32, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Run the queued syncs now and wait until no round is in flight (bounded by twice the
    /// deadline).
    pub(crate) async fn sync(&self) {
        let _ = self.sync_round().await;
        let deadline = tokio::time::Instant::now() + 2 * self.store.deadline;
        while self.in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Entries, bytes and decisions per policy and outcome, each shard locked once.
    pub(crate) fn snapshot(&self) -> (usize, usize, Tally) {
        self.entries.snapshot(Tally::default(), add_tally)
    }

    /// Figures for `/status`: none takes a shard lock.
    pub(crate) fn counters(&self) -> serde_json::Value {
        serde_json::json!({
            "down": self.is_down(),
            "nodes": self.nodes(),
            "syncs": self.syncs.load(Ordering::Relaxed),
            "sync_rounds_failed": self.sync_failures.load(Ordering::Relaxed),
            "syncs_dropped": self.dropped.load(Ordering::Relaxed),
            "queued": self.queue.lock().len(),
        })
    }

    #[cfg(test)]
    pub(crate) fn shard_count(&self) -> usize {
        self.entries.shard_count()
    }
}

const _: () = assert!(OUTCOMES == 4);

/// The background task: syncs leases as they are asked for, announces the node every heartbeat,
/// and declares Redis down after `down_after` of failures (up again at the first success).
async fn background(weak: Weak<Leases>) {
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut next_heartbeat = tokio::time::Instant::now();
    loop {
        let Some(leases) = weak.upgrade() else { return };
        let now = tokio::time::Instant::now();
        let mut result = None;
        if now >= next_heartbeat {
            result = Some(leases.heartbeat().await);
            next_heartbeat = tokio::time::Instant::now() + leases.store.heartbeat;
        }
        if !leases.is_down() {
            if let Some(ok) = leases.sync_round().await {
                result = Some(result.unwrap_or(true) && ok);
            }
        }
        match result {
            Some(true) => {
                failing_since = None;
                leases.down.store(false, Ordering::Relaxed);
            }
            Some(false) => {
                failing_since.get_or_insert_with(tokio::time::Instant::now);
            }
            None => {}
        }
        if let Some(since) = failing_since {
            if since.elapsed() >= leases.store.down_after && !leases.is_down() {
                tracing::warn!("rate limiter: Redis failing, deciding by the fallback");
                leases.down.store(true, Ordering::Relaxed);
            }
            // While failing, probe often, so that both the outage and the recovery are seen soon.
            let probe = tokio::time::Instant::now() + leases.store.heartbeat.min(PROBE);
            next_heartbeat = next_heartbeat.min(probe);
        }
        let queued = !leases.queue.lock().is_empty() && !leases.is_down();
        let wake = leases.wake.clone();
        drop(leases);
        if queued {
            continue;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep_until(next_heartbeat) => {}
        }
    }
}
