//! What the rest of the crate asks of the memory tier: prepared entries, single-flight
//! fills, pass marks and reads that count nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::entry::{EntryMeta, Stored, Tags};
use crate::error::{check_ttl, check_value_len, InsertError};

use super::*;

impl MemoryTier {
    /// The largest value the tier takes, in bytes.
    pub(crate) fn max_value_bytes(&self) -> usize {
        self.shared.max_value_bytes
    }

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
    pub(super) fn weigh(&self, key: &str, stored: &mut Stored) -> Option<()> {
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

    pub(super) fn expire(&self, key: &str) {
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
