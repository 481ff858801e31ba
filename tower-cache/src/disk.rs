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
//! - **Expiry**: each entry's deadline (Unix milliseconds) is also a key in an expiry
//!   index, so [`DiskTier::cleanup`] deletes expired entries by walking the index from its
//!   start, without scanning the data. When the stored bytes pass the bound, expired
//!   entries go first, then the oldest writes.
//! - **Tags and versions** persist with each entry, so a restart does not forget what an
//!   invalidation must reach.
//! - [`DiskTier::compact`] (the seed's `vacuum`) rewrites the file with LMDB's
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

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use bytes::Bytes;
use heed::types::Bytes as Raw;
use heed::{CompactionOption, Database, Env, EnvOpenOptions, PutFlags, RwTxn};
use tokio::sync::{mpsc, oneshot};

use crate::entry::{Clock, Entry, EntryMeta, Tags, TimeSource};
use crate::error::{
    check_ttl, check_value_len, BuildError, DiskError, InsertError, InsertErrorKind,
};

/// Default map size: 1 GiB of address space (not of disk: the file grows as needed).
pub const DEFAULT_MAP_SIZE: usize = 1 << 30;
/// Default threshold at or above which values are compressed: 1 KiB.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 1024;
/// Default largest value: 16 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 << 20;
/// Default largest group commit: 4,096 writes.
pub const DEFAULT_MAX_BATCH: usize = 4096;
/// Longest key the disk tier takes, in bytes (LMDB's key limit less the expiry prefix).
pub const MAX_KEY_LEN: usize = 500;
/// Smallest map size accepted: 1 MiB.
pub const MIN_MAP_SIZE: usize = 1 << 20;

const QUEUE: usize = 65_536;
const MAP_ALIGN: usize = 64 << 10;

// === record format ===
//
// byte 0      format version (1)
// byte 1      flags (bit 0: payload compressed with snap raw format)
// bytes 2..6  CRC-32 (IEEE) of bytes 6..end
// bytes 6..14 expiry, Unix milliseconds, little endian
// bytes 14..22 version of the write
// bytes 22..30 write sequence (key of the order index)
// bytes 30..34 uncompressed payload length
// bytes 34..36 tag count, then per tag: u16 length + UTF-8 bytes
// rest        payload

const FORMAT_V1: u8 = 1;
const FLAG_SNAPPY: u8 = 1;
const HEADER: usize = 36;

struct Header {
    expires_ms: u64,
    seq: u64,
    logical: u64,
}

fn encode_record(
    value: &[u8],
    expires_ms: u64,
    meta: &EntryMeta,
    seq: u64,
    compress_threshold: usize,
) -> Vec<u8> {
    let compressed = if value.len() >= compress_threshold {
        snap::raw::Encoder::new()
            .compress_vec(value)
            .ok()
            .filter(|c| c.len() < value.len())
    } else {
        None
    };
    let payload: &[u8] = compressed.as_deref().unwrap_or(value);
    let mut out = Vec::with_capacity(HEADER + meta.tags.encoded_len() + payload.len());
    out.push(FORMAT_V1);
    out.push(if compressed.is_some() { FLAG_SNAPPY } else { 0 });
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out.extend_from_slice(&meta.version.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&(meta.tags.len() as u16).to_le_bytes());
    for tag in meta.tags.iter() {
        let tag = &tag.as_bytes()[..tag.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
        out.extend_from_slice(tag);
    }
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[6..]);
    out[2..6].copy_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize)
}

/// Reads only the header; used by the writer to find index rows.
fn decode_header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER || b[0] != FORMAT_V1 {
        return None;
    }
    Some(Header {
        expires_ms: u64_at(b, 6),
        seq: u64_at(b, 22),
        logical: u32::from_le_bytes([b[30], b[31], b[32], b[33]]) as u64,
    })
}

/// Decodes a whole record, verifying its checksum.
fn decode_record(b: &[u8]) -> Result<(u64, Bytes, EntryMeta), &'static str> {
    if b.len() < HEADER {
        return Err("record shorter than its header");
    }
    if b[0] != FORMAT_V1 {
        return Err("unknown record format version");
    }
    let crc = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    if crc32fast::hash(&b[6..]) != crc {
        return Err("checksum mismatch");
    }
    let expires_ms = u64_at(b, 6);
    let version = u64_at(b, 14);
    let logical = u32::from_le_bytes([b[30], b[31], b[32], b[33]]) as usize;
    let ntags = u16_at(b, 34).ok_or("truncated tags")?;
    let mut at = HEADER;
    let mut tags = Vec::with_capacity(ntags);
    for _ in 0..ntags {
        let len = u16_at(b, at).ok_or("truncated tags")?;
        let tag = b.get(at + 2..at + 2 + len).ok_or("truncated tags")?;
        tags.push(std::str::from_utf8(tag).map_err(|_| "tag is not UTF-8")?);
        at += 2 + len;
    }
    let payload = &b[at..];
    let value = if b[1] & FLAG_SNAPPY != 0 {
        let v = snap::raw::Decoder::new()
            .decompress_vec(payload)
            .map_err(|_| "bad compressed payload")?;
        if v.len() != logical {
            return Err("decompressed length mismatch");
        }
        Bytes::from(v)
    } else {
        Bytes::copy_from_slice(payload)
    };
    Ok((
        expires_ms,
        value,
        EntryMeta {
            version,
            tags: tags.into_iter().collect::<Tags>(),
        },
    ))
}

