//! Quotas, policies, the GCRA arithmetic both stores share, and how a decision comes out.

use std::{sync::Arc, time::Duration};

use http::HeaderValue;
use phalanx_core::{ConfigError, Tier};

/// How a decision came out: the `outcome` of `phalanx.ratelimit.decisions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allowed = 0,
    Limited = 1,
    FailOpen = 2,
    FailClosed = 3,
}

/// How many outcomes there are.
pub(crate) const OUTCOMES: usize = 4;

impl Outcome {
    /// Every outcome, in the order of their values.
    pub(crate) const ALL: [Outcome; OUTCOMES] =
        [Outcome::Allowed, Outcome::Limited, Outcome::FailOpen, Outcome::FailClosed];

    /// The outcome's metric attribute value, indexed by the outcome's value.
    pub(crate) const NAMES: [&'static str; OUTCOMES] = ["allowed", "limited", "fail_open", "fail_closed"];
}

/// A rate: `limit` requests per `window`, with up to `burst` requests at once.
///
/// Evaluated as GCRA: one request costs `window / limit` (the emission interval) and a key may
/// run up to `burst` emission intervals ahead of the clock. From a fresh key, over `t` seconds
/// at most `burst + limit · t / window` requests pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    limit: u32,
    window: Duration,
    burst: u32,
}

impl Quota {
    /// `limit` requests per `window`; the burst defaults to `limit`.
    pub const fn new(limit: u32, window: Duration) -> Self {
        Quota { limit, window, burst: limit }
    }

    /// `limit` requests per second.
    pub const fn per_second(limit: u32) -> Self {
        Quota::new(limit, Duration::from_secs(1))
    }

    /// `limit` requests per minute.
    pub const fn per_minute(limit: u32) -> Self {
        Quota::new(limit, Duration::from_secs(60))
    }

    /// `limit` requests per hour.
    pub const fn per_hour(limit: u32) -> Self {
        Quota::new(limit, Duration::from_secs(3600))
    }

    /// Allow up to `burst` requests at once (default: `limit`).
    pub const fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Requests per window.
    pub const fn limit(&self) -> u32 {
        self.limit
    }

    /// The window.
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// Requests allowed at once.
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// The GCRA parameters; the error names the field (`limit`, `burst`, `window`) of this
    /// quota that is wrong.
    pub(crate) fn gcra(&self, policy: &str) -> Result<Gcra, ConfigError> {
        if self.limit == 0 {
            return Err(ConfigError::new("limit", format!("policy {policy:?}: must be at least 1")));
        }
        if self.burst == 0 {
            return Err(ConfigError::new("burst", format!("policy {policy:?}: must be at least 1")));
        }
        let window_us = u64::try_from(self.window.as_micros()).unwrap_or(u64::MAX);
        let emission_us = window_us / u64::from(self.limit);
        if emission_us == 0 {
            return Err(ConfigError::new(
                "window",
                format!(
                    "policy {policy:?}: {} per {:?} is finer than one request per microsecond",
                    self.limit, self.window
                ),
            ));
        }
        Ok(Gcra { emission_us, tolerance_us: emission_us.saturating_mul(u64::from(self.burst)) })
    }
}

/// GCRA parameters in microseconds: the cost of one request and how far ahead of the clock a
/// key's theoretical arrival time (TAT) may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    pub(crate) emission_us: u64,
    pub(crate) tolerance_us: u64,
}

impl Gcra {
    /// Judge one request against a stored TAT (0 for a key never seen). Returns the verdict and
    /// the TAT to store when every policy of the decision allows.
    pub(crate) fn check(&self, stored_tat: u64, now: u64) -> (Verdict, u64) {
        let tat = stored_tat.max(now);
        let new_tat = tat + self.emission_us;
        let ahead = new_tat - now;
        if ahead <= self.tolerance_us {
            let verdict = Verdict { allowed: true, reset_us: ahead, retry_after_us: 0 };
            (verdict, new_tat)
        } else {
            let verdict = Verdict { allowed: false, reset_us: tat - now, retry_after_us: ahead - self.tolerance_us };
            (verdict, tat)
        }
    }

    /// This quota's share on one of `nodes` nodes deciding alone: the rate and the burst divided
    /// by the node count, the burst at least one request.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn share(&self, nodes: u32) -> Gcra {
        let nodes = u64::from(nodes.max(1));
        let burst = (self.tolerance_us / self.emission_us / nodes).max(1);
        let emission_us = self.emission_us.saturating_mul(nodes);
        Gcra { emission_us, tolerance_us: emission_us.saturating_mul(burst) }
    }

    /// The verdict of a policy that itself allowed, in a decision another policy denied: nothing
    /// was consumed, so report the state before this request.
    pub(crate) fn unconsumed(&self, stored_tat: u64, now: u64) -> Verdict {
        let ahead = stored_tat.max(now) - now;
        Verdict { allowed: true, reset_us: ahead, retry_after_us: 0 }
    }
}

/// One policy's part of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Verdict {
    /// Whether this policy lets the request through.
    pub(crate) allowed: bool,
    /// Microseconds until the quota is fully restored (the `t` of the `RateLimit` field).
    pub(crate) reset_us: u64,
    /// Microseconds until a request would pass again (0 when allowed).
    pub(crate) retry_after_us: u64,
}

impl Verdict {
    /// Requests that would pass right now after this one (the `r` of the `RateLimit` field),
    /// under the policy's parameters. Worked out only when a field is written: a decision
    /// without fields spends no division on it.
    pub(crate) fn remaining(&self, gcra: &Gcra) -> u32 {
        match self.allowed {
            true => (gcra.tolerance_us.saturating_sub(self.reset_us) / gcra.emission_us) as u32,
            false => 0,
        }
    }
}

