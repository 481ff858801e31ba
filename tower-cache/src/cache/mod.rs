//! The tiered store: memory, then disk, then the origin.
//!
//! - **Read-through**: a read looks in memory, then on disk; a disk hit is **promoted** to
//!   memory with the time it has left. [`Cache::get_or_load`] goes on to the origin and
//!   stores what it returns, with **single flight**: concurrent misses for one key run
//!   the origin once.
//! - **Write-through** to the tiers the caller picks ([`WriteTiers`]).
//! - **Delete and clear reach every tier, disk before memory.**
//! - **Failures and uncacheable values release every waiter at once.** When a load
//!   fails, the key is marked *pass* for a second (hit-for-pass, as Varnish does):
//!   every caller waiting on that load, and every caller for the next second, runs its
//!   own load at once instead of queueing behind a new leader.
//!
//! # Consistency
//!
//! The store guarantees, for every key, with any number of concurrent callers and with
//! evictions happening:
//!
//! - after [`Cache::set`] returns, no read returns an older value of the key;
//! - after [`Cache::delete`] or [`Cache::clear`] returns, no read returns a value
//!   written before it;
//! - a load (of [`Cache::get_or_load`] or the cache layer) or a promotion from disk that
//!   was in flight when a `set`, `delete` or `clear` of its key happened never lands in
//!   any tier afterwards (its caller still gets the value it loaded).
//!
//! A read concurrent with a write may return the old or the new value. A read may always
//! miss: a cache may forget. The guarantee covers writes made through the store's own
//! methods; writing a tier directly ([`Cache::memory`], [`Cache::disk`]) goes around it. The guarantee holds while the disk tier works; when a disk
//! write or delete fails, the error is returned and the disk may still hold the old value.
//!
//! How: every write announces itself on a per-key generation counter before it touches a
//! tier and again when it is done. A load or promotion notes the counter before reading
//! and stores what it read only if the counter has not moved; the disk writer thread
//! checks again right before it applies a queued write-through. A `set` to one tier
//! removes the key from the other (so an older copy cannot be promoted over it), and the
//! memory tier's single-flight placeholder is removed by any write, so a fill that passed
//! its check just before a write began cannot land after it either.
//! - A fault of the disk tier never fails a read or a load: it is counted
//!   ([`CacheStats::disk_faults`]), logged, and the store goes on with memory and the
//!   origin.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_cache::{DiskTier, MemoryTier, Cache, WriteTiers};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Cache::new(MemoryTier::builder().max_entries(500).build()?)
//!     .with_disk(DiskTier::builder(dir.path()).map_size(64 << 20).open()?);
//! store.set("budget:7", "42".into(), Duration::from_secs(60), WriteTiers::ALL).await?;
//! assert_eq!(store.get("budget:7").await.as_deref(), Some(&b"42"[..]));
//! let loaded = store
//!     .get_or_load("budget:8", Duration::from_secs(60), async { Ok::<_, std::io::Error>("43".into()) })
//!     .await?;
//! assert_eq!(loaded, "43");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::disk::{DiskRead, DiskRecord, DiskStats, DiskTier};
use crate::entry::{EntryMeta, Stored};
use crate::error::{DiskError, InsertError};
use crate::generation::{Generations, Ticket};
use crate::memory::{Guard, Lookup, MemoryStats, MemoryTier};

mod invalidate;
pub(crate) use self::invalidate::Registry;

/// Which tiers a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTiers {
    memory: bool,
    disk: bool,
}

impl WriteTiers {
    /// Memory and disk (when the store has a disk tier).
    pub const ALL: WriteTiers = WriteTiers {
        memory: true,
        disk: true,
    };
    /// Memory only.
    pub const MEMORY: WriteTiers = WriteTiers {
        memory: true,
        disk: false,
    };
    /// Disk only (a later read promotes the entry to memory).
    pub const DISK: WriteTiers = WriteTiers {
        memory: false,
        disk: true,
    };

    /// Whether the memory tier is included.
    pub const fn memory(self) -> bool {
        self.memory
    }

    /// Whether the disk tier is included.
    pub const fn disk(self) -> bool {
        self.disk
    }
}

