//! The Redis store: GCRA evaluated atomically by a Lua script, one `EVALSHA` per decision, and
//! a local cache of denials that answers a limited key until it may pass again.

use std::time::Duration;

use fred::{clients::Pool, types::scripts::Script};
use phalanx_core::redis::{bounded, RedisFailure};

use crate::{
    local::{judge, Expiring, ShardedMap, Verdicts, MAX_POLICIES},
    quota::{Gcra, Verdict},
    BuildError,
};

/// Evaluates every policy of one decision atomically. KEYS: one per policy. ARGV[1]: now in
/// microseconds since the epoch, or -1 to read the server's clock; then each policy's emission
/// interval and tolerance in microseconds. Returns `{allowed, now, tat_1, ..., tat_n}`, each TAT
/// as it stood before this request; TATs advance only when every policy allows, and each key
/// expires when its quota is fully restored, so idle keys cost Redis nothing.
const GCRA_LUA: &str = r"
local now = tonumber(ARGV[1])
if now < 0 then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local result = {0, now}
local new_tats = {}
local allowed = 1
for i = 1, #KEYS do
  local emission = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  result[i + 2] = tat
  new_tats[i] = tat + emission
  if new_tats[i] - now > tolerance then allowed = 0 end
end
if allowed == 1 then
  for i = 1, #KEYS do
    local ttl_ms = math.ceil((new_tats[i] - now) / 1000)
    redis.call('SET', KEYS[i], string.format('%d', new_tats[i]), 'PX', ttl_ms)
  end
end
result[1] = allowed
return result
";

/// A denial remembered locally: until `until` the key is answered without Redis.
#[derive(Debug, Clone, Copy)]
struct Denial {
    until: u64,
    reset_at: u64,
    policy: u8,
}

impl Expiring for Denial {
    fn expires_at(&self) -> u64 {
        self.until
    }
}

/// A Redis-backed GCRA store shared by every node using the same Redis and key prefix.
///
/// ```no_run
/// use std::time::Duration;
/// use phalanx_core::redis::{connect_in_background, RedisSettings};
/// use phalanx_ratelimit::RedisStore;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = RedisSettings::from_url("redis://127.0.0.1:6379").build_pool()?;
/// connect_in_background(&pool);
/// let store = RedisStore::builder(pool).prefix("myapp:rl").deadline(Duration::from_millis(5)).build()?;
/// # let _ = store; Ok(()) }
/// ```
pub struct RedisStore {
    pool: Pool,
    script: Script,
    prefix: String,
    deadline: Duration,
    server_time: bool,
    denials: Option<ShardedMap<Denial>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("deadline", &self.deadline)
            .field("server_time", &self.server_time)
            .field("deny_cache", &self.denials.is_some())
            .finish()
    }
}

/// Builder of a [`RedisStore`].
#[derive(Debug)]
pub struct RedisStoreBuilder {
    pool: Pool,
    prefix: String,
    deadline: Duration,
    server_time: bool,
    deny_cache: bool,
}

impl RedisStore {
    /// A builder over a fred pool (build it with `phalanx_core::redis::RedisSettings`, which
    /// fails fast while disconnected and reconnects by itself).
    pub fn builder(pool: Pool) -> RedisStoreBuilder {
        RedisStoreBuilder {
            pool,
            prefix: "phalanx:rl".into(),
            deadline: Duration::from_millis(5),
            server_time: false,
            deny_cache: true,
        }
    }

    /// The deadline of one decision's round trip.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The Redis key of one (client, policy) pair. The client key is a hash tag, so on a
    /// cluster every policy of one client lives in one slot and one script can update them all.
    pub(crate) fn redis_key(&self, client: &str, policy: &str) -> String {
        format!("{}:{{{client}}}:{policy}", self.prefix)
    }

