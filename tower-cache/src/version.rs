//! The layout of versions, and the one rule that says whether an entry outlives an
//! invalidation. A leaf: it imports nothing of the crate, so every tier can use it.
//!
//! A version is 44 bits of Unix milliseconds, 12 bits of a counter within the
//! millisecond and the low 8 bits of the node id that issued it (see
//! [`HybridClock`](crate::coordinator::HybridClock)).

/// Bits of the node id at the bottom of a version.
pub(crate) const NODE_BITS: u32 = 8;
/// Bits of the counter within a millisecond, above the node id.
pub(crate) const COUNTER_BITS: u32 = 12;
/// Shift from a version to its milliseconds.
pub(crate) const NODE_AND_COUNTER_BITS: u32 = NODE_BITS + COUNTER_BITS;

/// Whether an entry (or a write) with version `entry` comes after an invalidation with
/// version `invalidation`, so that the invalidation must leave it in place.
///
/// Versions issued by one node are ordered as that node issued them. Across nodes, the
/// counter within a millisecond says nothing of which came first (each node counts on
/// its own), so an entry survives another node's invalidation only from a later
/// millisecond: within the same millisecond the invalidation wins. The cost is a miss
/// now and then; the other choice let a read that began before a write on another node
/// outlive that write's invalidation until its TTL.
///
/// Two nodes whose ids share their low 8 bits are taken as one node here: give the
/// nodes of a cluster ids that differ in their low 8 bits.
pub(crate) fn outlives(entry: u64, invalidation: u64) -> bool {
    const NODE: u64 = (1 << NODE_BITS) - 1;
    if entry & NODE == invalidation & NODE {
        entry > invalidation
    } else {
        entry >> NODE_AND_COUNTER_BITS > invalidation >> NODE_AND_COUNTER_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ms: u64, counter: u64, node: u64) -> u64 {
        (ms << NODE_AND_COUNTER_BITS) | (counter << NODE_BITS) | node
    }

    #[test]
    fn within_a_millisecond_only_one_nodes_own_order_counts() {
        // One node: its own order.
        assert!(outlives(v(5, 2, 1), v(5, 1, 1)));
        assert!(!outlives(v(5, 1, 1), v(5, 1, 1)));
        assert!(!outlives(v(5, 0, 1), v(5, 1, 1)));
        // Two nodes, one millisecond: the invalidation wins whatever the counters.
        assert!(!outlives(v(5, 9, 2), v(5, 0, 1)));
        assert!(!outlives(v(5, 0, 1), v(5, 9, 2)));
        // Two nodes, a later millisecond: the entry stays.
        assert!(outlives(v(6, 0, 1), v(5, 4095, 2)));
        assert!(!outlives(v(5, 4095, 2), v(6, 0, 1)));
    }
}
