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

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use quick_cache::sync::{Cache as QuickCache, PlaceholderGuard};
use quick_cache::{DefaultHashBuilder as RandomState, Lifecycle, OptionsBuilder, Weighter};

use crate::entry::{Clock, Entry, EntryMeta, Stored, Tags, TimeSource, ENTRY_OVERHEAD};
use crate::error::{check_ttl, check_value_len, BuildError, InsertError};

type Inner = QuickCache<Arc<str>, Stored, Weigh, RandomState, Hooks>;
pub(crate) type Guard<'a> = PlaceholderGuard<'a, Arc<str>, Stored, Weigh, RandomState, Hooks>;

/// Default entry bound.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000;
/// Default largest value the memory tier takes: 4 MiB.
pub const DEFAULT_MEMORY_MAX_VALUE_BYTES: usize = 4 << 20;

/// Counters of a [`MemoryTier`], as returned by [`MemoryTier::stats`].
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
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    rejections: AtomicU64,
    bytes: AtomicI64,
    /// Locked inside quick_cache's shard locks (eviction hooks, `retain`); never held
    /// while calling into the cache.
    tags: Mutex<HashMap<Arc<str>, Tags>>,
}

impl Counters {
    fn add(&self, key: &Arc<str>, stored: &Stored, tags: Tags) {
        self.bytes
            .fetch_add(stored.weight_bytes(key) as i64, Ordering::Relaxed);
        if !tags.is_empty() {
            self.tag_table().insert(key.clone(), tags);
        }
    }

    /// Forgets an entry that left the tier: its bytes and its tags.
    fn release(&self, key: &str, stored: &Stored) {
        self.bytes
            .fetch_sub(stored.weight_bytes(key) as i64, Ordering::Relaxed);
        if stored.tag_bytes() > 0 {
            self.tag_table().remove(key);
        }
    }

