//! Load statistics: what each endpoint and the whole balancer carry now.
//!
//! Every [`Balancer`](crate::Balancer) keeps cheap counters (atomics, and an
//! `hdrhistogram` per endpoint for latency) and hands out a [`LoadStats`] handle that is
//! cheap to clone and to read from any thread; `tower-autoscale` reads it as a load
//! source.
//!
//! ```
//! # async fn demo() {
//! use tower::discover::ServiceList;
//! use tower_balance_ext::{BalancerBuilder, Pick};
//!
//! let svc = tower::service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) });
//! let balancer = BalancerBuilder::new(Pick::RoundRobin)
//!     .build(ServiceList::new(vec![svc.clone(), svc]))
//!     .unwrap();
//! let stats = balancer.stats();
//! let snap = stats.snapshot();
//! println!("{} requests in flight over {} endpoints", snap.in_flight, snap.endpoints.len());
//! # }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::util::lock;

const READY: u8 = 0;
const NOT_READY: u8 = 1;
const SET_ASIDE: u8 = 2;
const REMOVED: u8 = 3;

/// Where an endpoint stands with the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointState {
    /// Takes traffic.
    Ready,
    /// Its `poll_ready` pends (starting, unhealthy, draining, or a breaker open in
    /// pending mode): skipped until it is ready again.
    NotReady,
    /// Its `poll_ready` failed: set aside, probed again after a backoff.
    SetAside,
    /// Removed by discovery; requests already sent to it finish.
    Removed,
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds from 1 to an hour, 2 significant digits; the bounds are valid, so
    // this cannot fail, but never panic: fall back to an auto-resizing one.
    Histogram::new_with_bounds(1, 3_600_000_000, 2)
        .or_else(|_| Histogram::new(2))
        .unwrap_or_else(|_| unreachable_histogram())
}

#[cold]
fn unreachable_histogram() -> Histogram<u64> {
    // `Histogram::new(2)` only fails for more than 5 significant digits.
    Histogram::new(1).expect("one significant digit is always valid")
}

/// `exp(-x)` for `x >= 0`. A pick computes it for every endpoint it weighs, and `x` is
/// mostly tiny (milliseconds since the last answer over a time constant of seconds):
/// there, three terms of its series (error under x^3 / 6, below 2e-7) instead of the
/// hundred-odd instructions of `exp`.
#[inline]
fn decay(x: f64) -> f64 {
    if x < 0.01 {
        1.0 - x + 0.5 * x * x
    } else {
        (-x).exp()
    }
}

/// One endpoint's live numbers, shared by the pool, the requests and the stats handle.
#[derive(Debug)]
pub(crate) struct EndpointCell {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) in_flight: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) weight: AtomicU32,
    status: AtomicU8,
    /// Consecutive `poll_ready` failures: the backoff's exponent.
    pub(crate) failures: AtomicU32,
    /// f64 bits: the peak-EWMA latency estimate, in nanoseconds.
    ewma_ns: AtomicU64,
    /// Nanoseconds since the clock's base when `ewma_ns` was last set.
    ewma_at: AtomicU64,
    /// Nanoseconds since the clock's base when it last became ready (slow start).
    pub(crate) ramp_from: AtomicU64,
    pub(crate) removed: AtomicBool,
    hist: Mutex<Histogram<u64>>,
}

impl EndpointCell {
    pub(crate) fn new(id: u64, name: String, weight: u32, initial_ewma_ns: f64, now: u64) -> Self {
        Self {
            id,
            name,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            weight: AtomicU32::new(weight.max(1)),
            status: AtomicU8::new(READY),
            failures: AtomicU32::new(0),
            ewma_ns: AtomicU64::new(initial_ewma_ns.to_bits()),
            ewma_at: AtomicU64::new(now),
            ramp_from: AtomicU64::new(now),
            removed: AtomicBool::new(false),
            hist: Mutex::new(new_histogram()),
        }
    }

    pub(crate) fn state(&self) -> EndpointState {
        match self.status.load(Ordering::Acquire) {
            READY => EndpointState::Ready,
            NOT_READY => EndpointState::NotReady,
            SET_ASIDE => EndpointState::SetAside,
            _ => EndpointState::Removed,
        }
    }

