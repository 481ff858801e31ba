//! The memory tier: a bounded in-process cache on [`quick_cache`] with a TTL per entry.
//!
//! # Eviction policy
//!
//! Caches are often expected to be LRU. `quick_cache` uses **S3-FIFO-style CLOCK-Pro**: new
//! entries enter a small cold queue and are promoted to the hot queue only if they are
//! read again; a ghost list remembers keys recently evicted from the cold queue so that a
//! returning key goes straight to the hot queue. One-hit wonders (a scan, a crawler) are
//! evicted from the cold queue without pushing out the working set, which plain LRU does,
//! and a hit costs a flag update under a read lock instead of LRU's list move under a
//! write lock. On skewed (Zipf) traces it matches or beats LRU's hit ratio; the benchmark
//! in `benches/` measures both.
//!
//! # Bounds
//!
//! A tier is bounded by entry count, by bytes, or by both. Bytes are the key, the value,
//! the tags and a fixed 64-byte overhead per entry. With one bound an entry weighs 1 (or
//! its bytes) against that bound. With both, the capacity is a fixed scale `S` and an
//! entry weighs `max(S / E, bytes x S / B)` for the bounds `E` and `B` in force when it
//! was stored, which keeps *both* limits as upper bounds.
//! [`MemoryTier::set_max_entries`] and [`MemoryTier::set_max_bytes`] raise or lower either
//! bound in place: the entries held are weighed again under the new bounds (shrinking
//! evicts at once).
//!
//! `quick_cache` splits the tier into shards (four per CPU, fewer for small tiers) and
//! admits no entry heavier than a shard's hot queue, so the largest value a byte-bounded
//! tier takes is about `max_bytes x 0.8 / shards`; [`MemoryTierBuilder::build`] lowers the
//! default per-entry limit to that, and refuses a larger explicit one.
//!
//! # Time to live
//!
//! `quick_cache` has no TTL: every entry carries its deadline, an expired entry is never
//! returned (it is removed and counted as an expiration when read), and
//! [`MemoryTier::remove_expired`] (or a sweeper from [`MemoryTier::spawn_expiry_sweeper`]) removes
//! expired entries that nobody reads, so they do not hold memory.
//!
//! Checking a deadline needs the time, and a clock read costs as much as the lookup
//! itself (about 25 ns on a VM). By default ([`TimeSource::Auto`]) a tier reads a
//! millisecond clock that one background thread advances ([`TimeSource::Coarse`]), which
//! keeps a hit within a few nanoseconds of a raw `quick_cache` get; a tier built inside a
//! tokio runtime whose clock is paused reads `tokio::time::Instant` instead
//! ([`TimeSource::Tokio`]), so `tokio::time::pause()` and `advance()` drive expiry in
//! tests. [`MemoryTier::time_source`] says which one a tier reads.
//!
//! ```
//! use std::time::Duration;
//! use tower_cache::MemoryTier;
//!
//! let memory = MemoryTier::builder().max_entries(1_000).max_bytes(16 << 20).build()?;
//! memory.set("user:1", "alice".into(), Duration::from_secs(5))?;
//! assert_eq!(memory.get("user:1").as_deref(), Some(&b"alice"[..]));
//! assert!(memory.delete("user:1"));
//! assert_eq!(memory.stats().hits, 1);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

mod builder;
mod internal;
mod weigh;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use quick_cache::sync::{Cache as QuickCache, PlaceholderGuard};
use quick_cache::DefaultHashBuilder as RandomState;

use crate::entry::{Clock, Entry, EntryMeta, Stored, Tags, TimeSource};
use crate::error::{BuildError, InsertError};

type Inner = QuickCache<Arc<str>, Stored, Weigh, RandomState, Hooks>;
pub(crate) type Guard<'a> = PlaceholderGuard<'a, Arc<str>, Stored, Weigh, RandomState, Hooks>;

/// Default entry bound.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000;
/// Default largest value the memory tier takes: 4 MiB.
pub const DEFAULT_MEMORY_MAX_VALUE_BYTES: usize = 4 << 20;

