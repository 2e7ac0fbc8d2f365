//! The `pools` section of `/status`.

use std::sync::Arc;

use phalanx_core::{StatusSource, TargetCheck};

use crate::health::Health;

/// A pool that reports itself in the `pools` section of `/status`. Implemented by
/// [`DbPool`](crate::DbPool), [`RedisPool`](crate::RedisPool) and [`HttpClient`](crate::HttpClient).
pub trait PoolReport: Send + Sync + 'static {
    /// The pool's name: its key in the section.
    fn name(&self) -> &str;
    /// Its current figures.
    fn report(&self) -> serde_json::Value;
    /// `in_use / max`, where the pool has a maximum.
    fn utilization(&self) -> f64 {
        0.0
    }
    /// Its health.
    fn health(&self) -> Health;
}

/// The `pools` section of `/status`: every registered pool's figures, and two targets per pool
/// (utilization ≤ 0.9, health not unhealthy). Register it in a
/// [`StatusRegistry`](phalanx_core::StatusRegistry).
#[derive(Clone, Default)]
pub struct PoolsStatus {
    pools: Vec<Arc<dyn PoolReport>>,
}

impl std::fmt::Debug for PoolsStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.pools.iter().map(|p| p.name().to_owned())).finish()
    }
}

impl PoolsStatus {
    /// An empty section.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a pool (a clone of its handle).
    pub fn with(mut self, pool: impl PoolReport) -> Self {
        self.pools.push(Arc::new(pool));
        self
    }
}

/// Utilization above which a pool is reported as running out of headroom.
const UTILIZATION_TARGET: f64 = 0.9;

impl StatusSource for PoolsStatus {
    fn name(&self) -> &str {
        "pools"
    }

    fn report(&self) -> serde_json::Value {
        let map = self.pools.iter().map(|p| (p.name().to_owned(), p.report())).collect();
        serde_json::Value::Object(map)
    }

    fn targets(&self) -> Vec<TargetCheck> {
        self.pools
            .iter()
            .flat_map(|p| {
                let healthy = p.health() != Health::Unhealthy;
                [
                    TargetCheck::at_most(
                        format!("pool.{}.utilization", p.name()),
                        Some(p.utilization()),
                        UTILIZATION_TARGET,
                    ),
                    TargetCheck {
                        name: format!("pool.{}.health", p.name()),
                        target: "!= unhealthy".into(),
                        value: Some(p.health().as_gauge() as f64),
                        met: Some(healthy),
                    },
                ]
            })
            .collect()
    }
}