    fn tag_table(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Tags>> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl Weigh ===

/// The capacity when both bounds are set (see the module docs); weights fit a `u32`.
const SCALE: u64 = 1 << 31;

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
struct Bounds {
    entries: AtomicU64,
    bytes: AtomicU64,
}

impl Bounds {
    fn get(&self) -> (Option<u64>, Option<u64>) {
        let some = |v: u64| (v > 0).then_some(v);
        (
            some(self.entries.load(Ordering::Relaxed)),
            some(self.bytes.load(Ordering::Relaxed)),
        )
    }

    /// What an entry of `bytes` weighs under the bounds in force (saturating at
    /// `u32::MAX`, far past what any shard admits).
    fn weight(&self, bytes: u64) -> u32 {
        self.weight_u64(bytes).min(u64::from(u32::MAX)) as u32
    }

    fn weight_u64(&self, bytes: u64) -> u64 {
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

    fn capacity(&self) -> u64 {
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
    counters: Arc<Counters>,
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

/// Builds a [`MemoryTier`]; see [`MemoryTier::builder`].
#[derive(Debug, Clone)]
pub struct MemoryTierBuilder {
    max_entries: Option<u64>,
    max_bytes: Option<u64>,
    max_value_bytes: Option<usize>,
    hot_allocation: f64,
    ghost_allocation: f64,
    time_source: TimeSource,
    max_ttl: Option<Duration>,
}

/// Default share of the capacity for entries read more than once (quick_cache's hot
/// queue). quick_cache's own default is 0.97; 0.8 leaves the cold queue room to tell
/// one-hit keys from returning ones, which on Zipf traces brings the hit ratio within a
/// point of moka's TinyLFU (see the benchmark).
pub const DEFAULT_HOT_ALLOCATION: f64 = 0.8;
/// Default size of the ghost list (keys recently evicted) relative to the capacity.
pub const DEFAULT_GHOST_ALLOCATION: f64 = 0.5;

impl Default for MemoryTierBuilder {
    fn default() -> Self {
        Self {
            max_entries: Some(DEFAULT_MAX_ENTRIES),
            max_bytes: None,
            max_value_bytes: None,
            hot_allocation: DEFAULT_HOT_ALLOCATION,
            ghost_allocation: DEFAULT_GHOST_ALLOCATION,
            time_source: TimeSource::Auto,
            max_ttl: None,
        }
    }
}

impl MemoryTierBuilder {
    /// Bounds the tier by entry count (default 1,000).
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = Some(entries);
        self
    }

    /// Bounds the tier by bytes only, dropping the default entry bound.
    pub fn bytes_only(mut self, bytes: u64) -> Self {
        self.max_entries = None;
        self.max_bytes = Some(bytes);
        self
    }

    /// Bounds the tier by bytes (keys, values, tags and 64 bytes of overhead an entry),
    /// in addition to any entry bound.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The largest value one entry may hold (default 4 MiB, or a quarter of the byte
    /// bound if that is less); larger inserts are rejected and counted.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = Some(bytes);
        self
    }

    /// Share of the capacity kept for entries read more than once, in `[0, 1]`.
    pub fn hot_allocation(mut self, share: f64) -> Self {
        self.hot_allocation = share;
        self
    }

    /// Size of the ghost list (recently evicted keys, which return straight to the hot
    /// queue) relative to the capacity, in `[0, 1]`.
    pub fn ghost_allocation(mut self, share: f64) -> Self {
        self.ghost_allocation = share;
        self
    }

    /// Where the tier reads the time (default: [`TimeSource::Auto`]: the coarse clock,
    /// or tokio's when the tier is built under a paused tokio clock).
    pub fn time_source(mut self, source: TimeSource) -> Self {
        self.time_source = source;
        self
    }

    /// The longest an entry stays in this tier, whatever TTL it was written with (default:
    /// no cap). With a disk tier below, a value written for 60 s with a 5 s cap here is
    /// read from memory for 5 s, then from disk (and promoted for 5 s more) until its 60 s
    /// are up: a "memory 5 s, disk 60 s" split, with one write.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = Some(ttl);
        self
    }

    /// Checks the settings and builds the tier.
    pub fn build(self) -> Result<MemoryTier, BuildError> {
        if self.max_ttl == Some(Duration::ZERO) {
            return Err(BuildError::new(
                "memory tier: max_ttl is 0, so nothing could stay in memory; give at least 1 ms \
                 (or no cap)",
            ));
        }
        if self.max_entries == Some(0) {
            return Err(BuildError::new(
                "memory tier: max_entries is 0; give it room for at least one entry",
            ));
        }
        if self.max_bytes == Some(0) {
            return Err(BuildError::new(
                "memory tier: max_bytes is 0; give it room for at least one entry",
            ));
        }
        if self.max_entries.is_none() && self.max_bytes.is_none() {
            return Err(BuildError::new(
                "memory tier: no bound; set max_entries or max_bytes",
            ));
        }
        for (name, share) in [
            ("hot_allocation", self.hot_allocation),
            ("ghost_allocation", self.ghost_allocation),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(BuildError::new(format!(
                    "memory tier: {name} is {share}; give a share between 0 and 1"
                )));
            }
        }
        let bounds = Bounds::default();
        bounds
            .entries
            .store(self.max_entries.unwrap_or(0), Ordering::Relaxed);
        bounds
            .bytes
            .store(self.max_bytes.unwrap_or(0), Ordering::Relaxed);
        let estimated = match self.max_entries {
            Some(e) => e,
            None => (self.max_bytes.unwrap_or(0) / 1024).max(16),
        };
        let options = OptionsBuilder::new()
            .estimated_items_capacity(estimated.min(1 << 24) as usize)
            .weight_capacity(bounds.capacity())
            .hot_allocation(self.hot_allocation)
            .ghost_allocation(self.ghost_allocation)
            .build()
            .map_err(|e| BuildError::new(format!("memory tier: {e:?}")))?;
        let counters = Arc::new(Counters::default());
        let cache = QuickCache::with_options(
            options,
            Weigh,
            RandomState::default(),
            Hooks {
                counters: counters.clone(),
            },
        );
        // The largest entry one shard admits, in bytes (see the module docs).
        let shard_bytes = self.max_bytes.map(|b| {
            let shards = cache.num_shards().max(1) as u64;
            ((b / shards) as f64 * self.hot_allocation) as u64
        });
        let admitted =
            shard_bytes.map_or(u64::MAX, |s| s.saturating_sub(ENTRY_OVERHEAD as u64 + 256));
        let max_value_bytes = match self.max_value_bytes {
            Some(v) if v as u64 > admitted => {
                return Err(BuildError::new(format!(
                    "memory tier: max_value_bytes ({v}) is over the largest entry one of the \
                     tier's {} shards admits ({admitted} bytes of max_bytes {}); raise \
                     max_bytes or lower max_value_bytes",
                    cache.num_shards(),
                    self.max_bytes.unwrap_or(0),
                )))
            }
            Some(v) => v,
            None => (DEFAULT_MEMORY_MAX_VALUE_BYTES as u64).min(admitted) as usize,
        };
        if max_value_bytes == 0 {
            return Err(BuildError::new(
                "memory tier: max_value_bytes is 0 (or max_bytes is too small for any entry); \
                 allow values of at least one byte",
            ));
        }
        if max_value_bytes as u64 > 1 << 30 {
            return Err(BuildError::new(format!(
                "memory tier: max_value_bytes ({max_value_bytes}) is over 1 GiB; keep values \
                 that large on disk (or not in a cache)"
            )));
        }
        Ok(MemoryTier {
            shared: Arc::new(Shared {
                cache,
                counters,
                bounds,
                resize: Mutex::new(()),
                max_value_bytes,
                hot_allocation: self.hot_allocation,
                clock: Clock::new(self.time_source),
                max_ttl: self.max_ttl.unwrap_or(Duration::MAX),
            }),
        })
    }
}

/// The in-process tier: bounded, with a TTL per entry.
///
/// Cloning shares the same store. See the [module docs](crate::memory) for the eviction
/// policy, the bounds and expiry.
#[derive(Debug, Clone)]
pub struct MemoryTier {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    cache: Inner,
    counters: Arc<Counters>,
    bounds: Bounds,
    /// Held while a resize weighs the entries again.
    resize: Mutex<()>,
    max_value_bytes: usize,
    hot_allocation: f64,
    clock: Clock,
    /// Entries stay at most this long, whatever their TTL.
    max_ttl: Duration,
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
    fn resize(&self, change: impl FnOnce(&Bounds)) {
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

    // === crate-internal ===

    /// Validates an entry before it is stored anywhere.
    pub(crate) fn prepare(
        &self,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
    ) -> Result<(Stored, Tags), InsertError> {
        let checked = check_ttl(ttl)
            .and_then(|()| check_value_len("memory", value.len(), self.shared.max_value_bytes));
        if let Err(e) = checked {
            self.shared
                .counters
                .rejections
                .fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let stored = Stored::new(
            value,
            self.deadline(ttl),
            meta.version,
            meta.tags.encoded_len(),
        );
        Ok((stored, meta.tags))
    }

    /// Weighs an entry under the bounds in force; `None` if no shard would admit it
    /// (quick_cache would drop it on insert). Counts the refusal.
    fn weigh(&self, key: &str, stored: &mut Stored) -> Option<()> {
        stored.weight = self.shared.bounds.weight(stored.weight_bytes(key));
        let admitted = ((self.shared.cache.shard_capacity() as f64 * self.shared.hot_allocation)
            as u64)
            .max(1);
        if u64::from(stored.weight) > admitted {
            self.shared
                .counters
                .rejections
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(())
    }

    /// Stores an entry, replacing any under the key in place: no moment without the key,
    /// and a hot key stays hot. A replaced entry is not an eviction.
    pub(crate) fn insert_stored(
        &self,
        key: Arc<str>,
        (mut stored, tags): (Stored, Tags),
    ) -> Result<(), InsertError> {
        if self.weigh(&key, &mut stored).is_none() {
            return Err(InsertError::new(
                crate::InsertErrorKind::TooLarge,
                format!(
                    "memory tier: an entry of {} bytes is over what one shard of the tier \
                     admits; raise max_bytes or do not cache it",
                    stored.weight_bytes(&key)
                ),
            ));
        }
        let c = &self.shared.counters;
        let has_tags = !tags.is_empty();
        c.add(&key, &stored, tags);
        c.inserts.fetch_add(1, Ordering::Relaxed);
        let removed = self.shared.cache.insert_with_lifecycle(key.clone(), stored);
        for (k, old) in removed {
            if k == key {
                // The entry this one replaced: its bytes go, its tags were overwritten
                // (or go now if the new entry has none).
                c.bytes
                    .fetch_sub(old.weight_bytes(&k) as i64, Ordering::Relaxed);
                if old.tag_bytes() > 0 && !has_tags {
                    c.tag_table().remove(&*k);
                }
            } else {
                c.evictions.fetch_add(1, Ordering::Relaxed);
                c.release(&k, &old);
            }
        }
        Ok(())
    }

    /// Fills a single-flight placeholder; returns false if the key was deleted meanwhile.
    pub(crate) fn fill(
        &self,
        key: &str,
        guard: Guard<'_>,
        (mut stored, tags): (Stored, Tags),
    ) -> bool {
        if self.weigh(key, &mut stored).is_none() {
            // Too heavy for a shard: dropping the guard lets a waiter look again.
            return false;
        }
        let c = &self.shared.counters;
        let key: Arc<str> = Arc::from(key);
        c.add(&key, &stored, tags);
        let kept = stored.clone();
        match guard.insert(stored) {
            Ok(()) => {
                c.inserts.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                c.release(&key, &kept);
                false
            }
        }
    }

    /// Stores an entry if `current()` still holds when the shard lock is taken, replacing
    /// what is there in place; a key another caller is loading is left to it. Returns
    /// whether it stored.
    ///
    /// The check runs under the shard lock, so a write that begins after it (and then
    /// writes this key) lands after this insert, and one that began before it fails it.
    pub(crate) fn insert_if(
        &self,
        key: &str,
        (mut stored, tags): (Stored, Tags),
        current: impl Fn() -> bool,
    ) -> bool {
        if self.weigh(key, &mut stored).is_none() {
            return false;
        }
        let c = &self.shared.counters;
        let key: Arc<str> = Arc::from(key);
        let mut replaced = false;
        let result = self.shared.cache.entry(
            &key,
            Some(std::time::Duration::ZERO),
            |k, v: &mut Stored| {
                if current() {
                    c.bytes
                        .fetch_sub(v.weight_bytes(k) as i64, Ordering::Relaxed);
                    if v.tag_bytes() > 0 {
                        c.tag_table().remove(&**k);
                    }
                    c.add(k, &stored, tags.clone());
                    *v = stored.clone();
                    replaced = true;
                }
                quick_cache::sync::EntryAction::Retain(())
            },
        );
        match result {
            quick_cache::sync::EntryResult::Retained(()) => {
                if replaced {
                    c.inserts.fetch_add(1, Ordering::Relaxed);
                }
                replaced
            }
            quick_cache::sync::EntryResult::Vacant(guard) => {
                current() && self.fill(&key, guard, (stored, tags))
            }
            _ => false,
        }
    }

    /// Marks `key` pass for `ttl` (see [`Self::fill_pass`]) without a placeholder,
    /// replacing what is there.
    pub(crate) fn insert_pass(&self, key: &str, ttl: Duration) {
        let marker = Stored::pass_marker(self.shared.clock.deadline(ttl));
        let _ = self.insert_stored(Arc::from(key), (marker, Tags::none()));
    }

    /// Fills a single-flight placeholder with a hit-for-pass marker for `ttl`: every
    /// waiter wakes at once and goes to the origin itself, and so does every request for
    /// `key` until the marker expires or a write replaces it.
    pub(crate) fn fill_pass(&self, key: &str, guard: Guard<'_>, ttl: Duration) {
        let marker = Stored::pass_marker(self.shared.clock.deadline(ttl));
        self.fill(key, guard, (marker, Tags::none()));
    }

    /// A fresh entry, without touching the hit or miss counters.
    #[inline]
    pub(crate) fn get_fresh_uncounted(&self, key: &str) -> Option<Stored> {
        self.shared
            .cache
            .get(key)
            .filter(|s| s.expires > self.shared.clock.now_ms() && !s.is_pass())
    }

    /// When an entry written now for `ttl` leaves this tier (capped by `max_ttl`).
    pub(crate) fn deadline(&self, ttl: Duration) -> u64 {
        self.shared.clock.deadline(ttl.min(self.shared.max_ttl))
    }

    #[inline]
    pub(crate) fn count_hit(&self) {
        self.shared.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn get_stored(&self, key: &str) -> Option<Stored> {
        let c = &self.shared.counters;
        match self.shared.cache.get(key) {
            Some(s) if s.is_pass() => {
                c.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(s) if s.expires > self.shared.clock.now_ms() => {
                c.hits.fetch_add(1, Ordering::Relaxed);
                Some(s)
            }
            Some(_) => {
                self.expire(key);
                c.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                c.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Looks `key` up, or makes the caller the one loader of it (single flight).
    ///
    /// Concurrent callers for a key that is loading wait for the leader; if the leader
    /// drops its guard without filling it, one waiter becomes the new leader.
    pub(crate) async fn get_or_lead<'a>(&'a self, key: &str) -> Lookup<'a> {
        let c = &self.shared.counters;
        let owned: Arc<str> = Arc::from(key);
        loop {
            match self.shared.cache.get_value_or_guard_async(&owned).await {
                Ok(s) if s.expires > self.shared.clock.now_ms() => {
                    if s.is_pass() {
                        c.misses.fetch_add(1, Ordering::Relaxed);
                        return Lookup::Pass;
                    }
                    c.hits.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Hit(s);
                }
                Ok(_) => self.expire(key),
                Err(guard) => {
                    c.misses.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Leader(guard);
                }
            }
        }
    }

    fn expire(&self, key: &str) {
        let now = self.shared.clock.now_ms();
        if let Some((k, v)) = self.shared.cache.remove_if(key, |s| s.expires <= now) {
            self.shared.counters.release(&k, &v);
            self.shared
                .counters
                .expirations
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
