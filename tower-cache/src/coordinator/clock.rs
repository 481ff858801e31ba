//! Versions: a hybrid logical clock, and the last-writer-wins rule.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

// Bits of a version: 44 of Unix milliseconds, 12 of a counter within a millisecond, and
// the low 8 bits of the node id, so that two nodes' versions never tie.
pub(crate) use crate::version::NODE_AND_COUNTER_BITS;
use crate::version::{COUNTER_BITS, NODE_BITS};
const TICK: u64 = 1 << NODE_BITS;

/// A hybrid logical clock: versions that follow wall time, never go backwards, and come
/// after every version this node has seen (up to a bound on how far ahead of this host's
/// wall clock, when it has one).
#[derive(Debug)]
pub struct HybridClock {
    last: AtomicU64,
    node: u64,
    /// How far ahead of the wall clock an observed version may move this clock, in
    /// version units (milliseconds shifted past the counter and node bits).
    max_ahead: u64,
}

impl HybridClock {
    /// A clock for `node` that follows every version it observes, however far ahead.
    /// A clock fed by other hosts wants [`Self::with_max_skew`].
    pub fn new(node: u64) -> Self {
        Self {
            last: AtomicU64::new(0),
            node: node & (TICK - 1),
            max_ahead: u64::MAX,
        }
    }

    /// A clock for `node` that observed versions move at most `max_skew` ahead of this
    /// host's wall clock: one host whose clock runs ahead cannot drag it further.
    pub fn with_max_skew(node: u64, max_skew: std::time::Duration) -> Self {
        let ms = u64::try_from(max_skew.as_millis()).unwrap_or(u64::MAX);
        Self {
            max_ahead: ms.saturating_mul(1 << NODE_AND_COUNTER_BITS),
            ..Self::new(node)
        }
    }

    /// The skew bound in milliseconds (`u64::MAX` for a clock without one).
    pub(crate) fn max_skew_ms(&self) -> u64 {
        if self.max_ahead == u64::MAX {
            u64::MAX
        } else {
            self.max_ahead >> NODE_AND_COUNTER_BITS
        }
    }

    /// Whether `remote` is within the skew bound of this host's wall clock now.
    pub fn within_skew(&self, remote: u64) -> bool {
        remote <= self.wall().saturating_add(self.max_ahead)
    }

    fn wall(&self) -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (ms << (COUNTER_BITS + NODE_BITS)) | self.node
    }

    /// The next version: after the last one issued or observed, and not before now.
    pub fn now(&self) -> u64 {
        let wall = self.wall();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let after_last = ((last >> NODE_BITS).saturating_add(1) << NODE_BITS) | self.node;
            let next = wall.max(after_last);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Takes a version seen from another node into account; returns `false` when it was
    /// beyond the skew bound, in which case the clock moves only up to the bound.
    pub fn observe(&self, remote: u64) -> bool {
        let bound = self.wall().saturating_add(self.max_ahead);
        self.last.fetch_max(remote.min(bound), Ordering::Relaxed);
        remote <= bound
    }
}

/// Which of two writes of a key wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    /// The local entry is newer: it stays.
    Local,
    /// The remote write (or invalidation) is at least as new: it applies.
    Remote,
}

/// Last writer wins, where "last" is known for certain: versions of one node are ordered
/// as it issued them; across nodes, the local entry stays only if its millisecond is
/// later than the remote write's (within one millisecond, the nodes' counters say
/// nothing of which came first, so the remote write or invalidation applies). Equal
/// versions are the same write, and the remote one applies (an invalidation of exactly
/// the version stored removes it). `key` is for logging only.
///
/// Versions carry the low 8 bits of the node id: give a cluster's nodes ids that differ
/// there.
pub fn resolve_conflict(key: &str, local: u64, remote: u64) -> Winner {
    let _ = key;
    if crate::version::outlives(local, remote) {
        Winner::Local
    } else {
        Winner::Remote
    }
}

/// Bits of an incarnation below its start time in milliseconds.
const INCARNATION_RANDOM_BITS: u32 = 20;

/// When the start an incarnation names began, in Unix milliseconds by its node's clock.
pub(crate) fn incarnation_start_ms(incarnation: u64) -> u64 {
    incarnation >> INCARNATION_RANDOM_BITS
}

/// A new incarnation for a coordinator starting now, with `clock` (which has seen the
/// versions the previous run recorded): the start time in Unix milliseconds (by `clock`,
/// so never before what a previous run recorded) in the high 44 bits and 20 random bits
/// below; within a process, each is above the last one issued, so two starts in one
/// millisecond are still ordered.
pub(crate) fn new_incarnation(clock: &HybridClock) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let ms = clock.now() >> NODE_AND_COUNTER_BITS;
    let candidate =
        (ms << INCARNATION_RANDOM_BITS) | (random_node_id() & ((1 << INCARNATION_RANDOM_BITS) - 1));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// A node id that is very likely unique: time, process id and a counter, mixed.
pub(crate) fn random_node_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = t
        ^ (u64::from(std::process::id()) << 32)
        ^ NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    // splitmix64 finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_follow_what_was_seen_and_never_tie_across_nodes() {
        let a = HybridClock::new(1);
        let b = HybridClock::new(2);
        let mut last = 0;
        for _ in 0..10_000 {
            let v = a.now();
            assert!(v > last);
            last = v;
        }
        let far = last + (1 << 40);
        b.observe(far);
        assert!(b.now() > far);
        assert_ne!(a.now() & 0xff, b.now() & 0xff);
        // One node's versions, then two nodes' in different milliseconds.
        let ms = |m: u64| m << NODE_AND_COUNTER_BITS;
        assert_eq!(
            resolve_conflict("k", 10 << 8 | 1, 9 << 8 | 1),
            Winner::Local
        );
        assert_eq!(
            resolve_conflict("k", 9 << 8 | 1, 10 << 8 | 1),
            Winner::Remote
        );
        assert_eq!(resolve_conflict("k", 10, 10), Winner::Remote);
        assert_eq!(resolve_conflict("k", ms(10) | 1, ms(9) | 2), Winner::Local);
        assert_eq!(resolve_conflict("k", ms(9) | 2, ms(10) | 1), Winner::Remote);
        // Two nodes in one millisecond: the remote write applies either way.
        assert_eq!(
            resolve_conflict("k", ms(10) | 5 << 8 | 2, ms(10) | 1),
            Winner::Remote
        );
    }

    #[test]
    fn a_bounded_clock_never_jumps_past_its_skew() {
        let c = HybridClock::with_max_skew(1, std::time::Duration::from_secs(60));
        let year = 365 * 24 * 3600 * 1000u64;
        let wall = c.wall();
        let far = wall + (year << NODE_AND_COUNTER_BITS);
        assert!(!c.within_skew(far));
        assert!(!c.observe(far), "refused");
        let ahead_ms = (c.now() - wall) >> NODE_AND_COUNTER_BITS;
        assert!(ahead_ms <= 61_000, "{ahead_ms} ms ahead");
        let near = c.wall() + (1_000 << NODE_AND_COUNTER_BITS);
        assert!(c.within_skew(near) && c.observe(near));
        assert!(c.now() > near);
    }
}
