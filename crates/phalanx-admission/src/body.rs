//! The response body that holds the admission permit until the body is done.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use phalanx_core::LayerBody;
use pin_project_lite::pin_project;

use crate::shared::Permit;

pin_project! {
    /// The response body of [`crate::AdmissionService`]: the inner body, or a shed answer's
    /// problem document. An admitted request keeps its slot until this body yields its last
    /// frame, fails, or is dropped (a streaming body, a client that went away), so a slow
    /// stream counts as in flight for as long as it lasts.
    pub struct AdmissionBody<B> {
        #[pin]
        inner: LayerBody<B>,
        permit: Option<Permit>,
    }
}

impl<B> AdmissionBody<B> {
    pub(crate) fn new(inner: LayerBody<B>, permit: Option<Permit>) -> Self {
        AdmissionBody { inner, permit }
    }

    /// Whether this body still holds an admission slot.
    pub fn holds_permit(&self) -> bool {
        self.permit.is_some()
    }
}

impl<B> std::fmt::Debug for AdmissionBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionBody").field("inner", &self.inner).field("permit", &self.permit.is_some()).finish()
    }
}

impl<B> Body for AdmissionBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => drop(this.permit.take()),
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
