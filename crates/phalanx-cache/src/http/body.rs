//! Response bodies: [`CacheBody`], and reading a body up to the size cap while handing on what
//! was read ([`SplicedBody`]).

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use phalanx_core::LayerBody;
use pin_project_lite::pin_project;

/// The response body of [`CacheService`](super::CacheService): stored bytes, or the inner body
/// (with whatever the cache read of it ahead).
pub type CacheBody<B> = LayerBody<SplicedBody<B>>;

pin_project! {
    /// The inner body, preceded by the frames the cache already read from it (while checking
    /// whether the body fits under the size cap). A body that turned out too large to store is
    /// handed on this way, streamed, with nothing lost.
    pub struct SplicedBody<B: Body> {
        prefix: VecDeque<Frame<Bytes>>,
        error: Option<B::Error>,
        #[pin]
        rest: Option<B>,
    }
}

impl<B: Body> SplicedBody<B> {
    /// The inner body as it is.
    pub fn new(body: B) -> Self {
        SplicedBody { prefix: VecDeque::new(), error: None, rest: Some(body) }
    }
}

impl<B: Body> std::fmt::Debug for SplicedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplicedBody").field("prefix_frames", &self.prefix.len()).finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> Body for SplicedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(frame) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(err) = this.error.take() {
            return Poll::Ready(Some(Err(err)));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.error.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self.prefix.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
        let mut hint = self.rest.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let lower = hint.lower() + read;
        match hint.upper() {
            Some(upper) => {
                hint.set_upper(upper + read);
                hint.set_lower(lower);
            }
            None => hint.set_lower(lower),
        }
        hint
    }
}

/// A body read as far as the cap allows.
pub(crate) enum Buffered<B: Body> {
    /// The whole body, no trailers: storable.
    Complete(Bytes),
    /// Too large, or with trailers, or failed: hand it on, not stored.
    PassOn(SplicedBody<B>),
}

/// Read `body` while it stays under `cap` bytes.
pub(crate) async fn buffer<B>(body: B, cap: usize) -> Buffered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    let hint = body.size_hint();
    if hint.lower() > cap as u64 {
        return Buffered::PassOn(SplicedBody::new(body));
    }
    if hint.exact() == Some(0) && body.is_end_stream() {
        return Buffered::Complete(Bytes::new());
    }
    let mut body = body;
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut len = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                let is_data = frame.is_data();
                if let Some(data) = frame.data_ref() {
                    len += data.len();
                }
                frames.push_back(frame);
                if !is_data || len > cap {
                    return Buffered::PassOn(SplicedBody { prefix: frames, error: None, rest: Some(body) });
                }
            }
            Some(Err(e)) => {
                return Buffered::PassOn(SplicedBody { prefix: frames, error: Some(e), rest: None });
            }
        }
    }
    if frames.len() == 1 {
        let only = frames.pop_front().and_then(|f| f.into_data().ok()).unwrap_or_default();
        return Buffered::Complete(only);
    }
    let mut all = BytesMut::with_capacity(len);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            all.extend_from_slice(&data);
        }
    }
    Buffered::Complete(all.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn chunks(n: usize, size: usize) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            (0..n).map(|i| Ok(Frame::data(Bytes::from(vec![i as u8; size])))).collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_handed_on_whole() {
        match buffer(chunks(4, 10), 25).await {
            Buffered::PassOn(body) => {
                let all = body.collect().await.unwrap().to_bytes();
                assert_eq!(all.len(), 40);
                assert_eq!(&all[30..], &[3u8; 10]);
            }
            Buffered::Complete(_) => panic!("40 bytes exceed a cap of 25"),
        }
        match buffer(chunks(2, 10), 25).await {
            Buffered::Complete(all) => assert_eq!(all.len(), 20),
            Buffered::PassOn(_) => panic!("20 bytes fit"),
        }
    }
}
