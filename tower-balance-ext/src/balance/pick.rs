//! The pick algorithms: each chooses one endpoint of a pool snapshot, among those a
//! filter allows, without locks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::pool::{Endpoint, Pool};
use crate::stats::EndpointCell;
use crate::util::random;

/// How a [`Balancer`](crate::Balancer) chooses an endpoint, fixed when it is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pick {
    /// Each ready endpoint in turn.
    RoundRobin,
    /// The endpoint with the fewest requests in flight per unit of weight: an exact scan
    /// for pools of up to 16, power of two choices above.
    LeastConnections,
    /// nginx's smooth weighted round robin: over every run of (sum of weights) picks,
    /// each endpoint gets exactly its weight, spread out rather than in bursts. Weights
    /// change at runtime with [`Balancer::set_weight`](crate::Balancer::set_weight).
    WeightedRoundRobin,
    /// Sticky by a request key ([`BalancerBuilder::hash_key`](crate::BalancerBuilder::hash_key))
    /// over a Maglev table: the same key goes to the same endpoint while it is ready;
    /// when it is not, to the next endpoint of that key's own order; when one of N
    /// endpoints leaves, about 1/N of the keys move. With
    /// [`bounded_load`](crate::BalancerBuilder::bounded_load), an endpoint above that
    /// factor of the mean load passes keys on the same way.
    ConsistentHash,
    /// The endpoint of least expected latency, where failures count as slow: a full
    /// scan for pools of up to 16 (best-of-two sends a sixth of the requests to the
    /// slow pair when two of four are slow, and one in 45 to the two slowest of ten),
    /// power of two choices above.
    ///
    /// With the learned limits (the default; see
    /// [`learned_limit`](crate::BalancerBuilder::learned_limit)), an endpoint's cost is
    /// latency x (1 + in-flight / limit), where the limit is the concurrency it serves
    /// without slowing down, learned from its latency, and latency is the geometric
    /// mean of its peak-EWMA estimate and its latency without a queue (the lowest over
    /// the last second or two). Without them, peak-EWMA latency x (in-flight + 1), as
    /// Finagle, linkerd and tower weigh it.
    LatencyAware,
}

/// The filter a pick applies.
pub(crate) struct Filter<'a> {
    /// Endpoints this request already tried (retries go elsewhere).
    pub(crate) excluded: &'a [u64],
    /// Below the panic threshold, endpoints set aside after errors are tried too.
    pub(crate) panic: bool,
    /// Nanoseconds since the clock's base.
    pub(crate) now: u64,
    /// The slow-start window, in nanoseconds (0: off).
    pub(crate) slow_start: u64,
    /// Every endpoint is ready and none is excluded (the fast path of round robin).
    pub(crate) all_allowed: bool,
    /// The pool's ready lists are up to date: every allowed endpoint is in the one
    /// [`candidates`](Filter::candidates) gives, so the picks draw from it alone.
    pub(crate) fresh: bool,
}

impl Filter<'_> {
    #[inline]
    pub(crate) fn allows(&self, c: &EndpointCell) -> bool {
        #[cfg(test)]
        tests::CHECKS.with(|n| n.set(n.get() + 1));
        (c.is_ready() || (self.panic && c.is_set_aside()))
            && (self.excluded.is_empty() || !self.excluded.contains(&c.id))
    }

    /// The endpoints a pick may draw from when the lists are fresh: the ready ones, or
    /// in panic mode those ready or set aside (each still to be checked).
    #[inline]
    pub(crate) fn candidates<'p, K, S>(&self, pool: &'p Pool<K, S>) -> &'p [u32] {
        if self.panic {
            &pool.usable
        } else {
            &pool.ready
        }
    }

    /// Whether some endpoint of the pool is allowed: from the candidates when they
    /// are fresh (a few checks), by a scan otherwise.
    pub(crate) fn any_allowed<K, S>(&self, pool: &Pool<K, S>) -> bool {
        if self.fresh {
            self.candidates(pool)
                .iter()
                .any(|&i| self.allows(&pool.endpoints[i as usize].cell))
        } else {
            pool.endpoints.iter().any(|e| self.allows(&e.cell))
        }
    }

    /// The slow-start factor in (0, 1]: a new or recovered endpoint ramps up from a
    /// tenth of its share to all of it over the window.
    #[inline]
    fn ramp(&self, c: &EndpointCell) -> f64 {
        if self.slow_start == 0 {
            return 1.0;
        }
        let age = self.now.saturating_sub(c.ramp_from.load(Ordering::Relaxed));
        if age >= self.slow_start {
            1.0
        } else {
            (age as f64 / self.slow_start as f64).max(0.1)
        }
    }

    /// Whether a ramping endpoint takes this pick (with probability its factor).
    #[inline]
    fn ramp_accepts(&self, c: &EndpointCell) -> bool {
        let f = self.ramp(c);
        f >= 1.0 || (random() >> 11) as f64 / (1u64 << 53) as f64 <= f
    }
}