impl Default for WriteTiers {
    fn default() -> Self {
        WriteTiers::ALL
    }
}

/// Counters of a [`Cache`] store, with each tier's own.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CacheStats {
    /// The memory tier's counters.
    pub memory: MemoryStats,
    /// The disk tier's counters, if there is one.
    pub disk: Option<DiskStats>,
    /// Reads answered from memory (the memory tier's `hits`).
    pub memory_hits: u64,
    /// Reads answered from disk (and promoted).
    pub disk_hits: u64,
    /// Reads that found no tier holding the key.
    pub misses: u64,
    /// Origin loads run (one per key per single-flight group).
    pub loads: u64,
    /// Origin loads that failed (nothing was stored).
    pub load_errors: u64,
    /// Faults of the disk tier that the store routed around.
    pub disk_faults: u64,
    /// Loads and promotions not stored because a write of their key overtook them.
    pub stale_fills: u64,
    /// Requests that went to the origin because the key was marked pass (its last load
    /// failed or its response was not cacheable).
    pub passes: u64,
    /// Keys whose entry-scoped dependency edges were pruned with their entries (see
    /// [`Cache::register_entry_dependency`]).
    pub dependencies_pruned: u64,
    /// Variants of a URL dropped by the HTTP cache's bound on variants per URL
    /// ([`HttpCacheLayer::max_variants`](crate::http::HttpCacheLayer::max_variants)).
    pub variant_evictions: u64,
}

impl CacheStats {
    /// Share of reads answered by some tier.
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.memory_hits + self.disk_hits;
        let reads = hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            hits as f64 / reads as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    disk_hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
    disk_faults: AtomicU64,
    stale_fills: AtomicU64,
    passes: AtomicU64,
    variant_evictions: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What removing expired entries did; see [`Cache::remove_expired`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiredReport {
    /// Expired entries swept from memory.
    pub memory_expired: usize,
    /// Expired entries removed from disk.
    pub disk_expired: usize,
    /// Keys whose entry-scoped dependency edges went with their entries (see
    /// [`Cache::register_entry_dependency`]).
    pub dependencies_pruned: usize,
}

/// How long a key whose load failed is marked pass (see the module docs).
pub(crate) const ERROR_PASS: Duration = Duration::from_secs(1);

/// Memory, then disk, then the origin. Cloning shares both tiers and the counters.
///
/// See the [module docs](crate::cache) for the consistency guarantee.
#[derive(Debug, Clone)]
pub struct Cache {
    memory: MemoryTier,
    disk: Option<DiskTier>,
    counters: Arc<Counters>,
    generations: Generations,
    registry: Arc<Registry>,
    /// Test hook: pauses a promotion between the disk read and the memory fill.
    #[cfg(test)]
    promotion_gate: Option<Arc<(tokio::sync::Notify, tokio::sync::Notify)>>,
}

/// Where a read was answered, or the right to load the key.
pub(crate) enum Found<'a> {
    /// A stored value, and whether it came from the disk tier.
    Hit(Stored, bool),
    /// The key is marked pass: load without storing.
    Pass,
    Leader(Lead<'a>),
    /// A disk record too large for the memory tier, opened to be read in parts; only
    /// from [`Cache::lookup_in_parts`].
    Record(DiskRecord),
}

/// The right to load a key: the memory placeholder that makes concurrent callers wait,
/// and the ticket that tells whether a write overtook the load.
pub(crate) struct Lead<'a> {
    guard: Guard<'a>,
    ticket: Ticket,
}

impl Cache {
    /// A store with only a memory tier.
    pub fn new(memory: MemoryTier) -> Self {
        Self {
            memory,
            disk: None,
            counters: Arc::default(),
            generations: Generations::default(),
            registry: Arc::default(),
            #[cfg(test)]
            promotion_gate: None,
        }
    }

    /// Adds a disk tier below memory.
    pub fn with_disk(mut self, disk: DiskTier) -> Self {
        self.disk = Some(disk);
        self
    }

    /// The memory tier.
    pub fn memory(&self) -> &MemoryTier {
        &self.memory
    }

