//! The balancer's response future: the path of one request, from the pick through
//! `poll_ready` and the call to the statistics, and a retry on another endpoint.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::error::{NoHashKey, NoReadyEndpoints};
use super::pool::Endpoint;
use super::shared::Shared;
use crate::stats::EndpointState;
use crate::util::drop_quietly;
use crate::BoxError;

pin_project! {
    /// The response future of a [`Balancer`](super::Balancer): waits (up to the
    /// balancer's `ready_timeout`) for a ready endpoint, calls it, records the
    /// outcome, and retries on another endpoint when the balancer's settings allow.
    ///
    /// Dropping it cancels the request: the endpoint's future is dropped and the
    /// request leaves the balancer's in-flight and waiting counts.
    pub struct ResponseFuture<K, S, Req>
    where
        S: Service<Req>,
    {
        shared: Arc<Shared<K, S, Req, S::Response>>,
        // The request, until it is sent; a copy for a retry after that.
        req: Option<Req>,
        // The consistent-hash pick's key.
        key: Option<u64>,
        // Endpoints this request will not pick: those whose call failed (also in
        // `tried`, kept for the request's life, so a retry goes elsewhere) and
        // set-aside ones that failed again when tried in panic mode (passed over only
        // while they stay set aside, so a waiting request takes one the moment it is
        // re-admitted).
        excluded: Vec<u64>,
        tried: Vec<u64>,
        started_waiting: Option<Instant>,
        // Whether the request counts in the balancer's waiting requests.
        waiting: bool,
        // The deadline of a wait, kept for the next wait of the same request.
        sleep: Option<Pin<Box<Sleep>>>,
        #[pin]
        state: State<K, S, S::Future, Req>,
    }

    impl<K, S, Req> PinnedDrop for ResponseFuture<K, S, Req>
    where
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.waiting {
                this.shared.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            if let StateProj::Call { ep, .. } = this.state.project() {
                // Cancelled while in flight.
                ep.cell.in_flight.fetch_sub(1, Ordering::Relaxed);
                this.shared.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<K, S, F, Req> {
        // About to pick an endpoint.
        Pick,
        // No endpoint allowed: registered for a change of the pool (`armed` once the
        // pool was looked at again after registering), or for the wait's deadline.
        // Boxed (only requests that wait pay for it), so that the future is `Unpin`
        // when the endpoint's future is.
        Wait {
            notified: Pin<Box<OwnedNotified>>,
            armed: bool,
        },
        // The endpoint's future, counted in flight until it ends.
        Call {
            #[pin]
            fut: F,
            ep: Arc<Endpoint<K, S>>,
            svc: Option<S>,
            retry_copy: Option<Req>,
            start: Instant,
        },
        // Failed before any endpoint was picked.
        Failed { error: Option<BoxError> },
        Done,
    }
}

impl<K, S, Req> ResponseFuture<K, S, Req>
where
    S: Service<Req>,
{
    pub(super) fn new(shared: Arc<Shared<K, S, Req, S::Response>>, req: Req) -> Self {
        let (key, state) = match &shared.hash_key {
            Some(f) => match f(&req) {
                Some(key) => (Some(key), State::Pick),
                None => (
                    None,
                    State::Failed {
                        error: Some(NoHashKey.into()),
                    },
                ),
            },
            None => (None, State::Pick),
        };
        Self {
            shared,
            req: Some(req),
            key,
            excluded: Vec::new(),
            tried: Vec::new(),
            started_waiting: None,
            waiting: false,
            sleep: None,
            state,
        }
    }
}

impl<K, S, Req> fmt::Debug for ResponseFuture<K, S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Pick => "pick",
            State::Wait { .. } => "waiting for an endpoint",
            State::Call { .. } => "in flight",
            State::Failed { .. } => "failed",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("tried", &self.tried.len())
            .finish_non_exhaustive()
    }
}

