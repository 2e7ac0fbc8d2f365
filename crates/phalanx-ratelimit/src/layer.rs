//! `RateLimitLayer`, its builder, and the shared state every clone of the service uses.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use opentelemetry::{
    metrics::{Meter, ObservableCounter},
    KeyValue,
};
use phalanx_core::{
    identity::{ClientKeyConfig, KeySource},
    names,
    problem::types,
    ClientKey, ClientKeyResolver, FailureMode, Problem, StatusSource, Tier,
};
use tower_layer::Layer;

use crate::{
    local::{add_tally, LocalStore, Tally, Verdicts, MAX_POLICIES},
    quota::{policy_header_values, CompiledPolicy, Gcra},
    redis::Leases,
    BuildError, Clock, Policy, RateLimitService, RedisStore,
};

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): the quotas that apply.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers): what is left of each quota.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The metric attribute marking decisions of a layer in shadow mode (present only there).
const SHADOW_ATTR: &str = phalanx_core::names::attr::SHADOW;

/// How long a client refused because Redis is unreachable (fail closed) is asked to wait.
const FAIL_CLOSED_RETRY: Duration = Duration::from_secs(1);

/// A Tower layer limiting the request rate of each client by one or more named policies.
///
/// Clone-safe on axum routes: all state is shared behind an `Arc` and decisions are made in
/// `call`, never reserved in `poll_ready`. See the crate documentation for an example.
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.shared.policies.iter().map(|p| &*p.name).collect();
        f.debug_struct("RateLimitLayer")
            .field("policies", &names)
            .field("redis", &self.shared.redis)
            .field("shadow", &self.shared.shadow)
            .finish()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.shared.clone())
    }
}

impl RateLimitLayer {
    /// A builder with no policies, the default key resolver (peer IP, no trusted proxies), the
    /// in-process store, headers on and shadow mode off.
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            policies: Vec::new(),
            resolver: None,
            redis: None,
            failure_mode: FailureMode::Open,
            fallback_local: true,
            shadow: false,
            headers: true,
            meter: None,
            clock: None,
            error: None,
        }
    }

    /// A layer with one policy and all defaults.
    ///
    /// # Panics
    ///
    /// If the policy is invalid (see [`RateLimitLayerBuilder::build`]).
    pub fn new(policy: Policy) -> Self {
        Self::builder().policy(policy).build().expect("a single valid policy")
    }

    /// Drop the in-process store's idle keys now. Shards also do this by themselves as they
    /// grow; call it from a periodic task to give memory back after a burst of distinct keys.
    pub fn sweep_idle(&self) {
        self.shared.local.sweep(self.shared.clock.now_us());
    }

    /// A handle for the `/status` report: decisions per policy and outcome, store sizes.
    pub fn status(&self) -> RateLimitStatus {
        RateLimitStatus { shared: self.shared.clone() }
    }

    /// With a Redis store: send the lease synchronisations queued now and wait for them (at
    /// most twice the store's deadline). The background task does this by itself; call it
    /// before shutting down, or in tests that need the leases settled. No-op in-process.
    pub async fn sync(&self) {
        if let Some(redis) = &self.shared.redis {
            redis.sync().await;
        }
    }
}

/// Builder of a [`RateLimitLayer`], with consuming setters.
#[derive(Debug)]
pub struct RateLimitLayerBuilder {
    policies: Vec<Policy>,
    resolver: Option<ClientKeyResolver>,
    redis: Option<RedisStore>,
    failure_mode: FailureMode,
    fallback_local: bool,
    shadow: bool,
    headers: bool,
    meter: Option<Meter>,
    clock: Option<Clock>,
    error: Option<BuildError>,
}

