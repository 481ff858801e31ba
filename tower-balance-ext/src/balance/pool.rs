//! The endpoints a balancer holds, as an immutable snapshot swapped whole on every
//! change, with the tables the weighted and consistent-hash picks read.

use std::sync::{Arc, Mutex};

use crate::hash;
use crate::stats::EndpointCell;

/// An endpoint: its discovery key, the service that every request clones, its numbers.
pub(crate) struct Endpoint<K, S> {
    pub(crate) key: K,
    /// The service every request clones, so no `Sync` bound is put on it.
    pub(crate) service: Mutex<S>,
    pub(crate) cell: Arc<EndpointCell>,
    /// The concurrency limit learned from its latency (latency-aware pick).
    pub(crate) limit: super::limit::Limit,
    /// Reports removal to a watch on this endpoint.
    pub(crate) removed: tokio::sync::watch::Sender<bool>,
}

impl<K, S> Endpoint<K, S> {
    pub(crate) fn clone_service(&self) -> S
    where
        S: Clone,
    {
        crate::util::lock(&self.service).clone()
    }
}

impl<K: std::fmt::Debug, S> std::fmt::Debug for Endpoint<K, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("key", &self.key)
            .field("cell", &self.cell)
            .finish_non_exhaustive()
    }
}

/// A snapshot of the pool.
pub(crate) struct Pool<K, S> {
    pub(crate) endpoints: Arc<[Arc<Endpoint<K, S>>]>,
    /// Smooth weighted round robin's sequence (nginx's), as endpoint indexes.
    pub(crate) swrr: Arc<[u32]>,
    /// The same over the endpoints of `ready` alone (`swrr` itself when all are).
    pub(crate) swrr_ready: Arc<[u32]>,
    /// Maglev's lookup table, as endpoint indexes.
    pub(crate) maglev: Arc<[u32]>,
    /// The indexes of the endpoints that were ready when this snapshot was taken: the
    /// picks draw from it, so their cost does not grow with the endpoints that are
    /// not ready. It may still hold an endpoint that has left the ready state since
    /// (the picks check each one); one that became ready since is missing only while
    /// `ready_gen` says this snapshot is out of date.
    pub(crate) ready: Vec<u32>,
    /// The same for the endpoints ready or set aside: what panic mode draws from.
    pub(crate) usable: Vec<u32>,
    /// The balancer's readiness generation when `ready` was taken.
    pub(crate) ready_gen: u64,
}

impl<K, S> Pool<K, S> {
    pub(crate) fn empty() -> Self {
        Self {
            endpoints: Arc::from(Vec::new()),
            swrr: Arc::from(Vec::new()),
            swrr_ready: Arc::from(Vec::new()),
            maglev: Arc::from(Vec::new()),
            ready: Vec::new(),
            usable: Vec::new(),
            ready_gen: 0,
        }
    }

    /// A snapshot of `endpoints` with its tables, the ready lists taken at
    /// generation `ready_gen` (read before the endpoints' states are).
    pub(crate) fn new(
        endpoints: Arc<[Arc<Endpoint<K, S>>]>,
        swrr: Arc<[u32]>,
        maglev: Arc<[u32]>,
        ready_gen: u64,
    ) -> Self {
        let (ready, usable) = ready_lists(&endpoints);
        let swrr_ready = swrr_over(&endpoints, &swrr, &ready);
        Self {
            endpoints,
            swrr,
            swrr_ready,
            maglev,
            ready,
            usable,
            ready_gen,
        }
    }

    /// The same endpoints and tables, with the ready lists taken again.
    pub(crate) fn with_ready_lists(&self, ready_gen: u64) -> Self {
        Self::new(
            self.endpoints.clone(),
            self.swrr.clone(),
            self.maglev.clone(),
            ready_gen,
        )
    }
}