    /// The disk tier, if any.
    pub fn disk(&self) -> Option<&DiskTier> {
        self.disk.as_ref()
    }

    /// Reads `key` from memory, then disk (promoting a disk hit to memory).
    pub async fn get(&self, key: &str) -> Option<Bytes> {
        match self.lookup(key).await {
            Found::Hit(s, _) => Some(s.value),
            // Nobody loads here: dropping the guard lets a waiting reader look again.
            Found::Pass | Found::Leader(_) | Found::Record(_) => None,
        }
    }

    /// Reads `key`; on a miss in every tier runs `load` and stores its value for `ttl`
    /// in every tier. Concurrent calls for one key run `load` once. If it fails, nothing
    /// is stored and the key is marked pass for a second: every waiting caller, and every
    /// caller in that second, runs its own `load` at once (and stores nothing).
    pub async fn get_or_load<F, E>(&self, key: &str, ttl: Duration, load: F) -> Result<Bytes, E>
    where
        F: Future<Output = Result<Bytes, E>>,
    {
        match self.lookup(key).await {
            Found::Hit(s, _) => Ok(s.value),
            Found::Pass | Found::Record(_) => load.await,
            Found::Leader(lead) => {
                bump(&self.counters.loads);
                match load.await {
                    Ok(value) => {
                        // A value the tiers refuse (bad ttl, too large) is still returned.
                        let _ = self.fill(
                            key,
                            lead,
                            value.clone(),
                            ttl,
                            EntryMeta::default(),
                            WriteTiers::ALL,
                        );
                        Ok(value)
                    }
                    Err(e) => {
                        bump(&self.counters.load_errors);
                        self.mark_pass(key, lead, ERROR_PASS);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Writes `value` to the chosen tiers and removes `key` from the others, so that no
    /// older copy outlives the write; the disk write is committed before this returns.
    ///
    /// A value a tier refuses (too large for the memory tier, say) is removed from that
    /// tier, written to the others, and the refusal returned. A disk fault is counted and
    /// returned after the memory write is done.
    pub async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tiers: WriteTiers,
    ) -> Result<(), InsertError> {
        self.set_with(key, value, ttl, EntryMeta::default(), tiers)
            .await
    }

    /// Like [`Self::set`], with a version and tags.
    pub async fn set_with(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
        tiers: WriteTiers,
    ) -> Result<(), InsertError> {
        crate::error::check_ttl(ttl)?;
        let _write = self.generations.begin_write(key);
        let in_memory = if tiers.memory {
            self.memory.set_with(key, value.clone(), ttl, meta.clone())
        } else {
            Ok(())
        };
        if !tiers.memory || in_memory.is_err() {
            self.memory.delete(key);
        }
        let on_disk = match (&self.disk, tiers.disk) {
            (Some(disk), true) => disk.set_with(key, value, ttl, meta).await,
            (Some(disk), false) => disk
                .delete(key)
                .await
                .map(drop)
                .map_err(|e| InsertError::new(crate::InsertErrorKind::Disk, e.to_string())),
            (None, _) => Ok(()),
        }
        .inspect_err(|e| {
            if e.kind() == crate::InsertErrorKind::Disk {
                bump(&self.counters.disk_faults);
            }
        });
        in_memory.and(on_disk)
    }

    /// Like [`Self::set_with`], but the value lands in a tier only if `check` still holds
    /// when that tier takes it (checked under the memory tier's shard lock, and by the
    /// disk writer right before it applies the write). For versioned writes that a newer
    /// invalidation must beat. Returns whether the memory tier took it.
    pub(crate) async fn set_if(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
        tiers: WriteTiers,
        check: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<bool, InsertError> {
        crate::error::check_ttl(ttl)?;
        let _write = self.generations.begin_write(key);
        let mut in_memory = false;
        if tiers.memory {
            let prepared = self.memory.prepare(value.clone(), ttl, meta.clone())?;
            in_memory = self.memory.insert_if(key, prepared, || check());
        } else {
            self.memory.delete(key);
        }
        match (&self.disk, tiers.disk) {
            (Some(disk), true) => disk.set_if(key, value, ttl, meta, check).await?,
            (Some(disk), false) => {
                disk.delete(key)
                    .await
                    .map_err(|e| InsertError::new(crate::InsertErrorKind::Disk, e.to_string()))?;
            }
            (None, _) => {}
        }
        Ok(in_memory)
    }

    /// Deletes `key` from disk, then from memory; returns whether any tier held it. A
    /// load of `key` in flight will not store its value.
    ///
    /// If the disk delete fails the memory entry is still removed and the fault returned.
    pub async fn delete(&self, key: &str) -> Result<bool, DiskError> {
        self.delete_with(key, None).await
    }

    /// Like [`Self::delete`], recording `tombstone` on disk in the same transaction.
    pub(crate) async fn delete_with(
        &self,
        key: &str,
        tombstone: Option<crate::target::Tombstone>,
    ) -> Result<bool, DiskError> {
        let _write = self.generations.begin_write(key);
        let on_disk = match &self.disk {
            Some(disk) => disk.delete_with(key, tombstone).await.inspect_err(|e| {
                bump(&self.counters.disk_faults);
                tracing::warn!(error = %e, key, "disk tier delete failed");
            }),
            None => Ok(false),
        };
        let in_memory = self.memory.delete(key);
        Ok(on_disk? || in_memory)
    }

    /// Clears disk, then memory. No load in flight will store its value.
    pub async fn clear(&self) -> Result<(), DiskError> {
        let _write = self.generations.begin_clear();
        let on_disk = match &self.disk {
            Some(disk) => disk
                .clear()
                .await
                .inspect_err(|_| bump(&self.counters.disk_faults)),
            None => Ok(()),
        };
        self.memory.clear();
        on_disk
    }

    /// Removes expired entries from every tier, then the dependency edges that went with
    /// them ([`Self::prune_dependencies`]). For a smaller file, see
    /// [`DiskTier::compact`].
    pub async fn remove_expired(&self) -> Result<ExpiredReport, DiskError> {
        let memory_expired = self.memory.remove_expired();
        let disk_expired = match &self.disk {
            Some(disk) => disk.remove_expired().await?,
            None => 0,
        };
        let dependencies_pruned = self
            .prune_dependencies()
            .await
            .map_err(|e| DiskError::new(e.to_string()))?;
        Ok(ExpiredReport {
            memory_expired,
            disk_expired,
            dependencies_pruned,
        })
    }

    /// Counters of the store and of each tier.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let memory = self.memory.stats();
        CacheStats {
            memory,
            disk: self.disk.as_ref().map(DiskTier::stats),
            memory_hits: memory.hits,
            disk_hits: c.disk_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            load_errors: c.load_errors.load(Ordering::Relaxed),
            disk_faults: c.disk_faults.load(Ordering::Relaxed),
            stale_fills: c.stale_fills.load(Ordering::Relaxed),
            passes: c.passes.load(Ordering::Relaxed),
            dependencies_pruned: self.registry.pruned(),
            variant_evictions: c.variant_evictions.load(Ordering::Relaxed),
        }
    }

    // === crate-internal ===

    /// The synchronous fast path: a fresh memory entry, counted as a hit; nothing is
    /// counted when there is none (the slow path counts).
    #[inline]
    pub(crate) fn memory_hit(&self, key: &str) -> Option<Stored> {
        let hit = self.memory.get_fresh_uncounted(key)?;
        self.memory.count_hit();
        Some(hit)
    }

    pub(crate) fn count_variant_eviction(&self) {
        bump(&self.counters.variant_evictions);
    }

    pub(crate) fn count_load(&self, ok: bool) {
        bump(&self.counters.loads);
        if !ok {
            bump(&self.counters.load_errors);
        }
    }

    /// Memory (waiting for a loader of the same key), then disk with promotion.
    // Not an `async fn`: a wrapper future would be one more copy of the lookup's state
    // on every call.
    pub(crate) fn lookup<'a>(&'a self, key: &'a str) -> impl Future<Output = Found<'a>> + 'a {
        self.lookup_from(key, false)
    }

    /// Like [`Self::lookup`], but a disk record that the memory tier could not take and
    /// that is held in the addressable form is not read whole: it comes back as
    /// [`Found::Record`], to be read in parts (and is not promoted).
    pub(crate) fn lookup_in_parts<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Future<Output = Found<'a>> + 'a {
        self.lookup_from(key, true)
    }

    async fn lookup_from<'a>(&'a self, key: &str, in_parts: bool) -> Found<'a> {
        let guard = match self.memory.get_or_lead(key).await {
            Lookup::Hit(s) => return Found::Hit(s, false),
            Lookup::Pass => {
                bump(&self.counters.passes);
                return Found::Pass;
            }
            Lookup::Leader(guard) => guard,
        };
        // Taken after the placeholder: a write from now on voids the ticket, and one
        // that began earlier has removed the placeholder or voids it too.
        let ticket = self.generations.ticket(key);
        if let Some(disk) = &self.disk {
            let whole_up_to = if in_parts {
                self.memory.max_value_bytes()
            } else {
                usize::MAX
            };
            let read = match disk.try_read_async(key, whole_up_to).await {
                Ok(DiskRead::Entry(found)) => Ok(found),
                Ok(DiskRead::Record(record)) => {
                    bump(&self.counters.disk_hits);
                    return Found::Record(record);
                }
                Err(e) => Err(e),
            };
            match read {
                Ok(Some(entry)) => {
                    #[cfg(test)]
                    if let Some(gate) = &self.promotion_gate {
                        gate.0.notify_one();
                        gate.1.notified().await;
                    }
                    bump(&self.counters.disk_hits);
                    let hit = Stored::new(
                        entry.value,
                        self.memory.deadline(entry.ttl_left),
                        entry.meta.version,
                        0,
                    );
                    if !ticket.is_current() {
                        // A write overtook the read: serve what was read, keep nothing.
                        bump(&self.counters.stale_fills);
                    } else if let Ok(prepared) =
                        self.memory
                            .prepare(hit.value.clone(), entry.ttl_left, entry.meta)
                    {
                        self.memory.fill(key, guard, prepared);
                    }
                    // Otherwise too large for memory: served from disk without promoting.
                    return Found::Hit(hit, true);
                }
                Ok(None) => {}
                Err(e) => {
                    bump(&self.counters.disk_faults);
                    tracing::warn!(error = %e, key, "disk tier read failed; going to the origin");
                }
            }
        }
        bump(&self.counters.misses);
        Found::Leader(Lead { guard, ticket })
    }

    /// Stores a loaded value: fills the memory placeholder (waking waiters) and queues
    /// the disk write without waiting for it. Nothing is stored if a write of `key`
    /// overtook the load.
    pub(crate) fn fill(
        &self,
        key: &str,
        lead: Lead<'_>,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
        tiers: WriteTiers,
    ) -> Result<(), InsertError> {
        let Lead { guard, ticket } = lead;
        if !ticket.is_current() {
            bump(&self.counters.stale_fills);
            return Ok(());
        }
        if let (true, Some(disk)) = (tiers.disk, &self.disk) {
            if let Err(e) = disk.queue_fill(key, value.clone(), ttl, meta.clone(), ticket) {
                if e.kind() == crate::InsertErrorKind::Disk {
                    bump(&self.counters.disk_faults);
                }
                tracing::debug!(error = %e, key, "disk write-through skipped");
            }
        }
        if tiers.memory {
            let prepared = self.memory.prepare(value, ttl, meta)?;
            self.memory.fill(key, guard, prepared);
        }
        Ok(())
    }

    pub(crate) fn generations(&self) -> &Generations {
        &self.generations
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A ticket for a load of `key` that will be stored with [`Self::store_loaded`].
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        self.generations.ticket(key)
    }

    /// Stores a value loaded under `ticket` (taken before the origin was asked), unless a
    /// write of `key` overtook the load; for loads that outlive a single-flight
    /// placeholder (a streamed body). Returns whether the memory tier took it.
    pub(crate) fn store_loaded(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
        ticket: Ticket,
    ) -> Result<bool, InsertError> {
        self.store_under(key, value, ttl, meta, ticket, false)
    }

    /// Stores under `key` the value `head` followed by the bytes `tail` names of the
    /// large record the disk tier holds under `key` (read in parts), with the bytes `around` them, unless a write of
    /// `key` overtook `ticket` or replaced that record: a new head for a large stored
    /// body, written without the body passing through memory. Disk tier only (the memory
    /// tier could not take the record whole).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn store_spliced(
        &self,
        key: &str,
        head: Bytes,
        tail: crate::disk::Tail,
        around: crate::disk::Around,
        ttl: Duration,
        meta: EntryMeta,
        ticket: Ticket,
    ) -> Result<(), InsertError> {
        if !ticket.is_current() {
            bump(&self.counters.stale_fills);
            return Ok(());
        }
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        disk.queue_splice(key, head, tail, around, ttl, meta, ticket)
            .inspect_err(|e| {
                if e.kind() == crate::InsertErrorKind::Disk {
                    bump(&self.counters.disk_faults);
                }
            })
    }

