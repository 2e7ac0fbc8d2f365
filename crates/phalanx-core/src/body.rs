//! The response body of a layer that sometimes answers by itself.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Either the inner service's body, streamed as it is, or a complete body the layer wrote
    /// (a rejection, a cached response). Changing the body type this way, as tower-http does,
    /// lets a layer answer by itself over any inner body without boxing it.
    pub struct LayerBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    // The written bytes are boxed: every response passing through a layer carries this type,
    // and keeping it no larger than an axum `Body` keeps those responses cheap to move.
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Box<Bytes>> },
    }
}

impl<B> LayerBody<B> {
    /// The inner service's body.
    pub fn inner(body: B) -> Self {
        LayerBody { kind: Kind::Inner { body } }
    }

    /// A complete body of these bytes.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        LayerBody { kind: Kind::Full { data: (!data.is_empty()).then(|| Box::new(data)) } }
    }

    /// An empty body.
    pub fn empty() -> Self {
        LayerBody { kind: Kind::Full { data: None } }
    }

    /// The inner body, when this is one.
    pub fn into_inner(self) -> Option<B> {
        match self.kind {
            Kind::Inner { body } => Some(body),
            Kind::Full { .. } => None,
        }
    }
}

impl<B> Default for LayerBody<B> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<B> std::fmt::Debug for LayerBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("LayerBody::Inner"),
            Kind::Full { data } => {
                f.debug_tuple("LayerBody::Full").field(&data.as_ref().map_or(0, |d| d.len())).finish()
            }
        }
    }
}

impl<B> Body for LayerBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(*d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn full_and_inner_bodies_yield_their_bytes() {
        let full: LayerBody<Full<Bytes>> = LayerBody::full("abc");
        assert_eq!(full.size_hint().exact(), Some(3));
        assert_eq!(full.collect().await.unwrap().to_bytes(), "abc");
        let inner = LayerBody::inner(Full::new(Bytes::from_static(b"xyz")));
        assert_eq!(inner.collect().await.unwrap().to_bytes(), "xyz");
        let empty: LayerBody<Full<Bytes>> = LayerBody::empty();
        assert!(empty.is_end_stream());
        assert_eq!(
            std::mem::size_of::<LayerBody<axum::body::Body>>(),
            std::mem::size_of::<axum::body::Body>(),
            "responses through a layer are no larger to move than axum's"
        );
    }
}
