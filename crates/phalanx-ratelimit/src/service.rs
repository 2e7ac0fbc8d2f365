//! `RateLimitService` and its response future.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Request, Response};
use phalanx_core::{ClientKey, LayerBody, Problem, Tier};
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

impl<S> RateLimitService<S> {
    /// The decision needs a round trip: the service that was made ready, the request and the
    /// shared state go along into one boxed future. Kept out of `call` so that the in-process
    /// path does not carry this future's stack frame.
    #[inline(never)]
    fn decide_remotely<ReqBody>(
        &mut self,
        req: Request<ReqBody>,
        key: Option<ClientKey>,
        digest: u64,
        tier: Tier,
    ) -> State<S, ReqBody>
    where
        S: Service<Request<ReqBody>> + Clone + Send + 'static,
        ReqBody: Send + 'static,
    {
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        State::Deciding {
            decision: Box::pin(async move {
                let answer = shared.decide_remote(key, digest, tier).await;
                (answer, ready, req)
            }),
        }
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
        let (digest, key) = self.shared.identify(&req);
        let tier = self.shared.tier(&req);
        let state = match self.shared.try_answer(digest, tier) {
            Some(Answer::Pass(fields)) => State::Calling { future: self.inner.call(req), fields },
            Some(Answer::Reject(problem)) => State::Rejected { problem: Some(problem) },
            None => self.decide_remotely(req, key, digest, tier),
        };
        ResponseFuture { state }
    }
}

type DecisionFuture<S, ReqBody> = Pin<Box<dyn Future<Output = (Answer, S, Request<ReqBody>)> + Send>>;

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
        Deciding { decision: DecisionFuture<S, ReqBody> },
        Calling { #[pin] future: S::Future, fields: Option<Box<Fields>> },
        Rejected { problem: Option<Box<Problem>> },
    }
}

impl<S, ReqBody> State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn start(answer: Answer, service: &mut S, req: Request<ReqBody>) -> Self {
        match answer {
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
        if let StateProj::Deciding { decision } = this.state.as_mut().project() {
            let (answer, mut service, req) = ready!(decision.as_mut().poll(cx));
            this.state.set(State::start(answer, &mut service, req));
        }
        match this.state.project() {
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
            StateProj::Deciding { .. } => unreachable!("a decided future moves on to calling or rejecting"),
        }
    }
}
