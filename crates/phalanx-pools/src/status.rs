//! What every pool's `/status` section shares: its two targets.
//!
//! Each pool handle ([`DbPool`](crate::DbPool), [`RedisPool`](crate::RedisPool),
//! [`HttpClient`](crate::HttpClient)) is a [`StatusSource`](phalanx_core::StatusSource) whose
//! section is named by the pool: register it with `registry.register(pool.clone())`, or under
//! another name with `registry.register_as(name, pool.clone())`.
#![cfg_attr(not(any(feature = "db", feature = "redis")), allow(dead_code))]

use phalanx_core::TargetCheck;

use crate::health::Health;

/// `pool.<name>.health != unhealthy`, and `pool.<name>.utilization <= target` when the pool's
/// configuration sets a `utilization_target`.
pub(crate) fn pool_targets(name: &str, utilization: f64, target: Option<f64>, health: Health) -> Vec<TargetCheck> {
    let mut targets = vec![TargetCheck {
        name: format!("pool.{name}.health"),
        target: "!= unhealthy".into(),
        value: Some(health.as_gauge() as f64),
        met: Some(health != Health::Unhealthy),
    }];
    if let Some(target) = target {
        targets.push(TargetCheck::at_most(format!("pool.{name}.utilization"), Some(utilization), target));
    }
    targets
}
