//! The memory tier: a bounded in-process cache on [`quick_cache`] with a TTL per entry.
//!
//! # Eviction policy
//!
//! The seed plan asked for LRU. `quick_cache` uses **S3-FIFO-style CLOCK-Pro**: new
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
//! the tags and a fixed 64-byte overhead per entry. With both bounds, each entry weighs
//! `max(bytes x E, B)` against a capacity of `min(E x B_limit, B x E_limit)` (for the
//! bounds `E` and `B` given at build time), which keeps *both* limits as upper bounds;
//! [`MemoryTier::set_max_entries`] and [`MemoryTier::set_max_bytes`] resize in place.
//!
//! # Time to live
//!
//! `quick_cache` has no TTL: every entry carries its deadline, an expired entry is never
//! returned (it is removed and counted as an expiration when read), and
//! [`MemoryTier::sweep`] (or a sweeper from [`MemoryTier::spawn_sweeper`]) removes
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

use crate::entry::{Clock, Entry, EntryMeta, Stored, Tags, TimeSource};
use crate::error::{check_ttl, check_value_len, BuildError, InsertError};

type Inner = QuickCache<Arc<str>, Stored, Weigh, RandomState, Hooks>;
pub(crate) type Guard<'a> = PlaceholderGuard<'a, Arc<str>, Stored, Weigh, RandomState, Hooks>;

/// Default entry bound (the seed plan's default).
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000;
/// Default largest value the memory tier takes: 4 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 4 << 20;

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
        if stored.tag_bytes > 0 {
            self.tag_table().remove(key);
        }
    }

    fn tag_table(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Tags>> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl Weigh ===

/// How an entry weighs against the tier's capacity (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Weigh {
    Entries,
    Bytes,
    Both { entries: u64, bytes: u64 },
}

impl Weighter<Arc<str>, Stored> for Weigh {
    #[inline]
    fn weight(&self, key: &Arc<str>, val: &Stored) -> u64 {
        match *self {
            Weigh::Entries => 1,
            Weigh::Bytes => val.weight_bytes(key),
            Weigh::Both { entries, bytes } => {
                (val.weight_bytes(key).saturating_mul(entries)).max(bytes)
            }
        }
    }
}

impl Weigh {
    fn capacity(&self, max_entries: Option<u64>, max_bytes: Option<u64>) -> u64 {
        match (*self, max_entries, max_bytes) {
            (Weigh::Both { entries, bytes }, Some(e), Some(b)) => {
                bytes.saturating_mul(e).min(b.saturating_mul(entries))
            }
            (Weigh::Bytes, _, Some(b)) => b,
            (_, Some(e), _) => e,
            _ => 0,
        }
    }
}

// === impl Hooks ===

/// quick_cache lifecycle hooks: count evictions and release their bytes.
#[derive(Debug, Clone)]
pub(crate) struct Hooks {
    counters: Arc<Counters>,
}

impl Lifecycle<Arc<str>, Stored> for Hooks {
    type RequestState = ();