    /// Stores under `key` the value `head` followed by the `len` bytes of a spool `file`
    /// (a large value written to disk as it arrived), unless a write of `key` overtook
    /// `ticket`. Disk tier only: a value spooled is one the memory tier could not take.
    /// The write is under way until the writer has applied it: loads and promotions of
    /// `key` meanwhile keep nothing (an older value read off the disk meanwhile is not
    /// put back in memory). Returns what ends it (`None`: nothing queued).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn store_spooled(
        &self,
        key: &str,
        head: Bytes,
        file: crate::disk::SpoolFile,
        len: u64,
        ttl: Duration,
        meta: EntryMeta,
        ticket: Ticket,
    ) -> Result<Option<Spooled>, InsertError> {
        let Some(disk) = &self.disk else {
            return Ok(None);
        };
        // The write begins only if no write overtook the ticket (checked as it begins);
        // the writer applies it only if no other write began or ended since (a purge
        // queued before it, say).
        let Some(write) = ticket.begin_owned_write() else {
            bump(&self.counters.stale_fills);
            return Ok(None);
        };
        let write = std::sync::Arc::new(write);
        let alone = {
            let write = write.clone();
            crate::disk::Fence::Check(std::sync::Arc::new(move || write.alone()))
        };
        // Stored on disk only: an older value in memory must not hide it.
        self.forget_in_memory(key);
        disk.queue_spooled(key, head, file, len, ttl, meta, Some(alone))
            .map(|committed| {
                Some(Spooled {
                    committed,
                    _write: write,
                })
            })
            .inspect_err(|e| {
                if e.kind() == crate::InsertErrorKind::Disk {
                    bump(&self.counters.disk_faults);
                }
            })
    }