pub use self::builder::*;
pub use self::weigh::MemoryStats;
use self::weigh::*;

/// The in-process tier: bounded, with a TTL per entry.
///
/// Cloning shares the same store. See the [module docs](crate::memory) for the eviction
/// policy, the bounds and expiry.
#[derive(Debug, Clone)]
pub struct MemoryTier {
    pub(in crate::memory) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(in crate::memory) struct Shared {
    pub(in crate::memory) cache: Inner,
    pub(in crate::memory) counters: Arc<Counters>,
    pub(in crate::memory) bounds: Bounds,
    /// Held while a resize weighs the entries again.
    pub(in crate::memory) resize: Mutex<()>,
    pub(in crate::memory) max_value_bytes: usize,
    pub(in crate::memory) hot_allocation: f64,
    pub(in crate::memory) clock: Clock,
    /// Entries stay at most this long, whatever their TTL.
    pub(in crate::memory) max_ttl: Duration,
}

/// Result of a single-flight lookup in the memory tier.
pub(crate) enum Lookup<'a> {
    Hit(Stored),
    /// A hit-for-pass marker: go to the origin, store nothing.
    Pass,
    Leader(Guard<'a>),
}

impl MemoryTier {
    /// A builder with the defaults: 1,000 entries, no byte bound, 4 MiB per value.
    pub fn builder() -> MemoryTierBuilder {
        MemoryTierBuilder::default()
    }

    /// The clock this tier reads: [`TimeSource::Tokio`] or [`TimeSource::Coarse`] (what
    /// [`TimeSource::Auto`] resolved to when the tier was built).
    pub fn time_source(&self) -> TimeSource {
        self.shared.clock.source()
    }

    /// Stores `value` under `key` for `ttl`.
    ///
    /// A zero TTL, one over [`MAX_TTL`](crate::error::MAX_TTL) or a value over the
    /// per-entry limit is rejected (and counted), never stored.
    pub fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), InsertError> {
        self.set_with(key, value, ttl, EntryMeta::default())
    }

    /// Stores `value` with its version and tags.
    pub fn set_with(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
    ) -> Result<(), InsertError> {
        let prepared = self.prepare(value, ttl, meta)?;
        self.insert_stored(Arc::from(key), prepared)
    }

