//! `RateLimitService` and its response future.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{HeaderValue, Request, Response};
use phalanx_core::{LayerBody, Problem, Tier};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::layer::{Answer, Decision, Shared, RATELIMIT, RATELIMIT_POLICY};

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
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<LayerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let key = self.shared.client_key(&req);
        let tier = req.extensions().get::<Tier>().copied().unwrap_or_default();
        let digest = self.shared.digest(&key);
        let state = match self.shared.try_decide(digest, tier) {
            Some(decision) => State::start(&self.shared, &decision, &mut self.inner, req),
            None => {
                // The decision needs a round trip: take the service that was made ready along.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                State::Deciding {
                    decision: Box::pin(self.shared.clone().decide_remote(key, digest, tier)),
                    pending: Some((ready, req)),
                }
            }
        };
        ResponseFuture { state, shared: self.shared.clone() }
    }
}

type DecisionFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;

pin_project! {
    /// The response future of [`RateLimitService`].
    pub struct ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        shared: Arc<Shared>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        Deciding { decision: DecisionFuture, pending: Option<(S, Request<ReqBody>)> },
        Calling { #[pin] future: S::Future, fields: Option<(HeaderValue, HeaderValue)> },
        Rejected { problem: Option<Box<Problem>> },
    }
}

impl<S, ReqBody> State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn start(shared: &Shared, decision: &Decision, service: &mut S, req: Request<ReqBody>) -> Self {
        match shared.answer(decision) {
            Answer::Pass(fields) => State::Calling { future: service.call(req), fields },
            Answer::Reject(problem) => State::Rejected { problem: Some(problem) },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<LayerBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Deciding { decision, pending } => {
                    let decision = ready!(decision.as_mut().poll(cx));
                    let (mut service, req) = pending.take().expect("polled after the decision was taken");
                    let next = State::start(this.shared, &decision, &mut service, req);
                    this.state.set(next);
                }
                StateProj::Calling { future, fields } => {
                    let mut res = ready!(future.poll(cx))?.map(LayerBody::inner);
                    if let Some((policy, state)) = fields.take() {
                        res.headers_mut().insert(RATELIMIT_POLICY.clone(), policy);
                        res.headers_mut().insert(RATELIMIT.clone(), state);
                    }
                    return Poll::Ready(Ok(res));
                }
                StateProj::Rejected { problem } => {
                    let problem = problem.take().expect("polled after completion");
                    return Poll::Ready(Ok((*problem).into_response()));
                }
            }
        }
    }
}
