//! The state a balancer's handles and its background task share: the pool of
//! endpoints, the counters, the settings, and the channel on which handles give the
//! task endpoints to watch.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, Notify};
use tower::discover::Change;
use tower_service::Service;

use super::error::EndpointPanicked;
use super::limit::Limit;
use super::pick::{self, Ctx, Filter, Pick};
use super::pool::{maglev_table, swrr_sequence, Endpoint, Pool};
use crate::retry::Budget;
use crate::stats::{EndpointCell, EndpointState, StatsCell};
use crate::util::{drop_quietly, lock, panic_message};
use crate::BoxError;

/// Decides whether a response counts as a failure.
pub(super) type IsFailure<Res> = Arc<dyn Fn(&Res) -> bool + Send + Sync>;
/// The request's key for the consistent-hash pick.
pub(super) type HashKey<Req> = Arc<dyn Fn(&Req) -> Option<u64> + Send + Sync>;
/// A copy of a request for a retry, if it may be retried.
pub(super) type RetryCopy<Req> = Arc<dyn Fn(&Req) -> Option<Req> + Send + Sync>;

/// An endpoint for the background task to watch: a clone of its service to poll,
/// after an optional delay.
pub(super) struct Watch<K, S> {
    pub(super) ep: Arc<Endpoint<K, S>>,
    pub(super) svc: S,
    pub(super) delay: Option<Duration>,
}

pub(super) struct Master<K, S> {
    pub(super) endpoints: Vec<Arc<Endpoint<K, S>>>,
    /// Weights by key, kept for keys not inserted yet.
    pub(super) weights: HashMap<K, u32>,
    pub(super) next_id: u64,
}

pub(super) struct Shared<K, S, Req, Res> {
    pub(super) pool: ArcSwap<Pool<K, S>>,
    pub(super) master: Mutex<Master<K, S>>,
    /// Woken when an endpoint arrives or becomes ready.
    pub(super) changed: Arc<Notify>,
    pub(super) cursor: AtomicUsize,
    /// Endpoints in the ready state.
    pub(super) ready: AtomicUsize,
    /// Counts re-admissions: a pool snapshot whose ready lists were taken at another
    /// generation is out of date (it may lack an endpoint that became ready).
    pub(super) ready_gen: AtomicU64,
    pub(super) stats: Arc<StatsCell>,
    pub(super) watch: mpsc::UnboundedSender<Watch<K, S>>,
    pub(super) pick: Pick,
    pub(super) ready_timeout: Duration,
    pub(super) panic_threshold: u8,
    pub(super) slow_start_ns: u64,
    pub(super) backoff: (Duration, Duration),
    pub(super) tau_ns: f64,
    pub(super) idle_tau_ns: f64,
    pub(super) penalty_ns: f64,
    /// The latency-aware pick's largest learned limit per endpoint (0: no limits).
    pub(super) limit_max: f64,
    pub(super) bounded_load: Option<f64>,
    pub(super) hash_key: Option<HashKey<Req>>,
    pub(super) is_failure: IsFailure<Res>,
    pub(super) retry: Option<RetryCopy<Req>>,
    /// Calls one request may make in all.
    pub(super) max_attempts: u32,
    pub(super) budget: Budget,
}

// === impl Shared ===

impl<K, S, Req, Res> Shared<K, S, Req, Res>
where
    K: Hash + Eq + Clone + fmt::Debug,
    S: Clone,
{
    /// Publishes a new snapshot of the pool from `master`: the tables, the ready lists,
    /// the statistics' list; wakes the requests waiting for an endpoint.
    pub(super) fn rebuild(&self, master: &Master<K, S>) {
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
                        limit: Limit::new(self.limit_max, now),
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

    pub(super) fn retire(&self, ep: &Endpoint<K, S>) {
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
        crate::util::backoff(self.backoff.0, self.backoff.1, n, 0.25)
    }

    /// Hands an endpoint to the background task until it is ready again.
    pub(super) fn watch(&self, ep: Arc<Endpoint<K, S>>, svc: S, delay: Option<Duration>) {
        let _ = self.watch.send(Watch { ep, svc, delay });
    }

    pub(super) fn filter<'a>(&self, excluded: &'a [u64], pool: &Pool<K, S>) -> Filter<'a> {
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
    pub(super) fn another_allowed(&self, excluded: &[u64]) -> bool {
        let pool = self.pool.load();
        self.filter(excluded, &pool).any_allowed(&pool)
    }

    pub(super) fn choose(&self, key: Option<u64>, excluded: &[u64]) -> Option<Arc<Endpoint<K, S>>> {
        self.with_choice(key, excluded, Arc::clone)
    }

    /// Runs `f` on the chosen endpoint, without taking a reference count.
    pub(super) fn with_choice<R>(
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
            limits: self.limit_max > 0.0,
        };
        let filter = self.filter(excluded, &pool);
        pick::pick(self.pick, &pool, &ctx, &filter).map(f)
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
    pub(super) fn contain_panic(
        &self,
        ep: &Arc<Endpoint<K, S>>,
        during: &str,
        p: &(dyn Any + Send),
    ) {
        self.stats.endpoint_panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            endpoint = %ep.cell.name,
            panic = %panic_message(p),
            "endpoint's {during} panicked; set aside"
        );
        if ep.cell.leave_ready(EndpointState::SetAside) {
            self.ready.fetch_sub(1, Ordering::AcqRel);
            let n = ep.cell.failures.fetch_add(1, Ordering::Relaxed);
            let delay = self.backoff(n);
            self.watch(ep.clone(), ep.clone_service(), Some(delay));
        }
    }

    pub(super) fn panicked_in_call(
        &self,
        ep: &Arc<Endpoint<K, S>>,
        payload: Box<dyn Any + Send>,
    ) -> BoxError {
        self.contain_panic(ep, "call", &*payload);
        drop_quietly(payload);
        EndpointPanicked {
            endpoint: ep.cell.name.clone(),
        }
        .into()
    }
}
