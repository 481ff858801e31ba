//! The path of one request through the balancer: pick, `poll_ready`, call, record,
//! and a retry on another endpoint.

use std::fmt;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use futures_util::future::FutureExt;
use tokio::time::Instant;
use tower_service::Service;

use super::error::{NoHashKey, NoReadyEndpoints};
use super::shared::Shared;
use crate::stats::{EndpointCell, EndpointState};
use crate::util::drop_quietly;
use crate::BoxError;

/// Counts a request as waiting for an endpoint while it lives.
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a request in flight on an endpoint while it lives (also when cancelled).
struct InFlight<'a> {
    ep: &'a EndpointCell,
    all: &'a AtomicU64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.ep.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.all.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<K, S, Req> Shared<K, S, Req, S::Response>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    Req: Send + 'static,
{
    pub(super) async fn dispatch(self: Arc<Self>, mut req: Req) -> Result<S::Response, BoxError> {
        let key = match &self.hash_key {
            Some(f) => Some(f(&req).ok_or(NoHashKey)?),
            None => None,
        };
        // Endpoints this request will not pick: those whose call failed (`tried`, kept
        // for the request's life, so a retry goes elsewhere) and set-aside ones that
        // failed again when tried in panic mode (passed over only while they stay set
        // aside, so a waiting request takes one the moment it is re-admitted).
        let mut excluded: Vec<u64> = Vec::new();
        let mut tried: Vec<u64> = Vec::new();
        let mut started_waiting: Option<Instant> = None;
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            let ep = match self.choose(key, &excluded) {
                Some(ep) => ep,
                None => {
                    // Register for a change first, then look again, so no change
                    // between the two is missed.
                    let notified = self.changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if excluded.len() > tried.len() {
                        // Re-admitted (or gone) since it was passed over: no longer
                        // excluded. Checked after registering, so no re-admission is
                        // missed.
                        let pool = self.pool.load();
                        excluded.retain(|id| {
                            tried.contains(id)
                                || pool
                                    .endpoints
                                    .iter()
                                    .any(|e| e.cell.id == *id && e.cell.is_set_aside())
                        });
                    }
                    if let Some(ep) = self.choose(key, &excluded) {
                        ep
                    } else {
                        let since = *started_waiting.get_or_insert_with(Instant::now);
                        if waiting.is_none() {
                            self.stats.waiting.fetch_add(1, Ordering::Relaxed);
                            waiting = Some(Waiting(&self.stats.waiting));
                        }
                        let waited = since.elapsed();
                        if waited >= self.ready_timeout {
                            self.stats.no_ready.fetch_add(1, Ordering::Relaxed);
                            return Err(NoReadyEndpoints {
                                waited,
                                endpoints: self.pool.load().endpoints.len(),
                            }
                            .into());
                        }
                        match since.checked_add(self.ready_timeout) {
                            Some(deadline) => {
                                tokio::select! {
                                    _ = notified => {}
                                    _ = tokio::time::sleep_until(deadline) => {}
                                }
                            }
                            None => notified.await,
                        }
                        continue;
                    }
                }
            };
            let mut svc = ep.clone_service();
            match std::future::poll_fn(|cx| {
                Poll::Ready(std::panic::catch_unwind(AssertUnwindSafe(|| {
                    svc.poll_ready(cx)
                })))
            })
            .await
            {
                Err(p) => {
                    self.contain_panic(&ep, "poll_ready", &*p);
                    drop_quietly(p);
                    drop_quietly(svc);
                    if ep.cell.is_set_aside() {
                        excluded.push(ep.cell.id);
                    }
                    continue;
                }
                Ok(Poll::Ready(Ok(()))) => {}
                Ok(Poll::Ready(Err(e))) => {
                    let e: BoxError = e.into();
                    self.stats.ready_errors.fetch_add(1, Ordering::Relaxed);
                    if ep.cell.leave_ready(EndpointState::SetAside) {
                        self.ready.fetch_sub(1, Ordering::AcqRel);
                        let n = ep.cell.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(endpoint = %ep.cell.name, error = %e, "endpoint set aside");
                        let delay = self.backoff(n);
                        self.watch(ep.clone(), ep.clone_service(), Some(delay));
                    } else if ep.cell.is_set_aside() {
                        // Tried in panic mode and failed again: keep it aside.
                        excluded.push(ep.cell.id);
                    }
                    continue;
                }
                Ok(Poll::Pending) => {
                    if ep.cell.leave_ready(EndpointState::NotReady) {
                        self.ready.fetch_sub(1, Ordering::AcqRel);
                        tracing::debug!(endpoint = %ep.cell.name, "endpoint not ready");
                        self.watch(ep.clone(), svc, None);
                    } else if ep.cell.is_set_aside() {
                        // Not ready, tried in panic mode: pass it over while it stays
                        // aside. (Otherwise another request has just marked it not
                        // ready, and the picks skip it until it is re-admitted.)
                        excluded.push(ep.cell.id);
                    }
                    continue;
                }
            }
            drop(waiting.take());
            // A copy for a retry only if an attempt is left after this one (`tried`
            // holds the calls made before it).
            let retry_copy = match &self.retry {
                Some(copy) if tried.len() + 1 < self.max_attempts as usize => copy(&req),
                _ => None,
            };
            let start = Instant::now();
            let start_ns = self.stats.ns_at(start);
            self.stats.tick(start_ns);
            if excluded.is_empty() && self.retry.is_some() {
                self.budget.deposit(start);
            }
            ep.cell.in_flight.fetch_add(1, Ordering::Relaxed);
            self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let in_flight = InFlight {
                ep: &ep.cell,
                all: &self.stats.in_flight,
            };
            ep.cell.requests.fetch_add(1, Ordering::Relaxed);
            self.stats.count_request(start_ns);
            // The endpoint's code, caught: a panic in `call` or its future fails this
            // call (retried like a failure) and sets the endpoint aside.
            let result = match std::panic::catch_unwind(AssertUnwindSafe(|| svc.call(req))) {
                Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(r) => r.map_err(Into::into),
                    Err(p) => Err(self.panicked_in_call(&ep, p)),
                },
                Err(p) => Err(self.panicked_in_call(&ep, p)),
            };
            drop_quietly(svc);
            drop(in_flight);
            let end = Instant::now();
            let end_ns = self.stats.ns_at(end);
            self.stats.tick(end_ns);
            let elapsed = end.saturating_duration_since(start);
            let failed = match &result {
                Ok(res) => (self.is_failure)(res),
                Err(_) => true,
            };
            ep.cell.record_latency(elapsed);
            let mut rtt = elapsed.as_nanos() as f64;
            if failed {
                rtt = rtt.max(self.penalty_ns);
                ep.cell.errors.fetch_add(1, Ordering::Relaxed);
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            ep.cell.observe(rtt, end_ns, self.tau_ns, self.idle_tau_ns);
            if let (true, Some(next)) = (failed, retry_copy) {
                excluded.push(ep.cell.id);
                tried.push(ep.cell.id);
                if self.another_allowed(&excluded) {
                    if self.budget.withdraw(end) {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        req = next;
                        continue;
                    }
                    self.stats.retries_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            return result;
        }
    }
}