/// The smooth weighted sequence over the `ready` endpoints, as endpoint indexes: `swrr`
/// itself when every endpoint is ready or there is no weighted sequence.
fn swrr_over<K, S>(
    endpoints: &[Arc<Endpoint<K, S>>],
    swrr: &Arc<[u32]>,
    ready: &[u32],
) -> Arc<[u32]> {
    if swrr.is_empty() || ready.len() == endpoints.len() {
        return swrr.clone();
    }
    let weights: Vec<u32> = ready
        .iter()
        .map(|&i| {
            endpoints[i as usize]
                .cell
                .weight
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    swrr_sequence(&weights)
        .into_iter()
        .map(|j| ready[j as usize])
        .collect()
}

/// The indexes of the ready endpoints, and of those ready or set aside.
pub(crate) fn ready_lists<K, S>(endpoints: &[Arc<Endpoint<K, S>>]) -> (Vec<u32>, Vec<u32>) {
    let mut ready = Vec::with_capacity(endpoints.len());
    let mut usable = Vec::with_capacity(endpoints.len());
    for (i, e) in endpoints.iter().enumerate() {
        let i = i as u32;
        if e.cell.is_ready() {
            ready.push(i);
            usable.push(i);
        } else if e.cell.is_set_aside() {
            usable.push(i);
        }
    }
    (ready, usable)
}

/// The longest smooth-weighted sequence kept; larger weight sums are scaled down.
const MAX_SWRR: u64 = 16_384;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round robin, unrolled over one period: each step adds every
/// weight to its current value, picks the largest, and subtracts the total from it.
/// The period is the sum of the weights (divided by their gcd, scaled to at most
/// `MAX_SWRR`).
pub(crate) fn swrr_sequence(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w.max(1))));
    let mut w: Vec<u64> = weights
        .iter()
        .map(|&x| u64::from(x.max(1)) / g.max(1))
        .collect();
    let mut total: u64 = w.iter().sum();
    if total > MAX_SWRR {
        let scale = total as f64 / MAX_SWRR as f64;
        for x in &mut w {
            *x = ((*x as f64 / scale).round() as u64).max(1);
        }
        total = w.iter().sum();
    }
    if w.len() > EXACT_SWRR {
        return stride_sequence(&w, total);
    }
    let mut current = vec![0i64; w.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        seq.push(best as u32);
    }
    seq
}

/// Up to this many endpoints, nginx's algorithm exactly (n steps per pick built);
/// above, stride scheduling with a heap, which spreads as smoothly in
/// O(total x log n) where nginx's would take O(total x n).
const EXACT_SWRR: usize = 256;

/// Stride scheduling: each endpoint's k-th turn falls at (k + 1/2) / weight of the
/// period; the turns in time order.
fn stride_sequence(w: &[u64], total: u64) -> Vec<u32> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // A turn's time is the fraction num / den = (2k + 1) / (2w), compared exactly by
    // cross-multiplying in u128.
    #[derive(PartialEq, Eq)]
    struct Turn {
        num: u64,
        den: u64,
        idx: u32,
    }
    impl Ord for Turn {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            (u128::from(self.num) * u128::from(o.den))
                .cmp(&(u128::from(o.num) * u128::from(self.den)))
                .then(self.idx.cmp(&o.idx))
        }
    }
    impl PartialOrd for Turn {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    let mut heap: BinaryHeap<Reverse<Turn>> = w
        .iter()
        .enumerate()
        .map(|(i, &wi)| {
            Reverse(Turn {
                num: 1,
                den: 2 * wi,
                idx: i as u32,
            })
        })
        .collect();
    let mut seq = Vec::with_capacity(total as usize);
    while (seq.len() as u64) < total {
        let Some(Reverse(t)) = heap.pop() else { break };
        seq.push(t.idx);
        heap.push(Reverse(Turn {
            num: t.num + 2,
            den: t.den,
            idx: t.idx,
        }));
    }
    seq
}

const PRIMES: [usize; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131_071,
];

