//! A breaker's state, shared by the layered services, their futures and handles:
//! the settings, the state machine, the sliding window and the counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Requests pass.
    Closed,
    /// Requests are refused (or wait) until the open time ends.
    Open,
    /// One probe request at a time decides.
    HalfOpen,
}

/// What `poll_ready` does while the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenOpen {
    /// Fails at once with [`BreakerOpen`](super::BreakerOpen).
    Fail,
    /// Pends until the breaker is half-open and this caller may probe.
    Wait,
}

pub(super) type StateHook = Arc<dyn Fn(BreakerState, BreakerState) + Send + Sync>;
pub(super) type FailureIf<Res> = Arc<dyn Fn(&Res) -> bool + Send + Sync>;

pub(super) struct Config<Res> {
    pub(super) consecutive: u32,
    pub(super) rate: Option<f64>,
    pub(super) slow: Option<(Duration, f64)>,
    pub(super) window: Duration,
    pub(super) min_calls: u32,
    pub(super) open_for: (Duration, Duration),
    pub(super) when_open: WhenOpen,
    pub(super) failure_if: FailureIf<Res>,
    pub(super) on_change: Option<StateHook>,
}

pub(super) const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bucket {
    pub(super) calls: u32,
    pub(super) failures: u32,
    pub(super) slow: u32,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) state: BreakerState,
    pub(super) open_until: Instant,
    pub(super) probing: bool,
    /// Trips since the breaker last closed (the open time's exponent).
    pub(super) trips: u32,
    pub(super) consecutive: u32,
    pub(super) buckets: [Bucket; BUCKETS],
    pub(super) bucket: usize,
    pub(super) bucket_start: Instant,
}

impl Inner {
    pub(super) fn new() -> Self {
        Self {
            state: BreakerState::Closed,
            open_until: Instant::now(),
            probing: false,
            trips: 0,
            consecutive: 0,
            buckets: [Bucket::default(); BUCKETS],
            bucket: 0,
            bucket_start: Instant::now(),
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) calls: AtomicU64,
    pub(super) failures: AtomicU64,
    pub(super) slow: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) trips: AtomicU64,
}

pub(super) struct Breaker<Res> {
    pub(super) cfg: Arc<Config<Res>>,
    pub(super) state: Mutex<Inner>,
    /// Woken when the breaker closes or a probe slot frees.
    pub(super) changed: Arc<Notify>,
    pub(super) counters: Counters,
}

impl<Res> Breaker<Res> {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::util::lock(&self.state)
    }

    pub(super) fn set(&self, s: &mut Inner, to: BreakerState) {
        let from = s.state;
        if from == to {
            return;
        }
        s.state = to;
        tracing::debug!(?from, ?to, "circuit breaker");
        if let Some(hook) = &self.cfg.on_change {
            hook(from, to);
        }
        self.changed.notify_waiters();
    }

    pub(super) fn trip(&self, s: &mut Inner, now: Instant) {
        let (first, max) = self.cfg.open_for;
        let d = crate::util::backoff(first, max, s.trips, 0.2);
        s.open_until = crate::util::deadline_after(now, d);
        s.trips = s.trips.saturating_add(1);
        s.probing = false;
        self.counters.trips.fetch_add(1, Ordering::Relaxed);
        self.set(s, BreakerState::Open);
    }

    pub(super) fn rotate(&self, s: &mut Inner, now: Instant) {
        let len = self.cfg.window / BUCKETS as u32;
        if len.is_zero() {
            return;
        }
        let mut steps = 0;
        while now.saturating_duration_since(s.bucket_start) >= len && steps < BUCKETS {
            s.bucket = (s.bucket + 1) % BUCKETS;
            s.buckets[s.bucket] = Bucket::default();
            s.bucket_start += len;
            steps += 1;
        }
        if steps == BUCKETS {
            s.bucket_start = now;
        }
    }

    /// A finished call: `probe` if it held the half-open permit.
    pub(super) fn record(&self, failed: bool, elapsed: Duration, probe: bool) {
        let c = &self.counters;
        c.calls.fetch_add(1, Ordering::Relaxed);
        let slow = self.cfg.slow.is_some_and(|(d, _)| elapsed > d);
        if failed {
            c.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            c.slow.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        let mut s = self.lock();
        if probe {
            s.probing = false;
            if s.state == BreakerState::HalfOpen {
                if failed || slow {
                    self.trip(&mut s, now);
                } else {
                    s.trips = 0;
                    s.consecutive = 0;
                    s.buckets = [Bucket::default(); BUCKETS];
                    s.bucket_start = now;
                    self.set(&mut s, BreakerState::Closed);
                }
            }
            return;
        }
        if s.state != BreakerState::Closed {
            // A call sent before the breaker opened: it changes nothing now.
            return;
        }
        s.consecutive = if failed { s.consecutive + 1 } else { 0 };
        self.rotate(&mut s, now);
        let i = s.bucket;
        let b = &mut s.buckets[i];
        b.calls += 1;
        b.failures += failed as u32;
        b.slow += slow as u32;
        let total = s.buckets.iter().fold(Bucket::default(), |a, b| Bucket {
            calls: a.calls + b.calls,
            failures: a.failures + b.failures,
            slow: a.slow + b.slow,
        });
        let cfg = &self.cfg;
        let enough = total.calls >= cfg.min_calls;
        let share = |n: u32| f64::from(n) / f64::from(total.calls.max(1));
        if (cfg.consecutive > 0 && s.consecutive >= cfg.consecutive)
            || (enough && cfg.rate.is_some_and(|r| share(total.failures) >= r))
            || (enough && cfg.slow.is_some_and(|(_, r)| share(total.slow) >= r))
        {
            self.trip(&mut s, now);
        }
    }

    pub(super) fn release_probe(&self) {
        let mut s = self.lock();
        if s.probing {
            s.probing = false;
            drop(s);
            self.changed.notify_waiters();
        }
    }
}

/// The half-open probe slot, held from `poll_ready` to the end of the call; given
/// back if unused.
pub(super) struct Permit<Res> {
    pub(super) breaker: Arc<Breaker<Res>>,
    pub(super) used: bool,
}

impl<Res> Drop for Permit<Res> {
    fn drop(&mut self) {
        if !self.used {
            self.breaker.release_probe();
        }
    }
}
