//! A concurrency limit per endpoint, learned from its latency the way TCP Vegas (and
//! Netflix's `VegasLimit`) learns a window: the endpoint's latency without a queue is
//! the lowest seen over the last one to two windows; from the latency of each answer,
//! `limit x (1 - no_queue / latency)` estimates how many requests were queued behind
//! the ones being served. Fewer than 3 queued while the endpoint is at its limit: the
//! limit grows; more than 6: it shrinks (both bounds times log10 of the limit above 10, as
//! Netflix's); a failure shrinks it too. It stays between 1 and the configured maximum.
//! A latency that holds for two whole windows becomes the no-queue latency.
//!
//! The latency-aware pick divides an endpoint's in-flight requests by its limit, so
//! requests in flight count for what they cost that endpoint: little on one that serves
//! many at once without slowing down, as much as before on one that serves them one by
//! one. It also weighs latency as the geometric mean of the peak-EWMA estimate and the
//! no-queue latency ([`Limit::toward_no_queue`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// How long a lowest latency counts: the no-queue latency is the lowest of this window
/// and the last, so an endpoint that became slower for good is seen so within two
/// windows, and one that was busy for a whole window is still measured against the
/// window before.
pub(crate) const WINDOW_NS: u64 = 1_000_000_000;

/// The limit an endpoint starts with (as Netflix's `VegasLimit`).
pub(crate) const INITIAL: f64 = 20.0;

/// An endpoint's learned limit; lock-free, updated by every answer.
#[derive(Debug)]
pub(crate) struct Limit {
    /// f64 bits: the limit, in [1, max].
    limit: AtomicU64,
    /// The lowest latency of the current window, in nanoseconds (`u64::MAX`: none yet).
    min_now: AtomicU64,
    /// The lowest latency of the window before.
    min_before: AtomicU64,
    /// Nanoseconds since the clock's base when the current window began.
    window_from: AtomicU64,
    /// f64 bits: [`toward_no_queue`](Self::toward_no_queue), computed with each answer
    /// (its inputs change only then) rather than by every pick.
    factor: AtomicU64,
}

impl Limit {
    pub(crate) fn new(max: f64, now: u64) -> Self {
        Self {
            limit: AtomicU64::new(INITIAL.min(max).max(1.0).to_bits()),
            min_now: AtomicU64::new(u64::MAX),
            min_before: AtomicU64::new(u64::MAX),
            window_from: AtomicU64::new(now),
            factor: AtomicU64::new(1.0f64.to_bits()),
        }
    }

