//! `RateLimitService`: decides each request in `call` and answers refusals itself.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use phalanx_core::LayerBody;
use tower_service::Service;

use crate::{
    decision::{Answer, Shared},
    future::ResponseFuture,
};

/// The service made by [`RateLimitLayer`](crate::RateLimitLayer).
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for RateLimitService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService").finish_non_exhaustive()
    }
}

impl<S> RateLimitService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        RateLimitService { inner, shared }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<LayerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (digest, key) = self.shared.identify(&req);
        let tier = self.shared.tier(&req);
        // Decided here and now: the Redis store answers from this node's lease, never waiting.
        match self.shared.answer_now(key.as_ref(), digest, tier) {
            Answer::Pass(fields) => ResponseFuture::calling(self.inner.call(req), fields),
            Answer::Reject(problem) => ResponseFuture::rejected(problem),
        }
    }
}
