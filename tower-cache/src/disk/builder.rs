//! Settings of the disk tier, checked when it opens.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use std::time::Duration;

use super::env::{move_aside, open_env, OpenError, Opened};
use super::stats::Counters;
use super::writer::Writer;
use super::{
    DiskTier, Shared, DEFAULT_COMPRESS_THRESHOLD, DEFAULT_DISK_MAX_VALUE_BYTES, DEFAULT_MAP_SIZE,
    DEFAULT_MAX_BATCH, MAP_ALIGN, MIN_MAP_SIZE, QUEUE,
};
use crate::entry::{Clock, TimeSource};
use crate::error::BuildError;

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
    on_damage: OnDamage,
    blocking_read_threshold: usize,
    addressable_threshold: usize,
}

/// Default size above which async reads run on tokio's blocking pool: 64 KiB.
pub const DEFAULT_BLOCKING_READ_THRESHOLD: usize = 64 << 10;

/// Default size at or above which values are stored in the addressable form: 1 MiB.
pub const DEFAULT_ADDRESSABLE_THRESHOLD: usize = 1 << 20;

/// What [`DiskTierBuilder::open`] does with a damaged data file (truncated, not an LMDB
/// file, meta pages that contradict the file).
///
/// LMDB trusts its file: opened as is, a truncated file kills the process with SIGBUS on
/// the first read past its end. So the tier checks the file before mapping it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDamage {
    /// The default for a cache: rename `data.mdb` to
    /// `data.mdb.damaged-<unix seconds>-<pid>` (kept for a post-mortem), start with an
    /// empty file, log an error and count it in [`DiskStats::damaged_files`].
    ///
    /// [`DiskStats::damaged_files`]: super::DiskStats::damaged_files
    #[default]
    MoveAside,
    /// Fail the open with a [`BuildError`] that says what is wrong with the file.
    Fail,
}

/// Largest map size accepted: 16 TiB of address space.
pub const MAX_MAP_SIZE: usize = 1 << 44;
/// Room a record needs beside its value (header, key, a few tags) when the tier checks
/// that its bound holds one entry of the largest value.
const RECORD_SLACK: u64 = 4096;

/// Paths this process has a disk tier open at, with a handle that tells whether any
/// `DiskTier` for it is still alive (the writer may still be closing after the last one
/// dropped).
static OPEN: std::sync::Mutex<Vec<(PathBuf, mpsc::WeakSender<super::Op>)>> =
    std::sync::Mutex::new(Vec::new());

/// How long `open` waits for an environment of the same path that is still closing.
const CLOSING_WAIT: Duration = Duration::from_secs(30);

