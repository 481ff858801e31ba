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

/// A small, fast per-thread random source (xorshift64*), for P2C and slow start.
pub(crate) fn random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let addr = &STATE as *const _ as u64;
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            mix(addr ^ t) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// `min x 2^n`, at most `max`, less up to `spread` of itself at random: the backoff
/// of re-admission probes and of a breaker's open time. Saturates, never panics.
pub(crate) fn backoff(
    min: std::time::Duration,
    max: std::time::Duration,
    n: u32,
    spread: f64,
) -> std::time::Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    let d = min.checked_mul(factor).unwrap_or(max).min(max);
    let jitter = (random() % 1024) as f64 / 1024.0 * spread.clamp(0.0, 1.0);
    // Subtract a part: `d * (1 - jitter)` would overflow for `Duration::MAX`.
    d.saturating_sub(d.mul_f64(jitter))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn backoff_doubles_caps_and_survives_extremes() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(10));
        let b = super::backoff(min, max, 0, 0.0);
        assert_eq!(b, min);
        assert_eq!(super::backoff(min, max, 3, 0.0), Duration::from_millis(800));
        assert_eq!(super::backoff(min, max, 30, 0.0), max);
        for n in [0, 1, 31, 32, u32::MAX] {
            let d = super::backoff(Duration::MAX, Duration::MAX, n, 0.25);
            assert!(d >= Duration::MAX.mul_f64(0.74), "{d:?}");
            let d = super::backoff(Duration::from_nanos(1), Duration::MAX, n, 0.25);
            assert!(d <= Duration::from_secs(3));
        }
        for _ in 0..100 {
            let d = super::backoff(min, max, 2, 0.25);
            assert!(d > Duration::from_millis(300) && d <= Duration::from_millis(400));
        }
    }
}
