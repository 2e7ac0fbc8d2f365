//! `RateLimitService` and its response future.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Request, Response};
use phalanx_core::{LayerBody, Problem};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::layer::{Answer, Fields, Shared, RATELIMIT, RATELIMIT_POLICY};

/// The service made by [`crate::RateLimitLayer`].
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
        let state = match self.shared.answer_now(key.as_ref(), digest, tier) {
            Answer::Pass(fields) => State::Calling { future: self.inner.call(req), fields },
            Answer::Reject(problem) => State::Rejected { problem: Some(problem) },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The response future of [`RateLimitService`].
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Calling { #[pin] future: S::Future, fields: Option<Box<Fields>> },
        Rejected { problem: Option<Box<Problem>> },
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<LayerBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Calling { future, fields } => {
                let mut res = ready!(future.poll(cx))?.map(LayerBody::inner);
                if let Some(fields) = fields.take() {
                    res.headers_mut().insert(RATELIMIT_POLICY.clone(), fields.policy);
                    res.headers_mut().insert(RATELIMIT.clone(), fields.state);
                }
                Poll::Ready(Ok(res))
            }
            StateProj::Rejected { problem } => {
                let problem = problem.take().expect("polled after completion");
                Poll::Ready(Ok((*problem).into_response()))
            }
        }
    }
}
