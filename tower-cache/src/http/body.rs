//! [`HttpCacheBody`]: stored bytes, or the origin's body copied as it streams.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::store::*;
use crate::BoxError;

// === body ===

pin_project! {
    /// The body of a response from an [`HttpCacheService`]: stored bytes, the origin's
    /// body passed through, or the origin's body streamed through while a copy is kept
    /// for the store.
    pub struct HttpCacheBody<B> {
        #[pin]
        pub(super) kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    pub(super) enum BodyKind<B> {
        Full { data: Option<Bytes> },
        Streaming { #[pin] inner: B },
        Tee {
            #[pin]
            inner: B,
            copy: BytesMut,
            limit: usize,
            job: Option<StoreJob>,
        },
    }
}

impl<B> fmt::Debug for HttpCacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheBody").finish_non_exhaustive()
    }
}

impl<B> Default for HttpCacheBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl<B> HttpCacheBody<B> {
    pub(super) fn full(data: Bytes) -> Self {
        Self {
            kind: BodyKind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(super) fn streaming(inner: B) -> Self {
        Self {
            kind: BodyKind::Streaming { inner },
        }
    }

    pub(super) fn tee(inner: B, limit: usize, job: StoreJob) -> Self {
        Self {
            kind: BodyKind::Tee {
                inner,
                copy: BytesMut::new(),
                limit,
                job: Some(job),
            },
        }
    }
}

impl<B> Body for HttpCacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Streaming { inner } => inner.poll_frame(cx).map_err(Into::into),
            BodyProj::Tee {
                mut inner,
                copy,
                limit,
                job,
            } => match std::task::ready!(inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        if copy.len().saturating_add(data.len()) > *limit {
                            // Over the limit: streams on, is not stored; waiters go on.
                            job.take();
                            *copy = BytesMut::new();
                        } else if job.is_some() {
                            copy.extend_from_slice(data);
                        }
                    }
                    // A server stops polling a body that says it has ended (a known
                    // length, all sent): store now rather than wait for a last poll.
                    if job.is_some() && inner.is_end_stream() {
                        if let Some(job) = job.take() {
                            job.finish(std::mem::take(copy).freeze());
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Some(Err(e)) => {
                    // An aborted body is not stored.
                    job.take();
                    Poll::Ready(Some(Err(e.into())))
                }
                None => {
                    if let Some(job) = job.take() {
                        job.finish(std::mem::take(copy).freeze());
                    }
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full { data } => data.is_none(),
            BodyKind::Streaming { inner } => inner.is_end_stream(),
            // The copy is stored by the time this is true (see `poll_frame`).
            BodyKind::Tee { job, inner, .. } => job.is_none() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Streaming { inner } | BodyKind::Tee { inner, .. } => inner.size_hint(),
        }
    }
}
