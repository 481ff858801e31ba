//! Small helpers the crate's modules share: wall-clock milliseconds and a doubling
//! backoff.

use std::time::{Duration, SystemTime};

/// Milliseconds since the Unix epoch at `t` (0 before it, `u64::MAX` far beyond it).
pub(crate) fn unix_ms_at(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch now: the unit of decisions and the audit history.
pub(crate) fn unix_ms() -> u64 {
    unix_ms_at(SystemTime::now())
}

/// The wait before try number `streak` (1 for the first) of something that keeps
/// failing: `base` doubled `streak - 1` times, at most `cap`.
pub(crate) fn doubling_backoff(base: Duration, streak: u32, cap: Duration) -> Duration {
    let doublings = streak.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << doublings).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_without_overflow() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<u64> = (0..6)
            .map(|s| doubling_backoff(base, s, cap).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 100, 200, 400, 800, 1000]);
        assert_eq!(doubling_backoff(base, u32::MAX, cap), cap);
        assert_eq!(
            doubling_backoff(Duration::MAX, 40, Duration::MAX),
            Duration::MAX
        );
    }

    #[test]
    fn unix_ms_is_zero_before_the_epoch() {
        let before = std::time::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(unix_ms_at(before), 0);
        assert_eq!(
            unix_ms_at(std::time::UNIX_EPOCH + Duration::from_millis(5)),
            5
        );
    }
}
