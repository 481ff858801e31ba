//! What a connection's timeouts are judged by: when it last moved a byte, and how many
//! requests it has in progress (shared by `cache_proxy` and the fleet's gateway).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// When a connection last moved a byte, and how many requests it has started and has
/// in progress: what its timeouts are judged by.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When the connection opened.
    pub(crate) opened: tokio::time::Instant,
    /// Milliseconds from `opened` to the last byte read or written.
    last_ms: AtomicU64,
    /// Requests started on the connection.
    pub(crate) started: AtomicU64,
    /// Requests in progress.
    pub(crate) in_progress: AtomicU64,
}

impl Activity {
    /// A connection opened now.
    pub(crate) fn new() -> Self {
        Self {
            opened: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            started: AtomicU64::new(0),
            in_progress: AtomicU64::new(0),
        }
    }

    /// Records a byte moved now.
    pub(crate) fn touch(&self) {
        let ms = self.opened.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// When the last byte moved (or the connection opened).
    pub(crate) fn last(&self) -> tokio::time::Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request in progress until dropped.
pub(crate) struct InProgress(Arc<Activity>);

impl InProgress {
    /// Counts one more request, started now.
    pub(crate) fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.in_progress.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A socket that records when it last moved a byte.
pub(crate) struct Tracked<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    /// `io`, its bytes recorded in `activity`.
    pub(crate) fn new(io: T, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
