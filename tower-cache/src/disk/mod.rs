//! The disk tier: a persistent cache in an LMDB environment, through [`heed`].
//!
//! - **Reads** are memory-mapped and run inline on the caller's thread: a read
//!   transaction, one B-tree lookup and a copy of the value (a few microseconds for a
//!   small value, no system call when the page is resident).
//! - **Writes** go to one writer thread that takes every write queued while it was busy
//!   and commits them in **one transaction** (group commit), so callers never wait for one
//!   `fsync` per entry and the async runtime never blocks on LMDB.
//! - **Values** at or above a threshold (default 1 KiB) are compressed with `snap`.
//!   Every record starts with a versioned header (format version, flags, CRC-32 of the
//!   rest), so the format can evolve and a corrupt record is detected, counted and
//!   dropped instead of served.
//! - **Large values** (default 1 MiB and more, see
//!   [`DiskTierBuilder::addressable_threshold`]) are stored in an addressable form: not
//!   compressed, with a CRC-32 per 64 KiB block beside the header's own. LMDB keeps a
//!   large value in one contiguous run of pages, so any byte range of it can be checked
//!   and copied out without touching the rest. The HTTP cache uses this to answer a
//!   range, or stream a whole body, without a copy of the whole value in memory; each
//!   part is read in a short read transaction of its own and checked against the
//!   record's write sequence number, so a record replaced meanwhile is noticed, never
//!   mixed in. Records written whole by earlier versions are still read.
//!   [`DiskStats::value_bytes_read`] counts the bytes reads copy out of the map.
//!   The writer can rewrite the start of a large value and keep the rest (a new head
//!   for a stored response, revalidated) without the value passing through a caller;
//!   such a record says which earlier write its bytes come from, so a part read in
//!   flight finds them in the new record. A large value that arrives over time (a
//!   response body) is written to a spool file in the tier's directory (`spool/`, one
//!   locked folder per open tier; what a stopped process left is removed when a tier
//!   opens) and put into the store from there; the spooled bytes at once are capped at
//!   the bound.
//! - **Expiry**: each entry's deadline (Unix milliseconds) is also a key in an expiry
//!   index, so [`DiskTier::remove_expired`] deletes expired entries by walking the index from its
//!   start, without scanning the data. When the stored bytes pass the bound, expired
//!   entries go first, then the oldest writes.
//! - **Tags and versions** persist with each entry, so a restart does not forget what an
//!   invalidation must reach.
//! - [`DiskTier::compact`] rewrites the file with LMDB's
//!   compacting copy, which drops free pages: LMDB never shrinks a file by itself.
//!
//! # Sharing one environment between processes
//!
//! Several processes of one host may open the same directory at once: LMDB's lock file
//! serialises their writers and each sees the others' commits. The byte count and the
//! write order live inside the environment, so the bound holds for all of them. Only
//! [`DiskTier::compact`] needs the environment to itself (it replaces the file); do not
//! compact while another process has it open. Do not put the directory on a network
//! file system.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_cache::DiskTier;
//!
//! let dir = tempfile::tempdir()?;
//! let disk = DiskTier::builder(dir.path()).map_size(64 << 20).open()?;
//! disk.set("report:42", "a large report".into(), Duration::from_secs(60)).await?;
//! assert_eq!(disk.get("report:42").as_deref(), Some(&b"a large report"[..]));
//! # Ok(()) }
//! ```

mod builder;
mod compact;
mod env;
mod index;
mod op;
mod part;
mod record;
mod spool;
mod stats;
mod writer;

pub use self::builder::{
    DiskTierBuilder, OnDamage, DEFAULT_ADDRESSABLE_THRESHOLD, DEFAULT_BLOCKING_READ_THRESHOLD,
    MAX_MAP_SIZE,
};
use self::op::Op;
pub(crate) use self::op::{Around, Fence, Kept};
pub(crate) use self::part::{DiskRecord, Reading, Unread};
pub(crate) use self::record::{Tail, BLOCK};
pub(crate) use self::spool::{SpoolFile, SpoolHold};
pub use self::stats::{CompactReport, DiskStats};

