//! What every pool's `/status` section shares: its two targets.
//!
//! Each pool handle ([`DbPool`](crate::DbPool), [`RedisPool`](crate::RedisPool),
//! [`HttpClient`](crate::HttpClient)) is a [`StatusSource`](phalanx_core::StatusSource) whose
//! section is named by the pool: register it with `registry.register(pool.clone())`, or under
//! another name with `registry.register_as(name, pool.clone())`.
#![cfg_attr(not(any(feature = "db", feature = "redis")), allow(dead_code))]

use phalanx_core::TargetCheck;

use crate::health::Health;

/// Utilization above which a pool is reported as running out of headroom.
pub(crate) const UTILIZATION_TARGET: f64 = 0.9;

/// `pool.<name>.utilization <= 0.9` and `pool.<name>.health != unhealthy`.
pub(crate) fn pool_targets(name: &str, utilization: f64, health: Health) -> Vec<TargetCheck> {
    vec![
        TargetCheck::at_most(format!("pool.{name}.utilization"), Some(utilization), UTILIZATION_TARGET),
        TargetCheck {
            name: format!("pool.{name}.health"),
            target: "!= unhealthy".into(),
            value: Some(health.as_gauge() as f64),
            met: Some(health != Health::Unhealthy),
        },
    ]
}
