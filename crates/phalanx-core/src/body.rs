//! Response bodies shared by the layers: [`LayerBody`], the body of a layer that sometimes
//! answers by itself, and [`GuardedBody`], a body that holds a guard (a permit, an in-flight
//! count) until it has been sent or dropped.

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

/// What a [`GuardedBody`] holds: released (dropped) when the body yields its last frame, fails or
/// is dropped. Told first when the body failed, for a guard that counts failures.
pub trait BodyGuard {
    /// The body yielded an error: the client did not get the whole response.
    fn body_failed(&mut self) {}
}

pin_project! {
    /// A response body that keeps `guard` alive for as long as the body is being sent: a slow
    /// stream counts as in flight for as long as it lasts, and a client that goes away releases
    /// the guard when the body is dropped.
    pub struct GuardedBody<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> GuardedBody<B, G> {
    /// `inner`, holding `guard` (none: nothing to release).
    pub fn new(inner: B, guard: Option<G>) -> Self {
        GuardedBody { inner, guard }
    }

    /// Whether the guard is still held.
    pub fn holds_guard(&self) -> bool {
        self.guard.is_some()
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: std::fmt::Debug, G> std::fmt::Debug for GuardedBody<B, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedBody").field("inner", &self.inner).field("holds_guard", &self.guard.is_some()).finish()
    }
}

impl<B, G> Body for GuardedBody<B, G>
where
    B: Body,
    G: BodyGuard,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(None) => drop(this.guard.take()),
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut guard) = this.guard.take() {
                    guard.body_failed();
                }
            }
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

    struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>, bool);
    impl BodyGuard for Counted {
        fn body_failed(&mut self) {
            self.1 = true;
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            let add = if self.1 { 10 } else { 1 };
            self.0.fetch_add(add, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_guarded_body_releases_at_its_end_on_failure_and_on_drop() {
        use std::sync::{atomic::Ordering, Arc};
        let released = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let guard = || Some(Counted(released.clone(), false));

        let body = GuardedBody::new(Full::new(Bytes::from_static(b"ok")), guard());
        assert!(body.holds_guard());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(released.load(Ordering::SeqCst), 1, "released after the last frame");

        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(1);
        let mut body = GuardedBody::new(rx, guard());
        tx.send_data(Bytes::from_static(b"part")).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!(released.load(Ordering::SeqCst), 1, "still held mid-stream");
        tx.abort(std::io::Error::other("gone"));
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(released.load(Ordering::SeqCst), 11, "released as failed");

        let body = GuardedBody::new(Full::new(Bytes::from_static(b"never read")), guard());
        drop(body);
        assert_eq!(released.load(Ordering::SeqCst), 12, "released when dropped unread");
    }
}
