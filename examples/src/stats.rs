//! Percentiles of a sorted sample, for the figures the examples print.

use std::time::Duration;

/// The `q` quantile (0.0 to 1.0) of `sorted` (ascending), by the nearest rank below;
/// zero for an empty sample.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let Some(last) = sorted.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    sorted[((last as f64 * q.clamp(0.0, 1.0)) as usize).min(last)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_small_and_empty_samples() {
        let ms = |n| Duration::from_millis(n);
        let s: Vec<_> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&s, 0.5), ms(50));
        assert_eq!(percentile(&s, 0.99), ms(99));
        assert_eq!(percentile(&s, 1.0), ms(100));
        assert_eq!(percentile(&s, 7.0), ms(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&[ms(3)], 0.99), ms(3));
    }
}
