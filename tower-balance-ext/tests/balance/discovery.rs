//! Endpoints arriving and leaving through discovery: removals with requests in flight,
//! churn, a failing discovery stream, bursts of changes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tower::ServiceExt;
use tower_balance_ext::{discover, hash_key, BalancerBuilder, Pick};

use crate::common::balance::{send, settle, Bal};
use crate::common::{endpoints, until, Ep, LIMIT};

#[tokio::test(start_paused = true)]
async fn removal_with_requests_in_flight_loses_none() {
    tokio::time::timeout(LIMIT, async {
        let (tx, rx) = discover::channel();
        let b: Bal = BalancerBuilder::new(Pick::RoundRobin).build(rx).unwrap();
        let (eps, knobs) = endpoints(2);
        for e in eps {
            knobs[e.knobs.id as usize]
                .latency_ms
                .store(100, Ordering::SeqCst);
            tx.insert(e.knobs.id, e);
        }
        settle(&b, 2).await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            tasks.push(tokio::spawn(b.clone().oneshot(i)));
        }
        until(|| b.stats().snapshot().in_flight == 50).await;
        tx.remove(0);
        settle(&b, 1).await;
        let mut ids = HashMap::<u32, usize>::new();
        for t in tasks {
            *ids.entry(t.await.unwrap().unwrap().id).or_default() += 1;
        }
        assert_eq!(ids.values().sum::<usize>(), 50);
        assert_eq!(ids[&0], 25, "requests on the removed endpoint finished");
        // The removed endpoint's service is dropped (no leak): only the test's knobs
        // remain.
        until(|| knobs[0].clones_alive.load(Ordering::SeqCst) == 0).await;
        assert_eq!(send(&b, 1).await.id, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_thousand_rounds_of_churn_lose_no_request_and_leak_no_endpoint() {
    tokio::time::timeout(LIMIT, async {
        let (tx, rx) = discover::channel();
        let b: Bal = BalancerBuilder::new(Pick::LeastConnections)
            .ready_timeout(Duration::from_secs(30))
            .build(rx)
            .unwrap();
        let (stable, stable_knobs) = Ep::new(0);
        tx.insert(0, stable);
        let load = {
            let b = b.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..4_000u64 {
                    let r = b.clone().oneshot(i).await;
                    assert!(r.is_ok(), "request {i}: {:?}", r.err());
                    ok += 1;
                    if i % 4 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                ok
            })
        };
        let mut all_knobs = Vec::new();
        for round in 1..=1_000u32 {
            let (ep, knobs) = Ep::new(round);
            tx.insert(round, ep);
            all_knobs.push(knobs);
            tokio::task::yield_now().await;
            tx.remove(round);
            if round % 10 == 0 {
                // A not-ready endpoint in the mix, removed while watched.
                let (ep, knobs) = Ep::new(10_000 + round);
                knobs.close();
                tx.insert(10_000 + round, ep);
                all_knobs.push(knobs);
                tokio::task::yield_now().await;
                tx.remove(10_000 + round);
            }
        }
        assert_eq!(load.await.unwrap(), 4_000);
        until(|| b.endpoints().len() == 1).await;
        // Every removed endpoint's service was dropped, watched ones too.
        until(|| {
            all_knobs
                .iter()
                .all(|k| k.clones_alive.load(Ordering::SeqCst) == 0)
        })
        .await;
        assert_eq!(stable_knobs.clones_alive.load(Ordering::SeqCst), 1);
        assert_eq!(b.stats().snapshot().in_flight, 0);
    })
    .await
    .unwrap();
}

/// A discovery stream that fails every time it is asked, after one insert.
struct Failing {
    first: Option<Ep>,
    asked: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl futures_util::Stream for Failing {
    type Item = Result<tower::discover::Change<u32, Ep>, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if let Some(ep) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(tower::discover::Change::Insert(0, ep))));
        }
        std::task::Poll::Ready(Some(Err(std::io::Error::other("registry down"))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_discovery_keeps_its_endpoints_and_does_not_spin() {
    tokio::time::timeout(LIMIT, async {
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (ep, _) = Ep::new(0);
        let b: Bal = BalancerBuilder::new(Pick::RoundRobin)
            .build(Failing {
                first: Some(ep),
                asked: asked.clone(),
            })
            .unwrap();
        settle(&b, 1).await;
        assert_eq!(send(&b, 1).await.id, 0);
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Backing off to once a second: about 10 + 10 asks in 10 s, not millions.
        let n = asked.load(Ordering::SeqCst);
        assert!(n < 40, "discovery asked {n} times");
        assert!(b.stats().snapshot().discovery_errors >= 10);
        assert_eq!(send(&b, 2).await.id, 0, "the endpoint known is kept");
    })
    .await
    .unwrap();
}

/// Everything discovery has ready at once is applied as one change of the pool (one
/// rebuild, not one per endpoint): 10,000 endpoints, and 1,000 for the consistent-hash
/// pick's table, appear together, and a burst of removals and inserts applies in order.
#[tokio::test(start_paused = true)]
async fn a_burst_of_discovery_changes_is_applied_at_once_and_in_order() {
    tokio::time::timeout(LIMIT, async {
        for (pick, n) in [(Pick::RoundRobin, 10_000u32), (Pick::ConsistentHash, 1_000)] {
            let (tx, rx) = discover::channel();
            let mut builder = BalancerBuilder::new(pick);
            if pick == Pick::ConsistentHash {
                builder = builder.hash_key(|k: &u64| Some(hash_key(k)));
            }
            let b: Bal = builder.build(rx).unwrap();
            let (eps, _) = endpoints(n);
            for e in eps {
                tx.insert(e.knobs.id, e);
            }
            loop {
                let len = b.endpoints().len();
                assert!(
                    len == 0 || len == n as usize,
                    "{pick:?}: {len} of {n} arrived"
                );
                if len == n as usize {
                    break;
                }
                tokio::task::yield_now().await;
            }
            // Half leave; one of them comes back at once, and a new one arrives and
            // leaves at once.
            for i in 0..n / 2 {
                tx.remove(i);
            }
            tx.insert(0, Ep::new(0).0);
            tx.insert(n, Ep::new(n).0);
            tx.remove(n);
            let want = (n / 2 + 1) as usize;
            loop {
                let len = b.endpoints().len();
                assert!(
                    len == n as usize || len == want,
                    "{pick:?}: {len} endpoints"
                );
                if len == want {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let keys: Vec<u32> = b.endpoints().iter().map(|(k, _)| *k).collect();
            assert!(keys.contains(&0) && !keys.contains(&n) && !keys.contains(&1));
            assert_eq!(b.ready_count(), want);
            assert!(send(&b, 7).await.status == 200);
        }
    })
    .await
    .unwrap();
}