/// What a pick needs besides the pool.
pub(crate) struct Ctx<'a> {
    pub(crate) cursor: &'a AtomicUsize,
    pub(crate) key: Option<u64>,
    pub(crate) bounded_load: Option<f64>,
    pub(crate) total_in_flight: u64,
    pub(crate) idle_tau_ns: f64,
    /// The latency-aware pick weighs in-flight requests against learned limits.
    pub(crate) limits: bool,
}

pub(crate) fn pick<'p, K, S>(
    how: Pick,
    pool: &'p Pool<K, S>,
    ctx: &Ctx<'_>,
    f: &Filter<'_>,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let eps = &pool.endpoints;
    if eps.is_empty() {
        return None;
    }
    match how {
        Pick::RoundRobin => rotate(pool, ctx.cursor, f),
        Pick::WeightedRoundRobin => weighted(pool, ctx.cursor, f),
        Pick::LeastConnections => {
            let cost = |e: &Endpoint<K, S>| {
                let c = &e.cell;
                c.in_flight.load(Ordering::Relaxed) as f64
                    / f64::from(c.weight.load(Ordering::Relaxed).max(1))
            };
            if eps.len() <= 16 {
                scan(eps, ctx.cursor, f, cost)
            } else {
                two_choices(pool, f, cost)
            }
        }
        Pick::LatencyAware => {
            let cost = |e: &Endpoint<K, S>| {
                let c = &e.cell;
                let lat = c.latency_ns(f.now, ctx.idle_tau_ns).max(1.0);
                let in_flight = c.in_flight.load(Ordering::Relaxed) as f64;
                let (lat, load) = if ctx.limits {
                    (
                        lat * e.limit.toward_no_queue(),
                        1.0 + in_flight / e.limit.get(),
                    )
                } else {
                    (lat, in_flight + 1.0)
                };
                lat * load / f64::from(c.weight.load(Ordering::Relaxed).max(1)) / f.ramp(c)
            };
            if eps.len() <= 16 {
                scan(eps, ctx.cursor, f, cost)
            } else {
                two_choices(pool, f, cost)
            }
        }
        Pick::ConsistentHash => consistent(pool, ctx, f),
    }
}

/// Round robin over the allowed endpoints: the turn counts among those allowed, so an
/// endpoint that is skipped does not hand its share to its neighbour alone. With fresh
/// ready lists, the k-th candidate is found at once; otherwise by a scan.
fn rotate<'p, K, S>(
    pool: &'p Pool<K, S>,
    cursor: &AtomicUsize,
    f: &Filter<'_>,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let eps = &pool.endpoints;
    let n = eps.len();
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    if f.all_allowed {
        let first = &eps[start % n];
        if f.ramp_accepts(&first.cell) {
            return Some(first);
        }
    }
    if f.fresh {
        return rotate_over(eps, f.candidates(pool), start, f);
    }
    let allowed = eps.iter().filter(|e| f.allows(&e.cell)).count();
    if allowed == 0 {
        return None;
    }
    let k = start % allowed;
    let mut fallback = None;
    let mut seen = 0;
    // From the k-th allowed endpoint on, the first a ramp accepts.
    for ep in eps.iter() {
        if !f.allows(&ep.cell) {
            continue;
        }
        seen += 1;
        if seen <= k {
            fallback.get_or_insert(ep);
            continue;
        }
        if f.ramp_accepts(&ep.cell) {
            return Some(ep);
        }
        fallback.get_or_insert(ep);
    }
    fallback
}

/// From the candidate at `start` on (round), the first allowed one a ramp accepts; the
/// first allowed one if the ramps refuse them all.
fn rotate_over<'p, K, S>(
    eps: &'p [Arc<Endpoint<K, S>>],
    candidates: &[u32],
    start: usize,
    f: &Filter<'_>,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let len = candidates.len();
    if len == 0 {
        return None;
    }
    let k = start % len;
    let mut fallback = None;
    for i in 0..len {
        let j = if k + i >= len { k + i - len } else { k + i };
        let ep = &eps[candidates[j] as usize];
        if !f.allows(&ep.cell) {
            continue;
        }
        if f.ramp_accepts(&ep.cell) {
            return Some(ep);
        }
        fallback.get_or_insert(ep);
    }
    fallback
}