impl DiskTierBuilder {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            map_size: DEFAULT_MAP_SIZE,
            max_bytes: None,
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
            max_value_bytes: None,
            max_batch: DEFAULT_MAX_BATCH,
            on_damage: OnDamage::MoveAside,
            blocking_read_threshold: DEFAULT_BLOCKING_READ_THRESHOLD,
            addressable_threshold: DEFAULT_ADDRESSABLE_THRESHOLD,
        }
    }

    /// Records larger than this (as stored, after compression) are read and decompressed
    /// on tokio's blocking pool when the tiered store reads them, so that a large value
    /// does not hold an async worker thread (default 64 KiB). `usize::MAX` reads every
    /// record inline.
    pub fn blocking_read_threshold(mut self, bytes: usize) -> Self {
        self.blocking_read_threshold = bytes;
        self
    }

    /// Values at or above this many bytes are stored in the addressable form (default
    /// 1 MiB): not compressed, checksummed per 64 KiB block, so that a part of the value
    /// can be read and checked without reading the rest (the HTTP cache serves ranges and
    /// streams large bodies this way, never holding the whole body in memory). Smaller
    /// values are stored whole (and compressed above
    /// [`compress_threshold`](Self::compress_threshold)). `usize::MAX` stores every value
    /// whole; records of either form are read by every later version.
    pub fn addressable_threshold(mut self, bytes: usize) -> Self {
        self.addressable_threshold = bytes;
        self
    }

    /// What to do with a damaged data file (default: [`OnDamage::MoveAside`]).
    pub fn on_damage(mut self, policy: OnDamage) -> Self {
        self.on_damage = policy;
        self
    }

    /// LMDB's map size: the most the file may grow to (default 1 GiB, rounded up to
    /// 64 KiB; at least 1 MiB, at most [`MAX_MAP_SIZE`]). It reserves address space, not
    /// disk.
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
    /// write is lost to a full map. [`DiskStats::bound_bytes`](super::DiskStats::bound_bytes) shows the bound in force and
    /// [`DiskStats::map_full`](super::DiskStats::map_full) how often the map filled up. Give small records a map
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
    /// that is less). It may be at most half of `max_bytes` and a quarter of the map: the
    /// tier must always be able to hold one entry of this size, also after it lowered its
    /// bound because small records filled the map.
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

    /// Checks the settings, creates the directory if needed, checks the data file and
    /// opens the environment.
    ///
    /// Opening a path whose previous `DiskTier` was just dropped waits (up to 30 s) for
    /// that environment to finish closing; opening a path that a live `DiskTier` of this
    /// process has open is an error (clone that tier instead).
    pub fn open(self) -> Result<DiskTier, BuildError> {
        let map_size = self
            .map_size
            .checked_next_multiple_of(MAP_ALIGN)
            .filter(|&m| m <= MAX_MAP_SIZE)
            .ok_or_else(|| {
                BuildError::new(format!(
                    "disk tier: map_size of {} bytes is over the maximum of {MAX_MAP_SIZE} \
                     (16 TiB); lower map_size",
                    self.map_size
                ))
            })?;
        if map_size < MIN_MAP_SIZE {
            return Err(BuildError::new(format!(
                "disk tier: map_size of {} bytes is below the minimum of {MIN_MAP_SIZE}; raise map_size",
                self.map_size
            )));
        }
        let map = map_size as u64;
        let max_bytes = self.max_bytes.unwrap_or(map / 4 * 3);
        if max_bytes == 0 {
            return Err(BuildError::new(
                "disk tier: max_bytes is 0; give it room for at least one entry",
            ));
        }
        if max_bytes > map / 10 * 9 {
            return Err(BuildError::new(format!(
                "disk tier: max_bytes ({max_bytes}) leaves LMDB too little of the map ({map_size}); \
                 keep max_bytes at or below 90% of map_size"
            )));
        }
        let max_value_bytes = self
            .max_value_bytes
            .unwrap_or((DEFAULT_DISK_MAX_VALUE_BYTES as u64).min(max_bytes / 4) as usize);
        if max_value_bytes == 0 {
            return Err(BuildError::new(
                "disk tier: max_value_bytes is 0; allow values of at least one byte",
            ));
        }
        if max_value_bytes as u64 > u64::from(u32::MAX) {
            return Err(BuildError::new(format!(
                "disk tier: max_value_bytes ({max_value_bytes}) is over the record format's \
                 limit of 4 GiB; lower it"
            )));
        }
        let entry_floor = (max_value_bytes as u64).saturating_add(RECORD_SLACK);
        if entry_floor > max_bytes / 2 {
            return Err(BuildError::new(format!(
                "disk tier: max_bytes ({max_bytes}) is too small for entries of max_value_bytes \
                 ({max_value_bytes}): it must hold two of them with their headers; raise \
                 max_bytes or map_size, or lower max_value_bytes"
            )));
        }
        if entry_floor > map / 4 {
            return Err(BuildError::new(format!(
                "disk tier: the map ({map_size}) is too small for entries of max_value_bytes \
                 ({max_value_bytes}): LMDB needs room to rewrite one beside the rest; keep \
                 max_value_bytes under a quarter of map_size"
            )));
        }
        if self.max_batch == 0 {
            return Err(BuildError::new(
                "disk tier: max_batch is 0; commit at least one write per batch",
            ));
        }
        fs::create_dir_all(&self.path)
            .map_err(|e| BuildError::path("create the disk tier directory", &self.path, e))?;
        // A probe file of this open's own, so concurrent openers (other processes
        // sharing the environment) never delete each other's.
        let probe = self.path.join(format!(
            ".write-probe-{}-{:x}",
            std::process::id(),
            probe_nonce()
        ));
        fs::write(&probe, b"")
            .and_then(|()| fs::remove_file(&probe))
            .map_err(|e| BuildError::path("write in", &self.path, e))?;
        let canonical =
            fs::canonicalize(&self.path).map_err(|e| BuildError::path("resolve", &self.path, e))?;
        wait_for_closing(&canonical)?;
        let (opened, damaged) = self.open_checked(map_size)?;
        let spool = super::spool::SpoolDir::open(&self.path);

        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            path: self.path.clone(),
            state: RwLock::new(Some(opened)),
            counters: Counters {
                bound_bytes: AtomicU64::new(max_bytes),
                damaged_files: AtomicU64::new(damaged),
                ..Counters::default()
            },
            max_value_bytes,
            blocking_read_threshold: self.blocking_read_threshold,
            spool,
            readers: Default::default(),
            deferred: Default::default(),
            unread: Default::default(),
        });
        let writer = Writer {
            shared: shared.clone(),
            rx,
            map_size,
            max_bytes,
            compress_threshold: self.compress_threshold,
            addressable_threshold: self.addressable_threshold,
            max_batch: self.max_batch,
            txn_limit: self.max_batch,
            live_at_lowering: 0,
            configured_max_bytes: max_bytes,
            entry_floor,
        };
        std::thread::Builder::new()
            .name("tower-cache-disk-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| BuildError::with_source("disk tier: cannot start the writer thread", e))?;
        lock(&OPEN).retain(|(_, tier)| tier.upgrade().is_some());
        lock(&OPEN).push((canonical, tx.downgrade()));
        Ok(DiskTier {
            shared,
            tx,
            clock: Clock::new(TimeSource::Tokio),
        })
    }

    /// Opens the environment; a damaged file is moved aside (and the open retried) or
    /// reported, as [`Self::on_damage`] says. Returns how many files were moved aside.
    fn open_checked(&self, map_size: usize) -> Result<(Opened, u64), BuildError> {
        let failed = |e: &dyn std::fmt::Display| {
            BuildError::new(format!(
                "disk tier: cannot open LMDB at `{}`: {e}",
                self.path.display()
            ))
        };
        match open_env(&self.path, map_size) {
            Ok(opened) => Ok((opened, 0)),
            Err(OpenError::Damaged(why)) if self.on_damage == OnDamage::MoveAside => {
                let moved = move_aside(&self.path).map_err(|e| {
                    failed(&format!(
                        "damaged data file ({why}), and moving it aside failed: {e}"
                    ))
                })?;
                tracing::error!(
                    path = %self.path.display(),
                    moved_to = %moved.display(),
                    why,
                    "disk tier: damaged data file moved aside; starting empty"
                );
                let opened = open_env(&self.path, map_size).map_err(|e| failed(&e))?;
                Ok((opened, 1))
            }
            Err(OpenError::Damaged(why)) => Err(BuildError::new(format!(
                "disk tier: the data file at `{}` is damaged ({why}); move it away or open \
                 with OnDamage::MoveAside",
                self.path.display()
            ))),
            Err(e) => Err(failed(&e)),
        }
    }
}

use crate::util::lock;

/// A number unlikely to repeat between concurrent opens (time and a counter).
fn probe_nonce() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos ^ (COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 32)
}

/// Fails if a live `DiskTier` of this process has `path` open; waits for one that is
/// closing (its last handle dropped, its writer still finishing).
fn wait_for_closing(path: &std::path::Path) -> Result<(), BuildError> {
    let alive = lock(&OPEN)
        .iter()
        .any(|(p, tier)| p == path && tier.upgrade().is_some());
    if alive {
        return Err(BuildError::new(format!(
            "disk tier: `{}` is already open in this process; clone that DiskTier instead of \
             opening the path again",
            path.display()
        )));
    }
    if let Some(closing) = heed::env_closing_event(path) {
        if !closing.wait_timeout(CLOSING_WAIT) {
            return Err(BuildError::new(format!(
                "disk tier: the previous environment at `{}` did not finish closing within \
                 {CLOSING_WAIT:?}",
                path.display()
            )));
        }
    }
    Ok(())
}