impl RateLimitLayerBuilder {
    /// Add a policy; a request passes only if every policy allows it.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// How to find the client key when no `ClientKey` is in the request extensions already.
    pub fn key_resolver(mut self, resolver: ClientKeyResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Like [`RateLimitLayerBuilder::key_resolver`], from the resolver's configuration. Fails at
    /// [`build`](Self::build) if the configuration is invalid.
    pub fn key_config(mut self, config: ClientKeyConfig) -> Self {
        match config.build() {
            Ok(resolver) => self.resolver = Some(resolver),
            Err(e) => self.error = self.error.or(Some(BuildError::new(e.to_string()))),
        }
        self
    }

    /// Keep the state in Redis, shared by every node using the same store prefix.
    pub fn redis(mut self, store: RedisStore) -> Self {
        self.redis = Some(store);
        self
    }

    /// What to do while Redis is down (failing for longer than the store's `down_after`):
    /// fail open (default) or closed.
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.failure_mode = mode;
        self
    }

    /// When failing open, decide with the in-process limiter, each quota divided by the last
    /// known number of nodes, instead of letting everything through (default `true`).
    pub fn fallback_local(mut self, yes: bool) -> Self {
        self.fallback_local = yes;
        self
    }

    /// Decide and count, but never reject (default `false`).
    pub fn shadow(mut self, yes: bool) -> Self {
        self.shadow = yes;
        self
    }

    /// Add the `RateLimit-Policy` and `RateLimit` fields to responses (default `true`).
    pub fn headers(mut self, yes: bool) -> Self {
        self.headers = yes;
        self
    }

    /// Record metrics through this meter (default: [`phalanx_core::default_meter`]).
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Read the time from this clock (default: [`Clock::default`], which follows tokio's time
    /// when it is paused).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Build; fails without policies, with more than eight, with duplicate names or invalid quotas.
    pub fn build(self) -> Result<RateLimitLayer, BuildError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.policies.is_empty() {
            return Err(BuildError::new("a rate limit layer needs at least one policy"));
        }
        if self.policies.len() > MAX_POLICIES {
            return Err(BuildError::new(format!("at most {MAX_POLICIES} policies per layer")));
        }
        let policies = self.policies.iter().map(CompiledPolicy::compile).collect::<Result<Vec<_>, _>>()?;
        for (i, p) in policies.iter().enumerate() {
            if policies[..i].iter().any(|q| q.name == p.name) {
                return Err(BuildError::new(format!("policy {:?} is defined twice", p.name)));
            }
        }
        let mut gcras = [[Gcra { emission_us: 1, tolerance_us: 1 }; MAX_POLICIES]; 4];
        for (tier, row) in gcras.iter_mut().enumerate() {
            for (i, p) in policies.iter().enumerate() {
                row[i] = p.by_tier[tier];
            }
        }
        let policy_header = policy_header_values(&policies);
        let tiered = Tier::ALL.iter().any(|&t| {
            gcras[t as usize] != gcras[Tier::default() as usize]
                || policy_header[t as usize] != policy_header[Tier::default() as usize]
        });
        let meter = self.meter.unwrap_or_else(phalanx_core::default_meter);
        let clock = self.clock.unwrap_or_default();
        let resolver = self.resolver.unwrap_or_default();
        // With the peer IP as first source, an IPv4 peer is keyed without spelling its key.
        let peer_ip_first = resolver.config().sources.first() == Some(&KeySource::PeerIp);
        let names: Vec<&str> = policies.iter().map(|p| &*p.name).collect();
        let redis = self.redis.map(|store| store.start(&names, &gcras, clock.clone()));
        Ok(RateLimitLayer {
            shared: Arc::new_cyclic(|shared| Shared {
                metrics: Metrics::new(&meter, &policies, self.shadow, shared.clone()),
                policy_header,
                tiered,
                policies: policies.into_boxed_slice(),
                gcras,
                peer_ip_first,
                resolver,
                local: LocalStore::new(),
                redis,
                failure_mode: self.failure_mode,
                fallback_local: self.fallback_local,
                shadow: self.shadow,
                headers: self.headers,
                clock,
            }),
        })
    }
}

/// How a decision came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed = 0,
    Limited = 1,
    FailOpen = 2,
    FailClosed = 3,
}

/// How many outcomes there are.
pub(crate) const OUTCOMES: usize = 4;

const OUTCOME_NAMES: [&str; OUTCOMES] = ["allowed", "limited", "fail_open", "fail_closed"];

