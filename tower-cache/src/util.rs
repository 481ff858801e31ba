//! Small helpers the modules share: wall-clock milliseconds and a lock that survives a
//! panic of another holder. A leaf: it imports nothing of the crate.

use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// `t` in Unix milliseconds; 0 before the epoch, saturating far after it.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Locks `m`, taking the data over if another holder panicked: every value the crate
/// keeps under a lock is valid between statements, so a panic elsewhere leaves nothing
/// half-written to refuse.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