fn expiry_key(expires_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&expires_ms.to_be_bytes());
    k.extend_from_slice(key);
    k
}

// === stats ===

/// Counters of a [`DiskTier`], as returned by [`DiskTier::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct DiskStats {
    /// Reads that found a fresh entry.
    pub hits: u64,
    /// Reads that found nothing, an expired entry or a corrupt record.
    pub misses: u64,
    /// Entries committed by this process.
    pub writes: u64,
    /// Group commits by this process.
    pub write_batches: u64,
    /// Entries removed to keep under the byte bound.
    pub evictions: u64,
    /// Expired entries removed by cleanup or eviction.
    pub expirations: u64,
    /// Corrupt records found (and dropped) on read.
    pub corrupt: u64,
    /// Writes refused before reaching the writer (bad key or TTL, too large, queue full).
    pub rejections: u64,
    /// Faults: failed transactions, I/O errors, a closed environment.
    pub errors: u64,
    /// Transactions that found LMDB's map full before the byte bound was reached. Their
    /// writes were retried in smaller transactions (after making room and lowering
    /// `bound_bytes` if even one write did not fit), not lost; see
    /// [`DiskTierBuilder::max_bytes`].
    pub map_full: u64,
    /// The byte bound in force: `max_bytes`, or lower after the map filled up first.
    pub bound_bytes: u64,
    /// Entries in the environment now (all processes).
    pub entries: u64,
    /// Bytes of records stored (after compression).
    pub stored_bytes: u64,
    /// Bytes of values before compression.
    pub logical_bytes: u64,
    /// Size of the data file on disk.
    pub file_bytes: u64,
}

