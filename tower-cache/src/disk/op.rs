//! The writer's queue: the operations it applies, and the conditions and extra bytes a
//! write carries.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{CompactReport, SpoolFile, Tail};
use crate::entry::EntryMeta;
use crate::error::DiskError;
use crate::generation::Ticket;
use crate::target::{Select, Tombstone};

#[derive(Debug)]
pub(super) enum Op {
    Put {
        key: Box<str>,
        value: Bytes,
        expires_ms: u64,
        now_ms: u64,
        meta: EntryMeta,
        /// Applied only if this still holds when the writer reaches the op: a fill that
        /// no write overtook, a versioned write no newer invalidation covers.
        fence: Option<Fence>,
        /// Bytes that follow `value` in the new record: see [`Kept`].
        tail: Option<Kept>,
        ack: Option<oneshot::Sender<Result<(), DiskError>>>,
    },
    Delete {
        key: Box<str>,
        /// Written in the same transaction as the delete.
        tombstone: Option<Tombstone>,
        ack: Option<oneshot::Sender<Result<bool, DiskError>>>,
    },
    Clear(oneshot::Sender<Result<(), DiskError>>),
    Cleanup {
        now_ms: u64,
        ack: oneshot::Sender<Result<usize, DiskError>>,
    },
    /// Removes every entry a selection reaches; answers with their keys.
    RemoveMatching {
        select: Select,
        /// Written in the same transaction as the removal.
        tombstone: Option<Tombstone>,
        /// Entries with a version above this stay (a remote invalidation older than them).
        keep_newer_than: Option<u64>,
        ack: oneshot::Sender<Result<Vec<Box<str>>, DiskError>>,
    },
    /// Records that `dependent` depends on `on`; an entry-scoped edge does not replace a
    /// lasting one.
    Depend {
        on: Box<str>,
        dependent: Box<str>,
        scoped: bool,
        ack: oneshot::Sender<Result<(), DiskError>>,
    },
    /// Removes the entry-scoped edges of every key of `keys` that has no entry; answers
    /// with those keys.
    PruneDependents {
        keys: Vec<Box<str>>,
        ack: oneshot::Sender<Result<Vec<Box<str>>, DiskError>>,
    },
    Compact(oneshot::Sender<Result<CompactReport, DiskError>>),
    Close(oneshot::Sender<()>),
}

/// Where the end of a value being put comes from, when not from the caller's memory.
#[derive(Debug)]
pub(crate) enum Kept {
    /// Bytes of the record the key holds (a large body kept while its head is
    /// rewritten), with more bytes around them (a part extending a stored part); the
    /// put is dropped when the key no longer holds that record.
    Record(Tail, Around),
    /// A spool file's bytes, `len` of them (a large body written to disk as it
    /// arrived); the file goes when the op does.
    File(SpoolFile, u64),
}

/// The bytes a put adds around the bytes it keeps of a stored record: after them, or
/// before and after them from a spool file (read by the writer).
#[derive(Debug)]
pub(crate) enum Around {
    After(Bytes),
    File {
        file: SpoolFile,
        before: std::ops::Range<usize>,
        after: std::ops::Range<usize>,
    },
}

impl Around {
    pub(super) fn len(&self) -> usize {
        match self {
            Around::After(b) => b.len(),
            Around::File { before, after, .. } => before.len() + after.len(),
        }
    }

    /// The bytes before and after (blocking: a file is read).
    pub(super) fn bytes(&self) -> std::io::Result<(Bytes, Bytes)> {
        match self {
            Around::After(b) => Ok((Bytes::new(), b.clone())),
            Around::File {
                file,
                before,
                after,
            } => Ok((file.read(before.clone())?, file.read(after.clone())?)),
        }
    }
}

/// A condition a queued write must still meet when it is applied.
#[derive(Clone)]
pub(crate) enum Fence {
    /// A load's ticket: no write of the key began or ended since.
    Ticket(Ticket),
    /// Any check (a versioned write against newer tombstones).
    Check(Arc<dyn Fn() -> bool + Send + Sync>),
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fence::Ticket(t) => t.fmt(f),
            Fence::Check(_) => f.write_str("Check"),
        }
    }
}

impl Fence {
    pub(crate) fn holds(&self) -> bool {
        match self {
            Fence::Ticket(t) => t.is_current(),
            Fence::Check(check) => check(),
        }
    }
}

impl Op {
    /// The time the op was queued at, for those that carry one.
    pub(super) fn now_ms(&self) -> u64 {
        match self {
            Op::Put { now_ms, .. } | Op::Cleanup { now_ms, .. } => *now_ms,
            _ => 0,
        }
    }
}
