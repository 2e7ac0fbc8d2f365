//! `CircuitBreakerLayer`: a breaker around axum routes. Open → 503 problem+json with
//! `Retry-After` at once, the handler not called.

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use axum::extract::MatchedPath;
use http::{header, HeaderValue, Request, Response, StatusCode};
use phalanx_core::{
    problem::{retry_after_secs, types, PROBLEM_JSON},
    LayerBody, Problem,
};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    breaker::{CallNotPermitted, CircuitBreaker, Permit},
    registry::BreakerRegistry,
};

/// Puts a circuit breaker in front of a service: one fixed breaker, or one per matched route
/// template from a [`BreakerRegistry`].
///
/// A response's status is judged by the breaker's rule (5xx fails, 4xx does not, by default);
/// an error from the inner service is a failure; a call dropped before its response headers
/// counts as [`crate::BreakerConfig::cancelled`] says. The call's duration ends at the response
/// headers.
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    pick: Pick,
}

#[derive(Clone, Debug)]
enum Pick {
    Fixed(CircuitBreaker),
    PerRoute(BreakerRegistry),
}

impl CircuitBreakerLayer {
    /// Every request goes through `breaker`.
    pub fn new(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer { pick: Pick::Fixed(breaker) }
    }

    /// Each request goes through the breaker named after its matched route template
    /// (`/items/{id}`). Apply it with `Router::route_layer`, where the template is known;
    /// requests without one share the breaker `unmatched`.
    pub fn per_route(registry: BreakerRegistry) -> Self {
        CircuitBreakerLayer { pick: Pick::PerRoute(registry) }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService { inner, pick: self.pick.clone() }
    }
}

/// The service of [`CircuitBreakerLayer`].
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S> {
    inner: S,
    pick: Pick,
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
            Pick::Fixed(breaker) => breaker,
            Pick::PerRoute(registry) => {
                let name =
                    req.extensions().get::<MatchedPath>().map_or(phalanx_core::names::UNMATCHED_ROUTE, |p| p.as_str());
                per_route = registry.get_or_create(name);
                &per_route
            }
        };
        match breaker.try_acquire() {
            Ok(permit) => ResponseFuture { kind: Kind::Called { future: self.inner.call(req), permit: Some(permit) } },
            Err(refused) => {
                ResponseFuture { kind: Kind::Refused { response: Some(cached_open_response(breaker, &refused)) } }
            }
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

pin_project! {
    /// The response future of [`CircuitBreakerService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Called { #[pin] future: F, permit: Option<Permit> },
        Refused { response: Option<Response<LayerBody<B>>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<LayerBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, permit } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    match &result {
                        Ok(res) => {
                            let outcome = permit.breaker().config().classify_status(res.status());
                            permit.record(outcome);
                        }
                        Err(_) => permit.failure(),
                    }
                }
                Poll::Ready(result.map(|res| res.map(LayerBody::inner)))
            }
            KindProj::Refused { response } => {
                Poll::Ready(Ok(response.take().expect("ResponseFuture polled after completion")))
            }
        }
    }
}
