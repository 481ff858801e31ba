//! Write generations: how a fill or a promotion knows that a write overtook it.
//!
//! Every key hashes to one of [`STRIPES`] counters. A write (`set`, `delete`, `clear`)
//! announces itself on its counter before it touches any tier and again when it is done;
//! each announcement changes the counter, and while a write is under way the counter's
//! low bits say so. A load or a promotion takes a [`Ticket`] (the counter's value) before
//! it reads anything, and stores what it read only if the counter still holds that value:
//! no write started, ran or ended in between. The check is repeated by the disk writer
//! thread right before it applies a queued fill, so a write-through that waited in the
//! queue while a `delete` committed does not land after it.
//!
//! Keys that share a counter only cost each other a fill now and then (the value is served
//! but not stored); they never let a stale value through. A counter is one atomic: a
//! ticket is one load, a check another.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Number of counters; a power of two.
const STRIPES: usize = 4096;
/// Low bits: writes under way on the stripe.
const ACTIVE: u64 = 1;
const ACTIVE_MASK: u64 = (1 << 24) - 1;
/// High bits: writes started or ended on the stripe (wrapping).
const EPOCH: u64 = 1 << 24;

/// The write counters of one tiered store. Cloning shares them.
#[derive(Clone)]
pub(crate) struct Generations {
    shared: Arc<Shared>,
}

struct Shared {
    stripes: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for Generations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generations")
            .field("stripes", &STRIPES)
            .finish()
    }
}

impl Default for Generations {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
                hasher: std::hash::RandomState::new(),
            }),
        }
    }
}

/// The state of a key's counter when a load or promotion began; see [`Generations`].
#[derive(Clone)]
pub(crate) struct Ticket {
    gens: Generations,
    stripe: usize,
    seen: u64,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("stripe", &self.stripe)
            .field("seen", &self.seen)
            .finish()
    }
}

impl Ticket {
    /// Whether no write of a key on this stripe began or ended since the ticket was taken
    /// (and none was under way then).
    pub(crate) fn is_current(&self) -> bool {
        self.seen & ACTIVE_MASK == 0
            && self.gens.shared.stripes[self.stripe].load(Ordering::SeqCst) == self.seen
    }
}

/// A write under way; dropping it (also when the write's future is cancelled) ends it.
#[must_use]
pub(crate) struct WriteGuard<'a> {
    gens: &'a Generations,
    stripe: Option<usize>,
}

impl Generations {
    fn stripe(&self, key: &str) -> usize {
        let mut h = self.shared.hasher.build_hasher();
        h.write(key.as_bytes());
        h.finish() as usize & (STRIPES - 1)
    }

    /// Takes a ticket for a load or promotion of `key`.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        let stripe = self.stripe(key);
        Ticket {
            gens: self.clone(),
            stripe,
            seen: self.shared.stripes[stripe].load(Ordering::SeqCst),
        }
    }

    /// Announces a write of `key`: tickets taken before are void, and so are tickets taken
    /// until the guard drops.
    pub(crate) fn begin_write(&self, key: &str) -> WriteGuard<'_> {
        let stripe = self.stripe(key);
        self.shared.stripes[stripe].fetch_add(EPOCH + ACTIVE, Ordering::SeqCst);
        WriteGuard {
            gens: self,
            stripe: Some(stripe),
        }
    }

    /// Announces a write of every key (`clear`).
    pub(crate) fn begin_clear(&self) -> WriteGuard<'_> {
        for s in self.shared.stripes.iter() {
            s.fetch_add(EPOCH + ACTIVE, Ordering::SeqCst);
        }
        WriteGuard {
            gens: self,
            stripe: None,
        }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // One more epoch, one write fewer under way (ACTIVE >= 1 here, so no borrow).
        let end = EPOCH - ACTIVE;
        match self.stripe {
            Some(s) => {
                self.gens.shared.stripes[s].fetch_add(end, Ordering::SeqCst);
            }
            None => {
                for s in self.gens.shared.stripes.iter() {
                    s.fetch_add(end, Ordering::SeqCst);
                }
            }
        }
    }
}

/// A write under way that outlives the call that began it (one the disk tier's writer
/// applies later); dropping it ends the write.
#[must_use]
pub(crate) struct OwnedWriteGuard {
    gens: Generations,
    stripe: usize,
    /// The stripe's counter right after this write began.
    began: u64,
}

impl std::fmt::Debug for OwnedWriteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedWriteGuard")
            .field("stripe", &self.stripe)
            .finish()
    }
}

impl Ticket {
    /// Begins a write of the ticket's key if the ticket is still current: no other write
    /// of a key on its stripe began or ended since it was taken (checked in the same step
    /// as the write begins, so none can slip in between). `None` otherwise.
    pub(crate) fn begin_owned_write(&self) -> Option<OwnedWriteGuard> {
        if self.seen & ACTIVE_MASK != 0 {
            return None;
        }
        let stripe = &self.gens.shared.stripes[self.stripe];
        stripe
            .compare_exchange(
                self.seen,
                self.seen + EPOCH + ACTIVE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .ok()
            .map(|_| OwnedWriteGuard {
                gens: self.gens.clone(),
                stripe: self.stripe,
                began: self.seen + EPOCH + ACTIVE,
            })
    }
}

impl OwnedWriteGuard {
    /// Whether this is still the only write of its stripe since it began: no other
    /// write began or ended since (a purge of the key, say).
    pub(crate) fn alone(&self) -> bool {
        self.gens.shared.stripes[self.stripe].load(Ordering::SeqCst) == self.began
    }
}

impl Drop for OwnedWriteGuard {
    fn drop(&mut self) {
        self.gens.shared.stripes[self.stripe].fetch_add(EPOCH - ACTIVE, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_write_begins_only_on_a_current_ticket_and_knows_when_another_began() {
        let gens = Generations::default();
        let ticket = gens.ticket("k");
        let write = ticket.begin_owned_write().expect("a current ticket");
        assert!(write.alone());
        // Tickets taken meanwhile are void, and no second write begins on them.
        let during = gens.ticket("k");
        assert!(!during.is_current());
        assert!(during.begin_owned_write().is_none());
        // Another write of the key (a purge) begins: this one is no longer alone.
        let purge = gens.begin_write("k");
        assert!(!write.alone());
        drop(purge);
        drop(write);
        // A ticket a write overtook does not begin one.
        let stale = gens.ticket("k");
        drop(gens.begin_write("k"));
        assert!(stale.begin_owned_write().is_none());
        let fresh = gens.ticket("k");
        assert!(fresh.begin_owned_write().is_some());
    }

    #[test]
    fn a_write_voids_earlier_and_concurrent_tickets() {
        let gens = Generations::default();
        let before = gens.ticket("k");
        assert!(before.is_current());
        let write = gens.begin_write("k");
        let during = gens.ticket("k");
        assert!(!before.is_current() && !during.is_current());
        drop(write);
        assert!(!during.is_current(), "a ticket taken mid-write stays void");
        assert!(gens.ticket("k").is_current());
    }

    #[test]
    fn clear_voids_every_key() {
        let gens = Generations::default();
        let tickets: Vec<_> = (0..100).map(|i| gens.ticket(&format!("k{i}"))).collect();
        drop(gens.begin_clear());
        assert!(tickets.iter().all(|t| !t.is_current()));
        assert!(gens.ticket("k1").is_current());
    }
}
