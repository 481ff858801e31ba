//! The balancer handle, its shared state and the path of one request.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::FutureExt;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower_service::Service;

use super::driver::drop_quietly;
use super::pick::{self, Ctx, Filter, Pick};
use super::pool::{maglev_table, swrr_sequence, Endpoint, Pool};
use super::{
    driver, BalancerBuilder, BuildError, EndpointPanicked, HashKey, IsFailure, NoHashKey,
    NoReadyEndpoints, RetryCopy, ZeroWeight,
};
use crate::retry::Budget;
use crate::stats::{EndpointCell, EndpointState, LoadStats, StatsCell};
use crate::BoxError;

/// A load balancer over the endpoints of a `Discover` stream; see the
/// [module docs](crate::balance).
///
/// Cloning is cheap and shares everything: the endpoints, the counters, the pick's
/// state. A background task (spawned on the tokio runtime the balancer is built in)
/// follows discovery and watches endpoints that are not ready; it stops when the last
/// handle is dropped.
pub struct Balancer<K, S, Req>
where
    S: Service<Req>,
{
    shared: Arc<Shared<K, S, Req, S::Response>>,
    _driver: Arc<driver::Guard>,
}

impl<K, S: Service<Req>, Req> Clone for Balancer<K, S, Req> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _driver: self._driver.clone(),
        }
    }
}

impl<K: fmt::Debug, S: Service<Req>, Req> fmt::Debug for Balancer<K, S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = self.shared.pool.load();
        f.debug_struct("Balancer")
            .field("pick", &self.shared.pick)
            .field(
                "endpoints",
                &pool.endpoints.iter().map(|e| &e.key).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<Req, Res> BalancerBuilder<Req, Res> {
    /// Checks the settings and starts the balancer over `discover`, whose background
    /// task runs on the current tokio runtime.
    pub fn build<D>(self, discover: D) -> Result<Balancer<D::Key, D::Service, Req>, BuildError>
    where
        D: Discover + Send + 'static,
        D::Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
        D::Service: Service<Req, Response = Res> + Clone + Send + 'static,
        <D::Service as Service<Req>>::Error: Into<BoxError>,
        <D::Service as Service<Req>>::Future: Send,
        D::Error: Into<BoxError>,
        Req: Send + 'static,
        Res: Send + 'static,
    {
        self.check()?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError("build the balancer inside a tokio runtime: it spawns a task that follows discovery".into())
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ratio, floor, window) = self.budget;
        let shared = Arc::new(Shared {
            pool: ArcSwap::from_pointee(Pool::empty()),
            master: Mutex::new(Master {
                endpoints: Vec::new(),
                weights: HashMap::new(),
                next_id: 0,
            }),
            changed: Notify::new(),
            cursor: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            ready_gen: AtomicU64::new(0),
            stats: Arc::new(StatsCell::new()),
            watch: tx,
            pick: self.pick,
            ready_timeout: self.ready_timeout,
            panic_threshold: self.panic_threshold,
            slow_start_ns: duration_ns(self.slow_start),
            backoff: self.backoff,
            tau_ns: duration_ns(self.decay) as f64,
            idle_tau_ns: duration_ns(self.idle_decay) as f64,
            penalty_ns: duration_ns(self.failure_penalty) as f64,
            bounded_load: self.bounded_load,
            hash_key: self.hash_key,
            is_failure: self.is_failure,
            retry: self.retry,
            max_attempts: self.max_attempts,
            budget: Budget::new(ratio, floor, window),
        });
        let guard = driver::spawn::<D, Req>(&handle, Arc::downgrade(&shared), discover, rx);
        Ok(Balancer {
            shared,
            _driver: Arc::new(guard),
        })
    }
}

fn duration_ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

pub(super) struct Master<K, S> {
    endpoints: Vec<Arc<Endpoint<K, S>>>,
    /// Weights by key, kept for keys not inserted yet.
    weights: HashMap<K, u32>,
    next_id: u64,
}

