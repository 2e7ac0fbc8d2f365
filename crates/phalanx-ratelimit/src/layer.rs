//! `RateLimitLayer`: the `tower::Layer` that wraps a service in a [`RateLimitService`].

use std::sync::Arc;

use tower_layer::Layer;

use crate::{decision::Shared, service::RateLimitService};

/// A Tower layer limiting the request rate of each client by one or more named policies.
///
/// Build it with [`RateLimitLayer::builder`] or, from a configuration file,
/// [`RateLimitLayer::from_config`]. Clone-safe on axum routes: all state is shared behind an
/// `Arc` and decisions are made in `call`, never reserved in `poll_ready`. The layer is also
/// the `"ratelimit"` section of `/status` (it implements
/// [`StatusSource`](phalanx_core::StatusSource)): `registry.register(layer.clone())`.
#[derive(Clone)]
pub struct RateLimitLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.shared.policies.iter().map(|p| &*p.name).collect();
        let mut d = f.debug_struct("RateLimitLayer");
        d.field("policies", &names);
        #[cfg(feature = "redis")]
        d.field("redis", &self.shared.redis);
        d.field("shadow", &self.shared.shadow).finish()
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.shared.clone())
    }
}

impl RateLimitLayer {
    /// Drop the in-process store's idle keys now. Shards also do this by themselves as they
    /// grow; call it from a periodic task to give memory back after a burst of distinct keys.
    pub fn sweep_idle(&self) {
        self.shared.local.sweep(self.shared.clock.now_us());
    }

    /// With a Redis store: send the lease synchronisations queued now and wait for them (at
    /// most twice the store's deadline). The background task does this by itself; call it
    /// before shutting down, or in tests that need the leases settled. No-op in-process.
    pub async fn sync(&self) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.shared.redis {
            redis.sync().await;
        }
    }
}
