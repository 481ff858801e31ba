//! [`HttpCacheBody`]: stored bytes, a stored body read from the disk tier in parts, or
//! the origin's body copied as it streams.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::store::*;
use crate::disk::DiskRecord;
use crate::error::DiskError;
use crate::BoxError;

/// Most bytes one read of a stored body held by the disk tier copies: one checksum
/// block of the disk tier's addressable form, so reads follow its blocks.
pub(crate) const DISK_CHUNK: u64 = crate::disk::BLOCK as u64;

/// A stored body held by the disk tier: bytes `offset..offset + len` of a record opened
/// to be read in parts.
#[derive(Debug, Clone)]
pub(crate) struct DiskBody {
    pub(super) record: DiskRecord,
    pub(super) offset: u64,
    pub(super) len: u64,
}

impl DiskBody {
    /// Bytes `from..from + len` of the body, as a body that reads them in chunks.
    pub(super) fn part(&self, from: u64, len: u64) -> DiskBody {
        DiskBody {
            record: self.record.clone(),
            offset: self.offset.saturating_add(from),
            len,
        }
    }
}

type ChunkRead = tokio::task::JoinHandle<Result<Bytes, DiskError>>;

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
        /// A stored body held by the disk tier: one chunk at a time, each read on the
        /// blocking pool in a read transaction of its own; a record replaced or removed
        /// meanwhile ends the body with an error.
        Disk { body: DiskBody, sent: u64, reading: Option<ChunkRead> },
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

    pub(super) fn disk(body: DiskBody) -> Self {
        Self {
            kind: BodyKind::Disk {
                body,
                sent: 0,
                reading: None,
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
            BodyProj::Disk {
                body,
                sent,
                reading,
            } => poll_disk(body, sent, reading, cx),
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
            BodyKind::Disk { body, sent, .. } => *sent >= body.len,
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
            BodyKind::Disk { body, sent, .. } => SizeHint::with_exact(body.len - *sent),
            BodyKind::Streaming { inner } | BodyKind::Tee { inner, .. } => inner.size_hint(),
        }
    }
}

/// The next chunk of a body held by the disk tier: up to the end of the block it starts
/// in, so that each block is checked once.
fn poll_disk(
    body: &DiskBody,
    sent: &mut u64,
    reading: &mut Option<ChunkRead>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if *sent >= body.len {
        return Poll::Ready(None);
    }
    let at = body.offset + *sent;
    let len = (DISK_CHUNK - at % DISK_CHUNK).min(body.len - *sent);
    let read = match reading {
        Some(task) => match std::task::ready!(Pin::new(task).poll(cx)) {
            Ok(read) => read,
            Err(e) => Err(DiskError::new(format!("disk tier: read task: {e}"))),
        },
        None => match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let record = body.record.clone();
                let task = reading.insert(rt.spawn_blocking(move || record.read(at, len as usize)));
                match std::task::ready!(Pin::new(task).poll(cx)) {
                    Ok(read) => read,
                    Err(e) => Err(DiskError::new(format!("disk tier: read task: {e}"))),
                }
            }
            Err(_) => body.record.read(at, len as usize),
        },
    };
    *reading = None;
    match read {
        Ok(chunk) => {
            *sent += len;
            Poll::Ready(Some(Ok(Frame::data(chunk))))
        }
        Err(e) => {
            // Nothing more is sent: a body cut short, never one completed with the
            // bytes of another record.
            *sent = body.len;
            Poll::Ready(Some(Err(e.into())))
        }
    }
}
