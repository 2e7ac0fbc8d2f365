//! [`ResponseFuture`]: notes the status and hands the guard to the body.

use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::Response;
use phalanx_core::GuardedBody;
use pin_project_lite::pin_project;

use crate::body::{MetricsBody, RequestGuard};

pin_project! {
    /// Response future of [`crate::MetricsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, guard: RequestGuard) -> Self {
        ResponseFuture { inner, guard: Some(guard) }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").field("guard", &self.guard).finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<MetricsBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut guard = this.guard.take();
        Poll::Ready(result.map(|res| {
            if let Some(g) = guard.as_mut() {
                g.set_status(res.status().as_u16());
            }
            res.map(|inner| GuardedBody::new(inner, guard))
        }))
    }
}