pub(super) struct Shared<K, S, Req, Res> {
    pub(super) pool: ArcSwap<Pool<K, S>>,
    master: Mutex<Master<K, S>>,
    /// Woken when an endpoint arrives or becomes ready.
    pub(super) changed: Notify,
    cursor: AtomicUsize,
    /// Endpoints in the ready state.
    ready: AtomicUsize,
    /// Counts re-admissions: a pool snapshot whose ready lists were taken at another
    /// generation is out of date (it may lack an endpoint that became ready).
    ready_gen: AtomicU64,
    pub(super) stats: Arc<StatsCell>,
    watch: mpsc::UnboundedSender<driver::Watch<K, S>>,
    pick: Pick,
    ready_timeout: Duration,
    panic_threshold: u8,
    slow_start_ns: u64,
    backoff: (Duration, Duration),
    tau_ns: f64,
    idle_tau_ns: f64,
    penalty_ns: f64,
    bounded_load: Option<f64>,
    hash_key: Option<HashKey<Req>>,
    is_failure: IsFailure<Res>,
    retry: Option<RetryCopy<Req>>,
    /// Calls one request may make in all.
    max_attempts: u32,
    budget: Budget,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl Shared ===

impl<K, S, Req, Res> Shared<K, S, Req, Res>
where
    K: Hash + Eq + Clone + fmt::Debug,
    S: Clone,
{
    /// Publishes a new snapshot of the pool from `master`: the tables, the ready lists,
    /// the statistics' list; wakes the requests waiting for an endpoint.
    fn rebuild(&self, master: &Master<K, S>) {
        let endpoints: Arc<[Arc<Endpoint<K, S>>]> = Arc::from(master.endpoints.as_slice());
        let swrr = if self.pick == Pick::WeightedRoundRobin {
            let weights: Vec<u32> = endpoints
                .iter()
                .map(|e| e.cell.weight.load(Ordering::Relaxed))
                .collect();
            swrr_sequence(&weights)
        } else {
            Vec::new()
        };
        let maglev = if self.pick == Pick::ConsistentHash {
            let names: Vec<u64> = endpoints
                .iter()
                .map(|e| crate::hash::seeded(&e.key, 7))
                .collect();
            maglev_table(&names)
        } else {
            Vec::new()
        };
        self.stats
            .endpoints
            .store(Arc::new(endpoints.iter().map(|e| e.cell.clone()).collect()));
        // The generation first, the states after: a re-admission between the two
        // makes this snapshot out of date, never wrongly up to date.
        let ready_gen = self.ready_gen.load(Ordering::Acquire);
        self.pool.store(Arc::new(Pool::new(
            endpoints,
            Arc::from(swrr),
            Arc::from(maglev),
            ready_gen,
        )));
        self.changed.notify_waiters();
    }

    /// Takes the ready lists again (after endpoints changed state), keeping the
    /// endpoints and tables; wakes the requests waiting for an endpoint.
    pub(super) fn publish_ready(&self) {
        // Under the lock, so that a rebuild is never overwritten by an older pool.
        let _m = lock(&self.master);
        let ready_gen = self.ready_gen.load(Ordering::Acquire);
        let next = self.pool.load().with_ready_lists(ready_gen);
        self.pool.store(Arc::new(next));
        self.changed.notify_waiters();
    }

    /// Applies a burst of discovery changes, in order, with one rebuild.
    pub(super) fn apply(&self, changes: Vec<Change<K, S>>) {
        if changes.is_empty() {
            return;
        }
        // The new endpoints' names first: a key's `Debug` is the user's code, and a
        // panic there must find the pool as it was.
        let names: Vec<Option<String>> = changes
            .iter()
            .map(|c| match c {
                Change::Insert(key, _) => Some(format!("{key:?}")),
                Change::Remove(_) => None,
            })
            .collect();
        let mut m = lock(&self.master);
        // A new endpoint's latency starts at the pool's median, so it neither attracts
        // every request nor starves.
        let mut known: Vec<f64> = m
            .endpoints
            .iter()
            .map(|e| e.cell.raw_ewma_ns())
            .filter(|&x| x > 0.0)
            .collect();
        known.sort_by(f64::total_cmp);
        let median = known.get(known.len() / 2).copied().unwrap_or(0.0);
        let mut at: HashMap<K, usize> = m
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), i))
            .collect();
        let mut gone = vec![false; m.endpoints.len()];
        let now = self.stats.now_ns();
        for (change, name) in changes.into_iter().zip(names) {
            match change {
                Change::Insert(key, service) => {
                    if let Some(pos) = at.remove(&key) {
                        // Discovery replaced the endpoint under this key.
                        self.retire(&m.endpoints[pos]);
                        gone[pos] = true;
                    }
                    let weight = m.weights.get(&key).copied().unwrap_or(1);
                    let id = m.next_id;
                    m.next_id += 1;
                    let name = name.unwrap_or_default();
                    let cell = EndpointCell::new(id, name, weight, median, now);
                    let (removed, _) = tokio::sync::watch::channel(false);
                    at.insert(key.clone(), m.endpoints.len());
                    gone.push(false);
                    m.endpoints.push(Arc::new(Endpoint {
                        key,
                        service: Mutex::new(service),
                        cell: Arc::new(cell),
                        removed,
                    }));
                    self.ready.fetch_add(1, Ordering::AcqRel);
                }
                Change::Remove(key) => {
                    if let Some(pos) = at.remove(&key) {
                        self.retire(&m.endpoints[pos]);
                        gone[pos] = true;
                    }
                }
            }
        }
        if gone.iter().any(|&g| g) {
            let mut i = 0;
            m.endpoints.retain(|_| {
                let keep = !gone[i];
                i += 1;
                keep
            });
        }
        self.rebuild(&m);
    }

    fn retire(&self, ep: &Endpoint<K, S>) {
        if ep.cell.remove() {
            self.ready.fetch_sub(1, Ordering::AcqRel);
        }
        // `send_replace`, not `send`: the value must change even before a watch subscribes.
        ep.removed.send_replace(true);
    }

    /// A watched endpoint's `poll_ready` succeeded. The ready lists are out of date
    /// from here until the caller publishes them again ([`publish_ready`](Self::publish_ready),
    /// which wakes the waiting requests); the picks scan meanwhile.
    pub(super) fn readmit(&self, ep: &Endpoint<K, S>) {
        // The generation before the state: whoever sees the endpoint ready sees the
        // lists out of date. And after it: lists taken meanwhile (by a weight change on
        // another thread), which may have missed it, are out of date too.
        self.ready_gen.fetch_add(1, Ordering::AcqRel);
        if ep.cell.become_ready(self.stats.now_ns()) {
            ep.cell.failures.store(0, Ordering::Relaxed);
            self.ready.fetch_add(1, Ordering::AcqRel);
        }
        self.ready_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// The wait before probing an endpoint again after its `n`th failure in a row:
    /// `min x 2^n`, at most `max`, less up to a quarter at random.
    pub(super) fn backoff(&self, n: u32) -> Duration {
        crate::hash::backoff(self.backoff.0, self.backoff.1, n, 0.25)
    }

    /// Hands an endpoint to the background task until it is ready again.
    fn watch(&self, ep: Arc<Endpoint<K, S>>, svc: S, delay: Option<Duration>) {
        let _ = self.watch.send(driver::Watch { ep, svc, delay });
    }

    fn filter<'a>(&self, excluded: &'a [u64], pool: &Pool<K, S>) -> Filter<'a> {
        let pool_len = pool.endpoints.len();
        let ready = self.ready.load(Ordering::Relaxed);
        Filter {
            excluded,
            panic: self.panic_threshold > 0
                && ready * 100 < usize::from(self.panic_threshold) * pool_len,
            now: if self.slow_start_ns > 0 || self.pick == Pick::LatencyAware {
                self.stats.coarse_ns()
            } else {
                0
            },
            slow_start: self.slow_start_ns,
            all_allowed: excluded.is_empty() && ready == pool_len,
            fresh: pool.ready_gen == self.ready_gen.load(Ordering::Acquire),
        }
    }

    /// Whether some endpoint is allowed besides the excluded ones (without taking a
    /// round-robin turn).
    fn another_allowed(&self, excluded: &[u64]) -> bool {
        let pool = self.pool.load();
        self.filter(excluded, &pool).any_allowed(&pool)
    }

    fn choose(&self, key: Option<u64>, excluded: &[u64]) -> Option<Arc<Endpoint<K, S>>> {
        self.with_choice(key, excluded, Arc::clone)
    }

    /// Runs `f` on the chosen endpoint, without taking a reference count.
    fn with_choice<R>(
        &self,
        key: Option<u64>,
        excluded: &[u64],
        f: impl FnOnce(&Arc<Endpoint<K, S>>) -> R,
    ) -> Option<R> {
        let pool = self.pool.load();
        let ctx = Ctx {
            cursor: &self.cursor,
            key,
            bounded_load: self.bounded_load,
            total_in_flight: if self.bounded_load.is_some() {
                self.stats.in_flight.load(Ordering::Relaxed)
            } else {
                0
            },
            idle_tau_ns: self.idle_tau_ns,
        };
        let filter = self.filter(excluded, &pool);
        pick::pick(self.pick, &pool, &ctx, &filter).map(f)
    }
}

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
    /// Counts and logs a caught panic of `ep`'s service, and sets it aside (probed
    /// again after a backoff) if it was ready.
    fn contain_panic(&self, ep: &Arc<Endpoint<K, S>>, during: &str, p: &(dyn Any + Send)) {
        self.stats.endpoint_panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            endpoint = %ep.cell.name,
            panic = %driver::panic_message(p),
            "endpoint's {during} panicked; set aside"
        );
        if ep.cell.leave_ready(EndpointState::SetAside) {
            self.ready.fetch_sub(1, Ordering::AcqRel);
            let n = ep.cell.failures.fetch_add(1, Ordering::Relaxed);
            let delay = self.backoff(n);
            self.watch(ep.clone(), ep.clone_service(), Some(delay));
        }
    }

    fn panicked_in_call(&self, ep: &Arc<Endpoint<K, S>>, payload: Box<dyn Any + Send>) -> BoxError {
        self.contain_panic(ep, "call", &*payload);
        drop_quietly(payload);
        EndpointPanicked {
            endpoint: ep.cell.name.clone(),
        }
        .into()
    }

    async fn dispatch(self: Arc<Self>, mut req: Req) -> Result<S::Response, BoxError> {
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

// === impl Balancer ===

impl<K, S, Req> Balancer<K, S, Req>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    Req: Send + 'static,
{
    /// The load statistics handle.
    pub fn stats(&self) -> LoadStats {
        LoadStats {
            cell: self.shared.stats.clone(),
        }
    }

    /// Sets an endpoint's weight (for [`Pick::WeightedRoundRobin`],
    /// [`Pick::LeastConnections`] and [`Pick::LatencyAware`]); for a key not
    /// discovered yet, the weight waits for it.
    pub fn set_weight(&self, key: &K, weight: u32) -> Result<(), ZeroWeight> {
        if weight == 0 {
            return Err(ZeroWeight);
        }
        let mut m = lock(&self.shared.master);
        m.weights.insert(key.clone(), weight);
        if let Some(ep) = m.endpoints.iter().find(|e| &e.key == key) {
            ep.cell.weight.store(weight, Ordering::Relaxed);
            if self.shared.pick == Pick::WeightedRoundRobin {
                self.shared.rebuild(&m);
            }
        }
        Ok(())
    }

    /// The endpoint a request would be sent to now, if any is ready (the pick only:
    /// nothing is sent, though round robin's turn advances).
    pub fn pick(&self, req: &Req) -> Option<K> {
        let key = match &self.shared.hash_key {
            Some(f) => Some(f(req)?),
            None => None,
        };
        self.shared.with_choice(key, &[], |e| e.key.clone())
    }

    /// The count of ready endpoints the picks and the panic threshold go by (kept as
    /// endpoints change state, not recounted). Not part of the API: tests check that
    /// it agrees with [`endpoints`](Self::endpoints) once the balancer is quiet.
    #[doc(hidden)]
    pub fn ready_count(&self) -> usize {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// The keys of the endpoints it holds, with their state.
    pub fn endpoints(&self) -> Vec<(K, EndpointState)> {
        self.shared
            .pool
            .load()
            .endpoints
            .iter()
            .map(|e| (e.key.clone(), e.cell.state()))
            .collect()
    }
}

impl<K, S, Req> Service<Req> for Balancer<K, S, Req>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    /// Always ready: a request waits for a ready endpoint in its response future.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        Box::pin(self.shared.clone().dispatch(req))
    }
}