impl DiskStats {
    /// `logical_bytes / stored_bytes`: above 1 when compression saves space.
    pub fn compression_ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            1.0
        } else {
            self.logical_bytes as f64 / self.stored_bytes as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    write_batches: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    corrupt: AtomicU64,
    rejections: AtomicU64,
    errors: AtomicU64,
    map_full: AtomicU64,
    bound_bytes: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What [`DiskTier::compact`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// Data file size before.
    pub before_bytes: u64,
    /// Data file size after.
    pub after_bytes: u64,
}

// === builder ===

/// Builds a [`DiskTier`]; see [`DiskTier::builder`].
#[derive(Debug, Clone)]
pub struct DiskTierBuilder {
    path: PathBuf,
    map_size: usize,
    max_bytes: Option<u64>,
    compress_threshold: usize,
    max_value_bytes: Option<usize>,
    max_batch: usize,
}

impl DiskTierBuilder {
    /// LMDB's map size: the most the file may grow to (default 1 GiB, rounded up to
    /// 64 KiB). It reserves address space, not disk.
    pub fn map_size(mut self, bytes: usize) -> Self {
        self.map_size = bytes;
        self
    }

    /// Bound on stored bytes (default: three quarters of the map). Past it, expired
    /// entries are removed first, then the oldest writes.
    ///
    /// The bound counts the bytes of records; LMDB's pages hold more than that (B-tree
    /// pages run half to two thirds full under random keys, each entry has two index
    /// rows, and a transaction needs free pages to copy what it touches). Small records
    /// can therefore fill the map before the bound: then the tier lowers its bound to
    /// what the map holds (when its live pages pass three quarters of the map, or a
    /// commit finds the map full), commits in smaller transactions, and carries on; no
    /// write is lost to a full map. [`DiskStats::bound_bytes`] shows the bound in force and
    /// [`DiskStats::map_full`] how often the map filled up. Give small records a map
    /// several times `max_bytes`; the map costs address space, not disk.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Values at or above this many bytes are compressed with `snap` (default 1 KiB);
    /// `usize::MAX` turns compression off.
    pub fn compress_threshold(mut self, bytes: usize) -> Self {
        self.compress_threshold = bytes;
        self
    }

    /// Largest value one entry may hold (default 16 MiB, or a quarter of `max_bytes` if
    /// that is less).
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = Some(bytes);
        self
    }

    /// Most writes in one group commit (default 4,096). `1` commits every write on its
    /// own, which is only useful to measure what group commit saves.
    pub fn max_batch(mut self, writes: usize) -> Self {
        self.max_batch = writes;
        self
    }

    /// Checks the settings, creates the directory if needed and opens the environment.
    pub fn open(self) -> Result<DiskTier, BuildError> {
        let map_size = self.map_size.div_ceil(MAP_ALIGN) * MAP_ALIGN;
        if map_size < MIN_MAP_SIZE {
            return Err(BuildError::new(format!(
                "disk tier: map_size of {} bytes is below the minimum of {MIN_MAP_SIZE}; raise map_size",
                self.map_size
            )));
        }
        let max_bytes = self.max_bytes.unwrap_or(map_size as u64 / 4 * 3);
        if max_bytes == 0 {
            return Err(BuildError::new(
                "disk tier: max_bytes is 0; give it room for at least one entry",
            ));
        }
        if max_bytes > map_size as u64 / 10 * 9 {
            return Err(BuildError::new(format!(
                "disk tier: max_bytes ({max_bytes}) leaves LMDB too little of the map ({map_size}); \
                 keep max_bytes at or below 90% of map_size"
            )));
        }
        let max_value_bytes = self
            .max_value_bytes
            .unwrap_or((DEFAULT_MAX_VALUE_BYTES as u64).min(max_bytes / 4) as usize);
        if max_value_bytes == 0 {
            return Err(BuildError::new(
                "disk tier: max_value_bytes is 0; allow values of at least one byte",
            ));
        }
        if max_value_bytes as u64 > max_bytes / 2 {
            return Err(BuildError::new(format!(
                "disk tier: the map is too small for one entry of max_value_bytes \
                 ({max_value_bytes}): max_bytes is {max_bytes}; raise map_size or lower \
                 max_value_bytes"
            )));
        }
        if self.max_batch == 0 {
            return Err(BuildError::new(
                "disk tier: max_batch is 0; commit at least one write per batch",
            ));
        }
        fs::create_dir_all(&self.path)
            .map_err(|e| BuildError::path("create the disk tier directory", &self.path, e))?;
        let probe = self.path.join(".write-probe");
        fs::write(&probe, b"")
            .and_then(|()| fs::remove_file(&probe))
            .map_err(|e| BuildError::path("write in", &self.path, e))?;
        let opened = open_env(&self.path, map_size).map_err(|e| {
            BuildError::with_source(
                format!(
                    "disk tier: cannot open LMDB at `{}`: {e}",
                    self.path.display()
                ),
                e,
            )
        })?;

        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            path: self.path.clone(),
            state: RwLock::new(Some(opened)),
            counters: Counters {
                bound_bytes: AtomicU64::new(max_bytes),
                ..Counters::default()
            },
            max_value_bytes,
        });
        let writer = Writer {
            shared: shared.clone(),
            rx,
            map_size,
            max_bytes,
            compress_threshold: self.compress_threshold,
            max_batch: self.max_batch,
            txn_limit: self.max_batch,
            live_at_lowering: 0,
        };
        std::thread::Builder::new()
            .name("tower-cache-disk-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| BuildError::with_source("disk tier: cannot start the writer thread", e))?;
        Ok(DiskTier {
            shared,
            tx,
            clock: Clock::new(TimeSource::Tokio),
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Dbs {
    entries: Database<Raw, Raw>,
    expiry: Database<Raw, Raw>,
    order: Database<Raw, Raw>,
    meta: Database<Raw, Raw>,
}

#[derive(Debug)]
struct Opened {
    env: Env,
    dbs: Dbs,
}

#[allow(unsafe_code)]
fn open_env(path: &Path, map_size: usize) -> heed::Result<Opened> {
    let mut options = EnvOpenOptions::new();
    options.map_size(map_size).max_dbs(4).max_readers(512);
    // SAFETY: the directory is this tier's own; the file is only ever changed through
    // LMDB (by this process or others that open it the same way), never truncated or
    // rewritten behind LMDB's back. `compact` swaps the file only after this process
    // has closed its environment, and is documented as needing exclusive use.
    let env = unsafe { options.open(path)? };
    // Readers left behind by a killed process would pin old pages forever.
    let _ = env.clear_stale_readers();
    let mut wtxn = env.write_txn()?;
    let dbs = Dbs {
        entries: env.create_database(&mut wtxn, Some("entries"))?,
        expiry: env.create_database(&mut wtxn, Some("expiry"))?,
        order: env.create_database(&mut wtxn, Some("order"))?,
        meta: env.create_database(&mut wtxn, Some("meta"))?,
    };
    wtxn.commit()?;
    Ok(Opened { env, dbs })
}

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
struct Shared {
    path: PathBuf,
    state: RwLock<Option<Opened>>,
    counters: Counters,
    max_value_bytes: usize,
}

impl Shared {
    fn state(&self) -> RwLockReadGuard<'_, Option<Opened>> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
enum Op {
    Put {
        key: Box<str>,
        value: Bytes,
        expires_ms: u64,
        now_ms: u64,
        meta: EntryMeta,
        ack: Option<oneshot::Sender<Result<(), DiskError>>>,
    },
    Delete {
        key: Box<str>,
        ack: Option<oneshot::Sender<Result<bool, DiskError>>>,
    },
    Clear(oneshot::Sender<Result<(), DiskError>>),
    Cleanup {
        now_ms: u64,
        ack: oneshot::Sender<Result<usize, DiskError>>,
    },
    Compact(oneshot::Sender<Result<CompactReport, DiskError>>),
    Close(oneshot::Sender<()>),
}

impl Op {
    /// The time the op was queued at, for those that carry one.
    fn now_ms(&self) -> u64 {
        match self {
            Op::Put { now_ms, .. } | Op::Cleanup { now_ms, .. } => *now_ms,
            _ => 0,
        }
    }
}

impl DiskTier {
    /// A builder for a tier in the directory `path` (created if missing).
    pub fn builder(path: impl AsRef<Path>) -> DiskTierBuilder {
        DiskTierBuilder {
            path: path.as_ref().to_path_buf(),
            map_size: DEFAULT_MAP_SIZE,
            max_bytes: None,
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
            max_value_bytes: None,
            max_batch: DEFAULT_MAX_BATCH,
        }
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
        let c = &self.shared.counters;
        let now = self.clock.now_ms();
        let decoded = {
            let state = self.shared.state();
            let o = state.as_ref().ok_or_else(DiskError::closed)?;
            let rtxn = o.env.read_txn().map_err(|e| DiskError::lmdb("read", e))?;
            o.dbs
                .entries
                .get(&rtxn, key.as_bytes())
                .map_err(|e| DiskError::lmdb("read", e))?
                .map(decode_record)
        };
        match decoded {
            None => {
                bump(&c.misses, 1);
                Ok(None)
            }
            Some(Ok((expires_ms, value, meta))) if expires_ms > now => {
                bump(&c.hits, 1);
                Ok(Some(Entry {
                    value,
                    ttl_left: Duration::from_millis(expires_ms - now),
                    meta,
                }))
            }
            Some(Ok(_)) => {
                // Expired: cleanup or eviction removes it through the expiry index.
                bump(&c.misses, 1);
                Ok(None)
            }
            Some(Err(why)) => {
                bump(&c.corrupt, 1);
                bump(&c.misses, 1);
                tracing::warn!(key, why, "disk tier: corrupt record dropped");
                let _ = self.tx.try_send(Op::Delete {
                    key: key.into(),
                    ack: None,
                });
                Ok(None)
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
    /// Used for write-through from the request path. If the queue is full the write is
    /// dropped and counted as a rejection: a cache may lose a write, a request must not
    /// wait for a disk.
    pub fn set_background(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
    ) -> Result<(), InsertError> {
        let op = self.put_op(key, value, ttl, meta, None)?;
        self.tx.try_send(op).map_err(|e| {
            bump(&self.shared.counters.rejections, 1);
            InsertError::new(
                InsertErrorKind::Disk,
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        "disk tier: write queue full; the write was dropped"
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        "disk tier: the writer thread has stopped"
                    }
                },
            )
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
        self.request(|ack| Op::Delete {
            key: key.into(),
            ack: Some(ack),
        })
        .await
    }

    /// Removes every entry.
    pub async fn clear(&self) -> Result<(), DiskError> {
        self.request(Op::Clear).await
    }

    /// Removes expired entries through the expiry index; returns how many.
    pub async fn cleanup(&self) -> Result<usize, DiskError> {
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

const META_SEQ: &[u8] = b"seq";
const META_STORED: &[u8] = b"stored";
const META_LOGICAL: &[u8] = b"logical";

fn read_meta(dbs: &Dbs, txn: &heed::RoTxn<'_>, key: &[u8]) -> u64 {
    match dbs.meta.get(txn, key) {
        Ok(Some(b)) if b.len() == 8 => u64_at(b, 0),
        _ => 0,
    }
}

// === writer thread ===

struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Op>,
    map_size: usize,
    max_bytes: u64,
    compress_threshold: usize,
    max_batch: usize,
    /// Most writes per transaction now: `max_batch`, less after the map filled up.
    txn_limit: usize,
    /// Live bytes of pages when the bound was last lowered.
    live_at_lowering: u64,
}

/// Running totals kept inside the write transaction.
struct Totals {
    seq: u64,
    stored: u64,
    logical: u64,
}

impl Totals {
    fn read(dbs: &Dbs, txn: &heed::RoTxn<'_>) -> Self {
        Self {
            seq: read_meta(dbs, txn, META_SEQ),
            stored: read_meta(dbs, txn, META_STORED),
            logical: read_meta(dbs, txn, META_LOGICAL),
        }
    }

    fn write(&self, dbs: &Dbs, wtxn: &mut RwTxn<'_>) -> heed::Result<()> {
        dbs.meta.put(wtxn, META_SEQ, &self.seq.to_le_bytes())?;
        dbs.meta
            .put(wtxn, META_STORED, &self.stored.to_le_bytes())?;
        dbs.meta
            .put(wtxn, META_LOGICAL, &self.logical.to_le_bytes())
    }
}

/// How often one batch may make room after even a single write found the map full.
const MAP_FULL_ROOMS: usize = 3;

/// Bytes of the pages the tier's databases hold now (free pages not counted).
fn live_bytes(dbs: &Dbs, txn: &heed::RoTxn<'_>) -> heed::Result<u64> {
    let mut bytes = 0;
    for db in [dbs.entries, dbs.expiry, dbs.order, dbs.meta] {
        let s = db.stat(txn)?;
        let pages = s.branch_pages + s.leaf_pages + s.overflow_pages;
        bytes += pages as u64 * u64::from(s.page_size);
    }
    Ok(bytes)
}

fn is_map_full(e: &heed::Error) -> bool {
    matches!(e, heed::Error::Mdb(heed::MdbError::MapFull))
}

enum Done {
    Put(Option<oneshot::Sender<Result<(), DiskError>>>),
    Delete(Option<oneshot::Sender<Result<bool, DiskError>>>, bool),
    Clear(oneshot::Sender<Result<(), DiskError>>),
    Cleanup(oneshot::Sender<Result<usize, DiskError>>, usize),
}

impl Done {
    fn fail(self, e: &DiskError) {
        let e = || DiskError::new(e.to_string());
        match self {
            Done::Put(Some(a)) => drop(a.send(Err(e()))),
            Done::Delete(Some(a), _) => drop(a.send(Err(e()))),
            Done::Clear(a) => drop(a.send(Err(e()))),
            Done::Cleanup(a, _) => drop(a.send(Err(e()))),
            Done::Put(None) | Done::Delete(None, _) => {}
        }
    }

    fn succeed(self) {
        match self {
            Done::Put(Some(a)) => drop(a.send(Ok(()))),
            Done::Delete(Some(a), found) => drop(a.send(Ok(found))),
            Done::Clear(a) => drop(a.send(Ok(()))),
            Done::Cleanup(a, n) => drop(a.send(Ok(n))),
            Done::Put(None) | Done::Delete(None, _) => {}
        }
    }
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = self.rx.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            // Compact and Close act on the whole environment: commit what came before
            // them, then run them on their own.
            let mut ops = Vec::with_capacity(batch.len());
            for op in batch.drain(..) {
                match op {
                    Op::Compact(ack) => {
                        self.commit(std::mem::take(&mut ops));
                        let _ = ack.send(self.compact());
                    }
                    Op::Close(ack) => {
                        self.commit(std::mem::take(&mut ops));
                        self.close();
                        // Refuse further writes before saying the tier is closed, so a
                        // write after `close()` returns is an error, never silently lost.
                        self.rx.close();
                        let _ = ack.send(());
                        return;
                    }
                    op => ops.push(op),
                }
            }
            self.commit(ops);
        }
        self.close();
    }

    fn close(&self) {
        let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = state.take() {
            let _ = o.env.force_sync();
            o.env.prepare_for_closing().wait();
        }
    }

    fn commit(&mut self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let c = &shared.counters;
        let state = shared.state();
        let Some(o) = state.as_ref() else {
            let e = DiskError::closed();
            bump(&c.errors, 1);
            for op in ops {
                Self::done_of(op).fail(&e);
            }
            return;
        };
        // A full map: a transaction needs free pages for every page it touches (LMDB
        // copies on write, and a page freed by one commit is handed out again only
        // from the second commit after it), so many small records under random keys
        // can fill the map long before the byte bound. Commit in smaller pieces then,
        // and remember the size that fitted (growing it back slowly); if even a single
        // write does not fit, the data itself is too big for the map: make room and
        // lower the bound.
        let mut ops = ops;
        let mut rooms = 0;
        while !ops.is_empty() {
            let n = self.txn_limit.min(ops.len());
            let e = match self.apply(o, &ops[..n]) {
                Ok((puts, evicted, expired, results)) => {
                    bump(&c.writes, puts);
                    bump(&c.write_batches, 1);
                    bump(&c.evictions, evicted);
                    bump(&c.expirations, expired);
                    for (op, found) in ops.drain(..n).zip(results) {
                        let mut done = Self::done_of(op);
                        match &mut done {
                            Done::Delete(_, f) => *f = found > 0,
                            Done::Cleanup(_, n) => *n = found,
                            _ => {}
                        }
                        done.succeed();
                    }
                    if n == self.txn_limit && n < self.max_batch {
                        self.txn_limit = (n + n / 8 + 1).min(self.max_batch);
                    }
                    continue;
                }
                Err(e) => e,
            };
            let e = if is_map_full(&e) {
                bump(&c.map_full, 1);
                if n > 1 {
                    self.txn_limit = n.div_ceil(2);
                    tracing::debug!(
                        writes = self.txn_limit,
                        "disk tier: map full; committing in smaller transactions"
                    );
                    continue;
                }
                if rooms < MAP_FULL_ROOMS {
                    rooms += 1;
                    let now_ms = ops[0].now_ms();
                    match self.make_room(o, now_ms) {
                        Ok(()) => continue,
                        Err(e) => e,
                    }
                } else {
                    e
                }
            } else {
                e
            };
            // Not to be saved by making room: these writes fail, the rest go on.
            bump(&c.errors, 1);
            let e = DiskError::lmdb("commit", e);
            tracing::error!(error = %e, writes = n, "disk tier: writes lost");
            for op in ops.drain(..n) {
                Self::done_of(op).fail(&e);
            }
        }
    }

    /// Frees a quarter of the stored bytes after the map filled up, and lowers the byte
    /// bound to what is left so that later batches evict before the map fills again.
    ///
    /// Eviction runs in transactions of its own, in steps: LMDB hands a page freed by
    /// one commit out again only from the second commit after it, and deleting needs
    /// fresh pages itself (copy on write), which a full map may have few of. A step that
    /// hits the full map again is halved.
    fn make_room(&mut self, o: &Opened, now_ms: u64) -> heed::Result<()> {
        let (stored, live) = {
            let rtxn = o.env.read_txn()?;
            (
                read_meta(&o.dbs, &rtxn, META_STORED),
                live_bytes(&o.dbs, &rtxn)?,
            )
        };
        let target = stored / 4 * 3;
        self.lower_bound(target, live);
        let mut step = (stored - target) / 4;
        let mut txns = 0;
        loop {
            let mut wtxn = o.env.write_txn()?;
            let mut t = Totals::read(&o.dbs, &wtxn);
            // Two commits at least, so the pages the first one frees can be reused by the
            // retried batch.
            if t.stored <= target && txns >= 2 {
                return Ok(());
            }
            let goal = t
                .stored
                .saturating_sub(step.max(1))
                .max(target.min(t.stored));
            let result = (|| {
                let expired = remove_expired(&o.dbs, &mut wtxn, now_ms, &mut t, 64)?;
                let evicted = self.evict_oldest(&o.dbs, &mut wtxn, &mut t, goal)?;
                t.write(&o.dbs, &mut wtxn)?;
                Ok::<_, heed::Error>((expired, evicted))
            })();
            let result = result.and_then(|n| wtxn.commit().map(|()| n));
            match result {
                Ok((expired, evicted)) => {
                    bump(&self.shared.counters.expirations, expired as u64);
                    bump(&self.shared.counters.evictions, evicted);
                    txns += 1;
                    if expired == 0 && evicted == 0 && t.stored > target {
                        // Nothing left to evict: the retry will tell.
                        return Ok(());
                    }
                }
                Err(e) if is_map_full(&e) && step > 1 => step /= 2,
                Err(e) => return Err(e),
            }
        }
    }

    fn done_of(op: Op) -> Done {
        match op {
            Op::Put { ack, .. } => Done::Put(ack),
            Op::Delete { ack, .. } => Done::Delete(ack, false),
            Op::Clear(ack) => Done::Clear(ack),
            Op::Cleanup { ack, .. } => Done::Cleanup(ack, 0),
            Op::Compact(_) | Op::Close(_) => unreachable!("handled by the writer loop"),
        }
    }

    /// Applies a batch in one transaction; returns (puts, evicted, expired, per-op result).
    #[allow(clippy::type_complexity)]
    fn apply(&mut self, o: &Opened, ops: &[Op]) -> heed::Result<(u64, u64, u64, Vec<usize>)> {
        let dbs = &o.dbs;
        let mut wtxn = o.env.write_txn()?;
        let mut t = Totals::read(dbs, &wtxn);
        let mut now_ms = 0;
        let mut puts = 0;
        let (mut evicted, mut expired) = (0, 0);
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match op {
                Op::Put {
                    key,
                    value,
                    expires_ms,
                    now_ms: at,
                    meta,
                    ..
                } => {
                    now_ms = now_ms.max(*at);
                    t.seq += 1;
                    let rec =
                        encode_record(value, *expires_ms, meta, t.seq, self.compress_threshold);
                    // A new key (the common case) needs one B-tree descent; an existing
                    // one first drops its old record and index rows.
                    match dbs.entries.put_with_flags(
                        &mut wtxn,
                        PutFlags::NO_OVERWRITE,
                        key.as_bytes(),
                        &rec,
                    ) {
                        Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => {
                            remove_entry(dbs, &mut wtxn, key.as_bytes(), &mut t)?;
                            dbs.entries.put(&mut wtxn, key.as_bytes(), &rec)?;
                        }
                        other => other?,
                    }
                    put_sorted(
                        dbs.expiry,
                        &mut wtxn,
                        &expiry_key(*expires_ms, key.as_bytes()),
                        &[],
                    )?;
                    // Sequence numbers only grow: appending skips the search.
                    put_sorted(dbs.order, &mut wtxn, &t.seq.to_be_bytes(), key.as_bytes())?;
                    t.stored += rec.len() as u64;
                    t.logical += value.len() as u64;
                    puts += 1;
                    1
                }
                Op::Delete { key, .. } => {
                    remove_entry(dbs, &mut wtxn, key.as_bytes(), &mut t)? as usize
                }
                Op::Clear(_) => {
                    dbs.entries.clear(&mut wtxn)?;
                    dbs.expiry.clear(&mut wtxn)?;
                    dbs.order.clear(&mut wtxn)?;
                    t.stored = 0;
                    t.logical = 0;
                    1
                }
                Op::Cleanup { now_ms: at, .. } => {
                    let n = remove_expired(dbs, &mut wtxn, *at, &mut t, usize::MAX)?;
                    expired += n as u64;
                    n
                }
                Op::Compact(_) | Op::Close(_) => 0,
            };
            results.push(r);
        }
        // Keep LMDB room to work: a transaction copies every page it touches, and the
        // pages a commit frees come back only two commits later, so the live pages must
        // stay well under the map. Small records under random keys take far more pages
        // than their bytes; when the live pages pass three quarters of the map, lower the
        // bound (again only if they keep growing: evicting thins pages before it frees
        // them).
        let live = live_bytes(dbs, &wtxn)?;
        if live > self.map_size as u64 / 4 * 3 && live > self.live_at_lowering && t.stored > 0 {
            self.lower_bound(t.stored / 4 * 3, live);
        }
        if t.stored > self.max_bytes {
            // Expired entries first (as of the latest write in the batch), then the
            // oldest writes.
            let n = remove_expired(dbs, &mut wtxn, now_ms, &mut t, usize::MAX)?;
            expired += n as u64;
            if t.stored > self.max_bytes {
                evicted += self.evict_oldest(dbs, &mut wtxn, &mut t, self.max_bytes)?;
            }
        }
        t.write(dbs, &mut wtxn)?;
        wtxn.commit()?;
        Ok((puts, evicted, expired, results))
    }

    /// Lowers the byte bound to `bound` (the map cannot hold what the bound allowed).
    fn lower_bound(&mut self, bound: u64, live: u64) {
        self.live_at_lowering = live;
        if bound >= self.max_bytes {
            return;
        }
        tracing::warn!(
            map_size = self.map_size,
            live_bytes = live,
            old_bound = self.max_bytes,
            new_bound = bound,
            "disk tier: records take more of the map than the byte bound allowed for \
             (small records cost LMDB more than their bytes); lowering the bound. \
             Raise map_size to keep more."
        );
        self.max_bytes = bound;
        self.shared
            .counters
            .bound_bytes
            .store(bound, Ordering::Relaxed);
    }

    fn evict_oldest(
        &self,
        dbs: &Dbs,
        wtxn: &mut RwTxn<'_>,
        t: &mut Totals,
        target: u64,
    ) -> heed::Result<u64> {
        let mut evicted = 0;
        while t.stored > target {
            let Some((_, key)) = dbs.order.first(wtxn)? else {
                break;
            };
            let key = key.to_vec();
            if !remove_entry(dbs, wtxn, &key, t)? {
                // An order row without its entry: drop it and go on.
                if let Some((seq, _)) = dbs.order.first(wtxn)? {
                    let seq = seq.to_vec();
                    dbs.order.delete(wtxn, &seq)?;
                }
                continue;
            }
            evicted += 1;
        }
        Ok(evicted)
    }

    fn compact(&self) -> Result<CompactReport, DiskError> {
        let path = &self.shared.path;
        let data = path.join("data.mdb");
        let tmp = path.join("data.mdb.compact");
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before_bytes = size(&data);
        let _ = fs::remove_file(&tmp);
        let fail = |e: DiskError| {
            bump(&self.shared.counters.errors, 1);
            e
        };
        {
            let state = self.shared.state();
            let o = state.as_ref().ok_or_else(|| fail(DiskError::closed()))?;
            o.env
                .copy_to_path(&tmp, CompactionOption::Enabled)
                .map_err(|e| fail(DiskError::lmdb("compacting copy", e)))?;
        }
        let mut state = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = state.take() {
            o.env.prepare_for_closing().wait();
        }
        let renamed = fs::rename(&tmp, &data).map_err(|e| DiskError::io("replace", &data, e));
        // Reopen whatever is there now: the compacted file, or the old one if the rename
        // failed. Until it is open, reads miss and writes fail, counted.
        match open_env(path, self.map_size) {
            Ok(o) => *state = Some(o),
            Err(e) => return Err(fail(DiskError::lmdb("reopen after compaction", e))),
        }
        renamed.map_err(fail)?;
        Ok(CompactReport {
            before_bytes,
            after_bytes: size(&data),
        })
    }
}

/// Puts a row that usually sorts after every existing one (an append, which skips the
/// B-tree search), falling back to an ordinary put when it does not.
fn put_sorted(
    db: Database<Raw, Raw>,
    wtxn: &mut RwTxn<'_>,
    key: &[u8],
    value: &[u8],
) -> heed::Result<()> {
    match db.put_with_flags(wtxn, PutFlags::APPEND, key, value) {
        Err(heed::Error::Mdb(heed::MdbError::KeyExist)) => db.put(wtxn, key, value),
        other => other,
    }
}

/// Deletes an entry and its index rows; returns whether it existed.
fn remove_entry(dbs: &Dbs, wtxn: &mut RwTxn<'_>, key: &[u8], t: &mut Totals) -> heed::Result<bool> {
    let Some(old) = dbs.entries.get(wtxn, key)? else {
        return Ok(false);
    };
    let len = old.len() as u64;
    if let Some(h) = decode_header(old) {
        dbs.expiry.delete(wtxn, &expiry_key(h.expires_ms, key))?;
        dbs.order.delete(wtxn, &h.seq.to_be_bytes())?;
        t.logical = t.logical.saturating_sub(h.logical);
    }
    dbs.entries.delete(wtxn, key)?;
    t.stored = t.stored.saturating_sub(len);
    Ok(true)
}

/// Deletes entries whose deadline is at or before `now_ms`, walking the expiry index.
fn remove_expired(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    now_ms: u64,
    t: &mut Totals,
    limit: usize,
) -> heed::Result<usize> {
    let mut due = Vec::new();
    for row in dbs.expiry.iter(wtxn)? {
        let (k, _) = row?;
        if k.len() < 8 || u64::from_be_bytes(k[..8].try_into().unwrap_or([0xff; 8])) > now_ms {
            break;
        }
        due.push(k.to_vec());
        if due.len() >= limit {
            break;
        }
    }
    let mut removed = 0;
    for k in due {
        let key = &k[8..];
        if remove_entry(dbs, wtxn, key, t)? {
            removed += 1;
        } else {
            dbs.expiry.delete(wtxn, &k)?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_with_and_without_compression() {
        let meta = EntryMeta {
            version: 7,
            tags: ["a", "bb"].into_iter().collect(),
        };
        for (value, threshold) in [(vec![b'x'; 4096], 1024), (vec![b'x'; 10], 1024)] {
            let rec = encode_record(&value, 99, &meta, 3, threshold);
            let (exp, v, m) = decode_record(&rec).unwrap();
            assert_eq!((exp, &v[..], &m), (99, &value[..], &meta));
            assert_eq!(decode_header(&rec).unwrap().seq, 3);
        }
        let compressed = encode_record(&[b'x'; 4096], 1, &meta, 1, 1024);
        assert!(compressed.len() < 1024, "4 KiB of one byte compresses");
    }

    #[test]
    fn corrupt_records_are_detected() {
        let rec = encode_record(b"hello world", 5, &EntryMeta::default(), 1, 1024);
        for i in 2..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x01;
            assert!(
                decode_record(&bad).is_err(),
                "flip at byte {i} must be caught"
            );
        }
        let mut future = rec.clone();
        future[0] = 2;
        assert_eq!(
            decode_record(&future).unwrap_err(),
            "unknown record format version"
        );
        assert!(decode_record(&rec[..10]).is_err());
    }

    #[tokio::test]
    async fn corrupt_record_is_dropped_and_counted_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::builder(dir.path())
            .map_size(8 << 20)
            .open()
            .unwrap();
        disk.set("k", Bytes::from(vec![7u8; 5000]), Duration::from_secs(60))
            .await
            .unwrap();
        disk.corrupt_for_test("k");
        assert!(
            disk.get("k").is_none(),
            "a corrupt record must not be served"
        );
        disk.flush().await.unwrap();
        let s = disk.stats();
        assert_eq!(s.corrupt, 1);
        assert_eq!(s.entries, 0, "the corrupt record was deleted");
    }
}
