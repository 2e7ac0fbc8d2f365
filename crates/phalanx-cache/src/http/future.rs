//! [`ResponseFuture`]: the response future of a CacheService.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::CacheBody;

pin_project! {
    /// The response future of [`CacheService`](super::CacheService): ready at once on a fresh L1 hit.
    pub struct ResponseFuture<B: Body, E> {
        #[pin]
        kind: Kind<B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body, E> {
        Ready { response: Option<Response<CacheBody<B>>> },
        Boxed { future: BoxFuture<'static, Result<Response<CacheBody<B>>, E>> },
    }
}

impl<B: Body, E> ResponseFuture<B, E> {
    pub(super) fn ready(response: Response<CacheBody<B>>) -> Self {
        ResponseFuture { kind: Kind::Ready { response: Some(response) } }
    }

    pub(super) fn boxed(future: BoxFuture<'static, Result<Response<CacheBody<B>>, E>>) -> Self {
        ResponseFuture { kind: Kind::Boxed { future } }
    }
}

impl<B: Body, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B: Body, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("ResponseFuture polled after completion")))
            }
            KindProj::Boxed { future } => future.as_mut().poll(cx),
        }
    }
}