/// A named quota with optional per-tier quotas: `"per-client": 1000 per 60 s, burst 100;
/// premium 10000 per 60 s`.
#[derive(Debug, Clone)]
pub struct Policy {
    name: Arc<str>,
    default: Quota,
    tiers: [Option<Quota>; 4],
}

impl Policy {
    /// A policy applying `quota` to every tier unless [`Policy::tier`] says otherwise.
    pub fn new(name: impl Into<Arc<str>>, quota: Quota) -> Self {
        Policy { name: name.into(), default: quota, tiers: [None; 4] }
    }

    /// The quota of one tier.
    pub fn tier(mut self, tier: Tier, quota: Quota) -> Self {
        self.tiers[tier as usize] = Some(quota);
        self
    }

    /// The policy's name (its label in metrics and in the `RateLimit` fields).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The quota applied to a tier.
    pub fn quota(&self, tier: Tier) -> Quota {
        self.tiers[tier as usize].unwrap_or(self.default)
    }
}

/// A policy ready for decisions: GCRA parameters and `RateLimit-Policy` members per tier.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    pub(crate) name: Arc<str>,
    pub(crate) by_tier: [Gcra; 4],
    /// The `RateLimit-Policy` list member of each tier: `"name";q=1000;w=60`.
    pub(crate) header_member: [String; 4],
    /// The start of this policy's `RateLimit` list member: `"name";r=`.
    pub(crate) state_prefix: String,
}

impl CompiledPolicy {
    /// Compile the policy at `index` of a layer; an error names the field as
    /// `policies[index].limit` (or `policies[index].tiers.premium.limit` for a tier's quota).
    pub(crate) fn compile(policy: &Policy, index: usize) -> Result<Self, ConfigError> {
        let name = &policy.name;
        if name.is_empty() || !name.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\') {
            return Err(ConfigError::new(
                format!("policies[{index}].name"),
                format!("{name:?} must be non-empty printable ASCII without quotes or backslashes"),
            ));
        }
        let mut by_tier = [Gcra { emission_us: 1, tolerance_us: 1 }; 4];
        let mut header_member: [String; 4] = Default::default();
        for tier in Tier::ALL {
            let quota = policy.quota(tier);
            let section = match policy.tiers[tier as usize] {
                Some(_) => format!("policies[{index}].tiers.{tier}"),
                None => format!("policies[{index}]"),
            };
            by_tier[tier as usize] = quota.gcra(name).map_err(|e| e.in_section(&section))?;
            let window = quota.window.as_secs();
            if window == 0 || quota.window.subsec_nanos() != 0 {
                return Err(ConfigError::new(
                    format!("{section}.window"),
                    format!(
                        "policy {name:?}: must be a whole number of seconds (the RateLimit-Policy `w`), not {:?}",
                        quota.window
                    ),
                ));
            }
            header_member[tier as usize] = format!("\"{name}\";q={};w={window}", quota.limit);
        }
        let state_prefix = format!("\"{name}\";r=");
        Ok(CompiledPolicy { name: name.clone(), by_tier, header_member, state_prefix })
    }
}

/// The `RateLimit-Policy` value of each tier, listing every policy of a layer.
pub(crate) fn policy_header_values(policies: &[CompiledPolicy]) -> [HeaderValue; 4] {
    std::array::from_fn(|tier| {
        let joined: Vec<&str> = policies.iter().map(|p| p.header_member[tier].as_str()).collect();
        HeaderValue::from_str(&joined.join(", ")).expect("policy names are checked to be printable ASCII")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_burst_then_one_per_emission_interval() {
        let g = Quota::per_second(10).with_burst(3).gcra("p").unwrap();
        assert_eq!(g, Gcra { emission_us: 100_000, tolerance_us: 300_000 });
        let mut tat = 0;
        let mut passed = 0;
        for _ in 0..5 {
            let (v, next) = g.check(tat, 1_000_000);
            if v.allowed {
                passed += 1;
                tat = next;
            }
        }
        assert_eq!(passed, 3);
        let (denied, _) = g.check(tat, 1_000_000);
        assert_eq!(denied.retry_after_us, 100_000);
        assert_eq!(denied.reset_us, 300_000);
        let (later, _) = g.check(tat, 1_100_000);
        assert!(later.allowed);
        assert_eq!(later.remaining(&g), 0);
    }

    #[test]
    fn invalid_quotas_fail_to_compile() {
        let field = |policy: Policy| CompiledPolicy::compile(&policy, 2).unwrap_err().field().to_owned();
        assert_eq!(field(Policy::new("p", Quota::per_second(0))), "policies[2].limit");
        assert_eq!(field(Policy::new("p", Quota::per_second(5).with_burst(0))), "policies[2].burst");
        assert_eq!(field(Policy::new("p", Quota::new(5, Duration::from_millis(1500)))), "policies[2].window");
        assert_eq!(field(Policy::new("p\"", Quota::per_second(5))), "policies[2].name");
        assert_eq!(field(Policy::new("p", Quota::per_second(2_000_000))), "policies[2].window");
        let tiered = Policy::new("p", Quota::per_second(5)).tier(Tier::Premium, Quota::per_second(0));
        assert_eq!(field(tiered), "policies[2].tiers.premium.limit");
        let ok = CompiledPolicy::compile(
            &Policy::new("p", Quota::per_minute(60)).tier(Tier::Premium, Quota::per_minute(600)),
            0,
        )
        .unwrap();
        assert_eq!(ok.header_member[Tier::Premium as usize], "\"p\";q=600;w=60");
        assert_eq!(ok.header_member[Tier::Basic as usize], "\"p\";q=60;w=60");
    }
}