use self::env::{read_meta, Opened, META_LOGICAL, META_STORED};
use self::record::{addressable_layout, decode_header, decode_record, FORMAT_V3};
use self::stats::{bump, Counters};

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::entry::{Clock, Entry, EntryMeta};
use crate::error::{check_ttl, check_value_len, DiskError, InsertError, InsertErrorKind};
use crate::generation::Ticket;
use crate::target::{Select, Tombstone};

/// Default map size: 1 GiB of address space (not of disk: the file grows as needed).
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
/// Default threshold at or above which values are compressed: 1 KiB.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 1024;
/// Default largest value: 16 MiB.
pub const DEFAULT_DISK_MAX_VALUE_BYTES: usize = 16 << 20;
/// Default largest group commit: 4,096 writes.
pub const DEFAULT_MAX_BATCH: usize = 4096;
/// Longest key the disk tier takes, in bytes (LMDB's key limit less the expiry prefix).
pub const MAX_KEY_LEN: usize = 500;
/// Smallest map size accepted: 1 MiB.
pub const MIN_MAP_SIZE: usize = 1 << 20;

const QUEUE: usize = 65_536;
const MAP_ALIGN: usize = 64 << 10;

// === DiskTier ===

/// The persistent tier: an LMDB environment with group-committed writes.
///
/// Cloning shares the same environment and writer. See the [module docs](crate::disk).
#[derive(Debug, Clone)]
pub struct DiskTier {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Op>,
    clock: Clock,
}

#[derive(Debug)]
pub(super) struct Shared {
    path: PathBuf,
    state: RwLock<Option<Opened>>,
    counters: Counters,
    max_value_bytes: usize,
    blocking_read_threshold: usize,
    /// Where large values are spooled while they arrive; `None` if the folder could not
    /// be made.
    spool: Option<spool::SpoolDir>,
    /// Readers of large records in parts, by key and lineage (see
    /// [`DiskRecord::reading`]).
    readers: std::sync::Mutex<std::collections::HashMap<(Arc<str>, u64), usize>>,
    /// The latest write of a key registered while it may wait for the key's readers
    /// (see [`DiskTier::defer`]); an entry lives only while that write is made.
    deferred: std::sync::Mutex<std::collections::HashMap<Arc<str>, u64>>,
    /// Woken when a key's last reader ends.
    unread: tokio::sync::Notify,
}

impl Shared {
    fn state(&self) -> RwLockReadGuard<'_, Option<Opened>> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The row of the dependency database that says `dependent` depends on `on`.
pub(crate) fn dependency_key(on: &str, dependent: &str) -> String {
    format!("{on}\u{0}{dependent}")
}

/// The value of a dependency row: empty for a lasting edge, this for an edge that lasts
/// as long as the dependent's entry.
pub(crate) const SCOPED_EDGE: &[u8] = &[1];

/// Resolves once the writer has applied a queued write (stored, superseded or failed).
pub(crate) type Committed = oneshot::Receiver<Result<(), DiskError>>;

/// A decoded record: deadline, value, metadata.
type Decoded = (u64, Bytes, EntryMeta);

/// What an async read found: a whole entry (or nothing), or a large record opened to be
/// read in parts.
#[derive(Debug)]
pub(crate) enum DiskRead {
    Entry(Option<Entry>),
    Record(DiskRecord),
}

/// What a read transaction found.
enum Raw {
    Absent,
    /// Compaction is swapping the file.
    Busy,
    Decoded(Result<Decoded, &'static str>),
    /// Too large to decode on the caller's thread.
    Large,
}

impl DiskTier {
    /// A builder for a tier in the directory `path` (created if missing).
    pub fn builder(path: impl AsRef<Path>) -> DiskTierBuilder {
        DiskTierBuilder::new(path.as_ref().to_path_buf())
    }