    /// Like [`Self::store_loaded`], but the memory tier takes the value even while another
    /// caller holds a single-flight placeholder for `key` (whose own fill then fails):
    /// for a record that must not be lost to a lookup in progress (a URL's index of
    /// variants, written under its lock). Returns whether it stored.
    pub(crate) fn store_loaded_replacing(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
        ticket: Ticket,
    ) -> Result<bool, InsertError> {
        self.store_under(key, value, ttl, meta, ticket, true)
    }

    /// Both of the above: the disk write-through, then the memory tier, each only while
    /// `ticket` holds; `over_loads` says whether a load in progress of `key` loses its
    /// place to the value.
    fn store_under(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        meta: EntryMeta,
        ticket: Ticket,
        over_loads: bool,
    ) -> Result<bool, InsertError> {
        if !ticket.is_current() {
            bump(&self.counters.stale_fills);
            return Ok(false);
        }
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.queue_fill(key, value.clone(), ttl, meta.clone(), ticket.clone()) {
                if e.kind() == crate::InsertErrorKind::Disk {
                    bump(&self.counters.disk_faults);
                }
                tracing::debug!(error = %e, key, "disk write-through skipped");
            }
        }
        let prepared = match self.memory.prepare(value, ttl, meta) {
            Ok(prepared) => prepared,
            Err(e) => {
                // Too large for memory (stored on disk only): an older value there must
                // not hide it.
                self.forget_in_memory(key);
                return Err(e);
            }
        };
        let stored = if over_loads {
            ticket.is_current()
                && self
                    .memory
                    .insert_stored(std::sync::Arc::from(key), prepared)
                    .is_ok()
        } else {
            self.memory.insert_if(key, prepared, || ticket.is_current())
        };
        if !stored {
            bump(&self.counters.stale_fills);
        }
        Ok(stored)
    }

    /// Removes the value the memory tier holds under `key`, if any (not a load in
    /// progress): for a newer value that only the disk tier takes.
    fn forget_in_memory(&self, key: &str) {
        if self.memory.get_fresh_uncounted(key).is_some() {
            self.memory.delete(key);
        }
    }

    /// Marks `key` pass for `ttl` without a placeholder: requests for it go to the origin
    /// without waiting for one another.
    pub(crate) fn mark_pass_key(&self, key: &str, ttl: Duration) {
        self.memory.insert_pass(key, ttl);
    }

    /// Marks `key` pass for `ttl` in place of a value: every caller waiting on this load
    /// goes to the origin at once, and so do later ones until the mark expires or a write
    /// replaces it.
    pub(crate) fn mark_pass(&self, key: &str, lead: Lead<'_>, ttl: Duration) {
        self.memory.fill_pass(key, lead.guard, ttl);
    }
}