/// Steps of the smooth weighted sequence a pick walks past endpoints that are not
/// allowed before it takes the next candidate in turn instead (when many endpoints
/// left the ready state since the lists were taken, or in panic mode; the others then
/// share equally until the lists are taken again).
const WEIGHTED_WALK: usize = 64;

fn weighted<'p, K, S>(
    pool: &'p Pool<K, S>,
    cursor: &AtomicUsize,
    f: &Filter<'_>,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    // Fresh lists: the sequence over the ready endpoints (in panic mode, the whole
    // one, as set-aside endpoints may be picked too).
    let seq = if f.fresh && !f.panic {
        &pool.swrr_ready
    } else {
        &pool.swrr
    };
    if seq.is_empty() {
        return rotate(pool, cursor, f);
    }
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    let mut fallback = None;
    // Every endpoint appears in the sequence; after a full period, none is allowed.
    let walk = if f.fresh {
        seq.len().min(WEIGHTED_WALK)
    } else {
        seq.len()
    };
    for i in 0..walk {
        let idx = seq[start.wrapping_add(i) % seq.len()] as usize;
        let ep = pool.endpoints.get(idx)?;
        if f.allows(&ep.cell) {
            if f.ramp_accepts(&ep.cell) {
                return Some(ep);
            }
            fallback.get_or_insert(ep);
        }
    }
    if fallback.is_none() && walk < seq.len() {
        return rotate_over(&pool.endpoints, f.candidates(pool), start, f);
    }
    fallback
}

/// The allowed endpoint of least cost, scanning from a rotating start so that ties
/// are spread.
fn scan<'p, K, S>(
    eps: &'p [Arc<Endpoint<K, S>>],
    cursor: &AtomicUsize,
    f: &Filter<'_>,
    cost: impl Fn(&Endpoint<K, S>) -> f64,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let n = eps.len();
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    let mut best: Option<(&Arc<Endpoint<K, S>>, f64)> = None;
    for i in 0..n {
        let ep = &eps[start.wrapping_add(i) % n];
        if !f.allows(&ep.cell) {
            continue;
        }
        let c = cost(ep);
        if best.is_none_or(|(_, b)| c < b) {
            best = Some((ep, c));
        }
    }
    best.map(|(ep, _)| ep)
}

/// Power of two choices: two distinct random allowed endpoints, the cheaper wins. The
/// draws are from the fresh candidates (else from all endpoints); a scan of those when
/// the draws keep landing on endpoints that are not allowed.
fn two_choices<'p, K, S>(
    pool: &'p Pool<K, S>,
    f: &Filter<'_>,
    cost: impl Fn(&Endpoint<K, S>) -> f64,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let eps = &pool.endpoints;
    let candidates = f.fresh.then(|| f.candidates(pool));
    let n = match candidates {
        Some(c) => c.len() as u64,
        None => eps.len() as u64,
    };
    if n == 0 {
        return None;
    }
    let nth = |i: u64| match candidates {
        Some(c) => &eps[c[i as usize] as usize],
        None => &eps[i as usize],
    };
    let mut chosen: [Option<&Arc<Endpoint<K, S>>>; 2] = [None, None];
    let mut found = 0;
    for _ in 0..8 {
        let ep = nth(random() % n);
        if !f.allows(&ep.cell) || chosen[0].is_some_and(|c| Arc::ptr_eq(c, ep)) {
            continue;
        }
        chosen[found] = Some(ep);
        found += 1;
        if found == 2 {
            break;
        }
    }
    match chosen {
        [Some(a), Some(b)] => Some(if cost(b) < cost(a) { b } else { a }),
        _ => {
            let mut best: Option<(&Arc<Endpoint<K, S>>, f64)> = None;
            for i in 0..n {
                let ep = nth(i);
                if f.allows(&ep.cell) {
                    let c = cost(ep);
                    if best.is_none_or(|(_, b)| c < b) {
                        best = Some((ep, c));
                    }
                }
            }
            best.map(|(ep, _)| ep)
        }
    }
}