    /// The directory of the environment.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The value under `key`, if it is there, fresh and intact.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.get_entry(key).map(|e| e.value)
    }

    /// The entry under `key` (value, time left, metadata), if it is there, fresh and
    /// intact. A fault is counted and logged, and reads as a miss.
    pub fn get_entry(&self, key: &str) -> Option<Entry> {
        match self.lookup(key) {
            Ok(found) => found,
            Err(e) => {
                bump(&self.shared.counters.errors, 1);
                bump(&self.shared.counters.misses, 1);
                tracing::warn!(error = %e, "disk tier read failed; treating it as a miss");
                None
            }
        }
    }

    /// Like [`Self::get_entry`], but a fault is returned instead of read as a miss.
    pub fn try_get_entry(&self, key: &str) -> Result<Option<Entry>, DiskError> {
        self.lookup(key).inspect_err(|_| {
            bump(&self.shared.counters.errors, 1);
            bump(&self.shared.counters.misses, 1);
        })
    }

    /// Whether a fresh entry is under `key`. Does not count as a read, does not verify the
    /// record's checksum.
    pub fn has(&self, key: &str) -> bool {
        let now = self.clock.now_ms();
        let state = self.shared.state();
        let Some(o) = state.as_ref() else {
            return false;
        };
        let Ok(rtxn) = o.env.read_txn() else {
            return false;
        };
        matches!(
            o.dbs.entries.get(&rtxn, key.as_bytes()),
            Ok(Some(b)) if decode_header(b).is_some_and(|h| h.expires_ms > now)
        )
    }

    fn lookup(&self, key: &str) -> Result<Option<Entry>, DiskError> {
        match self.read(key, usize::MAX, true)? {
            Raw::Decoded(d) => Ok(self.finish_read(key, Some(d))),
            _ => Ok(self.finish_read(key, None)),
        }
    }