/// One decision over every policy of the layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) outcome: Outcome,
    pub(crate) verdicts: Verdicts,
    pub(crate) tier: Tier,
    /// Already counted by the in-process store that made it.
    pub(crate) counted: bool,
}

impl Decision {
    fn new(outcome: Outcome, tier: Tier) -> Self {
        Decision { outcome, verdicts: Verdicts::none(), tier, counted: false }
    }
}

/// The `RateLimit-Policy` and `RateLimit` values of one response. Boxed where it is carried,
/// so a response future without them stays small.
pub(crate) struct Fields {
    pub(crate) policy: HeaderValue,
    pub(crate) state: HeaderValue,
}

/// What the service does with a request.
pub(crate) enum Answer {
    /// Call the inner service and add these fields to its response.
    Pass(Option<Box<Fields>>),
    /// Answer with this problem.
    Reject(Box<Problem>),
}

/// Decisions per policy and outcome that the in-process store did not count itself (those
/// that went to Redis, and failures), read with the store's counts by `/status` and by an
/// observable OTel counter at collection time: a decision makes no OTel call.
struct Metrics {
    counts: Box<[[AtomicU64; OUTCOMES]]>,
    _decisions: ObservableCounter<u64>,
}

impl Metrics {
    fn new(meter: &Meter, policies: &[CompiledPolicy], shadow: bool, shared: Weak<Shared>) -> Self {
        // Attributes per policy and outcome, built once.
        let attributes: Vec<[Vec<KeyValue>; OUTCOMES]> = policies
            .iter()
            .map(|p| {
                OUTCOME_NAMES.map(|outcome| {
                    let mut attrs = vec![
                        KeyValue::new(names::attr::POLICY, p.name.to_string()),
                        KeyValue::new(names::attr::OUTCOME, outcome),
                    ];
                    if shadow {
                        attrs.push(KeyValue::new(SHADOW_ATTR, true));
                    }
                    attrs
                })
            })
            .collect();
        let decisions = meter
            .u64_observable_counter(names::RATELIMIT_DECISIONS)
            .with_description("Rate-limit decisions by policy and outcome")
            .with_callback(move |observer| {
                let Some(shared) = shared.upgrade() else { return };
                let tally = shared.snapshot().tally;
                for (policy, attributes) in attributes.iter().enumerate() {
                    for (outcome, attributes) in OUTCOME_LIST.iter().zip(attributes) {
                        let count = tally[policy][*outcome as usize];
                        // An outcome never seen makes no series.
                        if count > 0 {
                            observer.observe(count, attributes);
                        }
                    }
                }
            })
            .build();
        let counts = policies.iter().map(|_| Default::default()).collect();
        Metrics { counts, _decisions: decisions }
    }

