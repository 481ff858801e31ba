//! A circuit breaker per endpoint: closed, open, half-open.
//!
//! Wrap each endpoint service (for instance in the constructor a discovery source
//! calls) so a failing endpoint stops receiving requests for a while instead of failing
//! them all:
//!
//! - **Closed**: requests pass; the breaker trips on `consecutive_failures` failures in
//!   a row, on a failure rate over a sliding window (once it holds `min_calls` calls),
//!   or on a slow-call rate.
//! - **Open**: for `open_for`, doubling on each trip that follows a failed probe up to
//!   `max_open_for`, less up to a fifth at random (so a fleet's breakers do not probe
//!   in step). `poll_ready` either fails at once with [`BreakerOpen`]
//!   ([`WhenOpen::Fail`], the default) or pends until half-open ([`WhenOpen::Wait`]:
//!   behind a [`Balancer`](crate::Balancer), the endpoint is then skipped as not ready
//!   and comes back by itself).
//! - **Half-open**: one probe at a time; its success closes the breaker, its failure
//!   opens it again.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt};
//! use tower_balance_ext::breaker::{BreakerState, CircuitBreakerLayer};
//!
//! let layer = CircuitBreakerLayer::builder()
//!     .consecutive_failures(3)
//!     .open_for(Duration::from_secs(5), Duration::from_secs(60))
//!     .on_state_change(|from, to| println!("breaker: {from:?} -> {to:?}"))
//!     .build()
//!     .unwrap();
//! let svc = layer.layer(tower::service_fn(|x: u32| async move {
//!     Err::<u32, _>(std::io::Error::other("down"))
//! }));
//! let handle = svc.handle();
//! for _ in 0..3 {
//!     let _ = svc.clone().oneshot(1).await;
//! }
//! assert_eq!(handle.state(), BreakerState::Open);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::BoxError;

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
    /// Fails at once with [`BreakerOpen`].
    Fail,
    /// Pends until the breaker is half-open and this caller may probe.
    Wait,
}

type StateHook = Arc<dyn Fn(BreakerState, BreakerState) + Send + Sync>;
type FailureIf<Res> = Arc<dyn Fn(&Res) -> bool + Send + Sync>;

struct Config<Res> {
    consecutive: u32,
    rate: Option<f64>,
    slow: Option<(Duration, f64)>,
    window: Duration,
    min_calls: u32,
    open_for: (Duration, Duration),
    when_open: WhenOpen,
    failure_if: FailureIf<Res>,
    on_change: Option<StateHook>,
}

/// The settings of a [`CircuitBreakerLayer`], checked by [`build`](Self::build).
pub struct CircuitBreakerBuilder<Res> {
    cfg: Config<Res>,
}

impl<Res> fmt::Debug for CircuitBreakerBuilder<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.cfg;
        f.debug_struct("CircuitBreakerBuilder")
            .field("consecutive_failures", &c.consecutive)
            .field("failure_rate", &c.rate)
            .field("slow_calls", &c.slow)
            .field("window", &c.window)
            .field("min_calls", &c.min_calls)
            .field("open_for", &c.open_for)
            .field("when_open", &c.when_open)
            .finish_non_exhaustive()
    }
}