impl<K, S, Req> Future for ResponseFuture<K, S, Req>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    Req: Send + 'static,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = &**this.shared;
        loop {
            let ep = match this.state.as_mut().project() {
                StateProj::Pick => match shared.choose(*this.key, this.excluded) {
                    Some(ep) => ep,
                    None => {
                        let notified = Box::pin(shared.changed.clone().notified_owned());
                        this.state.set(State::Wait {
                            notified,
                            armed: false,
                        });
                        continue;
                    }
                },
                StateProj::Wait { notified, armed } => {
                    if *armed {
                        let changed = notified.as_mut().poll(cx).is_ready();
                        let timed_out = match this.sleep {
                            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
                            None => false,
                        };
                        if !(changed || timed_out) {
                            return Poll::Pending;
                        }
                        this.state.set(State::Pick);
                        continue;
                    }
                    // Registered for a change first, then look again, so no change
                    // between the two is missed.
                    *armed = true;
                    notified.as_mut().enable();
                    if this.excluded.len() > this.tried.len() {
                        // Re-admitted (or gone) since it was passed over: no longer
                        // excluded. Checked after registering, so no re-admission is
                        // missed.
                        let pool = shared.pool.load();
                        let tried = &*this.tried;
                        this.excluded.retain(|id| {
                            tried.contains(id)
                                || pool
                                    .endpoints
                                    .iter()
                                    .any(|e| e.cell.id == *id && e.cell.is_set_aside())
                        });
                    }
                    if let Some(ep) = shared.choose(*this.key, this.excluded) {
                        this.state.set(State::Pick);
                        ep
                    } else {
                        let since = *this.started_waiting.get_or_insert_with(Instant::now);
                        if !*this.waiting {
                            shared.stats.waiting.fetch_add(1, Ordering::Relaxed);
                            *this.waiting = true;
                        }
                        let waited = since.elapsed();
                        if waited >= shared.ready_timeout {
                            shared.stats.no_ready.fetch_add(1, Ordering::Relaxed);
                            shared.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                            *this.waiting = false;
                            this.state.set(State::Done);
                            return Poll::Ready(Err(NoReadyEndpoints {
                                waited,
                                endpoints: shared.pool.load().endpoints.len(),
                            }
                            .into()));
                        }
                        match (since.checked_add(shared.ready_timeout), &mut *this.sleep) {
                            (Some(deadline), Some(sleep)) => sleep.as_mut().reset(deadline),
                            (Some(deadline), none) => {
                                *none = Some(Box::pin(tokio::time::sleep_until(deadline)))
                            }
                            (None, sleep) => *sleep = None,
                        }
                        continue;
                    }
                }
                StateProj::Call {
                    fut,
                    ep,
                    svc,
                    retry_copy,
                    start,
                } => {
                    // The endpoint's code, caught: a panic in its future fails this
                    // call (retried like a failure) and sets the endpoint aside.
                    let result = match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(r)) => r.map_err(Into::into),
                        Err(p) => Err(shared.panicked_in_call(ep, p)),
                    };
                    let ep = ep.clone();
                    let svc = svc.take();
                    let retry_copy = retry_copy.take();
                    let start = *start;
                    // Out of the call state first, so the drop does not count the
                    // request out of flight a second time.
                    this.state.set(State::Done);
                    drop_quietly(svc);
                    match finish(
                        shared,
                        this.excluded,
                        this.tried,
                        &ep,
                        retry_copy,
                        start,
                        result,
                    ) {
                        Ok(output) => return Poll::Ready(output),
                        Err(next) => {
                            *this.req = Some(next);
                            this.state.set(State::Pick);
                            continue;
                        }
                    }
                }
                StateProj::Failed { error } => {
                    let error = error.take();
                    this.state.set(State::Done);
                    match error {
                        Some(e) => return Poll::Ready(Err(e)),
                        None => panic!("balancer ResponseFuture polled after completion"),
                    }
                }
                StateProj::Done => panic!("balancer ResponseFuture polled after completion"),
            };

            // An endpoint was picked: its `poll_ready`, once, caught.
            let mut svc = ep.clone_service();
            match std::panic::catch_unwind(AssertUnwindSafe(|| svc.poll_ready(cx))) {
                Err(p) => {
                    shared.contain_panic(&ep, "poll_ready", &*p);
                    drop_quietly(p);
                    drop_quietly(svc);
                    if ep.cell.is_set_aside() {
                        this.excluded.push(ep.cell.id);
                    }
                    continue;
                }
                Ok(Poll::Ready(Ok(()))) => {}
                Ok(Poll::Ready(Err(e))) => {
                    let e: BoxError = e.into();
                    shared.stats.ready_errors.fetch_add(1, Ordering::Relaxed);
                    if ep.cell.leave_ready(EndpointState::SetAside) {
                        shared.ready.fetch_sub(1, Ordering::AcqRel);
                        let n = ep.cell.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(endpoint = %ep.cell.name, error = %e, "endpoint set aside");
                        let delay = shared.backoff(n);
                        shared.watch(ep.clone(), ep.clone_service(), Some(delay));
                    } else if ep.cell.is_set_aside() {
                        // Tried in panic mode and failed again: keep it aside.
                        this.excluded.push(ep.cell.id);
                    }
                    continue;
                }
                Ok(Poll::Pending) => {
                    if ep.cell.leave_ready(EndpointState::NotReady) {
                        shared.ready.fetch_sub(1, Ordering::AcqRel);
                        tracing::debug!(endpoint = %ep.cell.name, "endpoint not ready");
                        shared.watch(ep.clone(), svc, None);
                    } else if ep.cell.is_set_aside() {
                        // Not ready, tried in panic mode: pass it over while it stays
                        // aside. (Otherwise another request has just marked it not
                        // ready, and the picks skip it until it is re-admitted.)
                        this.excluded.push(ep.cell.id);
                    }
                    continue;
                }
            }

            // Ready: the request is sent.
            if *this.waiting {
                shared.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                *this.waiting = false;
            }
            let Some(req) = this.req.take() else {
                panic!("balancer ResponseFuture polled after completion");
            };
            // A copy for a retry only if an attempt is left after this one (`tried`
            // holds the calls made before it).
            let retry_copy = match &shared.retry {
                Some(copy) if this.tried.len() + 1 < shared.max_attempts as usize => copy(&req),
                _ => None,
            };
            let start = Instant::now();
            let start_ns = shared.stats.ns_at(start);
            shared.stats.tick(start_ns);
            if this.excluded.is_empty() && shared.retry.is_some() {
                shared.budget.deposit(start);
            }
            ep.cell.in_flight.fetch_add(1, Ordering::Relaxed);
            shared.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            ep.cell.requests.fetch_add(1, Ordering::Relaxed);
            shared.stats.count_request(start_ns);
            match std::panic::catch_unwind(AssertUnwindSafe(|| svc.call(req))) {
                Ok(fut) => this.state.set(State::Call {
                    fut,
                    ep,
                    svc: Some(svc),
                    retry_copy,
                    start,
                }),
                Err(p) => {
                    // A panic in `call`: as one in its future.
                    let result = Err(shared.panicked_in_call(&ep, p));
                    drop_quietly(svc);
                    match finish(
                        shared,
                        this.excluded,
                        this.tried,
                        &ep,
                        retry_copy,
                        start,
                        result,
                    ) {
                        Ok(output) => {
                            this.state.set(State::Done);
                            return Poll::Ready(output);
                        }
                        Err(next) => *this.req = Some(next),
                    }
                }
            }
        }
    }
}