    /// Like [`Self::try_get_entry`], for async callers: the runtime is never blocked for
    /// long. A record over [`DiskTierBuilder::blocking_read_threshold`] is read and
    /// decompressed on tokio's blocking pool, and while compaction swaps the file the
    /// read misses at once instead of waiting (counted in [`DiskStats::busy_misses`]).
    ///
    /// A record in the addressable form whose value is longer than `whole_up_to` bytes
    /// is not read whole: it is opened (its head checked, its first block copied) and
    /// returned to be read in parts.
    pub(crate) async fn try_read_async(
        &self,
        key: &str,
        whole_up_to: usize,
    ) -> Result<DiskRead, DiskError> {
        let read = self
            .read(key, self.shared.blocking_read_threshold, false)
            .inspect_err(|_| {
                bump(&self.shared.counters.errors, 1);
                bump(&self.shared.counters.misses, 1);
            })?;
        match read {
            Raw::Absent => Ok(DiskRead::Entry(self.finish_read(key, None))),
            Raw::Decoded(d) => Ok(DiskRead::Entry(self.finish_read(key, Some(d)))),
            Raw::Busy => {
                bump(&self.shared.counters.busy_misses, 1);
                bump(&self.shared.counters.misses, 1);
                Ok(DiskRead::Entry(None))
            }
            Raw::Large => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let (disk, key) = (self.clone(), key.to_owned());
                    rt.spawn_blocking(move || disk.try_read(&key, whole_up_to))
                        .await
                        .unwrap_or_else(|e| {
                            Err(DiskError::new(format!("disk tier: read task: {e}")))
                        })
                }
                Err(_) => self.try_read(key, whole_up_to),
            },
        }
    }

    /// The blocking read of [`Self::try_read_async`].
    fn try_read(&self, key: &str, whole_up_to: usize) -> Result<DiskRead, DiskError> {
        let opened = self.open_record(key, whole_up_to).inspect_err(|_| {
            bump(&self.shared.counters.errors, 1);
            bump(&self.shared.counters.misses, 1);
        })?;
        match opened {
            Some(Ok(record)) if record.ttl_left() > Duration::ZERO => {
                bump(&self.shared.counters.hits, 1);
                Ok(DiskRead::Record(record))
            }
            Some(Ok(_)) => Ok(DiskRead::Entry(self.finish_read(key, None))),
            Some(Err(why)) => Ok(DiskRead::Entry(self.finish_read(key, Some(Err(why))))),
            None => self.try_get_entry(key).map(DiskRead::Entry),
        }
    }

    /// Opens the record of `key` in parts if it is addressable and its value is longer
    /// than `whole_up_to`; `None` if it is not (or is gone), to be read whole.
    fn open_record(
        &self,
        key: &str,
        whole_up_to: usize,
    ) -> Result<Option<Result<DiskRecord, &'static str>>, DiskError> {
        let state = self.shared.state();
        let o = state.as_ref().ok_or_else(DiskError::closed)?;
        let rtxn = o.env.read_txn().map_err(|e| DiskError::lmdb("read", e))?;
        let raw = o
            .dbs
            .entries
            .get(&rtxn, key.as_bytes())
            .map_err(|e| DiskError::lmdb("read", e))?;
        let Some(raw) = raw.filter(|b| b.first() == Some(&FORMAT_V3)) else {
            return Ok(None);
        };
        Ok(match addressable_layout(raw) {
            Ok(layout) if layout.len > whole_up_to => {
                Some(DiskRecord::open(self, key, raw, layout))
            }
            Ok(_) => None,
            Err(why) => Some(Err(why)),
        })
    }

    /// Reads the raw record of `key` in a read transaction; decodes it there if it is at
    /// most `inline_limit` bytes. With `wait == false` a swap in progress reads as busy.
    fn read(&self, key: &str, inline_limit: usize, wait: bool) -> Result<Raw, DiskError> {
        let state = if wait {
            self.shared.state()
        } else {
            match self.shared.state.try_read() {
                Ok(state) => state,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(Raw::Busy),
            }
        };
        let o = state.as_ref().ok_or_else(DiskError::closed)?;
        let rtxn = o.env.read_txn().map_err(|e| DiskError::lmdb("read", e))?;
        let raw = o
            .dbs
            .entries
            .get(&rtxn, key.as_bytes())
            .map_err(|e| DiskError::lmdb("read", e))?;
        Ok(match raw {
            None => Raw::Absent,
            Some(b) if b.len() > inline_limit => Raw::Large,
            Some(b) => {
                let decoded = decode_record(b);
                if let Ok((_, value, _)) = &decoded {
                    bump(&self.shared.counters.value_bytes_read, value.len() as u64);
                }
                Raw::Decoded(decoded)
            }
        })
    }

    /// Counts a read and turns a decoded record into an entry (a corrupt one is dropped).
    fn finish_read(
        &self,
        key: &str,
        decoded: Option<Result<Decoded, &'static str>>,
    ) -> Option<Entry> {
        let c = &self.shared.counters;
        let now = self.clock.now_ms();
        match decoded {
            None => {
                bump(&c.misses, 1);
                None
            }
            Some(Ok((expires_ms, value, meta))) if expires_ms > now => {
                bump(&c.hits, 1);
                Some(Entry {
                    value,
                    ttl_left: Duration::from_millis(expires_ms - now),
                    meta,
                })
            }
            Some(Ok(_)) => {
                // Expired: expiry removal or eviction takes it out through the index.
                bump(&c.misses, 1);
                None
            }
            Some(Err(why)) => {
                bump(&c.corrupt, 1);
                bump(&c.misses, 1);
                tracing::warn!(key, why, "disk tier: corrupt record dropped");
                let _ = self.tx.try_send(Op::Delete {
                    key: key.into(),
                    tombstone: None,
                    ack: None,
                });
                None
            }
        }
    }

    /// Stores `value` under `key` for `ttl` and waits until it is committed (durable).
    pub async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), InsertError> {
        self.set_with(key, value, ttl, EntryMeta::default()).await
    }

    /// Stores `value` with its version and tags and waits until it is committed.
    pub async fn set_with(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
    ) -> Result<(), InsertError> {
        let (ack, rx) = oneshot::channel();
        let op = self.put_op(key, value, ttl, meta, Some(ack))?;
        if self.tx.send(op).await.is_err() {
            return Err(self.disk_reject(DiskError::closed()));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(InsertError::new(InsertErrorKind::Disk, e.to_string())),
            Err(_) => Err(self.disk_reject(DiskError::closed())),
        }
    }

    /// Queues a write and returns at once; it lands with the next group commit.
    ///
    /// For write-through from the request path, where a request must not wait for a
    /// disk. The queue holds 65,536 writes; when it is full (the disk cannot keep up) the
    /// write is **dropped**: this returns an error and [`DiskStats::dropped_writes`]
    /// counts it. A cache may lose a write it was offered; use [`Self::set`] where every
    /// write must land (it waits for the commit, which is backpressure).
    pub fn try_set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
    ) -> Result<(), InsertError> {
        self.queue(self.put_op(key, value, ttl, meta, None)?)
    }

    /// Queues the write-through of a fill; the writer drops it if `ticket` is no longer
    /// current when its turn comes (a write or delete of the key overtook the load).
    pub(crate) fn queue_fill(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
        ticket: Ticket,
    ) -> Result<(), InsertError> {
        let mut op = self.put_op(key, value, ttl, meta, None)?;
        if let Op::Put { fence, .. } = &mut op {
            *fence = Some(Fence::Ticket(ticket));
        }
        self.queue(op)
    }

    /// Queues the write of `head` followed by the bytes `tail` names of the record the key
    /// holds now (a large stored body kept while its head is rewritten), with the bytes
    /// `around` them, fenced by `ticket` as [`Self::queue_fill`] is. The writer copies the kept bytes from the
    /// old record to the new one in its own transaction, so no caller holds them; it
    /// drops the write (counted as superseded) when the key holds another record by then.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn queue_splice(
        &self,
        key: &str,
        head: Bytes,
        tail: Tail,
        around: Around,
        ttl: Duration,
        meta: EntryMeta,
        ticket: Ticket,
    ) -> Result<(), InsertError> {
        let total = head
            .len()
            .saturating_add(tail.len)
            .saturating_add(around.len());
        if let Err(e) = check_value_len("disk", total, self.shared.max_value_bytes) {
            bump(&self.shared.counters.rejections, 1);
            return Err(e);
        }
        let mut op = self.put_op(key, head, ttl, meta, None)?;
        if let Op::Put {
            fence, tail: kept, ..
        } = &mut op
        {
            *fence = Some(Fence::Ticket(ticket));
            *kept = Some(Kept::Record(tail, around));
        }
        self.queue(op)
    }

    /// Queues the write of `head` followed by the `len` bytes of the spool `file` (a
    /// large value written to disk as it arrived), fenced by `ticket` as
    /// [`Self::queue_fill`] is. The writer reads the file in its own thread and removes
    /// it, stored or not.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn queue_spooled(
        &self,
        key: &str,
        head: Bytes,
        file: SpoolFile,
        len: u64,
        ttl: Duration,
        meta: EntryMeta,
        fence: Option<Fence>,
    ) -> Result<Committed, InsertError> {
        let total = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .saturating_add(head.len());
        if let Err(e) = check_value_len("disk", total, self.shared.max_value_bytes) {
            bump(&self.shared.counters.rejections, 1);
            return Err(e);
        }
        let (ack, committed) = oneshot::channel();
        let mut op = self.put_op(key, head, ttl, meta, Some(ack))?;
        if let Op::Put {
            fence: fenced,
            tail: kept,
            ..
        } = &mut op
        {
            *fenced = fence;
            *kept = Some(Kept::File(file, len));
        }
        self.queue(op)?;
        Ok(committed)
    }

    /// Stores `value` if `check` still holds when the writer applies it, and waits for
    /// the commit. A write the check refuses returns `Ok` (it was superseded, and counted).
    pub(crate) async fn set_if(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
        check: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<(), InsertError> {
        let (ack, rx) = oneshot::channel();
        let mut op = self.put_op(key, value, ttl, meta, Some(ack))?;
        if let Op::Put { fence, .. } = &mut op {
            *fence = Some(Fence::Check(check));
        }
        if self.tx.send(op).await.is_err() {
            return Err(self.disk_reject(DiskError::closed()));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(InsertError::new(InsertErrorKind::Disk, e.to_string())),
            Err(_) => Err(self.disk_reject(DiskError::closed())),
        }
    }

    fn queue(&self, op: Op) -> Result<(), InsertError> {
        self.tx.try_send(op).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                bump(&self.shared.counters.dropped_writes, 1);
                InsertError::new(
                    InsertErrorKind::Disk,
                    "disk tier: write queue full; the write was dropped",
                )
            }
            mpsc::error::TrySendError::Closed(_) => self.disk_reject(DiskError::closed()),
        })
    }

    fn put_op(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
        ack: Option<oneshot::Sender<Result<(), DiskError>>>,
    ) -> Result<Op, InsertError> {
        let checked = check_ttl(ttl).and_then(|()| {
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                Err(InsertError::new(
                    InsertErrorKind::Key,
                    format!(
                        "disk tier: key of {} bytes; keys must be 1 to {MAX_KEY_LEN} bytes",
                        key.len()
                    ),
                ))
            } else {
                check_value_len("disk", value.len(), self.shared.max_value_bytes)
            }
        });
        if let Err(e) = checked {
            bump(&self.shared.counters.rejections, 1);
            return Err(e);
        }
        let now_ms = self.clock.now_ms();
        Ok(Op::Put {
            key: key.into(),
            value,
            expires_ms: self.clock.deadline(ttl),
            now_ms,
            meta,
            fence: None,
            tail: None,
            ack,
        })
    }

    fn disk_reject(&self, e: DiskError) -> InsertError {
        bump(&self.shared.counters.errors, 1);
        InsertError::new(InsertErrorKind::Disk, e.to_string())
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, DiskError>>) -> Op,
    ) -> Result<T, DiskError> {
        let (ack, rx) = oneshot::channel();
        if self.tx.send(make(ack)).await.is_err() {
            bump(&self.shared.counters.errors, 1);
            return Err(DiskError::closed());
        }
        rx.await.unwrap_or_else(|_| Err(DiskError::closed()))
    }

    /// Removes the entry under `key` once committed; returns whether there was one.
    pub async fn delete(&self, key: &str) -> Result<bool, DiskError> {
        self.delete_with(key, None).await
    }

    /// Removes the entry under `key` and records `tombstone`, in one transaction.
    pub(crate) async fn delete_with(
        &self,
        key: &str,
        tombstone: Option<Tombstone>,
    ) -> Result<bool, DiskError> {
        self.request(|ack| Op::Delete {
            key: key.into(),
            tombstone,
            ack: Some(ack),
        })
        .await
    }

    /// The tombstones recorded and not yet forgotten at `now_ms`.
    pub(crate) fn tombstones(&self, now_ms: u64) -> Result<Vec<Tombstone>, DiskError> {
        let state = self.shared.state();
        let o = state.as_ref().ok_or_else(DiskError::closed)?;
        let rtxn = o.env.read_txn().map_err(|e| DiskError::lmdb("read", e))?;
        let mut out = Vec::new();
        for row in o
            .dbs
            .tombs
            .iter(&rtxn)
            .map_err(|e| DiskError::lmdb("read", e))?
        {
            let (k, v) = row.map_err(|e| DiskError::lmdb("read", e))?;
            let (Ok(k), true) = (std::str::from_utf8(k), v.len() == 16) else {
                continue;
            };
            let (version, until_ms) = (record::u64_at(v, 0), record::u64_at(v, 8));
            if until_ms > now_ms {
                out.push(Tombstone {
                    row: k.into(),
                    version,
                    until_ms,
                });
            }
        }
        Ok(out)
    }

    /// Removes every entry.
    pub async fn clear(&self) -> Result<(), DiskError> {
        self.request(Op::Clear).await
    }

    /// Removes expired entries through the expiry index; returns how many.
    pub async fn remove_expired(&self) -> Result<usize, DiskError> {
        let now_ms = self.clock.now_ms();
        self.request(|ack| Op::Cleanup { now_ms, ack }).await
    }

    /// Waits until every write queued before this call is committed.
    pub async fn flush(&self) -> Result<(), DiskError> {
        // A cleanup at time zero deletes nothing and is ordered after earlier writes.
        self.request(|ack| Op::Cleanup { now_ms: 0, ack })
            .await
            .map(|_| ())
    }

    /// Rewrites the data file without free pages (LMDB's compacting copy) and reopens it.
    ///
    /// Writes queued before are committed first. Needs the environment to itself: do not
    /// compact while another process has the directory open.
    pub async fn compact(&self) -> Result<CompactReport, DiskError> {
        self.request(Op::Compact).await
    }

    /// Removes every entry `select` reaches, in one transaction; returns their keys.
    pub(crate) async fn remove_matching(
        &self,
        select: Select,
        tombstone: Option<Tombstone>,
        keep_newer_than: Option<u64>,
    ) -> Result<Vec<Box<str>>, DiskError> {
        self.request(|ack| Op::RemoveMatching {
            select,
            tombstone,
            keep_newer_than,
            ack,
        })
        .await
    }

    /// Records, durably, that `dependent` depends on `on`: for good, or (`scoped`) for as
    /// long as `dependent` has an entry (see [`Self::prune_dependents`]).
    pub(crate) async fn add_dependency(
        &self,
        on: &str,
        dependent: &str,
        scoped: bool,
    ) -> Result<(), DiskError> {
        self.request(|ack| Op::Depend {
            on: on.into(),
            dependent: dependent.into(),
            scoped,
            ack,
        })
        .await
    }

    /// Removes the entry-scoped edges of each of `keys` that has no entry on disk when
    /// the writer reaches the request (writes queued before it are applied first);
    /// returns those keys.
    pub(crate) async fn prune_dependents(
        &self,
        keys: Vec<Box<str>>,
    ) -> Result<Vec<Box<str>>, DiskError> {
        self.request(|ack| Op::PruneDependents { keys, ack }).await
    }

    /// The dependents of entry-scoped edges that have no entry on disk now. The scan
    /// reads every dependency row (millions, in a large store), so it runs on tokio's
    /// blocking pool, as large reads do.
    pub(crate) async fn scoped_dependents_without_entry(&self) -> Result<Vec<String>, DiskError> {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let disk = self.clone();
                rt.spawn_blocking(move || disk.scan_scoped_dependents_without_entry())
                    .await
                    .unwrap_or_else(|e| Err(DiskError::new(format!("disk tier: scan task: {e}"))))
            }
            Err(_) => self.scan_scoped_dependents_without_entry(),
        }
    }

    fn scan_scoped_dependents_without_entry(&self) -> Result<Vec<String>, DiskError> {
        let state = self.shared.state();
        let o = state.as_ref().ok_or_else(DiskError::closed)?;
        let rtxn = o.env.read_txn().map_err(|e| DiskError::lmdb("read", e))?;
        let mut out = std::collections::BTreeSet::new();
        for row in o
            .dbs
            .deps
            .iter(&rtxn)
            .map_err(|e| DiskError::lmdb("read", e))?
        {
            let (k, v) = row.map_err(|e| DiskError::lmdb("read", e))?;
            if v != SCOPED_EDGE {
                continue;
            }
            let Some(dependent) = k.iter().position(|&b| b == 0).map(|at| &k[at + 1..]) else {
                continue;
            };
            let held = o
                .dbs
                .entries
                .get(&rtxn, dependent)
                .map_err(|e| DiskError::lmdb("read", e))?
                .is_some();
            if !held {
                if let Ok(d) = std::str::from_utf8(dependent) {
                    out.insert(d.to_owned());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The keys recorded as depending on `key`.
    pub(crate) fn dependents(&self, key: &str) -> Result<Vec<String>, DiskError> {
        let state = self.shared.state();
        let o = state.as_ref().ok_or_else(DiskError::closed)?;
        let rtxn = o.env.read_txn().map_err(|e| DiskError::lmdb("read", e))?;
        let prefix = dependency_key(key, "");
        let mut out = Vec::new();
        for row in o
            .dbs
            .deps
            .prefix_iter(&rtxn, prefix.as_bytes())
            .map_err(|e| DiskError::lmdb("read", e))?
        {
            let (k, _) = row.map_err(|e| DiskError::lmdb("read", e))?;
            if let Ok(dependent) = std::str::from_utf8(&k[prefix.len()..]) {
                out.push(dependent.to_owned());
            }
        }
        Ok(out)
    }

    /// Commits queued writes, stops the writer and closes the environment. Later reads
    /// miss and later writes fail with a [`DiskError`], counted as errors.
    pub async fn close(&self) {
        let (ack, rx) = oneshot::channel();
        if self.tx.send(Op::Close(ack)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The tier's counters, with sizes read from the environment.
    pub fn stats(&self) -> DiskStats {
        let c = &self.shared.counters;
        let mut stats = DiskStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            write_batches: c.write_batches.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
            rejections: c.rejections.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            map_full: c.map_full.load(Ordering::Relaxed),
            dropped_writes: c.dropped_writes.load(Ordering::Relaxed),
            superseded: c.superseded.load(Ordering::Relaxed),
            damaged_files: c.damaged_files.load(Ordering::Relaxed),
            busy_misses: c.busy_misses.load(Ordering::Relaxed),
            value_bytes_read: c.value_bytes_read.load(Ordering::Relaxed),
            spooled_bytes: c.spooled_bytes.load(Ordering::Relaxed),
            spool_faults: c.spool_faults.load(Ordering::Relaxed),
            bound_bytes: c.bound_bytes.load(Ordering::Relaxed),
            ..DiskStats::default()
        };
        let state = self.shared.state();
        if let Some(o) = state.as_ref() {
            if let Ok(rtxn) = o.env.read_txn() {
                stats.entries = o.dbs.entries.len(&rtxn).unwrap_or(0);
                stats.stored_bytes = read_meta(&o.dbs, &rtxn, META_STORED);
                stats.logical_bytes = read_meta(&o.dbs, &rtxn, META_LOGICAL);
            }
        }
        stats.file_bytes = fs::metadata(self.shared.path.join("data.mdb"))
            .map(|m| m.len())
            .unwrap_or(0);
        stats
    }

    #[cfg(test)]
    pub(crate) fn corrupt_for_test(&self, key: &str) {
        let state = self.shared.state();
        let o = state.as_ref().unwrap();
        let mut wtxn = o.env.write_txn().unwrap();
        let mut rec = o
            .dbs
            .entries
            .get(&wtxn, key.as_bytes())
            .unwrap()
            .unwrap()
            .to_vec();
        let last = rec.len() - 1;
        rec[last] ^= 0xff;
        o.dbs.entries.put(&mut wtxn, key.as_bytes(), &rec).unwrap();
        wtxn.commit().unwrap();
    }
}

#[cfg(test)]
mod tests;