/// Maglev's table (Eisenbud et al., NSDI 2016): each endpoint walks its own
/// permutation of the slots, taking turns, so every endpoint holds about M/N slots and
/// losing one moves little more than its own share of the keys. `names` are the
/// endpoints' stable hashes.
pub(crate) fn maglev_table(names: &[u64]) -> Vec<u32> {
    let n = names.len();
    if n == 0 {
        return Vec::new();
    }
    let want = n.saturating_mul(100);
    let m = PRIMES
        .iter()
        .copied()
        .find(|&p| p >= want)
        .unwrap_or(PRIMES[PRIMES.len() - 1]);
    // Each endpoint's permutation is offset, offset + skip, offset + 2 x skip, ...
    // (mod m): kept as its next slot, stepped by an addition.
    let mut next: Vec<(usize, usize)> = names
        .iter()
        .map(|&h| {
            let offset = (hash::mix(h ^ 0x5151) % m as u64) as usize;
            let skip = (hash::mix(h ^ 0xa3a3) % (m as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for (i, (slot, skip)) in next.iter_mut().enumerate() {
            let mut c = *slot;
            while table[c] != u32::MAX {
                c += *skip;
                if c >= m {
                    c -= m;
                }
            }
            table[c] = i as u32;
            c += *skip;
            if c >= m {
                c -= m;
            }
            *slot = c;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swrr_matches_nginx_for_5_1_1() {
        // nginx's documented sequence for weights 5, 1, 1: a a b a c a a.
        assert_eq!(swrr_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn swrr_scales_huge_weights() {
        let seq = swrr_sequence(&[u32::MAX, 1, 7]);
        assert!(seq.len() as u64 <= MAX_SWRR + 3);
        assert!(seq.contains(&1) && seq.contains(&2));
    }

    #[test]
    fn large_pools_get_exact_shares_quickly() {
        // 5,000 endpoints of weights 1..=3: a sequence where each appears exactly its
        // weight times, built without the O(total x n) loop.
        let weights: Vec<u32> = (0..5_000).map(|i| 1 + (i % 3) as u32).collect();
        let seq = swrr_sequence(&weights);
        let mut counts = vec![0u32; weights.len()];
        for &i in &seq {
            counts[i as usize] += 1;
        }
        assert_eq!(seq.len() as u32, weights.iter().sum::<u32>());
        assert_eq!(counts, weights);
        // Spread, not bunched: an endpoint of weight 3 has its first turn in the first
        // half of the period.
        let first_of_weight_3 = seq.iter().position(|&i| i == 2).unwrap();
        assert!(first_of_weight_3 < seq.len() / 2);
    }

    /// The table as the paper writes it: endpoint i's j-th choice is
    /// (offset + j x skip) mod m.
    fn maglev_reference(names: &[u64]) -> Vec<u32> {
        let n = names.len();
        let m = PRIMES
            .iter()
            .copied()
            .find(|&p| p >= n * 100)
            .unwrap_or(131_071);
        let perms: Vec<(usize, usize)> = names
            .iter()
            .map(|&h| {
                let offset = (hash::mix(h ^ 0x5151) % m as u64) as usize;
                let skip = (hash::mix(h ^ 0xa3a3) % (m as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; n];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for i in 0..n {
                let (offset, skip) = perms[i];
                let mut c = (offset + next[i] * skip) % m;
                while table[c] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                table[c] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        table
    }

    #[test]
    fn maglev_table_is_the_papers() {
        for n in [1u64, 3, 10, 57] {
            let names: Vec<u64> = (0..n).map(|i| hash::mix(i + 11)).collect();
            assert_eq!(
                maglev_table(&names),
                maglev_reference(&names),
                "{n} endpoints"
            );
        }
    }

    #[test]
    fn maglev_spreads_evenly() {
        let names: Vec<u64> = (0..10u64).map(|i| hash::mix(i + 1)).collect();
        let t = maglev_table(&names);
        let mut counts = [0usize; 10];
        for &i in &t {
            counts[i as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{counts:?}");
    }
}