/// Counts the end of a call on `ep` (out of flight, latency, failure) and decides on a
/// retry: `Err` with the request to send again, or `Ok` with the answer.
#[allow(clippy::too_many_arguments)]
fn finish<K, S, Req>(
    shared: &Shared<K, S, Req, S::Response>,
    excluded: &mut Vec<u64>,
    tried: &mut Vec<u64>,
    ep: &Endpoint<K, S>,
    retry_copy: Option<Req>,
    start: Instant,
    result: Result<S::Response, BoxError>,
) -> Result<Result<S::Response, BoxError>, Req>
where
    K: Hash + Eq + Clone + fmt::Debug,
    S: Service<Req> + Clone,
{
    let in_flight = ep.cell.in_flight.fetch_sub(1, Ordering::Relaxed);
    shared.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    let end = Instant::now();
    let end_ns = shared.stats.ns_at(end);
    shared.stats.tick(end_ns);
    let elapsed = end.saturating_duration_since(start);
    let failed = match &result {
        Ok(res) => (shared.is_failure)(res),
        Err(_) => true,
    };
    ep.cell.record_latency(elapsed);
    let mut rtt = elapsed.as_nanos() as f64;
    if failed {
        rtt = rtt.max(shared.penalty_ns);
        ep.cell.errors.fetch_add(1, Ordering::Relaxed);
        shared.stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    ep.cell
        .observe(rtt, end_ns, shared.tau_ns, shared.idle_tau_ns);
    if shared.limit_max > 0.0 {
        let rtt_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let peak = ep.cell.raw_ewma_ns();
        ep.limit
            .observe(rtt_ns, in_flight, failed, end_ns, shared.limit_max, peak);
    }
    if let (true, Some(next)) = (failed, retry_copy) {
        excluded.push(ep.cell.id);
        tried.push(ep.cell.id);
        if shared.another_allowed(excluded) {
            if shared.budget.withdraw(end) {
                shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                return Err(next);
            }
            shared.stats.retries_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower_service::Service;

    use crate::{discover, BalancerBuilder, Pick};

    fn is_send_and_unpin<T: Send + Unpin>(_: &T) {}

    #[tokio::test]
    async fn response_future_is_send_and_unpin_and_answers() {
        let endpoint = tower::service_fn(|x: u32| std::future::ready(Ok::<_, Infallible>(x + 1)));
        let balancer = BalancerBuilder::new(Pick::RoundRobin)
            .build(discover::fixed([(1u8, endpoint)]))
            .unwrap();
        let fut: super::ResponseFuture<_, _, u32> = balancer.clone().call(41);
        is_send_and_unpin(&fut);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), fut)
            .await
            .expect("answers in time")
            .unwrap();
        assert_eq!(answer, 42);
    }
}
