//! The one metrics vocabulary: instrument names, attribute keys and bounded label values.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists; the rest share the
//! `phalanx.` prefix. Every label value a layer records is one of a bounded set: a matched route
//! template (never a raw path), a policy, priority, cache level or pool name.

/// `http.server.request.duration`, seconds, histogram.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
/// `http.server.active_requests`, up-down counter.
pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http.server.active_requests";

/// Cache lookups by level and result, counter.
pub const CACHE_LOOKUPS: &str = "phalanx.cache.lookups";
/// Cache size (entries or bytes, see the unit) by level, gauge.
pub const CACHE_SIZE: &str = "phalanx.cache.size";
/// Cache evictions by level, counter.
pub const CACHE_EVICTIONS: &str = "phalanx.cache.evictions";
/// Fallbacks to L1 + loader when Redis is slow or gone, counter.
pub const CACHE_FALLBACKS: &str = "phalanx.cache.fallbacks";

/// Rate-limit decisions by policy and outcome, counter.
pub const RATELIMIT_DECISIONS: &str = "phalanx.ratelimit.decisions";

/// Admitted requests in flight by priority, gauge.
pub const ADMISSION_IN_FLIGHT: &str = "phalanx.admission.in_flight";
/// The concurrency limit (per priority: the share it may use), gauge.
pub const ADMISSION_LIMIT: &str = "phalanx.admission.limit";
/// Requests waiting in the queue by priority, gauge.
pub const ADMISSION_QUEUED: &str = "phalanx.admission.queued";
/// Requests shed by priority and reason, counter.
pub const ADMISSION_SHED: &str = "phalanx.admission.shed";

/// Breaker state (0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled), gauge.
pub const BREAKER_STATE: &str = "phalanx.breaker.state";
/// Calls through a breaker by outcome, counter.
pub const BREAKER_CALLS: &str = "phalanx.breaker.calls";

/// Pool size (open connections), gauge.
pub const POOL_SIZE: &str = "phalanx.pool.size";
/// Idle pooled connections, gauge.
pub const POOL_IDLE: &str = "phalanx.pool.idle";
/// Connections handed out, gauge.
pub const POOL_IN_USE: &str = "phalanx.pool.in_use";
/// `in_use / max`, gauge.
pub const POOL_UTILIZATION: &str = "phalanx.pool.utilization";
/// Time to acquire a connection, seconds, histogram.
pub const POOL_ACQUIRE_DURATION: &str = "phalanx.pool.acquire.duration";
/// Acquisitions that timed out, counter.
pub const POOL_ACQUIRE_TIMEOUTS: &str = "phalanx.pool.acquire.timeouts";
/// Pool failures by reason (timeout, unavailable, error, connection), counter.
pub const POOL_ERRORS: &str = "phalanx.pool.errors";
/// Pool health (0 healthy, 1 degraded, 2 recovering, 3 unhealthy), gauge.
pub const POOL_HEALTH: &str = "phalanx.pool.health";
/// Duration of one command on a pooled connection (a Redis round trip), seconds, histogram.
pub const POOL_COMMAND_DURATION: &str = "phalanx.pool.command.duration";

/// `http.client.request.duration`, seconds, histogram: one record per attempt.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
/// `http.client.active_requests`, up-down counter.
pub const HTTP_CLIENT_ACTIVE_REQUESTS: &str = "http.client.active_requests";

/// Attribute keys.
pub mod attr {
    /// The matched route template (`/items/{id}`), or [`super::UNMATCHED_ROUTE`].
    pub const HTTP_ROUTE: &str = "http.route";
    /// The request method (unknown methods are recorded as `_OTHER`).
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    /// The response status code.
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// Cache level: `l1`, `l2`, `http`.
    pub const LEVEL: &str = "level";
    /// Outcome of a lookup: `hit`, `miss`, `stale`, `coalesced`.
    pub const RESULT: &str = "result";
    /// The rate-limit policy name.
    pub const POLICY: &str = "policy";
    /// The outcome of a decision or call.
    pub const OUTCOME: &str = "outcome";
    /// The priority class.
    pub const PRIORITY: &str = "priority";
    /// Why a request was shed.
    pub const REASON: &str = "reason";
    /// The breaker name.
    pub const BREAKER: &str = "breaker";
    /// The pool name.
    pub const POOL: &str = "pool";
    /// The admission limiter's name (one per route group).
    pub const LIMITER: &str = "limiter";
    /// Present (`true`) on the decisions of a rate limiter in shadow mode.
    pub const SHADOW: &str = "shadow";
    /// The upstream host of an outbound call.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The upstream port of an outbound call.
    pub const SERVER_PORT: &str = "server.port";
    /// Why a request or call ended without a response (semantic conventions).
    pub const ERROR_TYPE: &str = "error.type";
}

/// The `http.route` value shared by every request that matched no route, so a flood of
/// distinct unknown paths makes one series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Histogram bucket boundaries in seconds for request and acquire durations: 0.5 ms … 10 s.
pub const DURATION_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0,
];
