//! `CircuitBreakerService`: admits a call or answers the refusal at once.

use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use http::{header, HeaderValue, Request, Response, StatusCode};
use phalanx_core::{
    problem::{retry_after_secs, types, PROBLEM_JSON},
    LayerBody, Problem,
};
use tower_service::Service;

use crate::{
    breaker::{CallNotPermitted, CircuitBreaker},
    future::ResponseFuture,
    layer::Pick,
};

/// The service of [`crate::CircuitBreakerLayer`].
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S> {
    inner: S,
    pick: Pick,
}

impl<S> CircuitBreakerService<S> {
    pub(crate) fn new(inner: S, pick: Pick) -> Self {
        CircuitBreakerService { inner, pick }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreakerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<LayerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Admission happens in `call`: axum never polls readiness on the clone it calls.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let per_route;
        let breaker = match &self.pick {
            Pick::Fixed { breaker, .. } => breaker,
            Pick::PerRoute(registry) => {
                let name =
                    req.extensions().get::<MatchedPath>().map_or(phalanx_core::names::UNMATCHED_ROUTE, |p| p.as_str());
                per_route = registry.get_or_create(name);
                &per_route
            }
        };
        match breaker.try_acquire() {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), permit),
            Err(refused) => ResponseFuture::refused(cached_open_response(breaker, &refused)),
        }
    }
}

/// The problem document of a refused call: 503, typed [`types::CIRCUIT_OPEN`], with the
/// breaker's name and state and `Retry-After` (the rest of the wait in open).
pub fn open_problem(refused: &CallNotPermitted) -> Problem {
    Problem::unavailable(types::CIRCUIT_OPEN, refused.retry_after)
        .with_title("Circuit Open")
        .with_detail(format!("the circuit breaker '{}' is {}", refused.breaker, refused.state))
        .with_member("breaker", refused.breaker.as_ref())
        .with_member("state", refused.state.as_str())
}

/// The 503 response of [`open_problem`], its document rendered once per breaker, state and
/// `Retry-After` second (the same bytes and headers `Problem::into_response` gives).
fn cached_open_response<B>(breaker: &CircuitBreaker, refused: &CallNotPermitted) -> Response<LayerBody<B>> {
    let secs = retry_after_secs(refused.retry_after);
    let (body, retry_after) = breaker.rejection(refused.state, secs, || open_problem(refused).to_json());
    let mut res = Response::new(LayerBody::full(body));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::RETRY_AFTER, retry_after);
    res
}