impl<Res> CircuitBreakerBuilder<Res> {
    /// Trips after this many failures in a row (default 5; 0 turns it off).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.cfg.consecutive = n;
        self
    }

    /// Trips when at least this share of the window's calls failed (default 0.5; from
    /// above 0 to 1), once the window holds `min_calls` calls.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.cfg.rate = Some(rate);
        self
    }

    /// No failure-rate trip.
    pub fn no_failure_rate(mut self) -> Self {
        self.cfg.rate = None;
        self
    }

    /// Trips when at least `rate` of the window's calls took longer than `slower_than`
    /// (default off).
    pub fn slow_calls(mut self, slower_than: Duration, rate: f64) -> Self {
        self.cfg.slow = Some((slower_than, rate));
        self
    }

    /// The sliding window the rates are counted over (default 10 s), and the calls it
    /// must hold before a rate can trip it (default 20).
    pub fn window(mut self, window: Duration, min_calls: u32) -> Self {
        self.cfg.window = window;
        self.cfg.min_calls = min_calls;
        self
    }

    /// How long it stays open: `first` after a trip, doubling after each failed probe
    /// up to `max` (defaults 5 s and 60 s), less up to a fifth at random.
    pub fn open_for(mut self, first: Duration, max: Duration) -> Self {
        self.cfg.open_for = (first, max);
        self
    }

    /// What `poll_ready` does while open (default [`WhenOpen::Fail`]).
    pub fn when_open(mut self, mode: WhenOpen) -> Self {
        self.cfg.when_open = mode;
        self
    }

    /// Which responses count as failures, besides errors (default: none).
    pub fn failure_if<F>(mut self, f: F) -> Self
    where
        F: Fn(&Res) -> bool + Send + Sync + 'static,
    {
        self.cfg.failure_if = Arc::new(f);
        self
    }

    /// Called on every state change, with the old and the new state.
    pub fn on_state_change<F>(mut self, f: F) -> Self
    where
        F: Fn(BreakerState, BreakerState) + Send + Sync + 'static,
    {
        self.cfg.on_change = Some(Arc::new(f));
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<CircuitBreakerLayer<Res>, crate::BuildError> {
        let c = &self.cfg;
        let err = |m: String| Err(crate::BuildError(m));
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if let Some(r) = c.rate {
            if !rate_ok(r) {
                return err(format!(
                    "failure_rate({r}): give a share above 0 and at most 1, or call no_failure_rate()"
                ));
            }
        }
        if let Some((d, r)) = c.slow {
            if !rate_ok(r) {
                return err(format!(
                    "slow_calls rate {r}: give a share above 0 and at most 1"
                ));
            }
            if d.is_zero() {
                return err("slow_calls threshold is zero: every call would be slow".into());
            }
        }
        if (c.rate.is_some() || c.slow.is_some()) && (c.window.is_zero() || c.min_calls == 0) {
            return err(format!(
                "window({:?}, {}): give a window above zero and at least 1 call",
                c.window, c.min_calls
            ));
        }
        if c.consecutive == 0 && c.rate.is_none() && c.slow.is_none() {
            return err(
                "the breaker can never trip: give consecutive_failures, failure_rate or slow_calls"
                    .into(),
            );
        }
        let (first, max) = c.open_for;
        if first.is_zero() || first > max {
            return err(format!(
                "open_for({first:?}, {max:?}): give a first open time above zero and not above the maximum"
            ));
        }
        Ok(CircuitBreakerLayer {
            cfg: Arc::new(self.cfg),
        })
    }
}

impl<B> CircuitBreakerBuilder<http::Response<B>> {
    /// The HTTP default: 5xx responses count as failures (besides transport errors).
    pub fn http(self) -> Self {
        self.failure_if(|r: &http::Response<B>| r.status().is_server_error())
    }
}

/// Wraps each service it layers in its own [`CircuitBreaker`]. Cloning shares the
/// settings, not the state: every layered endpoint trips on its own.
pub struct CircuitBreakerLayer<Res> {
    cfg: Arc<Config<Res>>,
}

impl<Res> Clone for CircuitBreakerLayer<Res> {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
        }
    }
}

impl<Res> fmt::Debug for CircuitBreakerLayer<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .finish_non_exhaustive()
    }
}

impl<Res> CircuitBreakerLayer<Res> {
    /// Settings with their defaults: 5 failures in a row or half of at least 20 calls
    /// over 10 s trip it; open for 5 s, doubling up to 60 s; fail fast while open.
    /// The same as [`CircuitBreakerBuilder::new`].
    pub fn builder() -> CircuitBreakerBuilder<Res> {
        CircuitBreakerBuilder::new()
    }
}

impl<Res> CircuitBreakerBuilder<Res> {
    /// Settings with their defaults: 5 failures in a row or half of at least 20 calls
    /// over 10 s trip it; open for 5 s, doubling up to 60 s; fail fast while open.
    pub fn new() -> Self {
        Self {
            cfg: Config {
                consecutive: 5,
                rate: Some(0.5),
                slow: None,
                window: Duration::from_secs(10),
                min_calls: 20,
                open_for: (Duration::from_secs(5), Duration::from_secs(60)),
                when_open: WhenOpen::Fail,
                failure_if: Arc::new(|_| false),
                on_change: None,
            },
        }
    }
}