    #[inline]
    pub(crate) fn is_ready(&self) -> bool {
        self.status.load(Ordering::Relaxed) == READY
    }

    #[inline]
    pub(crate) fn is_set_aside(&self) -> bool {
        self.status.load(Ordering::Relaxed) == SET_ASIDE
    }

    /// Ready to not ready or set aside; true if this call made the change (and so owns
    /// the watch that will bring it back).
    pub(crate) fn leave_ready(&self, to: EndpointState) -> bool {
        let to = match to {
            EndpointState::NotReady => NOT_READY,
            EndpointState::SetAside => SET_ASIDE,
            _ => return false,
        };
        self.status
            .compare_exchange(READY, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Back to ready; true if it was not ready or set aside.
    pub(crate) fn become_ready(&self, now: u64) -> bool {
        let prev = self.status.load(Ordering::Acquire);
        if prev == READY || prev == REMOVED {
            return false;
        }
        if self
            .status
            .compare_exchange(prev, READY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.ramp_from.store(now, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// From not ready to set aside (a watched endpoint's `poll_ready` failed).
    pub(crate) fn set_aside_from_not_ready(&self) {
        let _ =
            self.status
                .compare_exchange(NOT_READY, SET_ASIDE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Marks it removed; returns whether it was ready.
    pub(crate) fn remove(&self) -> bool {
        self.removed.store(true, Ordering::Release);
        self.status.swap(REMOVED, Ordering::AcqRel) == READY
    }

    /// The latency estimate at `now`, decaying toward zero while no sample arrives:
    /// exponentially, by `exp(-idle / tau)` (tower's PeakEwma decays the same way), so
    /// an endpoint `k` times slower than the others at its last answer is tried again
    /// after about `tau x ln k` without requests (3 time constants for 20x).
    #[inline]
    pub(crate) fn latency_ns(&self, now: u64, tau_ns: f64) -> f64 {
        let est = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let at = self.ewma_at.load(Ordering::Relaxed);
        let idle = now.saturating_sub(at) as f64;
        est * decay(idle / tau_ns)
    }

    /// A completed request's latency: the peak-EWMA update from the estimate as it had
    /// decayed while idle (`idle_tau_ns`). A sample above it replaces it at once; below
    /// it, it pulls the estimate down with weight `1 - exp(-elapsed / tau)`.
    pub(crate) fn observe(&self, rtt_ns: f64, now: u64, tau_ns: f64, idle_tau_ns: f64) {
        let prev = self.latency_ns(now, idle_tau_ns);
        let at = self.ewma_at.swap(now, Ordering::Relaxed);
        let next = if rtt_ns > prev {
            rtt_ns
        } else {
            let elapsed = now.saturating_sub(at) as f64;
            let d = decay(elapsed / tau_ns);
            prev * d + rtt_ns * (1.0 - d)
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn raw_ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Ordering::Relaxed))
    }

    pub(crate) fn record_latency(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        lock(&self.hist).saturating_record(us.max(1));
    }

    fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        lock(&self.hist).reset();
    }
}

/// Requests counted per second over the last ten seconds, lock-free.
#[derive(Debug)]
struct Rate {
    /// Per slot: (second << 40) | count.
    slots: [AtomicU64; 10],
}

const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

impl Rate {
    fn new() -> Self {
        Self {
            slots: Default::default(),
        }
    }

    fn add(&self, sec: u64) {
        let slot = &self.slots[(sec % 10) as usize];
        let tag = (sec & 0xff_ffff) << COUNT_BITS;
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let next = if cur & !COUNT_MASK == tag {
                cur + (cur & COUNT_MASK < COUNT_MASK) as u64
            } else {
                tag | 1
            };
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(v) => cur = v,
            }
        }
    }

    /// Requests per second over the last complete seconds (up to nine).
    fn per_second(&self, now_sec: u64, since_sec: u64) -> f64 {
        let span = now_sec.saturating_sub(since_sec).min(9);
        if span == 0 {
            return 0.0;
        }
        let mut total = 0;
        for back in 1..=span {
            let sec = now_sec - back;
            let v = self.slots[(sec % 10) as usize].load(Ordering::Relaxed);
            if v >> COUNT_BITS == sec & 0xff_ffff {
                total += v & COUNT_MASK;
            }
        }
        total as f64 / span as f64
    }

    fn reset(&self) {
        for s in &self.slots {
            s.store(0, Ordering::Relaxed);
        }
    }
}

/// What the stats handle and the balancer share.
#[derive(Debug)]
pub(crate) struct StatsCell {
    pub(crate) base: Instant,
    pub(crate) endpoints: ArcSwap<Vec<Arc<EndpointCell>>>,
    pub(crate) in_flight: AtomicU64,
    pub(crate) waiting: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) retries_refused: AtomicU64,
    pub(crate) no_ready: AtomicU64,
    pub(crate) ready_errors: AtomicU64,
    pub(crate) discovery_errors: AtomicU64,
    pub(crate) endpoint_panics: AtomicU64,
    pub(crate) driver_restarts: AtomicU64,
    rate: Rate,
    /// Seconds since base at the last reset.
    reset_at: AtomicU64,
    /// A coarse clock, nanoseconds since base: the latest request start or end seen.
    /// The picks read it instead of the system clock.
    clock_ns: AtomicU64,
}

impl StatsCell {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            in_flight: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retries_refused: AtomicU64::new(0),
            no_ready: AtomicU64::new(0),
            ready_errors: AtomicU64::new(0),
            discovery_errors: AtomicU64::new(0),
            endpoint_panics: AtomicU64::new(0),
            driver_restarts: AtomicU64::new(0),
            rate: Rate::new(),
            reset_at: AtomicU64::new(0),
            clock_ns: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the base (tokio's clock, so paused time applies).
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        crate::util::saturating_ns(Instant::now().saturating_duration_since(self.base))
    }

    /// Nanoseconds from the base to `t`.
    #[inline]
    pub(crate) fn ns_at(&self, t: Instant) -> u64 {
        crate::util::saturating_ns(t.saturating_duration_since(self.base))
    }

    /// Moves the coarse clock forward to `ns`.
    #[inline]
    pub(crate) fn tick(&self, ns: u64) {
        if self.clock_ns.load(Ordering::Relaxed) < ns {
            self.clock_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// The coarse clock: as recent as the latest request.
    #[inline]
    pub(crate) fn coarse_ns(&self) -> u64 {
        self.clock_ns.load(Ordering::Relaxed)
    }

    pub(crate) fn count_request(&self, now_ns: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.rate.add(now_ns / 1_000_000_000);
    }
}

/// A handle on a balancer's load: cheap to clone and to read from any thread.
#[derive(Debug, Clone)]
pub struct LoadStats {
    pub(crate) cell: Arc<StatsCell>,
}

/// One endpoint's load, from [`LoadStats::snapshot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointLoad {
    /// The endpoint's discovery key, as `Debug` prints it.
    pub name: String,
    /// Requests sent to it since the start or the last [`LoadStats::reset`].
    pub requests: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Responses classified as failures, and errors.
    pub errors: u64,
    /// The peak-EWMA latency estimate the latency-aware pick uses.
    pub ewma: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Its share of the requests, from 0 to 1.
    pub share: f64,
    /// Where it stands.
    pub state: EndpointState,
    /// Its weight.
    pub weight: u32,
}

/// The whole balancer's load, from [`LoadStats::snapshot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadSnapshot {
    /// Per endpoint, in discovery order.
    pub endpoints: Vec<EndpointLoad>,
    /// Endpoints taking traffic.
    pub ready_endpoints: usize,
    /// Requests in flight on any endpoint.
    pub in_flight: u64,
    /// Requests waiting for an endpoint to become ready.
    pub waiting: u64,
    /// Requests since the start or the last reset (retries included).
    pub requests: u64,
    /// Requests per second over the last complete seconds (up to nine).
    pub throughput: f64,
    /// Failures over requests since the start or the last reset, from 0 to 1.
    pub error_rate: f64,
    /// The 99th percentile latency over every endpoint.
    pub p99: Duration,
    /// Retries sent to another endpoint.
    pub retries: u64,
    /// Retries the budget refused.
    pub retries_refused: u64,
    /// Requests that failed with `NoReadyEndpoints`.
    pub no_ready_endpoints: u64,
    /// `poll_ready` errors of endpoints (each set one aside).
    pub ready_errors: u64,
    /// Errors the discovery stream yielded (the endpoints known were kept).
    pub discovery_errors: u64,
    /// Panics of endpoint services (in `poll_ready`, `call` or the response future)
    /// that the balancer caught: each set its endpoint aside, as a `poll_ready` error
    /// does. Not zeroed by [`LoadStats::reset`].
    pub endpoint_panics: u64,
    /// Times the background task that follows discovery panicked (in the discovery
    /// stream, or in an endpoint key's `Debug`) and was started again. Not zeroed by
    /// [`LoadStats::reset`].
    pub driver_restarts: u64,
}

impl LoadStats {
    /// The numbers now.
    pub fn snapshot(&self) -> LoadSnapshot {
        let c = &self.cell;
        let eps = c.endpoints.load();
        let now = c.now_ns();
        let total: u64 = eps.iter().map(|e| e.requests.load(Ordering::Relaxed)).sum();
        let mut merged = new_histogram();
        let endpoints: Vec<EndpointLoad> = eps
            .iter()
            .map(|e| {
                let (p50, p99) = {
                    let h = lock(&e.hist);
                    let _ = merged.add(&*h);
                    if h.is_empty() {
                        (0, 0)
                    } else {
                        (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
                    }
                };
                let requests = e.requests.load(Ordering::Relaxed);
                EndpointLoad {
                    name: e.name.clone(),
                    requests,
                    in_flight: e.in_flight.load(Ordering::Relaxed),
                    errors: e.errors.load(Ordering::Relaxed),
                    ewma: Duration::from_nanos(e.raw_ewma_ns() as u64),
                    p50: Duration::from_micros(p50),
                    p99: Duration::from_micros(p99),
                    share: if total == 0 {
                        0.0
                    } else {
                        requests as f64 / total as f64
                    },
                    state: e.state(),
                    weight: e.weight.load(Ordering::Relaxed),
                }
            })
            .collect();
        let requests = c.requests.load(Ordering::Relaxed);
        let errors = c.errors.load(Ordering::Relaxed);
        LoadSnapshot {
            ready_endpoints: endpoints
                .iter()
                .filter(|e| e.state == EndpointState::Ready)
                .count(),
            endpoints,
            in_flight: c.in_flight.load(Ordering::Relaxed),
            waiting: c.waiting.load(Ordering::Relaxed),
            requests,
            throughput: c
                .rate
                .per_second(now / 1_000_000_000, c.reset_at.load(Ordering::Relaxed)),
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p99: Duration::from_micros(if merged.is_empty() {
                0
            } else {
                merged.value_at_quantile(0.99)
            }),
            retries: c.retries.load(Ordering::Relaxed),
            retries_refused: c.retries_refused.load(Ordering::Relaxed),
            no_ready_endpoints: c.no_ready.load(Ordering::Relaxed),
            ready_errors: c.ready_errors.load(Ordering::Relaxed),
            discovery_errors: c.discovery_errors.load(Ordering::Relaxed),
            endpoint_panics: c.endpoint_panics.load(Ordering::Relaxed),
            driver_restarts: c.driver_restarts.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the request, error and latency counters, so
    /// shares and rates start again; in-flight counts and latency estimates stay.
    pub fn reset(&self) {
        let c = &self.cell;
        for e in c.endpoints.load().iter() {
            e.reset();
        }
        c.requests.store(0, Ordering::Relaxed);
        c.errors.store(0, Ordering::Relaxed);
        c.retries.store(0, Ordering::Relaxed);
        c.retries_refused.store(0, Ordering::Relaxed);
        c.no_ready.store(0, Ordering::Relaxed);
        c.ready_errors.store(0, Ordering::Relaxed);
        c.rate.reset();
        c.reset_at
            .store(c.now_ns() / 1_000_000_000, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decay_is_exp_of_minus_x() {
        for x in [
            0.0,
            1e-9,
            1e-4,
            0.005,
            0.00999,
            0.01,
            0.5,
            3.0,
            50.0,
            f64::INFINITY,
        ] {
            let want = (-x).exp();
            let got = super::decay(x);
            assert!(
                (got - want).abs() <= 2e-7 * want.max(1e-300),
                "{x}: {got} vs {want}"
            );
        }
    }
}
