//! The response future of [`RateLimitService`](crate::RateLimitService).

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::{Request, Response};
use phalanx_core::{LayerBody, Problem};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::decision::{Fields, RATELIMIT, RATELIMIT_POLICY};

pin_project! {
    /// The response future of [`RateLimitService`](crate::RateLimitService): the inner
    /// service's response with the `RateLimit` fields added, or the rejection.
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
    }
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// Calling the inner service; `fields` go onto its response.
    pub(crate) fn calling(future: S::Future, fields: Option<Box<Fields>>) -> Self {
        ResponseFuture { state: State::Calling { future, fields } }
    }

    /// Answering with this problem, without calling the inner service.
    pub(crate) fn rejected(problem: Box<Problem>) -> Self {
        ResponseFuture { state: State::Rejected { problem: Some(problem) } }
    }
}

impl<S, ReqBody> std::fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture").field("state", &state).finish()
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
