//! What an entry weighs against the bounds, the counters, and the hooks quick_cache calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use quick_cache::{Lifecycle, Weighter};

use crate::entry::{Stored, Tags};

/// Counters of a [`MemoryTier`](crate::MemoryTier), as returned by
/// [`MemoryTier::stats`](crate::MemoryTier::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Reads that found a fresh entry.
    pub hits: u64,
    /// Reads that found nothing (or only an expired entry).
    pub misses: u64,
    /// Entries stored.
    pub inserts: u64,
    /// Entries pushed out by the bounds.
    pub evictions: u64,
    /// Entries removed because their TTL ran out (on read or by a sweep).
    pub expirations: u64,
    /// Inserts refused (bad TTL, value over the per-entry limit).
    pub rejections: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (keys, values, tags and per-entry overhead).
    pub bytes: u64,
    /// The entry bound in force.
    pub max_entries: Option<u64>,
    /// The byte bound in force.
    pub max_bytes: Option<u64>,
}

impl MemoryStats {
    /// `hits / (hits + misses)`, or 0 before the first read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

/// Counters, and the tags of the entries that have any (see [`Stored`]).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) inserts: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) expirations: AtomicU64,
    pub(super) rejections: AtomicU64,
    pub(super) bytes: AtomicI64,
    /// Locked inside quick_cache's shard locks (eviction hooks, `retain`); never held
    /// while calling into the cache.
    pub(super) tags: Mutex<HashMap<Arc<str>, Tags>>,
}

impl Counters {
    pub(super) fn add(&self, key: &Arc<str>, stored: &Stored, tags: Tags) {
        self.bytes
            .fetch_add(stored.weight_bytes(key) as i64, Ordering::Relaxed);
        if !tags.is_empty() {
            self.tag_table().insert(key.clone(), tags);
        }
    }

    /// Forgets an entry that left the tier: its bytes and its tags.
    pub(super) fn release(&self, key: &str, stored: &Stored) {
        self.bytes
            .fetch_sub(stored.weight_bytes(key) as i64, Ordering::Relaxed);
        if stored.tag_bytes() > 0 {
            self.tag_table().remove(key);
        }
    }

    pub(super) fn tag_table(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Tags>> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl Weigh ===

/// The capacity when both bounds are set (see the module docs); weights fit a `u32`.
pub(super) const SCALE: u64 = 1 << 31;

/// Reads an entry's weight from its record: fixed when it was stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weigh;

impl Weighter<Arc<str>, Stored> for Weigh {
    #[inline]
    fn weight(&self, _key: &Arc<str>, val: &Stored) -> u64 {
        u64::from(val.weight)
    }
}

/// The bounds in force, readable without a lock on the insert path (0: no bound).
#[derive(Debug, Default)]
pub(super) struct Bounds {
    pub(super) entries: AtomicU64,
    pub(super) bytes: AtomicU64,
}

impl Bounds {
    pub(super) fn get(&self) -> (Option<u64>, Option<u64>) {
        let some = |v: u64| (v > 0).then_some(v);
        (
            some(self.entries.load(Ordering::Relaxed)),
            some(self.bytes.load(Ordering::Relaxed)),
        )
    }

    /// What an entry of `bytes` weighs under the bounds in force (saturating at
    /// `u32::MAX`, far past what any shard admits).
    pub(super) fn weight(&self, bytes: u64) -> u32 {
        self.weight_u64(bytes).min(u64::from(u32::MAX)) as u32
    }

    pub(super) fn weight_u64(&self, bytes: u64) -> u64 {
        match self.get() {
            (Some(e), Some(b)) => {
                let by_bytes = (u128::from(bytes) * u128::from(SCALE)).div_ceil(u128::from(b));
                SCALE
                    .div_ceil(e)
                    .max(by_bytes.min(u128::from(u64::MAX)) as u64)
            }
            (None, Some(_)) => bytes,
            _ => 1,
        }
    }

    pub(super) fn capacity(&self) -> u64 {
        match self.get() {
            (Some(_), Some(_)) => SCALE,
            (None, Some(b)) => b,
            (Some(e), None) => e,
            (None, None) => 0,
        }
    }
}

// === impl Hooks ===

/// quick_cache lifecycle hooks: collect what an operation pushed out, then count it and
/// release its bytes once the shard lock is gone.
#[derive(Debug, Clone)]
pub(crate) struct Hooks {
    pub(super) counters: Arc<Counters>,
}

impl Lifecycle<Arc<str>, Stored> for Hooks {
    /// The entries an operation removed (empty, and unallocated, almost always).
    type RequestState = Vec<(Arc<str>, Stored)>;

    #[inline]
    fn begin_request(&self) -> Self::RequestState {
        Vec::new()
    }

    fn on_evict(&self, state: &mut Self::RequestState, key: Arc<str>, val: Stored) {
        state.push((key, val));
    }

    fn end_request(&self, state: Self::RequestState) {
        for (key, val) in state {
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            self.counters.release(&key, &val);
        }
    }
}
