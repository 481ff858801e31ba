//! The copy of a response body too large for the memory tier, written to a spool file
//! of the disk tier as the body streams to the client, and stored from there: the cache
//! holds at most about [`SPOOL_QUEUE`] bytes of such a body in memory (plus the file's
//! write buffer), not all of it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::task::JoinHandle;

use crate::disk::{DiskTier, SpoolFile, SpoolHold};

/// Most bytes of a body waiting for its spool file before the body waits for the file
/// (a client is not sent more than the disk can take plus this much).
pub(super) const SPOOL_QUEUE: usize = 1 << 20;

/// Bytes handed to the file in one write at most (the file's own buffer), and the size
/// small frames are gathered to before they are queued: a body of tiny frames costs a
/// write per this many bytes, not one per frame.
const WRITE: usize = 256 << 10;

type Opening = JoinHandle<std::io::Result<(std::fs::File, SpoolFile)>>;

enum State {
    Opening(Opening),
    Open {
        file: tokio::fs::File,
        spool: SpoolFile,
    },
    /// The file could not be made or written: nothing is stored.
    Failed,
}

/// A body's copy on its way to a spool file.
pub(super) struct Spool {
    disk: DiskTier,
    /// The body's bytes, counted against the disk tier's bound.
    hold: Option<SpoolHold>,
    state: State,
    queue: VecDeque<Bytes>,
    /// Small frames gathered until they make a write's worth.
    gathered: BytesMut,
    queued: usize,
    len: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("len", &self.len)
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Starts a spool file of `disk` with the bytes copied so far; `None` outside a
    /// tokio runtime (the copy then stays in memory).
    pub(super) fn start(disk: &DiskTier, first: Bytes) -> Option<Spool> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let opening = rt.spawn_blocking({
            let disk = disk.clone();
            move || disk.spool_file()
        });
        let mut spool = Spool {
            disk: disk.clone(),
            hold: Some(disk.spool_hold()),
            state: State::Opening(opening),
            queue: VecDeque::new(),
            gathered: BytesMut::new(),
            queued: 0,
            len: 0,
        };
        spool.push(first);
        Some(spool)
    }

    /// Queues more of the body.
    pub(super) fn push(&mut self, data: Bytes) {
        if matches!(self.state, State::Failed) || data.is_empty() {
            return;
        }
        let counted = self
            .hold
            .as_mut()
            .is_some_and(|h| h.grow(data.len() as u64));
        if !counted {
            self.fail(&"the spooled bytes would pass the disk tier's byte bound");
            return;
        }
        self.queued += data.len();
        self.len += data.len() as u64;
        if data.len() >= WRITE {
            self.gather_out();
            self.queue.push_back(data);
        } else {
            self.gathered.extend_from_slice(&data);
            if self.gathered.len() >= WRITE {
                self.gather_out();
            }
        }
    }

    /// Queues the small frames gathered so far.
    fn gather_out(&mut self) {
        if !self.gathered.is_empty() {
            self.queue.push_back(self.gathered.split().freeze());
        }
    }

    /// The bytes of the body so far.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Bytes queued, not yet taken by the file.
    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    pub(super) fn failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Hands queued bytes to the file as far as it takes them now; ready once the queue
    /// is empty (or the spool failed).
    pub(super) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Failed => {
                    self.queue.clear();
                    self.gathered = BytesMut::new();
                    self.queued = 0;
                    return Poll::Ready(());
                }
                State::Opening(task) => match std::task::ready!(Pin::new(task).poll(cx)) {
                    Ok(Ok((file, spool))) => {
                        let mut file = tokio::fs::File::from_std(file);
                        file.set_max_buf_size(WRITE);
                        self.state = State::Open { file, spool }
                    }
                    Ok(Err(e)) => self.fail(&e),
                    Err(e) => self.fail(&e),
                },
                State::Open { file, .. } => {
                    // Gathered frames wait for a write's worth (or the end: `poll_finish`).
                    let Some(front) = self.queue.front_mut() else {
                        return Poll::Ready(());
                    };
                    match std::task::ready!(Pin::new(file).poll_write(cx, front)) {
                        Ok(0) => self.fail(&"the file took no bytes"),
                        Ok(n) => {
                            front.advance(n);
                            self.queued -= n;
                            if front.is_empty() {
                                self.queue.pop_front();
                            }
                        }
                        Err(e) => self.fail(&e),
                    }
                }
            }
        }
    }

    fn fail(&mut self, e: &dyn std::fmt::Display) {
        tracing::warn!(error = %e, "disk tier: spool given up; the response is not stored");
        self.disk.count_spool_fault();
        // Dropping the file's guard removes it; the count of its bytes goes with it.
        self.state = State::Failed;
        self.hold = None;
        self.queue.clear();
        self.gathered = BytesMut::new();
        self.queued = 0;
    }

    /// Writes what is queued and waits until the file holds it all: then the spool
    /// file and the body's length, or `None` if it failed (then, and after, the spool
    /// holds nothing).
    pub(super) fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Option<(SpoolFile, u64)>> {
        self.gather_out();
        std::task::ready!(self.poll_write(cx));
        let State::Open { file, .. } = &mut self.state else {
            return Poll::Ready(None);
        };
        if let Err(e) = std::task::ready!(Pin::new(file).poll_flush(cx)) {
            self.fail(&e);
            return Poll::Ready(None);
        }
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Open { mut spool, .. } => {
                // The bytes stay counted until the writer has stored them and the file
                // goes.
                if let Some(hold) = self.hold.take() {
                    spool.keep(hold);
                }
                Poll::Ready(Some((spool, self.len)))
            }
            _ => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes of the spool files of the tier in `dir`.
    fn spooled(dir: &std::path::Path) -> Vec<u64> {
        let mut sizes = Vec::new();
        for tier in std::fs::read_dir(dir.join("spool")).unwrap().flatten() {
            for f in std::fs::read_dir(tier.path()).unwrap().flatten() {
                if f.file_name() != "lock" {
                    sizes.push(f.metadata().unwrap().len());
                }
            }
        }
        sizes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_frames_are_gathered_into_writes_whether_they_come_fast_or_slowly() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::builder(dir.path())
            .map_size(64 << 20)
            .open()
            .unwrap();
        let frame = Bytes::from(vec![7u8; 1024]);
        let mut spool = Spool::start(&disk, frame.clone()).unwrap();
        // Frames one at a time, the file idle between them (a trickle): none of them is
        // written on its own; they wait for a write's worth.
        for _ in 1..200 {
            std::future::poll_fn(|cx| spool.poll_write(cx)).await;
            spool.push(frame.clone());
        }
        std::future::poll_fn(|cx| spool.poll_write(cx)).await;
        assert_eq!(spooled(dir.path()), [0], "nothing written before 256 KiB");
        assert!(spool.queue.is_empty());
        assert_eq!(spool.gathered.len(), 200 * 1024);
        // Past a write's worth: one write of 256 KiB.
        for _ in 0..100 {
            spool.push(frame.clone());
        }
        assert_eq!(spool.queue.len(), 1, "one write queued, not one per frame");
        std::future::poll_fn(|cx| spool.poll_write(cx)).await;
        std::future::poll_fn(|cx| spool.poll_finish(cx).map(|_| ())).await;
        assert_eq!(
            spooled(dir.path()),
            Vec::<u64>::new(),
            "the file went with the spool"
        );
        // The end writes the rest: a finished spool file holds every byte.
        let mut spool = Spool::start(&disk, frame.clone()).unwrap();
        for _ in 1..300 {
            spool.push(frame.clone());
        }
        assert_eq!(spool.queue.len(), 1);
        let (file, len) = std::future::poll_fn(|cx| spool.poll_finish(cx))
            .await
            .expect("spooled");
        assert_eq!(len, 300 * 1024);
        assert_eq!(spooled(dir.path()), [300 * 1024]);
        drop(file);
        assert!(spooled(dir.path()).is_empty());
    }
}
