//! The service behind a breaker, and a handle on the breaker's state.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::error::BreakerOpen;
use super::future::ResponseFuture;
use super::state::{Breaker, BreakerState, Permit, WhenOpen};
use crate::BoxError;

/// A service behind a circuit breaker; see the [module docs](super).
///
/// Clones share the breaker (they are the same endpoint); a clone's half-open probe
/// permit is its own.
pub struct CircuitBreaker<S, Res> {
    pub(super) inner: S,
    pub(super) breaker: Arc<Breaker<Res>>,
    pub(super) permit: Option<Permit<Res>>,
    pub(super) sleep: Option<Pin<Box<Sleep>>>,
    pub(super) wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
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
    pub(super) breaker: Arc<Breaker<Res>>,
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
        ResponseFuture::new(self.inner.call(req), self.breaker.clone(), permit)
    }
}
