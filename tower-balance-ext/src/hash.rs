//! A stable hash for consistent hashing: the same key maps to the same value in every
//! process and every build, so a sticky key keeps its endpoint across restarts.

use std::hash::{Hash, Hasher};

/// FNV-1a over the bytes a `Hash` impl writes, with a final avalanche (splitmix64).
#[derive(Debug, Clone)]
pub(crate) struct StableHasher(u64);

impl StableHasher {
    pub(crate) fn with_seed(seed: u64) -> Self {
        Self(0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// splitmix64's finaliser.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) fn seeded(key: &impl Hash, seed: u64) -> u64 {
    let mut h = StableHasher::with_seed(seed);
    key.hash(&mut h);
    h.finish()
}

/// The hash of a request key for [`Pick::ConsistentHash`](crate::Pick::ConsistentHash):
/// stable across processes and builds (FNV-1a with a final mix), unlike
/// `std::hash::DefaultHasher`.
///
/// ```
/// use tower_balance_ext::hash_key;
/// assert_eq!(hash_key("user:42"), hash_key(&String::from("user:42")));
/// assert_ne!(hash_key("user:42"), hash_key("user:43"));
/// ```
pub fn hash_key<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::with_seed(0);
    key.hash(&mut h);
    h.finish()
}
