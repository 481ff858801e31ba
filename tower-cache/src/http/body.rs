//! [`HttpCacheBody`]: stored bytes, a stored body read from the disk tier in parts, or
//! the origin's body copied as it streams.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::spool::{Spool, SPOOL_QUEUE};
use super::store::*;
use crate::disk::{DiskRecord, Reading};
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
        Disk { body: DiskBody, sent: u64, reading: Option<ChunkRead>, reader: Option<Reading> },
        Streaming { #[pin] inner: B },
        /// The copy is kept in memory up to `spool_at` bytes, then (a body the memory
        /// tier could not take) written to a spool file of the disk tier as it streams.
        Tee {
            #[pin]
            inner: B,
            copy: BytesMut,
            limit: usize,
            job: Option<StoreJob>,
            spool_at: usize,
            spool: Option<Spool>,
            // The body has ended; its copy is being written out to the spool file before
            // the end (and `last`, its last frame) is passed on, so that the response is
            // stored, or queued to be, by the time its body ends.
            finishing: bool,
            last: Option<Frame<Bytes>>,
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
        // Counted as a reader of its key until it ends or is dropped: a new response for
        // the key waits for it before it replaces the record (see `StoreJob`).
        let reader = Some(body.record.reading());
        Self {
            kind: BodyKind::Disk {
                body,
                sent: 0,
                reading: None,
                reader,
            },
        }
    }

    pub(super) fn streaming(inner: B) -> Self {
        Self {
            kind: BodyKind::Streaming { inner },
        }
    }

    pub(super) fn tee(inner: B, limit: usize, job: StoreJob) -> Self {
        // Past what the memory tier takes, a copy goes to disk (when there is one, and a
        // runtime to write it from).
        let spool_at = match job.store.disk() {
            Some(d) if d.can_spool() && tokio::runtime::Handle::try_current().is_ok() => {
                job.store.memory().max_value_bytes()
            }
            _ => usize::MAX,
        };
        Self {
            kind: BodyKind::Tee {
                inner,
                copy: BytesMut::new(),
                limit,
                job: Some(job),
                spool_at,
                spool: None,
                finishing: false,
                last: None,
            },
        }
    }
}

/// Keeps `data` in the copy of a body being stored: in memory, or in its spool file once
/// the copy grows past `spool_at`. Gives the store job up (nothing stored) past `limit`
/// or when the spool fails.
fn keep(
    data: &Bytes,
    copy: &mut BytesMut,
    spool: &mut Option<Spool>,
    job: &mut Option<StoreJob>,
    limit: usize,
    spool_at: usize,
) {
    let Some(j) = job.as_ref() else {
        return;
    };
    let held = spool.as_ref().map_or(copy.len() as u64, Spool::len);
    let limit = match (
        spool.is_some() || copy.len() + data.len() > spool_at,
        j.store.disk(),
    ) {
        (true, Some(disk)) => limit.min(disk.max_value_bytes()),
        _ => limit,
    };
    if held.saturating_add(data.len() as u64) > limit as u64 {
        // Over the limit: streams on, is not stored; waiters go on.
        job.take();
        *copy = BytesMut::new();
        *spool = None;
        return;
    }
    match spool {
        Some(s) => s.push(data.clone()),
        None if copy.len() + data.len() > spool_at => {
            let mut first = std::mem::take(copy);
            first.extend_from_slice(data);
            match j.store.disk().and_then(|d| Spool::start(d, first.freeze())) {
                Some(s) => *spool = Some(s),
                None => {
                    job.take();
                }
            }
        }
        None => copy.extend_from_slice(data),
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
                reader,
            } => {
                let polled = poll_disk(body, sent, reading, cx);
                if *sent >= body.len {
                    // Ended (whole, or cut by an error): no longer a reader.
                    reader.take();
                }
                polled
            }
            BodyProj::Streaming { inner } => inner.poll_frame(cx).map_err(Into::into),
            BodyProj::Tee {
                mut inner,
                copy,
                limit,
                job,
                spool_at,
                spool,
                finishing,
                last,
            } => loop {
                if *finishing {
                    let done = match spool.as_mut() {
                        Some(s) => std::task::ready!(s.poll_finish(cx)),
                        None => None,
                    };
                    *spool = None;
                    *finishing = false;
                    if let (Some(job), Some((file, len))) = (job.take(), done) {
                        job.finish_spooled(file, len);
                    }
                    job.take();
                    return Poll::Ready(last.take().map(Ok));
                }
                // The copy's way to its spool file: the body waits for the file only when
                // more than `SPOOL_QUEUE` bytes wait for it.
                if let Some(s) = spool.as_mut() {
                    if s.poll_write(cx).is_pending() && s.queued() > SPOOL_QUEUE {
                        return Poll::Pending;
                    }
                    if s.failed() {
                        job.take();
                        *spool = None;
                    }
                }
                let frame = match std::task::ready!(inner.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        // An aborted body is not stored.
                        job.take();
                        *spool = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    None => {
                        if job.is_some() && spool.is_some() {
                            *finishing = true;
                            continue;
                        }
                        if let Some(job) = job.take() {
                            job.finish(std::mem::take(copy).freeze());
                        }
                        return Poll::Ready(None);
                    }
                };
                if let Some(data) = frame.data_ref() {
                    keep(data, copy, spool, job, *limit, *spool_at);
                }
                // A server stops polling a body that says it has ended (a known length,
                // all sent): store now rather than wait for a last poll.
                if job.is_some() && inner.is_end_stream() {
                    if spool.is_some() {
                        *finishing = true;
                        *last = Some(frame);
                        continue;
                    }
                    if let Some(job) = job.take() {
                        job.finish(std::mem::take(copy).freeze());
                    }
                }
                return Poll::Ready(Some(Ok(frame)));
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