/// A spooled write queued: resolves once the writer has applied it, and ends the write
/// then (when dropped).
#[derive(Debug)]
pub(crate) struct Spooled {
    pub(crate) committed: crate::disk::Committed,
    _write: std::sync::Arc<crate::generation::OwnedWriteGuard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_delete_during_promotion_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Cache::new(MemoryTier::builder().build().unwrap()).with_disk(
            DiskTier::builder(dir.path())
                .map_size(8 << 20)
                .open()
                .unwrap(),
        );
        let gate = Arc::new((tokio::sync::Notify::new(), tokio::sync::Notify::new()));
        store.promotion_gate = Some(gate.clone());
        let ttl = Duration::from_secs(60);
        store
            .set("k", "v".into(), ttl, WriteTiers::DISK)
            .await
            .unwrap();

        let reader = tokio::spawn({
            let store = store.clone();
            async move { store.get("k").await }
        });
        // The reader has read the disk and is about to promote.
        gate.0.notified().await;
        assert!(store.delete("k").await.unwrap());
        gate.1.notify_one();
        // The reader may return what it read before the delete...
        let _ = reader.await.unwrap();
        // ...but must not have put it back.
        assert!(
            !store.memory().has("k"),
            "promotion resurrected a deleted entry"
        );
        store.promotion_gate = None;
        assert!(store.get("k").await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_max_ttl_caps_the_memory_copy_and_disk_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Cache::new(
            MemoryTier::builder()
                .max_ttl(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
        .with_disk(
            DiskTier::builder(dir.path())
                .map_size(8 << 20)
                .open()
                .unwrap(),
        );
        store
            .set("k", "v".into(), Duration::from_secs(60), WriteTiers::ALL)
            .await
            .unwrap();
        assert_eq!(store.memory().get("k").as_deref(), Some(&b"v"[..]));
        tokio::time::advance(Duration::from_secs(6)).await;
        // Gone from memory after its 5 s there; still on disk for its 60 s.
        assert!(store.memory().get("k").is_none());
        assert_eq!(store.get("k").await.as_deref(), Some(&b"v"[..]));
        assert_eq!(store.stats().disk_hits, 1);
        // Promoted, again for at most 5 s.
        assert!(store.memory().has("k"));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(store.memory().get("k").is_none());
        // Extremes: the largest cap is no cap; the smallest keeps nothing for long and
        // never panics.
        for cap in [Duration::MAX, Duration::from_nanos(1)] {
            let m = MemoryTier::builder().max_ttl(cap).build().unwrap();
            m.set("x", "v".into(), Duration::from_secs(60)).unwrap();
            tokio::time::advance(Duration::from_millis(2)).await;
            assert_eq!(m.get("x").is_some(), cap == Duration::MAX, "{cap:?}");
        }
        // A zero cap is refused with what to change.
        let err = MemoryTier::builder()
            .max_ttl(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("max_ttl"), "{err}");
    }
}
