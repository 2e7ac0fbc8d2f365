//! The response future of [`crate::CircuitBreakerService`]: records the call's outcome when
//! the inner service answers, or yields the ready refusal.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::Response;
use phalanx_core::LayerBody;
use pin_project_lite::pin_project;

use crate::{breaker::Permit, CallOutcome};

pin_project! {
    /// The response future of [`crate::CircuitBreakerService`].
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

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn called(future: F, permit: Permit) -> Self {
        ResponseFuture { kind: Kind::Called { future, permit: Some(permit) } }
    }

    pub(crate) fn refused(response: Response<LayerBody<B>>) -> Self {
        ResponseFuture { kind: Kind::Refused { response: Some(response) } }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture").field("kind", &kind).finish_non_exhaustive()
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
                        // A load-shedding refusal from a layer inside is not the route failing.
                        Ok(res) if res.extensions().get::<phalanx_core::problem::LoadShed>().is_some() => {
                            permit.record(CallOutcome::Ignored);
                        }
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
