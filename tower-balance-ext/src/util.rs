//! Small helpers the crate's modules share: poison-tolerant locks, the handling of
//! caught panics, a random source, backoff with jitter, and saturating time
//! arithmetic.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Locks `m`, going on with the data of a holder that panicked: every lock of this
/// crate guards data a panic cannot leave half-updated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads `l`, as [`lock`] does.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes `l`, as [`lock`] does.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// The message a panic carried, for the log.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Drops `v`, catching a panic in its `Drop` (an endpoint service's, say).
pub(crate) fn drop_quietly<T>(v: T) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(v)));
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
            crate::hash::mix(addr ^ t) | 1
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
pub(crate) fn backoff(min: Duration, max: Duration, n: u32, spread: f64) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    let d = min.checked_mul(factor).unwrap_or(max).min(max);
    let jitter = (random() % 1024) as f64 / 1024.0 * spread.clamp(0.0, 1.0);
    // Subtract a part: `d * (1 - jitter)` would overflow for `Duration::MAX`.
    d.saturating_sub(d.mul_f64(jitter))
}

/// `d` in nanoseconds, at most `u64::MAX` (about 584 years).
pub(crate) fn saturating_ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// How far ahead a deadline goes when the one asked for is past the clock's range.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + d`, or as far ahead as the clock goes: a `Duration::MAX` timeout never
/// fires rather than overflowing.
pub(crate) fn deadline_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
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
