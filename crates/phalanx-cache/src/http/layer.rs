//! [`CacheLayer`]: the Tower layer and the purge API (construction is in `builder`).

use std::sync::Arc;

use tower_layer::Layer;

use super::{
    service::CacheService,
    state::{key_tag, HttpStore, State},
};
use crate::stats::CacheStats;

/// A Tower layer caching HTTP responses as a shared cache (RFC 9111). Cheap to clone; clones
/// (and the services they make) share the store. Register it for `/status` with
/// `registry.register(layer.clone())` (section `http_cache`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use phalanx_cache::CacheLayer;
///
/// let cache = CacheLayer::builder().default_ttl(Duration::from_secs(5)).build().unwrap();
/// let app: Router = Router::new()
///     .route("/items/{id}", get(|| async { "item" }))
///     .layer(cache.clone());
/// # let _ = app;
/// cache.purge_tag("item:1").await;
/// # }
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    pub(crate) state: Arc<State>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer").field("store", &self.state.store).finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService { inner, state: Arc::clone(&self.state) }
    }
}

impl CacheLayer {
    /// The store (to share it with another CacheLayer, e.g. one per route).
    pub fn store(&self) -> &HttpStore {
        &self.state.store
    }

    /// The store's figures (the HTTP layer's own view in `http`).
    pub fn stats(&self) -> CacheStats {
        self.state.store.stats()
    }

    /// Remove the responses stored under this cache key (all variants), on every node.
    pub async fn purge(&self, key: &str) {
        if let Some(passes) = &self.state.passes {
            passes.forget(key);
        }
        self.state.store.invalidate_tag(&key_tag(key)).await;
    }

    /// Remove every response that carried this tag in `Cache-Tag` or `Surrogate-Key`, on every
    /// node.
    pub async fn purge_tag(&self, tag: &str) {
        self.state.store.invalidate_tag(tag).await;
    }
}
