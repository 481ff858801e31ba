//! The pick algorithms: each chooses one endpoint of a pool snapshot, among those a
//! filter allows, without locks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::pool::{Endpoint, Pool};
use crate::hash;
use crate::stats::EndpointCell;

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
    /// The endpoint with the lowest peak-EWMA latency times (in-flight + 1), where
    /// failures count as slow: a full scan for pools of up to 16 (best-of-two sends a
    /// sixth of the requests to the slow pair when two of four are slow, and one in
    /// 45 to the two slowest of ten), power of two choices above.
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
}

impl Filter<'_> {
    #[inline]
    pub(crate) fn allows(&self, c: &EndpointCell) -> bool {
        (c.is_ready() || (self.panic && c.is_set_aside()))
            && (self.excluded.is_empty() || !self.excluded.contains(&c.id))
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
        f >= 1.0 || (hash::random() >> 11) as f64 / (1u64 << 53) as f64 <= f
    }
}

/// What a pick needs besides the pool.
pub(crate) struct Ctx<'a> {
    pub(crate) cursor: &'a AtomicUsize,
    pub(crate) key: Option<u64>,
    pub(crate) bounded_load: Option<f64>,
    pub(crate) total_in_flight: u64,
    pub(crate) idle_tau_ns: f64,
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
        Pick::RoundRobin => rotate(eps, ctx.cursor, f),
        Pick::WeightedRoundRobin => weighted(pool, ctx.cursor, f),
        Pick::LeastConnections => {
            if eps.len() <= 16 {
                scan(eps, ctx.cursor, f, |c| {
                    c.in_flight.load(Ordering::Relaxed) as f64
                        / f64::from(c.weight.load(Ordering::Relaxed).max(1))
                })
            } else {
                two_choices(eps, f, |c| {
                    c.in_flight.load(Ordering::Relaxed) as f64
                        / f64::from(c.weight.load(Ordering::Relaxed).max(1))
                })
            }
        }
        Pick::LatencyAware => {
            let cost = |c: &EndpointCell| {
                let lat = c.latency_ns(f.now, ctx.idle_tau_ns).max(1.0);
                let load = (c.in_flight.load(Ordering::Relaxed) + 1) as f64;
                lat * load / f64::from(c.weight.load(Ordering::Relaxed).max(1)) / f.ramp(c)
            };
            if eps.len() <= 16 {
                scan(eps, ctx.cursor, f, cost)
            } else {
                two_choices(eps, f, cost)
            }
        }
        Pick::ConsistentHash => consistent(pool, ctx, f),
    }
}

/// Round robin over the allowed endpoints: the turn counts among those allowed, so an
/// endpoint that is skipped does not hand its share to its neighbour alone.
fn rotate<'p, K, S>(
    eps: &'p [Arc<Endpoint<K, S>>],
    cursor: &AtomicUsize,
    f: &Filter<'_>,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let n = eps.len();
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    if f.all_allowed {
        let first = &eps[start % n];
        if f.ramp_accepts(&first.cell) {
            return Some(first);
        }
    }
    let allowed = eps.iter().filter(|e| f.allows(&e.cell)).count();
    if allowed == 0 {
        return None;
    }
    let k = start % allowed;
    let mut fallback = None;
    let mut seen = 0;
    // From the k-th allowed endpoint on, the first a ramp accepts.
    for ep in eps {
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

fn weighted<'p, K, S>(
    pool: &'p Pool<K, S>,
    cursor: &AtomicUsize,
    f: &Filter<'_>,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let seq = &pool.swrr;
    if seq.is_empty() {
        return rotate(&pool.endpoints, cursor, f);
    }
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    let mut fallback = None;
    // Every endpoint appears in the sequence; after a full period, none is allowed.
    for i in 0..seq.len() {
        let idx = seq[start.wrapping_add(i) % seq.len()] as usize;
        let ep = pool.endpoints.get(idx)?;
        if f.allows(&ep.cell) {
            if f.ramp_accepts(&ep.cell) {
                return Some(ep);
            }
            fallback.get_or_insert(ep);
        }
    }
    fallback
}

/// The allowed endpoint of least cost, scanning from a rotating start so that ties
/// are spread.
fn scan<'p, K, S>(
    eps: &'p [Arc<Endpoint<K, S>>],
    cursor: &AtomicUsize,
    f: &Filter<'_>,
    cost: impl Fn(&EndpointCell) -> f64,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let n = eps.len();
    let start = cursor.fetch_add(1, Ordering::Relaxed);
    let mut best: Option<(&Arc<Endpoint<K, S>>, f64)> = None;
    for i in 0..n {
        let ep = &eps[start.wrapping_add(i) % n];
        if !f.allows(&ep.cell) {
            continue;
        }
        let c = cost(&ep.cell);
        if best.is_none_or(|(_, b)| c < b) {
            best = Some((ep, c));
        }
    }
    best.map(|(ep, _)| ep)
}

/// Power of two choices: two distinct random allowed endpoints, the cheaper wins; a
/// full scan when random draws keep landing on endpoints that are not allowed.
fn two_choices<'p, K, S>(
    eps: &'p [Arc<Endpoint<K, S>>],
    f: &Filter<'_>,
    cost: impl Fn(&EndpointCell) -> f64,
) -> Option<&'p Arc<Endpoint<K, S>>> {
    let n = eps.len() as u64;
    let mut chosen: [Option<&Arc<Endpoint<K, S>>>; 2] = [None, None];
    let mut found = 0;
    for _ in 0..8 {
        let ep = &eps[(hash::random() % n) as usize];
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
        [Some(a), Some(b)] => Some(if cost(&b.cell) < cost(&a.cell) { b } else { a }),
        _ => {
            let mut best: Option<(&Arc<Endpoint<K, S>>, f64)> = None;
            for ep in eps {
                if f.allows(&ep.cell) {
                    let c = cost(&ep.cell);
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
    let allowed = pool.endpoints.iter().filter(|e| f.allows(&e.cell)).count();
    if allowed == 0 {
        return None;
    }
    let limit = ctx.bounded_load.map(|c| {
        // Mean load over the allowed endpoints, this request included.
        (c * (ctx.total_in_flight + 1) as f64 / allowed as f64).ceil() as u64
    });
    let m = table.len();
    let start = (key % m as u64) as usize;
    let mut over_limit = None;
    // The key's own order: the table's slots from its own onward. Each endpoint holds
    // about m/n slots, so 32 * n steps pass every endpoint with near certainty.
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
    over_limit.or_else(|| pool.endpoints.iter().find(|e| f.allows(&e.cell)))
}