impl<Res> Default for CircuitBreakerBuilder<Res> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, Res> Layer<S> for CircuitBreakerLayer<Res> {
    type Service = CircuitBreaker<S, Res>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: Arc::new(Breaker {
                cfg: self.cfg.clone(),
                state: Mutex::new(Inner::new()),
                changed: Arc::new(Notify::new()),
                counters: Counters::default(),
            }),
            permit: None,
            sleep: None,
            wait: None,
        }
    }
}

// === the shared state ===

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    calls: u32,
    failures: u32,
    slow: u32,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    open_until: Instant,
    probing: bool,
    /// Trips since the breaker last closed (the open time's exponent).
    trips: u32,
    consecutive: u32,
    buckets: [Bucket; BUCKETS],
    bucket: usize,
    bucket_start: Instant,
}

impl Inner {
    fn new() -> Self {
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
struct Counters {
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
    rejected: AtomicU64,
    trips: AtomicU64,
}

struct Breaker<Res> {
    cfg: Arc<Config<Res>>,
    state: Mutex<Inner>,
    /// Woken when the breaker closes or a probe slot frees.
    changed: Arc<Notify>,
    counters: Counters,
}

impl<Res> Breaker<Res> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::util::lock(&self.state)
    }

    fn set(&self, s: &mut Inner, to: BreakerState) {
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

    fn trip(&self, s: &mut Inner, now: Instant) {
        let (first, max) = self.cfg.open_for;
        let d = crate::util::backoff(first, max, s.trips, 0.2);
        s.open_until = crate::util::deadline_after(now, d);
        s.trips = s.trips.saturating_add(1);
        s.probing = false;
        self.counters.trips.fetch_add(1, Ordering::Relaxed);
        self.set(s, BreakerState::Open);
    }

    fn rotate(&self, s: &mut Inner, now: Instant) {
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
    fn record(&self, failed: bool, elapsed: Duration, probe: bool) {
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

    fn release_probe(&self) {
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
struct Permit<Res> {
    breaker: Arc<Breaker<Res>>,
    used: bool,
}

impl<Res> Drop for Permit<Res> {
    fn drop(&mut self) {
        if !self.used {
            self.breaker.release_probe();
        }
    }
}

// === the service ===

/// A service behind a circuit breaker; see the [module docs](self).
///
/// Clones share the breaker (they are the same endpoint); a clone's half-open probe
/// permit is its own.
pub struct CircuitBreaker<S, Res> {
    inner: S,
    breaker: Arc<Breaker<Res>>,
    permit: Option<Permit<Res>>,
    sleep: Option<Pin<Box<Sleep>>>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<S: Clone, Res> Clone for CircuitBreaker<S, Res> {
    fn clone(&self) -> Self {
        // Not the permit, the timer or the wait: they belong to this handle's caller.
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            permit: None,
            sleep: None,
            wait: None,
        }
    }
}

impl<S: fmt::Debug, Res> fmt::Debug for CircuitBreaker<S, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("state", &self.breaker.lock().state)
            .finish()
    }
}

/// A handle on a breaker's state and counters: cheap to clone.
pub struct BreakerHandle<Res> {
    breaker: Arc<Breaker<Res>>,
}

impl<Res> Clone for BreakerHandle<Res> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
        }
    }
}

impl<Res> fmt::Debug for BreakerHandle<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BreakerHandle").field(&self.state()).finish()
    }
}

/// A breaker's counters, from [`BreakerHandle::stats`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BreakerStats {
    /// The state now (an open breaker past its time reads as half-open).
    pub state: BreakerState,
    /// Calls that finished.
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which slower than the slow-call threshold.
    pub slow: u64,
    /// `poll_ready` calls refused while open or while another probe ran.
    pub rejected: u64,
    /// Times it opened.
    pub trips: u64,
}

impl<Res> BreakerHandle<Res> {
    /// The state now.
    pub fn state(&self) -> BreakerState {
        let s = self.breaker.lock();
        match s.state {
            BreakerState::Open if Instant::now() >= s.open_until => BreakerState::HalfOpen,
            other => other,
        }
    }

    /// The counters.
    pub fn stats(&self) -> BreakerStats {
        let c = &self.breaker.counters;
        BreakerStats {
            state: self.state(),
            calls: c.calls.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            slow: c.slow.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            trips: c.trips.load(Ordering::Relaxed),
        }
    }
}