    /// Returns the value under `key` if it is there and fresh.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.get_stored(key).map(|s| s.value)
    }

    /// Returns the entry under `key` (value, time left, metadata) if it is there and fresh.
    pub fn get_entry(&self, key: &str) -> Option<Entry> {
        let s = self.get_stored(key)?;
        let tags = if s.tag_bytes() > 0 {
            self.shared
                .counters
                .tag_table()
                .get(key)
                .cloned()
                .unwrap_or_default()
        } else {
            Tags::none()
        };
        Some(Entry {
            ttl_left: Duration::from_millis(s.expires.saturating_sub(self.shared.clock.now_ms())),
            value: s.value,
            meta: EntryMeta {
                version: s.version,
                tags,
            },
        })
    }

    /// Whether a fresh entry is under `key`. Does not count as a read.
    pub fn has(&self, key: &str) -> bool {
        self.shared
            .cache
            .peek(key)
            .is_some_and(|s| !s.is_pass() && s.expires > self.shared.clock.now_ms())
    }

    /// Removes the entry under `key`; returns whether there was one.
    ///
    /// A single-flight load of `key` in progress is cancelled too: its result will not be
    /// stored.
    pub fn delete(&self, key: &str) -> bool {
        match self.shared.cache.remove(key) {
            Some((k, v)) => {
                self.shared.counters.release(&k, &v);
                true
            }
            None => false,
        }
    }

    /// The keys of the entries (not pass markers) for which `pick(key, tags)` holds.
    pub(crate) fn keys_where(&self, pick: impl Fn(&str, Option<&Tags>) -> bool) -> Vec<String> {
        let tags = self.shared.counters.tag_table().clone();
        self.shared
            .cache
            .iter()
            .filter(|(_, v)| !v.is_pass())
            .filter(|(k, _)| pick(k, tags.get(&**k)))
            .map(|(k, _)| k.to_string())
            .collect()
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.shared.cache.clear();
        self.shared.counters.bytes.store(0, Ordering::Relaxed);
        self.shared.counters.tag_table().clear();
    }

    /// Removes every expired entry; returns how many.
    pub fn remove_expired(&self) -> usize {
        let now = self.shared.clock.now_ms();
        // `retain` takes a `Fn`: count through a cell.
        let removed = std::cell::Cell::new(0usize);
        let counters = &self.shared.counters;
        self.shared.cache.retain(|k, v| {
            let keep = v.expires > now;
            if !keep {
                removed.set(removed.get() + 1);
                counters.release(k, v);
            }
            keep
        });
        let removed = removed.get();
        self.shared
            .counters
            .expirations
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// Sweeps expired entries every `period` on the current tokio runtime.
    ///
    /// The task holds only a weak reference: it ends when the last clone of the tier is
    /// dropped. A zero period is raised to one millisecond.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn spawn_expiry_sweeper(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let period = period.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                MemoryTier { shared }.remove_expired();
            }
        })
    }

    /// The tier's counters.
    pub fn stats(&self) -> MemoryStats {
        let c = &self.shared.counters;
        let (max_entries, max_bytes) = self.shared.bounds.get();
        MemoryStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            rejections: c.rejections.load(Ordering::Relaxed),
            entries: self.shared.cache.len() as u64,
            bytes: c.bytes.load(Ordering::Relaxed).max(0) as u64,
            max_entries,
            max_bytes,
        }
    }

    /// Changes the entry bound in place: raising makes room,
    /// lowering evicts at once.
    ///
    /// Only a tier built with an entry bound can change it (a tier built by bytes alone
    /// does not count entries).
    pub fn set_max_entries(&self, entries: u64) -> Result<(), BuildError> {
        if entries == 0 {
            return Err(BuildError::new(
                "memory tier: max_entries is 0; give it room for at least one entry",
            ));
        }
        if self.shared.bounds.get().0.is_none() {
            return Err(BuildError::new(
                "memory tier: built without an entry bound; build it with max_entries to resize by entries",
            ));
        }
        self.resize(|b| b.entries.store(entries, Ordering::Relaxed));
        Ok(())
    }

    /// Changes the byte bound in place: raising makes room, lowering evicts at once.
    ///
    /// Only a tier built with a byte bound can change it (see [`Self::set_max_entries`]).
    /// The per-entry limit stays as built.
    pub fn set_max_bytes(&self, bytes: u64) -> Result<(), BuildError> {
        if bytes == 0 {
            return Err(BuildError::new(
                "memory tier: max_bytes is 0; give it room for at least one entry",
            ));
        }
        if self.shared.bounds.get().1.is_none() {
            return Err(BuildError::new(
                "memory tier: built without a byte bound; build it with max_bytes to resize by bytes",
            ));
        }
        self.resize(|b| b.bytes.store(bytes, Ordering::Relaxed));
        Ok(())
    }

    /// Applies new bounds: entries stored from now on weigh under them, the entries held
    /// are weighed again in place (values untouched, so a concurrent write is never
    /// undone), and the capacity is set, which evicts what no longer fits.
    pub(in crate::memory) fn resize(&self, change: impl FnOnce(&Bounds)) {
        let _one_at_a_time = self.shared.resize.lock().unwrap_or_else(|p| p.into_inner());
        let bounds = &self.shared.bounds;
        change(bounds);
        if matches!(bounds.get(), (Some(_), Some(_))) {
            for (key, _) in self.shared.cache.iter() {
                // Zero timeout: a key being loaded is skipped (its fill weighs itself), a
                // key gone meanwhile yields a placeholder that drops at once.
                let _ = self.shared.cache.entry(
                    &key,
                    Some(std::time::Duration::ZERO),
                    |k, v: &mut Stored| {
                        if !v.is_pass() {
                            v.weight = bounds.weight(v.weight_bytes(k));
                        }
                        quick_cache::sync::EntryAction::Retain(())
                    },
                );
            }
        }
        self.shared.cache.set_capacity(bounds.capacity());
    }
}