    fn record(&self, policy: usize, outcome: Outcome) {
        self.counts[policy][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

const OUTCOME_LIST: [Outcome; OUTCOMES] = [Outcome::Allowed, Outcome::Limited, Outcome::FailOpen, Outcome::FailClosed];

/// What `/status` and the metrics read, gathered in one pass over the shards.
struct Snapshot {
    tally: Tally,
    local_keys: usize,
    local_bytes: usize,
    lease_keys: usize,
    lease_bytes: usize,
}

/// State shared by the layer and every service clone.
pub(crate) struct Shared {
    policies: Box<[CompiledPolicy]>,
    gcras: [[Gcra; MAX_POLICIES]; 4],
    policy_header: [HeaderValue; 4],
    /// Some policy differs between tiers (else the request's tier is not looked up).
    tiered: bool,
    resolver: ClientKeyResolver,
    /// The resolver's first source is the peer IP (so it always answers with it when there is one).
    peer_ip_first: bool,
    local: LocalStore,
    redis: Option<Arc<Leases>>,
    failure_mode: FailureMode,
    fallback_local: bool,
    shadow: bool,
    headers: bool,
    clock: Clock,
    metrics: Metrics,
}

impl Shared {
    /// The digest of the request's client key, and the key itself when Redis will need it: a
    /// key already resolved (by `ClassifyLayer`), else ours. An IPv4 peer is digested from its
    /// address without spelling the key out; the key is written only for Redis.
    pub(crate) fn identify<B>(&self, req: &Request<B>) -> (u64, Option<ClientKey>) {
        if let Some(key) = req.extensions().get::<ClientKey>() {
            return (self.local.digest(key.as_str()), self.redis.is_some().then(|| key.clone()));
        }
        if self.peer_ip_first {
            if let Some(IpAddr::V4(ip)) = self.resolver.client_ip(req.headers(), req.extensions()) {
                let key = self.redis.is_some().then(|| ClientKey::new(format!("ip:{ip}")));
                return (self.local.digest_ipv4(ip), key);
            }
        }
        let key = self.resolver.resolve(req);
        (self.local.digest(key.as_str()), self.redis.is_some().then_some(key))
    }

    /// The request's tier, when the policies differ by tier.
    pub(crate) fn tier<B>(&self, req: &Request<B>) -> Tier {
        match self.tiered {
            true => req.extensions().get::<Tier>().copied().unwrap_or_default(),
            false => Tier::default(),
        }
    }

    fn gcras(&self, tier: Tier) -> &[Gcra] {
        &self.gcras[tier as usize][..self.policies.len()]
    }

    /// The answer to a request, decided without waiting: in-process, from this node's lease of
    /// the quota on Redis, or by the failure mode while Redis is down.
    pub(crate) fn answer_now(&self, key: Option<&ClientKey>, digest: u64, tier: Tier) -> Answer {
        let mut decision = Decision::new(Outcome::Limited, tier);
        match (&self.redis, key) {
            (Some(redis), Some(key)) if !redis.is_down() => {
                let now = self.clock.now_us();
                let allowed = redis.decide(key, digest, tier, now, &mut decision.verdicts);
                decision.outcome = if allowed { Outcome::Allowed } else { Outcome::Limited };
                decision.counted = true;
            }
            (Some(redis), _) => match self.failure_mode {
                FailureMode::Open if self.fallback_local => {
                    // N nodes deciding alone would allow N times the quota: each takes its share.
                    let gcras = self.gcras(tier);
                    let mut shares = [Gcra { emission_us: 1, tolerance_us: 1 }; MAX_POLICIES];
                    for (share, gcra) in shares.iter_mut().zip(gcras) {
                        *share = gcra.share(redis.nodes());
                    }
                    let shares = &shares[..gcras.len()];
                    self.local.decide(digest, shares, self.clock.now_us(), Outcome::FailOpen, &mut decision.verdicts);
                    decision.outcome = if decision.verdicts.allowed() { Outcome::FailOpen } else { Outcome::Limited };
                    decision.counted = true;
                }
                FailureMode::Open => decision.outcome = Outcome::FailOpen,
                FailureMode::Closed => decision.outcome = Outcome::FailClosed,
            },
            (None, _) => {
                self.local.decide(
                    digest,
                    self.gcras(tier),
                    self.clock.now_us(),
                    Outcome::Allowed,
                    &mut decision.verdicts,
                );
                decision.outcome = if decision.verdicts.allowed() { Outcome::Allowed } else { Outcome::Limited };
                decision.counted = true;
            }
        }
        self.answer(&decision)
    }

    /// Count the decision and turn it into what the service does.
    fn answer(&self, decision: &Decision) -> Answer {
        if !decision.counted {
            self.record(decision);
        }
        let fields = self.headers.then(|| self.fields(decision)).flatten();
        match decision.outcome {
            Outcome::Allowed | Outcome::FailOpen => Answer::Pass(fields),
            _ if self.shadow => Answer::Pass(fields),
            Outcome::Limited => {
                let policy = decision.verdicts.denied_by().unwrap_or(0);
                let name = &*self.policies[policy].name;
                let retry = Duration::from_micros(decision.verdicts.retry_after_us());
                let mut problem = Problem::rate_limited(retry)
                    .with_detail(format!("rate limit {name:?} exceeded"))
                    .with_member("policy", name);
                if let Some(fields) = fields {
                    problem = problem.with_header(RATELIMIT_POLICY.clone(), fields.policy);
                    problem = problem.with_header(RATELIMIT.clone(), fields.state);
                }
                Answer::Reject(Box::new(problem))
            }
            Outcome::FailClosed => Answer::Reject(Box::new(
                Problem::unavailable(types::DEPENDENCY_UNAVAILABLE, FAIL_CLOSED_RETRY)
                    .with_detail("the rate limiter's store is unavailable"),
            )),
        }
    }

    fn record(&self, decision: &Decision) {
        match decision.outcome {
            Outcome::Limited => {
                for (i, v) in decision.verdicts.known() {
                    if !v.allowed {
                        self.metrics.record(i, Outcome::Limited);
                    }
                }
            }
            outcome => (0..self.policies.len()).for_each(|i| self.metrics.record(i, outcome)),
        }
    }

    /// Decisions so far per policy and outcome, wherever they were counted, with the entries
    /// and table bytes of the in-process store and of the lease table: each shard lock is taken
    /// once, so a scrape storm costs requests one short wait per shard and scrape at most.
    fn snapshot(&self) -> Snapshot {
        let (local_keys, local_bytes, mut tally) = self.local.snapshot();
        let mut leases = (0, 0);
        if let Some(redis) = &self.redis {
            let (keys, bytes, t) = redis.snapshot();
            tally = add_tally(tally, &t);
            leases = (keys, bytes);
        }
        for (row, counts) in tally.iter_mut().zip(self.metrics.counts.iter()) {
            for (n, count) in row.iter_mut().zip(counts) {
                *n += count.load(Ordering::Relaxed);
            }
        }
        Snapshot { tally, local_keys, local_bytes, lease_keys: leases.0, lease_bytes: leases.1 }
    }

    /// `RateLimit-Policy` and `RateLimit` of a decision; `None` when no policy's state is known.
    fn fields(&self, decision: &Decision) -> Option<Box<Fields>> {
        let mut state = Vec::with_capacity(32 * self.policies.len());
        let gcras = self.gcras(decision.tier);
        for (i, v) in decision.verdicts.known() {
            if !state.is_empty() {
                state.extend_from_slice(b", ");
            }
            state.extend_from_slice(self.policies[i].state_prefix.as_bytes());
            push_decimal(&mut state, u64::from(v.remaining(&gcras[i])));
            state.extend_from_slice(b";t=");
            // Whole seconds, rounded up: `t=0` would claim the quota is already restored.
            push_decimal(&mut state, v.reset_us.div_ceil(1_000_000));
        }
        if state.is_empty() {
            return None;
        }
        let state =
            HeaderValue::from_maybe_shared(Bytes::from(state)).expect("policy names are checked to be printable ASCII");
        Some(Box::new(Fields { policy: self.policy_header[decision.tier as usize].clone(), state }))
    }
}

/// Append `n` in decimal, without the formatting machinery.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The `/status` section of a [`RateLimitLayer`] (`"ratelimit"`): decisions per policy and
/// outcome, and the sizes of the local tables.
#[derive(Clone)]
pub struct RateLimitStatus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RateLimitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitStatus").finish_non_exhaustive()
    }
}

impl RateLimitStatus {
    /// Decisions so far of one policy with one outcome (`allowed`, `limited`, `fail_open`,
    /// `fail_closed`); 0 for an unknown policy or outcome.
    pub fn decisions(&self, policy: &str, outcome: &str) -> u64 {
        let shared = &self.shared;
        let Some(p) = shared.policies.iter().position(|p| &*p.name == policy) else { return 0 };
        let Some(o) = OUTCOME_NAMES.iter().position(|o| *o == outcome) else { return 0 };
        shared.snapshot().tally[p][o]
    }

