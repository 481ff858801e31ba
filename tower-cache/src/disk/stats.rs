//! Counters and reports of the disk tier.

use std::sync::atomic::{AtomicU64, Ordering};

// === stats ===

/// Counters of a [`DiskTier`](super::DiskTier), as returned by [`DiskTier::stats`](super::DiskTier::stats).
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
    /// Writes refused before reaching the writer (bad key or TTL, too large).
    pub rejections: u64,
    /// Faults: failed transactions, I/O errors, a closed environment.
    pub errors: u64,
    /// Transactions that found LMDB's map full before the byte bound was reached. Their
    /// writes were retried in smaller transactions (after making room and lowering
    /// `bound_bytes` if even one write did not fit), not lost; see
    /// [`DiskTierBuilder::max_bytes`](super::DiskTierBuilder::max_bytes).
    pub map_full: u64,
    /// Writes offered with [`DiskTier::try_set`](super::DiskTier::try_set) (or a
    /// write-through) and dropped because the write queue was full.
    pub dropped_writes: u64,
    /// Write-throughs of loads not applied because a write or delete of their key
    /// overtook them while they waited in the queue (see the tiered store's guarantee).
    pub superseded: u64,
    /// Damaged data files found when the tier opened, moved aside and replaced by an
    /// empty one (see [`OnDamage`](super::OnDamage)).
    pub damaged_files: u64,
    /// Async reads that missed because compaction was swapping the file (they do not
    /// wait for the swap).
    pub busy_misses: u64,
    /// Bytes of values copied out of the map by reads of this process: whole values,
    /// and the parts of large records read in place (see
    /// [`DiskTierBuilder::addressable_threshold`](super::DiskTierBuilder::addressable_threshold)).
    pub value_bytes_read: u64,
    /// Bytes in spool files now: large values written to disk as they arrive (a response
    /// body streaming from an origin), before the writer stores them. They are capped at
    /// `bound_bytes` (apart from the stored bytes, which eviction keeps within it as the
    /// spooled values are stored): a value that would take them past it is not spooled
    /// (nor stored).
    pub spooled_bytes: u64,
    /// Spooled values given up: over the bound above, or a spool file that could not be
    /// made or written (a full or failing disk). The response still reached its client.
    pub spool_faults: u64,
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
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) write_batches: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) expirations: AtomicU64,
    pub(super) corrupt: AtomicU64,
    pub(super) rejections: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) map_full: AtomicU64,
    pub(super) dropped_writes: AtomicU64,
    pub(super) superseded: AtomicU64,
    pub(super) damaged_files: AtomicU64,
    pub(super) busy_misses: AtomicU64,
    pub(super) value_bytes_read: AtomicU64,
    pub(super) bound_bytes: AtomicU64,
    pub(super) spooled_bytes: AtomicU64,
    pub(super) spool_faults: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What [`DiskTier::compact`](super::DiskTier::compact) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// Data file size before.
    pub before_bytes: u64,
    /// Data file size after.
    pub after_bytes: u64,
}