    /// The limit now, at least 1.
    #[inline]
    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.limit.load(Ordering::Relaxed))
    }

    /// The latency without a queue: the lowest of this window and the last (none yet:
    /// `None`).
    pub(crate) fn no_queue_ns(&self) -> Option<u64> {
        let m = self
            .min_now
            .load(Ordering::Relaxed)
            .min(self.min_before.load(Ordering::Relaxed));
        (m != u64::MAX).then_some(m)
    }

    /// The factor that takes the endpoint's peak-EWMA estimate to the geometric mean of
    /// it and the no-queue latency, as of the last answer: `sqrt(no_queue / peak)`, in
    /// (0, 1]; 1 while no latency is known. The peak estimate jumps at once on a slow answer and so reacts
    /// to a queue forming, but an endpoint that answers many requests keeps meeting
    /// the tail of its own latency and looks slower than one that answers few; the
    /// no-queue latency is steady and tells the endpoints' speeds apart, but sees a
    /// queue only once the window has passed. Applied to the estimate as it decays
    /// while idle, it keeps that decay (and so the retries of an avoided endpoint).
    #[inline]
    pub(crate) fn toward_no_queue(&self) -> f64 {
        f64::from_bits(self.factor.load(Ordering::Relaxed))
    }

    /// An answer after `rtt_ns`, when `in_flight` requests (itself included) were in
    /// flight on the endpoint; `failed` if it counts as a failure; `peak_ns` the
    /// peak-EWMA estimate with this answer counted. A `max` below 1 holds the limit at 1.
    pub(crate) fn observe(
        &self,
        rtt_ns: u64,
        in_flight: u64,
        failed: bool,
        now: u64,
        max: f64,
        peak_ns: f64,
    ) {
        let from = self.window_from.load(Ordering::Relaxed);
        if now.saturating_sub(from) >= WINDOW_NS
            && self
                .window_from
                .compare_exchange(from, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.min_now.swap(u64::MAX, Ordering::Relaxed);
            // A window without answers keeps the one before it.
            if last != u64::MAX {
                self.min_before.store(last, Ordering::Relaxed);
            }
        }
        let rtt = rtt_ns.max(1);
        if !failed {
            self.min_now.fetch_min(rtt, Ordering::Relaxed);
        }
        let factor = match self.no_queue_ns() {
            Some(base) if peak_ns > base as f64 => (base as f64 / peak_ns).sqrt(),
            _ => 1.0,
        };
        self.factor.store(factor.to_bits(), Ordering::Relaxed);
        let limit = self.get();
        let step = limit.log10().max(1.0);
        let next = if failed {
            limit - step
        } else {
            // Below its limit, the endpoint has not shown whether more would queue: no
            // growth (a limit that grew on an idle endpoint would invite a herd).
            let busy = in_flight as f64 >= limit;
            let base = self.no_queue_ns().unwrap_or(rtt) as f64;
            let queued = limit * (1.0 - base / rtt as f64);
            if queued > 6.0 * step {
                limit - step
            } else if busy && queued < 3.0 * step {
                limit + step
            } else {
                return;
            }
        };
        let next = if next.is_finite() {
            next.clamp(1.0, max.max(1.0))
        } else {
            1.0
        };
        self.limit.store(next.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{Limit, INITIAL, WINDOW_NS};

    const MS: u64 = 1_000_000;

    #[test]
    fn grows_while_busy_without_queueing_up_to_its_max() {
        let l = Limit::new(100.0, 0);
        for i in 0..10_000 {
            l.observe(10 * MS, l.get().ceil() as u64, false, i * MS, 100.0, 0.0);
        }
        assert_eq!(l.get(), 100.0);
    }

    #[test]
    fn does_not_grow_while_idle() {
        let l = Limit::new(1_000.0, 0);
        for i in 0..10_000 {
            l.observe(10 * MS, 1, false, i * MS, 1_000.0, 0.0);
        }
        assert_eq!(l.get(), INITIAL);
    }

    #[test]
    fn shrinks_when_latency_rises_with_load() {
        let l = Limit::new(1_000.0, 0);
        l.observe(10 * MS, 1, false, 0, 1_000.0, 0.0);
        // Within one window, every answer takes 10x its no-queue latency: a deep
        // queue. (A latency that holds for two windows becomes the no-queue one.)
        for i in 1..900 {
            l.observe(100 * MS, 50, false, i * MS, 1_000.0, 0.0);
        }
        // Down from 20 to where 6 requests would wait (Vegas' upper bound), 0.9 x limit.
        let v = l.get();
        assert!((1.0..7.0).contains(&v), "{v}");
    }

    #[test]
    fn failures_shrink_it_to_one() {
        let l = Limit::new(1_000.0, 0);
        for i in 0..100 {
            l.observe(MS, 100, true, i * MS, 1_000.0, 0.0);
        }
        assert_eq!(l.get(), 1.0);
    }

    #[test]
    fn a_max_of_one_or_less_holds_it_at_one() {
        for max in [1.0, 0.0, -5.0, f64::NAN] {
            let l = Limit::new(max, 0);
            for i in 0..100 {
                l.observe(10 * MS, 100, false, i * MS, max, 0.0);
            }
            assert_eq!(l.get(), 1.0, "max {max}");
        }
    }

    #[test]
    fn the_no_queue_latency_follows_an_endpoint_that_became_slower() {
        let l = Limit::new(1_000.0, 0);
        l.observe(10 * MS, 1, false, 0, 1_000.0, 0.0);
        assert_eq!(l.no_queue_ns(), Some(10 * MS));
        // From here on every answer takes 15 ms: within two windows that is the base.
        let mut now = 0;
        while now <= 2 * WINDOW_NS {
            now += 5 * MS;
            l.observe(15 * MS, 1, false, now, 1_000.0, 0.0);
        }
        assert_eq!(l.no_queue_ns(), Some(15 * MS));
    }

    #[test]
    fn the_factor_takes_the_peak_to_its_geometric_mean_with_the_no_queue_latency() {
        let l = Limit::new(1_000.0, 0);
        assert_eq!(l.toward_no_queue(), 1.0, "nothing known yet");
        // No-queue 10 ms, peak estimate 40 ms: sqrt(10 x 40) = 20 = 40 x 0.5.
        l.observe(10 * MS, 1, false, 0, 1_000.0, 40e6);
        assert_eq!(l.toward_no_queue(), 0.5);
        // A peak at or below the no-queue latency, or not a number: left as it is.
        for peak in [5e6, 10e6, f64::NAN] {
            l.observe(10 * MS, 1, false, MS, 1_000.0, peak);
            assert_eq!(l.toward_no_queue(), 1.0, "peak {peak}");
        }
    }

    #[test]
    fn zero_and_huge_latencies_are_harmless() {
        let l = Limit::new(1_000.0, 0);
        for (i, rtt) in [0, u64::MAX, 0, 1, u64::MAX].into_iter().enumerate() {
            l.observe(rtt, 30, false, i as u64 * MS, 1_000.0, 0.0);
            let v = l.get();
            assert!((1.0..=1_000.0).contains(&v), "{v}");
        }
    }
}
