//! [`MetricsService`]: starts a request's accounting.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use axum::extract::MatchedPath;
use http::{Request, Response};
use phalanx_core::names;
use tower_service::Service;

use crate::{
    body::{MetricsBody, RequestGuard},
    future::ResponseFuture,
    layer::Shared,
};

/// Service of [`crate::MetricsLayer`].
#[derive(Clone)]
pub struct MetricsService<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for MetricsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().map_or(names::UNMATCHED_ROUTE, |m| m.as_str());
        let entry = self.shared.routes.entry(route, req.method());
        let guard = RequestGuard::start(self.shared.clone(), entry);
        ResponseFuture::new(self.inner.call(req), guard)
    }
}