fn consistent<'p, K, S>(
    pool: &'p Pool<K, S>,
    ctx: &Ctx<'_>,
    f: &Filter<'_>,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let table = &pool.maglev;
    let key = ctx.key?;
    if table.is_empty() {
        return None;
    }
    let limit = match ctx.bounded_load {
        Some(c) => {
            // The allowed endpoints: the fresh candidates (a few may have left the
            // ready state since), else counted.
            let allowed = if f.fresh {
                f.candidates(pool).len()
            } else {
                pool.endpoints.iter().filter(|e| f.allows(&e.cell)).count()
            };
            if allowed == 0 {
                return None;
            }
            // Mean load over the allowed endpoints, this request included.
            Some((c * (ctx.total_in_flight + 1) as f64 / allowed as f64).ceil() as u64)
        }
        None => None,
    };
    if f.fresh && f.candidates(pool).is_empty() {
        return None;
    }
    let m = table.len();
    let start = (key % m as u64) as usize;
    let mut over_limit = None;
    // The key's own order: the table's slots from its own onward. Each endpoint holds
    // about m/n slots, so 32 * n steps pass every endpoint with near certainty; with a
    // share p of the endpoints allowed, the walk takes about 1/p steps.
    let steps = m.min(pool.endpoints.len().saturating_mul(32).max(64));
    for i in 0..steps {
        let idx = table[(start + i) % m] as usize;
        let Some(ep) = pool.endpoints.get(idx) else {
            continue;
        };
        if !f.allows(&ep.cell) {
            continue;
        }
        if let Some(limit) = limit {
            if ep.cell.in_flight.load(Ordering::Relaxed) + 1 > limit {
                over_limit.get_or_insert(ep);
                continue;
            }
        }
        return Some(ep);
    }
    // Every endpoint over its bound (cannot happen with a factor >= 1, as one is at or
    // below the mean) or not met in the walk: the first allowed one seen, or any.
    over_limit.or_else(|| {
        if f.fresh {
            f.candidates(pool)
                .iter()
                .map(|&i| &pool.endpoints[i as usize])
                .find(|e| f.allows(&e.cell))
        } else {
            pool.endpoints.iter().find(|e| f.allows(&e.cell))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tower::ServiceExt;

    use crate::{discover, hash_key, BalancerBuilder, Pick};

    thread_local! {
        /// Endpoints a pick looked at (`Filter::allows` calls) on this thread.
        pub(super) static CHECKS: Cell<u64> = const { Cell::new(0) };
    }

    /// An endpoint that answers at once, or whose `poll_ready` pends for ever.
    #[derive(Clone)]
    struct Stuck(bool);

    impl tower_service::Service<u64> for Stuck {
        type Response = u64;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<u64, Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.0 {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn call(&mut self, x: u64) -> Self::Future {
            Box::pin(async move { Ok(x) })
        }
    }

    /// The endpoints one pick looks at, on average over 1,000 picks, among `n`
    /// endpoints of which `not_ready` (spread through the pool) are not ready.
    async fn checks_per_pick(pick: Pick, n: u32, not_ready: u32) -> f64 {
        let mut b = BalancerBuilder::new(pick).panic_threshold(0);
        if pick == Pick::ConsistentHash {
            b = b.hash_key(|k: &u64| Some(hash_key(k)));
        }
        let stride = n / not_ready.max(1);
        let stuck = |i: u32| not_ready > 0 && i.is_multiple_of(stride) && i / stride < not_ready;
        let b = b
            .build(discover::fixed((0..n).map(|i| (i, Stuck(stuck(i))))))
            .unwrap();
        while b.endpoints().len() < n as usize {
            tokio::task::yield_now().await;
        }
        // Requests find the stuck endpoints not ready (the pick and each call try
        // another); then the background task takes the ready lists again.
        let mut k = 0u64;
        while b.ready_count() > (n - not_ready) as usize {
            k += 1;
            b.clone().oneshot(k).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        CHECKS.with(|c| c.set(0));
        for i in 0..1_000u64 {
            assert!(b.pick(&i).is_some());
        }
        CHECKS.with(|c| c.get()) as f64 / 1_000.0
    }

    /// Whatever the pool's size and however many of its endpoints are not ready, a
    /// pick looks at a few endpoints, not at the pool: a list of the ready ones is
    /// kept as endpoints change state.
    #[tokio::test(start_paused = true)]
    async fn a_pick_looks_at_a_few_endpoints_whatever_the_pool() {
        let picks = [
            Pick::RoundRobin,
            Pick::WeightedRoundRobin,
            Pick::LeastConnections,
            Pick::LatencyAware,
            Pick::ConsistentHash,
        ];
        for pick in picks {
            for (n, not_ready) in [(2_000, 1), (2_000, 200), (2_000, 1_800)] {
                let per_pick = checks_per_pick(pick, n, not_ready).await;
                // With a share p ready, the consistent-hash walk along the key's own
                // order meets a ready endpoint in about 1/p steps.
                let bound = if pick == Pick::ConsistentHash {
                    3.0 * f64::from(n) / f64::from(n - not_ready)
                } else {
                    4.0
                };
                assert!(
                    per_pick <= bound,
                    "{pick:?}, {not_ready} of {n} not ready: {per_pick} endpoints looked at per pick"
                );
            }
        }
    }
}