    /// Bytes held by the in-process store's tables.
    pub fn local_bytes(&self) -> usize {
        self.shared.snapshot().local_bytes
    }

    /// Keys held by the in-process store (idle ones not yet swept included).
    pub fn local_keys(&self) -> usize {
        self.shared.snapshot().local_keys
    }

    /// Keys with a lease on this node (Redis store; idle ones not yet swept included).
    pub fn lease_keys(&self) -> usize {
        self.shared.snapshot().lease_keys
    }

    /// The live nodes last counted on Redis (1 without a Redis store).
    pub fn nodes(&self) -> u32 {
        self.shared.redis.as_ref().map_or(1, |r| r.nodes())
    }
}

impl StatusSource for RateLimitStatus {
    fn name(&self) -> &str {
        "ratelimit"
    }

    fn report(&self) -> serde_json::Value {
        let shared = &self.shared;
        let snapshot = shared.snapshot();
        let mut policies = serde_json::Map::new();
        for (i, p) in shared.policies.iter().enumerate() {
            let mut entry = serde_json::Map::new();
            for (outcome, name) in OUTCOME_LIST.iter().zip(OUTCOME_NAMES) {
                entry.insert(name.into(), snapshot.tally[i][*outcome as usize].into());
            }
            policies.insert(p.name.to_string(), entry.into());
        }
        let mut report = serde_json::json!({
            "store": if shared.redis.is_some() { "redis" } else { "local" },
            "shadow": shared.shadow,
            "failure_mode": match shared.failure_mode { FailureMode::Open => "open", FailureMode::Closed => "closed" },
            "policies": policies,
            "local_keys": snapshot.local_keys,
            "local_bytes": snapshot.local_bytes,
        });
        if let Some(redis) = &shared.redis {
            report["lease_keys"] = snapshot.lease_keys.into();
            report["lease_bytes"] = snapshot.lease_bytes.into();
            report["redis"] = redis.counters();
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{local::LOCKS_TAKEN, Quota};

    fn locks_taken_by(f: impl FnOnce()) -> usize {
        let before = LOCKS_TAKEN.with(|n| n.get());
        f();
        LOCKS_TAKEN.with(|n| n.get()) - before
    }

    #[test]
    fn a_status_report_takes_each_shard_lock_at_most_once() {
        let layer = RateLimitLayer::builder()
            .policy(Policy::new("a", Quota::per_second(10)))
            .policy(Policy::new("b", Quota::per_minute(100)))
            .policy(Policy::new("c", Quota::per_hour(1000)))
            .build()
            .unwrap();
        let shared = &layer.shared;
        for i in 0..1000 {
            let key = ClientKey::new(format!("id:{i}"));
            shared.answer_now(Some(&key), shared.local.digest(key.as_str()), Tier::Standard);
        }
        let shards = shared.local.shard_count();
        let status = layer.status();
        let mut report = serde_json::Value::Null;
        // Three policies × four outcomes, keys and bytes: still one pass over the shards.
        assert_eq!(locks_taken_by(|| report = status.report()), shards);
        assert_eq!(report["policies"]["a"]["allowed"], 1000);
        assert_eq!(report["local_keys"], 3000);
        assert_eq!(locks_taken_by(|| assert_eq!(status.decisions("c", "allowed"), 1000)), shards);
    }

    #[tokio::test]
    async fn a_status_report_on_redis_takes_each_lease_shard_lock_at_most_once() {
        // No server is needed: the pool is never connected, decisions come from credits.
        let pool = phalanx_core::redis::RedisSettings::from_url("redis://127.0.0.1:1").build_pool().unwrap();
        let layer = RateLimitLayer::builder()
            .policy(Policy::new("a", Quota::per_second(100)))
            .policy(Policy::new("b", Quota::per_minute(1000)))
            .redis(RedisStore::builder(pool).build().unwrap())
            .build()
            .unwrap();
        let shared = &layer.shared;
        for i in 0..500 {
            let key = ClientKey::new(format!("id:{i}"));
            shared.answer_now(Some(&key), shared.local.digest(key.as_str()), Tier::Standard);
        }
        let redis = shared.redis.as_ref().unwrap();
        let shards = shared.local.shard_count() + redis.shard_count();
        let mut report = serde_json::Value::Null;
        assert_eq!(locks_taken_by(|| report = layer.status().report()), shards);
        assert_eq!(report["policies"]["b"]["allowed"], 500);
        assert_eq!(report["lease_keys"], 500);
    }

    #[test]
    fn decimals_are_spelled_as_display_spells_them() {
        for n in [0, 7, 10, 99, 100, 65_535, 1_000_000, u64::from(u32::MAX), u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