    #[inline]
    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut (), key: Arc<str>, val: Stored) {
        self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        self.counters.release(&key, &val);
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

    /// Checks the settings and builds the tier.
    pub fn build(self) -> Result<MemoryTier, BuildError> {
        let max_value_bytes = self.max_value_bytes.unwrap_or_else(|| {
            let quarter = self.max_bytes.map_or(u64::MAX, |b| (b / 4).max(1));
            (DEFAULT_MAX_VALUE_BYTES as u64).min(quarter) as usize
        });
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
        if max_value_bytes == 0 {
            return Err(BuildError::new(
                "memory tier: max_value_bytes is 0; allow values of at least one byte",
            ));
        }
        if let Some(b) = self.max_bytes {
            if (max_value_bytes as u64) > b {
                return Err(BuildError::new(format!(
                    "memory tier: max_value_bytes ({max_value_bytes}) exceeds max_bytes ({b}); \
                     lower max_value_bytes or raise max_bytes"
                )));
            }
        }
        let weigh = match (self.max_entries, self.max_bytes) {
            (Some(entries), Some(bytes)) => Weigh::Both { entries, bytes },
            (None, Some(_)) => Weigh::Bytes,
            (Some(_), None) => Weigh::Entries,
            (None, None) => {
                return Err(BuildError::new(
                    "memory tier: no bound; set max_entries or max_bytes",
                ))
            }
        };
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
        let capacity = weigh.capacity(self.max_entries, self.max_bytes);
        let estimated = match self.max_entries {
            Some(e) => e,
            None => (self.max_bytes.unwrap_or(0) / 1024).max(16),
        };
        let options = OptionsBuilder::new()
            .estimated_items_capacity(estimated.min(1 << 24) as usize)
            .weight_capacity(capacity)
            .hot_allocation(self.hot_allocation)
            .ghost_allocation(self.ghost_allocation)
            .build()
            .map_err(|e| BuildError::new(format!("memory tier: {e:?}")))?;
        let counters = Arc::new(Counters::default());
        let cache = QuickCache::with_options(
            options,
            weigh,
            RandomState::default(),
            Hooks {
                counters: counters.clone(),
            },
        );
        Ok(MemoryTier {
            shared: Arc::new(Shared {
                cache,
                counters,
                weigh,
                limits: Mutex::new((self.max_entries, self.max_bytes)),
                max_value_bytes,
                clock: Clock::new(self.time_source),
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
    weigh: Weigh,
    limits: Mutex<(Option<u64>, Option<u64>)>,
    max_value_bytes: usize,
    clock: Clock,
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
        self.insert_stored(Arc::from(key), prepared);
        Ok(())
    }

    /// Returns the value under `key` if it is there and fresh.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.get_stored(key).map(|s| s.value)
    }

    /// Returns the entry under `key` (value, time left, metadata) if it is there and fresh.
    pub fn get_entry(&self, key: &str) -> Option<Entry> {
        let s = self.get_stored(key)?;
        let tags = if s.tag_bytes > 0 {
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
            .is_some_and(|s| !s.pass && s.expires > self.shared.clock.now_ms())
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

    /// Removes every entry.
    pub fn clear(&self) {
        self.shared.cache.clear();
        self.shared.counters.bytes.store(0, Ordering::Relaxed);
        self.shared.counters.tag_table().clear();
    }

    /// Removes every expired entry; returns how many.
    pub fn sweep(&self) -> usize {
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
    pub fn spawn_sweeper(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let period = period.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                MemoryTier { shared }.sweep();
            }
        })
    }

    /// The tier's counters.
    pub fn stats(&self) -> MemoryStats {
        let c = &self.shared.counters;
        let (max_entries, max_bytes) = *self.limits();
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

    /// Changes the entry bound in place (the seed's `setMaxSize`); shrinking evicts.
    ///
    /// Only a tier built with an entry bound can change it: weights are fixed when an
    /// entry is stored, so a tier built by bytes alone cannot start counting entries.
    pub fn set_max_entries(&self, entries: u64) -> Result<(), BuildError> {
        if entries == 0 {
            return Err(BuildError::new(
                "memory tier: max_entries is 0; give it room for at least one entry",
            ));
        }
        let mut limits = self.limits();
        if limits.0.is_none() {
            return Err(BuildError::new(
                "memory tier: built without an entry bound; build it with max_entries to resize by entries",
            ));
        }
        limits.0 = Some(entries);
        self.shared
            .cache
            .set_capacity(self.shared.weigh.capacity(limits.0, limits.1));
        Ok(())
    }

    /// Changes the byte bound in place; shrinking evicts.
    ///
    /// Only a tier built with a byte bound can change it (see [`Self::set_max_entries`]).
    pub fn set_max_bytes(&self, bytes: u64) -> Result<(), BuildError> {
        if bytes == 0 {
            return Err(BuildError::new(
                "memory tier: max_bytes is 0; give it room for at least one entry",
            ));
        }
        let mut limits = self.limits();
        if limits.1.is_none() {
            return Err(BuildError::new(
                "memory tier: built without a byte bound; build it with max_bytes to resize by bytes",
            ));
        }
        limits.1 = Some(bytes);
        self.shared
            .cache
            .set_capacity(self.shared.weigh.capacity(limits.0, limits.1));
        Ok(())
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, (Option<u64>, Option<u64>)> {
        // A poisoned lock only means a panic elsewhere while it was held; the pair is
        // always consistent, so keep using it.
        self.shared
            .limits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let stored = Stored {
            value,
            expires: self.shared.clock.deadline(ttl),
            version: meta.version,
            tag_bytes: meta.tags.encoded_len().min(u32::MAX as usize) as u32,
            pass: false,
        };
        Ok((stored, meta.tags))
    }

    pub(crate) fn insert_stored(&self, key: Arc<str>, (stored, tags): (Stored, Tags)) {
        let c = &self.shared.counters;
        // quick_cache reports evictions but not replacements: release the entry being
        // replaced so the byte count and the tag table stay exact.
        if let Some((k, old)) = self.shared.cache.remove(&*key) {
            c.release(&k, &old);
        }
        c.add(&key, &stored, tags);
        c.inserts.fetch_add(1, Ordering::Relaxed);
        self.shared.cache.insert(key, stored);
    }

    /// Fills a single-flight placeholder; returns false if the key was deleted meanwhile.
    pub(crate) fn fill(&self, key: &str, guard: Guard<'_>, (stored, tags): (Stored, Tags)) -> bool {
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

    /// Fills a single-flight placeholder with a hit-for-pass marker for `ttl`: every
    /// waiter wakes at once and goes to the origin itself, and so does every request for
    /// `key` until the marker expires or a write replaces it.
    pub(crate) fn fill_pass(&self, key: &str, guard: Guard<'_>, ttl: Duration) {
        let marker = Stored {
            value: Bytes::new(),
            expires: self.shared.clock.deadline(ttl),
            version: 0,
            tag_bytes: 0,
            pass: true,
        };
        self.fill(key, guard, (marker, Tags::none()));
    }

    /// A fresh entry, without touching the hit or miss counters.
    #[inline]
    pub(crate) fn get_fresh_uncounted(&self, key: &str) -> Option<Stored> {
        self.shared
            .cache
            .get(key)
            .filter(|s| s.expires > self.shared.clock.now_ms() && !s.pass)
    }

    pub(crate) fn deadline(&self, ttl: Duration) -> u64 {
        self.shared.clock.deadline(ttl)
    }

    #[inline]
    pub(crate) fn count_hit(&self) {
        self.shared.counters.hits.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn get_stored(&self, key: &str) -> Option<Stored> {
        let c = &self.shared.counters;
        match self.shared.cache.get(key) {
            Some(s) if s.pass => {
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
                    if s.pass {
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
