//! The decision engine: the state every clone of the service shares, how a request is keyed,
//! decided (in-process, from this node's Redis lease, or by the failure mode) and answered.

#[cfg(feature = "redis")]
use std::sync::Arc;
use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use phalanx_core::{problem::types, ClientKey, ClientKeyResolver, FailureMode, Problem, Tier};

#[cfg(feature = "redis")]
use crate::local::add_tally;
#[cfg(feature = "redis")]
use crate::redis::Leases;
use crate::{
    clock::Clock,
    local::{LocalStore, Tally, Verdicts, MAX_POLICIES},
    metrics::Metrics,
    quota::{CompiledPolicy, Gcra, Outcome},
};

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): the quotas that apply.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers): what is left of each quota.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// How long a client refused because Redis is unreachable (fail closed) is asked to wait.
const FAIL_CLOSED_RETRY: Duration = Duration::from_secs(1);

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

/// What `/status` and the metrics read, gathered in one pass over the shards.
pub(crate) struct Snapshot {
    pub(crate) tally: Tally,
    pub(crate) local_keys: usize,
    pub(crate) local_bytes: usize,
    pub(crate) lease_keys: usize,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) lease_bytes: usize,
}

/// State shared by the layer and every service clone.
pub(crate) struct Shared {
    pub(crate) policies: Box<[CompiledPolicy]>,
    pub(crate) gcras: [[Gcra; MAX_POLICIES]; 4],
    pub(crate) policy_header: [HeaderValue; 4],
    /// Some policy differs between tiers (else the request's tier is not looked up).
    pub(crate) tiered: bool,
    pub(crate) resolver: ClientKeyResolver,
    /// The resolver's first source is the peer IP (so it always answers with it when there is one).
    pub(crate) peer_ip_first: bool,
    pub(crate) local: LocalStore,
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<Arc<Leases>>,
    pub(crate) failure_mode: FailureMode,
    #[cfg(feature = "redis")]
    pub(crate) fallback_local: bool,
    pub(crate) shadow: bool,
    pub(crate) headers: bool,
    pub(crate) clock: Clock,
    pub(crate) metrics: Metrics,
}

impl Shared {
    /// Whether decisions go to the Redis store (which needs the client key spelled out).
    #[inline]
    fn uses_redis(&self) -> bool {
        #[cfg(feature = "redis")]
        {
            self.redis.is_some()
        }
        #[cfg(not(feature = "redis"))]
        {
            false
        }
    }

    /// The digest of the request's client key, and the key itself when Redis will need it: a
    /// key already resolved (by `ClassifyLayer`), else ours. An IPv4 peer is digested from its
    /// address without spelling the key out; the key is written only for Redis.
    pub(crate) fn identify<B>(&self, req: &Request<B>) -> (u64, Option<ClientKey>) {
        if let Some(key) = req.extensions().get::<ClientKey>() {
            return (self.local.digest(key.as_str()), self.uses_redis().then(|| key.clone()));
        }
        if self.peer_ip_first {
            if let Some(IpAddr::V4(ip)) = self.resolver.client_ip(req.headers(), req.extensions()) {
                let key = self.uses_redis().then(|| ClientKey::new(format!("ip:{ip}")));
                return (self.local.digest_ipv4(ip), key);
            }
        }
        let key = self.resolver.resolve(req);
        (self.local.digest(key.as_str()), self.uses_redis().then_some(key))
    }

    /// The request's tier, when the policies differ by tier.
    pub(crate) fn tier<B>(&self, req: &Request<B>) -> Tier {
        match self.tiered {
            true => Tier::of(req.extensions()),
            false => Tier::default(),
        }
    }

    fn gcras(&self, tier: Tier) -> &[Gcra] {
        &self.gcras[tier as usize][..self.policies.len()]
    }

    /// The answer to a request, decided without waiting: in-process, from this node's lease of
    /// the quota on Redis, or by the failure mode while Redis is down.
    pub(crate) fn answer_now(&self, key: Option<&ClientKey>, digest: u64, tier: Tier) -> Answer {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return self.answer(&self.decide_on_redis(redis, key, digest, tier));
        }
        #[cfg(not(feature = "redis"))]
        let _ = key;
        let mut decision = Decision::new(Outcome::Limited, tier);
        self.local.decide(digest, self.gcras(tier), self.clock.now_us(), Outcome::Allowed, &mut decision.verdicts);
        decision.outcome = if decision.verdicts.allowed() { Outcome::Allowed } else { Outcome::Limited };
        decision.counted = true;
        self.answer(&decision)
    }

    /// A decision with the Redis store: from this node's lease while Redis is up, else by the
    /// failure mode.
    #[cfg(feature = "redis")]
    #[inline]
    fn decide_on_redis(&self, redis: &Leases, key: Option<&ClientKey>, digest: u64, tier: Tier) -> Decision {
        let mut decision = Decision::new(Outcome::Limited, tier);
        match key {
            Some(key) if !redis.is_down() => {
                let now = self.clock.now_us();
                let allowed = redis.decide(key, digest, tier, now, &mut decision.verdicts);
                decision.outcome = if allowed { Outcome::Allowed } else { Outcome::Limited };
                decision.counted = true;
            }
            _ => match self.failure_mode {
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
        }
        decision
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
    pub(crate) fn snapshot(&self) -> Snapshot {
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let (local_keys, local_bytes, mut tally) = self.local.snapshot();
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut leases = (0, 0);
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            let (keys, bytes, t) = redis.snapshot();
            tally = add_tally(tally, &t);
            leases = (keys, bytes);
        }
        self.metrics.add_to(&mut tally);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_spelled_as_display_spells_them() {
        for n in [0, 7, 10, 99, 100, 65_535, 1_000_000, u64::from(u32::MAX), u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