    /// A denial still in force for this client digest.
    pub(crate) fn cached_denial(&self, digest: u64, policies: usize, now: u64) -> Option<Verdicts> {
        let denial = self.denials.as_ref()?.lock(digest).get(digest).filter(|d| d.until > now)?;
        let verdict = Verdict {
            allowed: false,
            reset_us: denial.reset_at.saturating_sub(now),
            retry_after_us: denial.until - now,
        };
        Some(Verdicts::only_denied_by(policies, usize::from(denial.policy), verdict))
    }

    /// One round trip: judge the request against every policy and advance the TATs if all allow.
    pub(crate) async fn decide(
        &self,
        client: &str,
        digest: u64,
        policies: &[(&str, Gcra)],
        now: u64,
    ) -> Result<Verdicts, RedisFailure> {
        let keys: Vec<String> = policies.iter().map(|(name, _)| self.redis_key(client, name)).collect();
        let mut args: Vec<i64> = Vec::with_capacity(1 + 2 * policies.len());
        args.push(if self.server_time { -1 } else { now as i64 });
        for (_, gcra) in policies {
            args.push(gcra.emission_us as i64);
            args.push(gcra.tolerance_us as i64);
        }
        let client_handle = self.pool.next();
        let reply: Vec<i64> =
            bounded(self.deadline, self.script.evalsha_with_reload(client_handle, keys, args)).await?;
        if reply.len() != 2 + policies.len() {
            return Err(RedisFailure::Error(fred::error::Error::new(
                fred::error::ErrorKind::Parse,
                "unexpected reply from the rate-limit script",
            )));
        }
        let script_now = reply[1] as u64;
        let mut tats = [0u64; MAX_POLICIES];
        let mut gcras = [Gcra { emission_us: 1, tolerance_us: 1 }; MAX_POLICIES];
        for (i, ((_, gcra), tat)) in policies.iter().zip(&reply[2..]).enumerate() {
            tats[i] = *tat as u64;
            gcras[i] = *gcra;
        }
        let mut verdicts = Verdicts::default();
        judge(&gcras[..policies.len()], &mut tats[..policies.len()], script_now, &mut verdicts);
        if let (Some(denials), Some(policy)) = (&self.denials, verdicts.denied_by()) {
            // The verdict is relative to the script's clock; the cache runs on ours.
            let v = verdicts.as_slice()[policy];
            let denial = Denial { until: now + v.retry_after_us, reset_at: now + v.reset_us, policy: policy as u8 };
            denials.lock(digest).insert(digest, denial, now);
        }
        Ok(verdicts)
    }

    /// Entries in the deny cache.
    pub(crate) fn cached_denials(&self) -> usize {
        self.denials.as_ref().map_or(0, ShardedMap::len)
    }
}

impl RedisStoreBuilder {
    /// Prefix of every key (default `phalanx:rl`). Nodes that share a quota share the prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest a decision waits for Redis (default 5 ms); then the layer's failure mode decides.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Read the time from the Redis server (`TIME` inside the script) instead of passing the
    /// layer's clock. Removes clock skew between nodes from the picture, at the price that the
    /// limiter's time can no longer be controlled by tests (default `false`).
    pub fn server_time(mut self, yes: bool) -> Self {
        self.server_time = yes;
        self
    }

    /// Answer keys known to be limited locally until they may pass again (default `true`).
    pub fn deny_cache(mut self, yes: bool) -> Self {
        self.deny_cache = yes;
        self
    }

    /// Build; fails on an empty prefix or a zero deadline.
    pub fn build(self) -> Result<RedisStore, BuildError> {
        if self.prefix.is_empty() {
            return Err(BuildError::new("the Redis key prefix must not be empty"));
        }
        if self.deadline.is_zero() {
            return Err(BuildError::new("the Redis deadline must be above zero"));
        }
        Ok(RedisStore {
            pool: self.pool,
            script: Script::from_lua(GCRA_LUA),
            prefix: self.prefix,
            deadline: self.deadline,
            server_time: self.server_time,
            denials: self.deny_cache.then(ShardedMap::new),
        })
    }
}

// Keep the policy bitmask of the deny cache in range.
const _: () = assert!(MAX_POLICIES <= 8);