impl<S, Res> CircuitBreaker<S, Res> {
    /// A handle on this breaker's state and counters.
    pub fn handle(&self) -> BreakerHandle<Res> {
        BreakerHandle {
            breaker: self.breaker.clone(),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The breaker is open (or half-open with its probe taken): the request was not sent.
#[derive(Debug, Clone)]
pub struct BreakerOpen {
    retry_after: Duration,
}

impl BreakerOpen {
    /// How long until it lets a probe through.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `503 Service Unavailable`, for HTTP (with a `Retry-After` of
    /// [`retry_after`](Self::retry_after)).
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::SERVICE_UNAVAILABLE
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker open; retry after {:?}",
            self.retry_after
        )
    }
}

impl std::error::Error for BreakerOpen {}

impl<S, Req, Res> Service<Req> for CircuitBreaker<S, Res>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
    Res: 'static,
{
    type Response = Res;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, Res>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            if self.permit.is_some() {
                return self.inner.poll_ready(cx).map_err(Into::into);
            }
            let now = Instant::now();
            let mut s = self.breaker.lock();
            let refuse = match s.state {
                BreakerState::Closed => {
                    drop(s);
                    self.sleep = None;
                    self.wait = None;
                    return self.inner.poll_ready(cx).map_err(Into::into);
                }
                BreakerState::Open if now >= s.open_until => {
                    self.breaker.set(&mut s, BreakerState::HalfOpen);
                    continue;
                }
                BreakerState::Open => Some(s.open_until),
                BreakerState::HalfOpen if !s.probing => {
                    s.probing = true;
                    drop(s);
                    self.permit = Some(Permit {
                        breaker: self.breaker.clone(),
                        used: false,
                    });
                    continue;
                }
                BreakerState::HalfOpen => None,
            };
            drop(s);
            if self.breaker.cfg.when_open == WhenOpen::Fail {
                self.breaker
                    .counters
                    .rejected
                    .fetch_add(1, Ordering::Relaxed);
                let retry_after =
                    refuse.map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
                return Poll::Ready(Err(BreakerOpen { retry_after }.into()));
            }
            // Wait mode: until the open time ends, or until the probe finishes.
            match refuse {
                Some(until) => {
                    let sleep = self
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                    if sleep.deadline() != until {
                        sleep.as_mut().reset(until);
                    }
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.sleep = None;
                }
                None => {
                    if self.wait.is_none() {
                        let changed = self.breaker.changed.clone();
                        let breaker = self.breaker.clone();
                        self.wait = Some(Box::pin(async move {
                            let n = changed.notified();
                            tokio::pin!(n);
                            n.as_mut().enable();
                            let busy = {
                                let s = breaker.lock();
                                s.state == BreakerState::HalfOpen && s.probing
                            };
                            if busy {
                                n.await;
                            }
                        }));
                    }
                    if let Some(w) = self.wait.as_mut() {
                        if w.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    self.wait = None;
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let mut permit = self.permit.take();
        if let Some(p) = permit.as_mut() {
            p.used = true;
        }
        ResponseFuture {
            inner: self.inner.call(req),
            breaker: Some(self.breaker.clone()),
            permit,
            start: Instant::now(),
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`].
    pub struct ResponseFuture<F, Res> {
        #[pin]
        inner: F,
        breaker: Option<Arc<Breaker<Res>>>,
        permit: Option<Permit<Res>>,
        start: Instant,
    }

    impl<F, Res> PinnedDrop for ResponseFuture<F, Res> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before it finished: a probe's slot is given back.
            let this = this.project();
            if let (Some(b), Some(_)) = (this.breaker.as_ref(), this.permit.as_ref()) {
                b.release_probe();
            }
        }
    }
}

impl<F, Res> fmt::Debug for ResponseFuture<F, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, Res, E> Future for ResponseFuture<F, Res>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx)).map_err(Into::into);
        if let Some(b) = this.breaker.take() {
            let failed = match &result {
                Ok(r) => (b.cfg.failure_if)(r),
                Err(_) => true,
            };
            let probe = this.permit.take().is_some();
            b.record(failed, this.start.elapsed(), probe);
        }
        Poll::Ready(result)
    }
}
