//! The settings of a memory tier, checked when it is built.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder as RandomState, OptionsBuilder};

use crate::entry::{Clock, TimeSource, ENTRY_OVERHEAD};
use crate::error::BuildError;

use super::*;

/// Builds a [`MemoryTier`]; see [`MemoryTier::builder`].
#[derive(Debug, Clone)]
pub struct MemoryTierBuilder {
    pub(super) max_entries: Option<u64>,
    pub(super) max_bytes: Option<u64>,
    pub(super) max_value_bytes: Option<usize>,
    pub(super) hot_allocation: f64,
    pub(super) ghost_allocation: f64,
    pub(super) time_source: TimeSource,
    pub(super) max_ttl: Option<Duration>,
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
