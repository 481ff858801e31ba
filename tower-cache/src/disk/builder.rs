//! Settings of the disk tier, checked when it opens.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::env::open_env;
use super::stats::Counters;
use super::writer::Writer;
use super::{
    DiskTier, Shared, DEFAULT_COMPRESS_THRESHOLD, DEFAULT_MAP_SIZE, DEFAULT_MAX_BATCH,
    DEFAULT_MAX_VALUE_BYTES, MAP_ALIGN, MIN_MAP_SIZE, QUEUE,
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
}

impl DiskTierBuilder {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            map_size: DEFAULT_MAP_SIZE,
            max_bytes: None,
            compress_threshold: DEFAULT_COMPRESS_THRESHOLD,
            max_value_bytes: None,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

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
