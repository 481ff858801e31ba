//! The balancer's behaviour: distributions, skipping, re-admission, churn, retries.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{endpoints, until, Answer, Ep, LIMIT};
use tower::ServiceExt;
use tower_balance_ext::{
    discover, hash_key, BalancerBuilder, EndpointState, NoReadyEndpoints, Pick,
};

type Bal = tower_balance_ext::Balancer<u32, Ep, u64>;

fn build(pick: Pick, eps: Vec<Ep>) -> Bal {
    BalancerBuilder::new(pick)
        .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
        .unwrap()
}

async fn settle(b: &Bal, n: usize) {
    until(|| b.endpoints().len() == n).await;
}

async fn send(b: &Bal, req: u64) -> Answer {
    b.clone().oneshot(req).await.unwrap()
}

async fn tally(b: &Bal, n: usize) -> HashMap<u32, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        *counts.entry(send(b, i as u64).await.id).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_gives_each_endpoint_exactly_its_turn() {
    tokio::time::timeout(LIMIT, async {
        let (eps, _) = endpoints(4);
        let b = build(Pick::RoundRobin, eps);
        settle(&b, 4).await;
        let counts = tally(&b, 10_000).await;
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|&c| c == 2_500), "{counts:?}");
        let snap = b.stats().snapshot();
        assert_eq!(snap.requests, 10_000);
        assert!(snap.endpoints.iter().all(|e| (e.share - 0.25).abs() < 1e-9));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn smooth_weighted_gives_exact_shares_and_follows_weight_changes() {
    tokio::time::timeout(LIMIT, async {
        let (eps, _) = endpoints(3);
        let b = build(Pick::WeightedRoundRobin, eps);
        settle(&b, 3).await;
        b.set_weight(&0, 5).unwrap();
        b.set_weight(&1, 3).unwrap();
        b.set_weight(&2, 2).unwrap();
        let counts = tally(&b, 10_000).await;
        assert_eq!(
            (counts[&0], counts[&1], counts[&2]),
            (5_000, 3_000, 2_000),
            "{counts:?}"
        );
        // Smooth: the heaviest never runs more than twice in a row with 5:3:2.
        let mut run = 0;
        let mut last = u32::MAX;
        for i in 0..100 {
            let id = send(&b, i).await.id;
            run = if id == last { run + 1 } else { 1 };
            last = id;
            assert!(run <= 2, "a burst of {run} on {id}");
        }
        // At runtime: 1:1:8.
        b.set_weight(&0, 1).unwrap();
        b.set_weight(&1, 1).unwrap();
        b.set_weight(&2, 8).unwrap();
        let counts = tally(&b, 10_000).await;
        assert_eq!((counts[&0], counts[&1], counts[&2]), (1_000, 1_000, 8_000));
        assert!(b.set_weight(&2, 0).is_err(), "a zero weight is refused");
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn least_connections_prefers_the_idle_endpoint() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(3);
        let b = build(Pick::LeastConnections, eps);
        settle(&b, 3).await;
        // Endpoints 0 and 1 are slow; fill them with requests that stay in flight
        // while endpoint 2 is not ready.
        knobs[0].latency_ms.store(10_000, Ordering::SeqCst);
        knobs[1].latency_ms.store(10_000, Ordering::SeqCst);
        knobs[2].close();
        let _ = send(&b, 0).await; // endpoint 2 is seen not ready
        let mut held = Vec::new();
        for i in 0..4 {
            held.push(tokio::spawn(b.clone().oneshot(i)));
        }
        until(|| b.stats().snapshot().in_flight == 4).await;
        let snap = b.stats().snapshot();
        assert_eq!(
            snap.endpoints
                .iter()
                .map(|e| e.in_flight)
                .collect::<Vec<_>>(),
            vec![2, 2, 0],
            "least connections spreads the held requests evenly"
        );
        // Endpoint 2 comes back: the next requests all go to it while the others
        // hold theirs.
        knobs[2].open();
        until(|| b.endpoints()[2].1 == EndpointState::Ready).await;
        let mut counts = HashMap::<u32, usize>::new();
        for i in 0..100 {
            *counts.entry(send(&b, i).await.id).or_default() += 1;
        }
        assert_eq!(counts.get(&2), Some(&100), "{counts:?}");
        for h in held {
            h.abort();
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn consistent_hash_is_sticky_and_moves_about_one_nth_when_one_leaves() {
    tokio::time::timeout(LIMIT, async {
        let (tx, rx) = discover::channel();
        let b: Bal = BalancerBuilder::new(Pick::ConsistentHash)
            .hash_key(|k: &u64| Some(hash_key(k)))
            .build(rx)
            .unwrap();
        let (eps, knobs) = endpoints(10);
        for e in eps {
            tx.insert(e.knobs.id, e);
        }
        settle(&b, 10).await;
        let keys = 20_000u64;
        let before: Vec<u32> = (0..keys).map(|k| b.pick(&k).unwrap()).collect();
        // Sticky: the same answer again, and the request goes where the pick said.
        for k in 0..200 {
            assert_eq!(b.pick(&k), Some(before[k as usize]));
            assert_eq!(send(&b, k).await.id, before[k as usize]);
        }
        let mut per = HashMap::<u32, usize>::new();
        for &e in &before {
            *per.entry(e).or_default() += 1;
        }
        assert!(per.values().all(|&c| c > keys as usize / 10 / 2), "{per:?}");

        // Endpoint 3 not ready: its keys go elsewhere, the others stay.
        knobs[3].close();
        let _ = send(&b, 0).await;
        for k in 0..keys {
            // Probe until the balancer has seen it pend.
            if before[k as usize] == 3 {
                let _ = send(&b, k).await;
                break;
            }
        }
        until(|| {
            b.endpoints()
                .iter()
                .any(|(id, s)| *id == 3 && *s == EndpointState::NotReady)
        })
        .await;
        let during: Vec<u32> = (0..keys).map(|k| b.pick(&k).unwrap()).collect();
        let moved = (0..keys as usize)
            .filter(|&i| during[i] != before[i])
            .count();
        assert!(during.iter().all(|&e| e != 3));
        assert_eq!(
            moved, per[&3],
            "only endpoint 3's keys move while it is not ready"
        );
        knobs[3].open();
        until(|| {
            b.endpoints()
                .iter()
                .all(|(_, s)| *s == EndpointState::Ready)
        })
        .await;
        assert_eq!(
            (0..keys).map(|k| b.pick(&k).unwrap()).collect::<Vec<_>>(),
            before
        );

        // Endpoint 7 leaves for good: about 1/10 of the keys move (its own share, and
        // a little more as the table is rebuilt).
        tx.remove(7);
        settle(&b, 9).await;
        let after: Vec<u32> = (0..keys).map(|k| b.pick(&k).unwrap()).collect();
        let moved = (0..keys as usize)
            .filter(|&i| after[i] != before[i])
            .count();
        let share = moved as f64 / keys as f64;
        assert!(
            share >= per[&7] as f64 / keys as f64,
            "its own keys must move"
        );
        assert!(share < 0.15, "{share} of the keys moved when 1 of 10 left");
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn bounded_load_passes_keys_on_from_an_overloaded_endpoint() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(4);
        let b: Bal = BalancerBuilder::new(Pick::ConsistentHash)
            .hash_key(|_: &u64| Some(42)) // every request has the same key
            .bounded_load(1.25)
            .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
            .unwrap();
        settle(&b, 4).await;
        for k in &knobs {
            k.latency_ms.store(1_000, Ordering::SeqCst);
        }
        let mut held = Vec::new();
        for i in 0..40 {
            held.push(tokio::spawn(b.clone().oneshot(i)));
        }
        until(|| b.stats().snapshot().in_flight == 40).await;
        let snap = b.stats().snapshot();
        let max = snap.endpoints.iter().map(|e| e.in_flight).max().unwrap();
        // Without the bound all 40 would sit on one endpoint.
        assert!(
            max <= 13,
            "{:?}",
            snap.endpoints
                .iter()
                .map(|e| e.in_flight)
                .collect::<Vec<_>>()
        );
        for h in held {
            h.await.unwrap().unwrap();
        }
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn latency_aware_pick_avoids_slow_and_fast_failing_endpoints() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(4);
        let b: Bal = BalancerBuilder::new(Pick::LatencyAware)
            .failure_if(|a: &Answer| a.status >= 500)
            .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
            .unwrap();
        settle(&b, 4).await;
        for k in &knobs {
            k.latency_ms.store(5, Ordering::SeqCst);
        }
        // Two of four slow (best-of-two would still send them a large share).
        knobs[0].latency_ms.store(200, Ordering::SeqCst);
        knobs[1].latency_ms.store(200, Ordering::SeqCst);
        // Warm up: every endpoint answers at least once.
        for i in 0..20 {
            send(&b, i).await;
        }
        let before: Vec<u64> = knobs.iter().map(|k| k.calls()).collect();
        let mut tasks = Vec::new();
        for i in 0..1_000 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i)).await;
                b.oneshot(i).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let calls: Vec<u64> = knobs
            .iter()
            .zip(&before)
            .map(|(k, b)| k.calls() - b)
            .collect();
        let slow = calls[0] + calls[1];
        assert!(
            slow * 100 < 1_000 * 5,
            "slow endpoints took {slow} of 1000: {calls:?}"
        );

        // Endpoint 2 fails fast with 503: it must not attract the traffic.
        knobs[0].latency_ms.store(5, Ordering::SeqCst);
        knobs[1].latency_ms.store(5, Ordering::SeqCst);
        knobs[2].unavailable.store(true, Ordering::SeqCst);
        knobs[2].latency_ms.store(0, Ordering::SeqCst);
        let before: Vec<u64> = knobs.iter().map(|k| k.calls()).collect();
        for i in 0..400 {
            send(&b, i).await;
        }
        let calls: Vec<u64> = knobs
            .iter()
            .zip(&before)
            .map(|(k, b)| k.calls() - b)
            .collect();
        assert!(
            calls[2] < 40,
            "a fast-failing endpoint took {} of 400: {calls:?}",
            calls[2]
        );
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_not_ready_endpoint_is_skipped_and_comes_back_when_ready() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(3);
        let b = build(Pick::RoundRobin, eps);
        settle(&b, 3).await;
        knobs[1].close();
        // No request waits on it: all 300 go to the other two.
        let counts = tally(&b, 300).await;
        assert_eq!(counts.get(&1), None, "{counts:?}");
        assert_eq!(counts.values().sum::<usize>(), 300);
        assert_eq!(b.endpoints()[1].1, EndpointState::NotReady);
        knobs[1].open();
        until(|| b.endpoints()[1].1 == EndpointState::Ready).await;
        let counts = tally(&b, 300).await;
        assert_eq!(counts.get(&1), Some(&100), "{counts:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_whose_poll_ready_errors_is_readmitted_after_a_backoff() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(3);
        let b: Bal = BalancerBuilder::new(Pick::RoundRobin)
            .readmit_backoff(Duration::from_millis(100), Duration::from_secs(5))
            .panic_threshold(0)
            .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
            .unwrap();
        settle(&b, 3).await;
        // Three errors: set aside at the first; the probes after 100 ms and 200 ms
        // fail too; the one after 400 ms succeeds.
        knobs[0].ready_errors.store(3, Ordering::SeqCst);
        let counts = tally(&b, 30).await;
        assert_eq!(counts.get(&0), None);
        assert_eq!(b.endpoints()[0].1, EndpointState::SetAside);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            b.endpoints()[0].1,
            EndpointState::SetAside,
            "still backing off"
        );
        until(|| b.endpoints()[0].1 == EndpointState::Ready).await;
        assert_eq!(knobs[0].ready_errors.load(Ordering::SeqCst), 0);
        let counts = tally(&b, 30).await;
        assert_eq!(counts.get(&0), Some(&10), "re-admitted, not forgotten");
        assert_eq!(b.stats().snapshot().ready_errors, 1);
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_no_ready_endpoint_requests_wait_then_fail_fast() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(2);
        let b: Bal = BalancerBuilder::new(Pick::RoundRobin)
            .ready_timeout(Duration::from_millis(500))
            .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
            .unwrap();
        settle(&b, 2).await;
        knobs[0].close();
        knobs[1].close();
        let start = tokio::time::Instant::now();
        let e = b.clone().oneshot(1).await.unwrap_err();
        let e = e
            .downcast_ref::<NoReadyEndpoints>()
            .expect("NoReadyEndpoints");
        assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.endpoints(), 2);
        assert!(start.elapsed() >= Duration::from_millis(500));
        assert!(e.to_string().contains("no ready endpoint among 2"), "{e}");
        // A waiting request goes as soon as one opens.
        let waiting = tokio::spawn(b.clone().oneshot(2));
        until(|| b.stats().snapshot().waiting == 1).await;
        knobs[1].open();
        assert_eq!(waiting.await.unwrap().unwrap().id, 1);
        assert_eq!(b.stats().snapshot().waiting, 0);
        assert_eq!(b.stats().snapshot().no_ready_endpoints, 1);
        // A pool of zero endpoints: the same clear error.
        let (_tx, rx) = discover::channel::<u32, Ep>();
        let empty: Bal = BalancerBuilder::new(Pick::RoundRobin)
            .ready_timeout(Duration::ZERO)
            .build(rx)
            .unwrap();
        let e = empty.oneshot(1).await.unwrap_err();
        assert!(e.is::<NoReadyEndpoints>(), "{e}");
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn below_the_panic_threshold_set_aside_endpoints_take_traffic_again() {
    tokio::time::timeout(LIMIT, async {
        for (threshold, expect_spread) in [(0u8, false), (50, true)] {
            let (eps, knobs) = endpoints(4);
            let b: Bal = BalancerBuilder::new(Pick::RoundRobin)
                .panic_threshold(threshold)
                .readmit_backoff(Duration::from_secs(60), Duration::from_secs(60))
                .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
                .unwrap();
            settle(&b, 4).await;
            // A blip: three endpoints fail one poll_ready each, then are fine.
            for k in &knobs[..3] {
                k.ready_errors.store(1, Ordering::SeqCst);
            }
            let counts = tally(&b, 400).await;
            let others: usize = (0..3).map(|i| counts.get(&i).copied().unwrap_or(0)).sum();
            if expect_spread {
                assert!(others > 200, "panic mode spreads over all: {counts:?}");
            } else {
                assert_eq!(others, 0, "without panic mode, one endpoint takes it all");
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_new_endpoint_up() {
    tokio::time::timeout(LIMIT, async {
        let (tx, rx) = discover::channel();
        let b: Bal = BalancerBuilder::new(Pick::RoundRobin)
            .slow_start(Duration::from_secs(10))
            .build(rx)
            .unwrap();
        let (eps, _) = endpoints(2);
        let mut eps = eps.into_iter();
        tx.insert(0, eps.next().unwrap());
        settle(&b, 1).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        tx.insert(1, eps.next().unwrap());
        settle(&b, 2).await;
        // At once: about a tenth of its share (of 1,000 picks, its share is 500).
        let counts = tally(&b, 1_000).await;
        let new = counts.get(&1).copied().unwrap_or(0);
        assert!(
            new < 150,
            "new endpoint took {new} at the start of its window"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let counts = tally(&b, 1_000).await;
        assert_eq!(counts.get(&1), Some(&500), "full share after the window");
    })
    .await
    .unwrap();
}

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

#[tokio::test(start_paused = true)]
async fn retries_go_to_another_endpoint_within_the_budget() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(3);
        let b: Bal = BalancerBuilder::new(Pick::RoundRobin)
            .failure_if(|a: &Answer| a.status >= 500)
            .retry(|r: &u64| Some(*r))
            .retry_budget(0.5, 1, Duration::from_secs(10))
            .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
            .unwrap();
        settle(&b, 3).await;
        // One endpoint answers 503: its requests are retried elsewhere and succeed.
        knobs[0].unavailable.store(true, Ordering::SeqCst);
        let mut ok = 0;
        for i in 0..30 {
            if send(&b, i).await.status == 200 {
                ok += 1;
            }
        }
        let snap = b.stats().snapshot();
        assert_eq!(ok, 30, "every 503 was retried on another endpoint");
        let first = snap.retries;
        assert!((10..=15).contains(&first), "{first} retries");
        // Every endpoint fails: retries stop at the budget (1 per second over 10 s,
        // plus half the requests), so the outage is not multiplied.
        for k in &knobs {
            k.unavailable.store(true, Ordering::SeqCst);
        }
        for i in 0..1_000 {
            send(&b, i).await;
        }
        let snap = b.stats().snapshot();
        // Deposits: 1,030 requests; allowed: 10 + 0.5 x 1,030 = 525 in the window.
        assert!(snap.retries <= 525, "{} retries", snap.retries);
        assert!(snap.retries >= 500, "{} retries", snap.retries);
        assert!(
            snap.retries_refused >= 475,
            "{} refused",
            snap.retries_refused
        );
        // Calls: at most requests + budget.
        let calls: u64 = knobs.iter().map(|k| k.calls()).sum();
        assert!(calls <= 1_030 + 525, "{calls} calls");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_settings_are_refused_with_a_message() {
    let r = || BalancerBuilder::<u64, Answer>::new(Pick::RoundRobin);
    let check = |b: BalancerBuilder<u64, Answer>, want: &str| {
        let e = b.build(discover::channel::<u32, Ep>().1).unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    };
    check(r().panic_threshold(101), "panic_threshold");
    check(
        r().readmit_backoff(Duration::ZERO, Duration::from_secs(1)),
        "readmit_backoff",
    );
    check(
        r().readmit_backoff(Duration::from_secs(2), Duration::from_secs(1)),
        "readmit_backoff",
    );
    check(r().decay(Duration::ZERO), "decay");
    check(
        r().hash_key(|_| Some(1)),
        "only used by Pick::ConsistentHash",
    );
    check(
        BalancerBuilder::new(Pick::ConsistentHash),
        "needs a request key",
    );
    check(
        BalancerBuilder::new(Pick::ConsistentHash)
            .hash_key(|_| Some(1))
            .bounded_load(0.5),
        "at least 1",
    );
    check(
        BalancerBuilder::new(Pick::ConsistentHash)
            .hash_key(|_| Some(1))
            .bounded_load(f64::NAN),
        "at least 1",
    );
    check(r().retry_budget(-1.0, 1, Duration::from_secs(10)), "ratio");
    check(r().retry_budget(0.1, 1, Duration::ZERO), "window");
    // Extreme but valid settings work.
    let (eps, _) = endpoints(2);
    let b: Bal = BalancerBuilder::new(Pick::LatencyAware)
        .ready_timeout(Duration::MAX)
        .readmit_backoff(Duration::from_nanos(1), Duration::MAX)
        .decay(Duration::MAX)
        .failure_penalty(Duration::MAX)
        .slow_start(Duration::MAX)
        .retry_budget(1000.0, u32::MAX, Duration::from_secs(60))
        .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
        .unwrap();
    settle(&b, 2).await;
    assert_eq!(send(&b, 1).await.status, 200);
}

#[tokio::test]
async fn a_request_without_a_hash_key_gets_a_clear_error() {
    let (eps, _) = endpoints(2);
    let b: Bal = BalancerBuilder::new(Pick::ConsistentHash)
        .hash_key(|k: &u64| (*k != 0).then(|| hash_key(k)))
        .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
        .unwrap();
    settle(&b, 2).await;
    let e = b.clone().oneshot(0).await.unwrap_err();
    assert!(e.is::<tower_balance_ext::NoHashKey>(), "{e}");
    assert!(send(&b, 5).await.status == 200);
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let (eps, _) = endpoints(1);
    let e = BalancerBuilder::<u64, Answer>::new(Pick::RoundRobin)
        .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
        .unwrap_err();
    assert!(e.to_string().contains("tokio runtime"), "{e}");
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

#[tokio::test(start_paused = true)]
async fn a_storm_of_a_thousand_waiters_all_fail_fast_or_all_go_when_one_opens() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(2);
        let b: Bal = BalancerBuilder::new(Pick::LeastConnections)
            .ready_timeout(Duration::from_secs(1))
            .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
            .unwrap();
        settle(&b, 2).await;
        knobs[0].close();
        knobs[1].close();
        // 1,000 at once, nothing ready: every one fails with NoReadyEndpoints, none hangs.
        let storm: Vec<_> = (0..1_000)
            .map(|i| tokio::spawn(b.clone().oneshot(i)))
            .collect();
        let mut no_ready = 0;
        for t in storm {
            let e = t.await.unwrap().unwrap_err();
            no_ready += e.is::<NoReadyEndpoints>() as usize;
        }
        assert_eq!(no_ready, 1_000);
        assert_eq!(b.stats().snapshot().waiting, 0);
        // 1,000 waiting, then one endpoint opens: every one is served by it.
        let storm: Vec<_> = (0..1_000)
            .map(|i| tokio::spawn(b.clone().oneshot(i)))
            .collect();
        until(|| b.stats().snapshot().waiting == 1_000).await;
        knobs[1].open();
        for t in storm {
            assert_eq!(t.await.unwrap().unwrap().id, 1);
        }
        let snap = b.stats().snapshot();
        assert_eq!((snap.waiting, snap.in_flight), (0, 0));
        assert_eq!(knobs[1].calls(), 1_000);
        assert_eq!(knobs[0].calls(), 0, "the closed endpoint got nothing");
    })
    .await
    .unwrap();
}

/// An endpoint that fails `poll_ready` again when tried in panic mode is passed over
/// only until the pool changes: once the background probe re-admits it, the waiting
/// request goes to it rather than waiting out `ready_timeout` for nothing.
#[tokio::test(start_paused = true)]
async fn an_endpoint_passed_over_in_panic_mode_is_used_once_it_is_readmitted() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(1);
        let b: Bal = BalancerBuilder::new(Pick::RoundRobin)
            .readmit_backoff(Duration::from_millis(100), Duration::from_millis(100))
            .ready_timeout(Duration::from_secs(5))
            .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
            .unwrap();
        settle(&b, 1).await;
        // The first error sets it aside; the panic-mode try fails too; the probe after
        // the backoff succeeds.
        knobs[0].ready_errors.store(2, Ordering::SeqCst);
        let start = tokio::time::Instant::now();
        let answer = b.clone().oneshot(1).await.expect("served once re-admitted");
        assert_eq!(answer.id, 0);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "waited {:?}: the re-admission was missed",
            start.elapsed()
        );
        assert_eq!(b.stats().snapshot().no_ready_endpoints, 0);
    })
    .await
    .unwrap();
}

/// Many requests on two threads race for one endpoint whose gate closes and opens
/// (as a health gate flaps under load): a request that found it not ready because
/// another request had just marked it so still gets it when it opens again, so no
/// request fails while the gate's closed spells are far shorter than `ready_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_gate_fails_no_request_that_can_wait_for_it() {
    tokio::time::timeout(LIMIT, async {
        let (eps, knobs) = endpoints(1);
        let b: Bal = BalancerBuilder::new(Pick::LatencyAware)
            .ready_timeout(Duration::from_secs(10))
            .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
            .unwrap();
        settle(&b, 1).await;
        let flapper = {
            let k = knobs[0].clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    k.close();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    k.open();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let clients: Vec<_> = (0..16u64)
            .map(|c| {
                let b = b.clone();
                tokio::spawn(async move {
                    let mut failed = 0;
                    for i in 0..600 {
                        failed += b.clone().oneshot(c * 1_000 + i).await.is_err() as u32;
                        tokio::task::yield_now().await;
                    }
                    failed
                })
            })
            .collect();
        flapper.await.unwrap();
        knobs[0].open();
        let mut failed = 0;
        for c in clients {
            failed += c.await.unwrap();
        }
        assert_eq!(
            failed, 0,
            "requests failed though the gate reopened in 5 ms"
        );
        assert_eq!(b.stats().snapshot().no_ready_endpoints, 0);
    })
    .await
    .unwrap();
}

/// Chaos on two threads: endpoints close and open, fail `poll_ready`, fail calls,
/// slow down, and leave and come back, while sixteen clients send. Afterwards, with
/// everything healthy again, the balancer's books balance: every endpoint is ready and
/// counted ready, nothing is in flight or waiting, no service leaked, and round robin
/// gives each endpoint exactly its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_chaos_on_two_threads_the_balancer_returns_to_a_clean_state() {
    tokio::time::timeout(LIMIT, async {
        let (tx, rx) = discover::channel();
        let b: Bal = BalancerBuilder::new(Pick::RoundRobin)
            .readmit_backoff(Duration::from_millis(2), Duration::from_millis(20))
            .ready_timeout(Duration::from_millis(50))
            .build(rx)
            .unwrap();
        let (eps, knobs) = endpoints(4);
        for e in eps {
            tx.insert(e.knobs.id, e);
        }
        settle(&b, 4).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..16u64)
            .map(|c| {
                let (b, stop) = (b.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = b.clone().oneshot(c).await;
                        sent += 1;
                        tokio::task::yield_now().await;
                    }
                    sent
                })
            })
            .collect();
        // A small xorshift: the chaos is random but repeatable in kind.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut removed = [false; 4];
        for _ in 0..400 {
            let r = next();
            let i = (r % 4) as usize;
            let k = &knobs[i];
            match (r >> 8) % 7 {
                0 => k.close(),
                1 => k.open(),
                2 => k.ready_errors.store((r >> 16) as u32 % 3, Ordering::SeqCst),
                3 => k.failing.store(r & (1 << 20) != 0, Ordering::SeqCst),
                4 => k.latency_ms.store((r >> 24) % 3, Ordering::SeqCst),
                5 if !removed[i] => {
                    tx.remove(i as u32);
                    removed[i] = true;
                }
                _ if removed[i] => {
                    // Back under the same key, as a new service sharing the knobs.
                    tx.insert(i as u32, Ep::with_knobs(k));
                    removed[i] = false;
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Heal everything.
        for (i, k) in knobs.iter().enumerate() {
            if removed[i] {
                tx.insert(i as u32, Ep::with_knobs(k));
            }
            k.ready_errors.store(0, Ordering::SeqCst);
            k.failing.store(false, Ordering::SeqCst);
            k.latency_ms.store(0, Ordering::SeqCst);
            k.open();
        }
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for c in clients {
            sent += c.await.unwrap();
        }
        assert!(sent > 1_000, "only {sent} requests during the chaos");
        until(|| {
            b.endpoints().len() == 4
                && b.endpoints()
                    .iter()
                    .all(|(_, s)| *s == EndpointState::Ready)
        })
        .await;
        let snap = b.stats().snapshot();
        assert_eq!(snap.ready_endpoints, 4);
        assert_eq!(b.ready_count(), 4, "the ready count the picks use drifted");
        assert_eq!((snap.in_flight, snap.waiting), (0, 0));
        let counts = tally(&b, 400).await;
        for i in 0..4 {
            assert_eq!(counts.get(&i), Some(&100), "{counts:?}");
        }
        // One service per endpoint, the pool's: every removed one and every clone
        // taken for a request or a watch was dropped.
        until(|| {
            knobs
                .iter()
                .all(|k| k.clones_alive.load(Ordering::SeqCst) == 1)
        })
        .await;
    })
    .await
    .unwrap();
}

/// An endpoint whose `poll_ready` or `call` panics a set number of times, then
/// behaves as the test endpoint it wraps.
#[derive(Clone, Debug)]
struct Panicky {
    inner: Ep,
    ready_panics: std::sync::Arc<std::sync::atomic::AtomicU32>,
    call_panics: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Panicky {
    fn new(id: u32) -> (Panicky, std::sync::Arc<common::Knobs>) {
        let (inner, knobs) = Ep::new(id);
        let p = Panicky {
            inner,
            ready_panics: Default::default(),
            call_panics: Default::default(),
        };
        (p, knobs)
    }
}

fn take_one(n: &std::sync::atomic::AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl tower::Service<u64> for Panicky {
    type Response = Answer;
    type Error = common::Failed;
    type Future = <Ep as tower::Service<u64>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), common::Failed>> {
        if take_one(&self.ready_panics) {
            panic!("poll_ready of endpoint {} panicked", self.inner.knobs.id);
        }
        tower::Service::<u64>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: u64) -> Self::Future {
        if take_one(&self.call_panics) {
            panic!("call of endpoint {} panicked", self.inner.knobs.id);
        }
        self.inner.call(req)
    }
}

type PanickyBal = tower_balance_ext::Balancer<u32, Panicky, u64>;

/// A panic in an endpoint's `poll_ready` while the background task watches it (the
/// endpoint was not ready, then opened) is caught there: the endpoint is set aside and
/// counted, and the task goes on following discovery, so removals and inserts still
/// apply and requests still reach the healthy endpoints.
#[tokio::test(start_paused = true)]
async fn a_panic_in_a_watched_poll_ready_leaves_discovery_running() {
    tokio::time::timeout(LIMIT, async {
        let (tx, rx) = discover::channel();
        let b: PanickyBal = BalancerBuilder::new(Pick::RoundRobin)
            .panic_threshold(0)
            .build(rx)
            .unwrap();
        let (healthy, healthy_knobs) = Panicky::new(0);
        let (bad, bad_knobs) = Panicky::new(1);
        let bad_panics = bad.ready_panics.clone();
        bad_knobs.close();
        tx.insert(0, healthy);
        tx.insert(1, bad);
        until(|| b.endpoints().len() == 2).await;
        // The closed endpoint is found not ready and handed to the background task.
        for i in 0..4 {
            assert_eq!(b.clone().oneshot(i).await.unwrap().id, 0);
        }
        assert_eq!(b.endpoints()[1].1, EndpointState::NotReady);
        // It opens, and its next poll_ready (the background task's) panics.
        bad_panics.store(1, Ordering::SeqCst);
        bad_knobs.open();
        until(|| b.stats().snapshot().endpoint_panics == 1).await;
        assert_eq!(bad_panics.load(Ordering::SeqCst), 0);
        // Discovery still applies: a new endpoint arrives, the healthy one leaves.
        let (newcomer, newcomer_knobs) = Panicky::new(2);
        tx.insert(2, newcomer);
        tx.remove(0);
        until(|| {
            let keys: Vec<u32> = b.endpoints().iter().map(|(k, _)| *k).collect();
            keys == [1, 2]
        })
        .await;
        // The panicked endpoint is probed again after its backoff and comes back.
        until(|| b.endpoints()[0].1 == EndpointState::Ready).await;
        let before = healthy_knobs.calls();
        for i in 0..10 {
            let id = b.clone().oneshot(i).await.unwrap().id;
            assert!(id == 1 || id == 2, "{id}");
        }
        assert_eq!(
            healthy_knobs.calls(),
            before,
            "the removed endpoint got requests"
        );
        assert_eq!(newcomer_knobs.calls(), 5);
        let snap = b.stats().snapshot();
        assert_eq!(snap.endpoint_panics, 1);
        assert_eq!(snap.driver_restarts, 0);
    })
    .await
    .unwrap();
}

/// A panic in `poll_ready` or `call` on a request's own path is caught too: the
/// request goes to another endpoint (or, after `call`, is retried there), the
/// endpoint is set aside and counted, and the caller's task does not unwind.
#[tokio::test(start_paused = true)]
async fn a_panic_on_the_request_path_sets_the_endpoint_aside_and_the_request_goes_on() {
    tokio::time::timeout(LIMIT, async {
        let (tx, rx) = discover::channel();
        let b: PanickyBal = BalancerBuilder::new(Pick::RoundRobin)
            .panic_threshold(0)
            .retry(|r: &u64| Some(*r))
            .build(rx)
            .unwrap();
        let (a, _) = Panicky::new(0);
        let (c, _) = Panicky::new(1);
        let (a_ready, a_call) = (a.ready_panics.clone(), a.call_panics.clone());
        tx.insert(0, a);
        tx.insert(1, c);
        until(|| b.endpoints().len() == 2).await;
        a_ready.store(1, Ordering::SeqCst);
        for i in 0..4 {
            assert_eq!(b.clone().oneshot(i).await.unwrap().id, 1);
        }
        let snap = b.stats().snapshot();
        assert_eq!(snap.endpoint_panics, 1);
        assert_eq!(b.endpoints()[0].1, EndpointState::SetAside);
        // Probed again after the backoff: back.
        until(|| b.endpoints()[0].1 == EndpointState::Ready).await;
        // A panic in `call`: the request is retried on the other endpoint.
        a_call.store(1, Ordering::SeqCst);
        let mut ids = Vec::new();
        for i in 0..2 {
            ids.push(b.clone().oneshot(i).await.unwrap().id);
        }
        assert_eq!(ids, [1, 1]);
        let snap = b.stats().snapshot();
        assert_eq!(snap.endpoint_panics, 2);
        assert_eq!(snap.retries, 1);
        assert_eq!(b.endpoints()[0].1, EndpointState::SetAside);
        // Without a retry, the caller gets EndpointPanicked, not an unwinding task.
        let (tx, rx) = discover::channel();
        let single: PanickyBal = BalancerBuilder::new(Pick::RoundRobin).build(rx).unwrap();
        let (only, _) = Panicky::new(7);
        only.call_panics.store(1, Ordering::SeqCst);
        tx.insert(7, only);
        until(|| single.endpoints().len() == 1).await;
        let e = single.clone().oneshot(1).await.unwrap_err();
        let e = e
            .downcast_ref::<tower_balance_ext::balance::EndpointPanicked>()
            .expect("EndpointPanicked");
        assert_eq!(e.endpoint(), "7");
        assert_eq!(single.stats().snapshot().endpoint_panics, 1);
    })
    .await
    .unwrap();
}

/// A discovery stream that panics once, at its second item, then goes on.
struct PanicsOnce {
    rx: discover::Receiver<u32, Ep>,
    seen: u32,
}

impl futures_util::Stream for PanicsOnce {
    type Item = Result<tower::discover::Change<u32, Ep>, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use futures_util::StreamExt;
        self.seen += 1;
        if self.seen == 2 {
            panic!("the discovery stream panicked");
        }
        self.rx.poll_next_unpin(cx)
    }
}

/// Should the background task panic anyway (here, in the discovery stream), it is
/// started again where it was, and says so in the statistics.
#[tokio::test(start_paused = true)]
async fn a_panicking_discovery_stream_restarts_the_task_which_goes_on() {
    tokio::time::timeout(LIMIT, async {
        let (tx, rx) = discover::channel();
        let b: Bal = BalancerBuilder::new(Pick::RoundRobin)
            .build(PanicsOnce { rx, seen: 0 })
            .unwrap();
        let (eps, _) = endpoints(3);
        let mut eps = eps.into_iter();
        tx.insert(0, eps.next().unwrap());
        settle(&b, 1).await;
        tx.insert(1, eps.next().unwrap());
        tx.insert(2, eps.next().unwrap());
        settle(&b, 3).await;
        tx.remove(0);
        settle(&b, 2).await;
        assert_eq!(b.stats().snapshot().driver_restarts, 1);
        assert_ne!(send(&b, 1).await.id, 0);
    })
    .await
    .unwrap();
}

/// A request is retried on another endpoint only up to `max_attempts` calls in all
/// (default 2), however many endpoints fail and however much budget is left.
#[tokio::test(start_paused = true)]
async fn a_request_makes_at_most_max_attempts_calls() {
    tokio::time::timeout(LIMIT, async {
        for (attempts, want) in [(None, 2u64), (Some(3), 3), (Some(1), 1)] {
            let (eps, knobs) = endpoints(5);
            let mut builder = BalancerBuilder::new(Pick::RoundRobin)
                .failure_if(|a: &Answer| a.status >= 500)
                .retry(|r: &u64| Some(*r))
                .retry_budget(1000.0, 1000, Duration::from_secs(10));
            if let Some(n) = attempts {
                builder = builder.max_attempts(n);
            }
            let b: Bal = builder
                .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
                .unwrap();
            settle(&b, 5).await;
            for k in &knobs {
                k.unavailable.store(true, Ordering::SeqCst);
            }
            assert_eq!(send(&b, 1).await.status, 503);
            let calls: u64 = knobs.iter().map(|k| k.calls()).sum();
            assert_eq!(calls, want, "max_attempts {attempts:?}");
            assert_eq!(b.stats().snapshot().retries, want - 1);
        }
        let e = BalancerBuilder::<u64, Answer>::new(Pick::RoundRobin)
            .max_attempts(0)
            .build(discover::channel::<u32, Ep>().1)
            .unwrap_err();
        assert!(e.to_string().contains("max_attempts"), "{e}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_zero_idle_decay_is_refused_with_a_message() {
    let e = BalancerBuilder::<u64, Answer>::new(Pick::LatencyAware)
        .idle_decay(Duration::ZERO)
        .build(discover::channel::<u32, Ep>().1)
        .unwrap_err();
    assert!(e.to_string().contains("idle_decay"), "{e}");
    // The extreme the other way is valid.
    let (eps, _) = endpoints(2);
    let b: Bal = BalancerBuilder::new(Pick::LatencyAware)
        .idle_decay(Duration::MAX)
        .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
        .unwrap();
    settle(&b, 2).await;
    assert_eq!(send(&b, 1).await.status, 200);
}

/// An endpoint 20x slower for 10 s, then as fast as the others again: it gets a
/// request again within a few `idle_decay` time constants of its last slow answer (the
/// estimate of an endpoint without requests decays exponentially toward zero, as
/// tower's PeakEwma's does), and then takes its share again.
#[tokio::test(start_paused = true)]
async fn a_once_slow_endpoint_is_tried_again_within_a_few_decay_times() {
    tokio::time::timeout(Duration::from_secs(3_600), async {
        let tau = Duration::from_secs(10);
        let (eps, knobs) = endpoints(4);
        let b: Bal = BalancerBuilder::new(Pick::LatencyAware)
            .idle_decay(tau)
            .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
            .unwrap();
        settle(&b, 4).await;
        for k in &knobs {
            k.latency_ms.store(5, Ordering::SeqCst);
        }
        // Ten requests a second throughout.
        let tick = Duration::from_millis(100);
        for i in 0..40 {
            send(&b, i).await;
            tokio::time::sleep(tick).await;
        }
        // 20x slower for 10 s: it answers slowly at least once, then is avoided.
        knobs[0].latency_ms.store(100, Ordering::SeqCst);
        let before = knobs[0].calls();
        let slow_spell = tokio::time::Instant::now();
        while slow_spell.elapsed() < Duration::from_secs(10) {
            send(&b, 1).await;
            tokio::time::sleep(tick).await;
        }
        assert!(knobs[0].calls() > before, "it was never slow");
        // Recovered: how long until it gets a request again?
        knobs[0].latency_ms.store(5, Ordering::SeqCst);
        let before = knobs[0].calls();
        let recovered = tokio::time::Instant::now();
        while knobs[0].calls() == before && recovered.elapsed() < Duration::from_secs(1_000) {
            send(&b, 2).await;
            tokio::time::sleep(tick).await;
        }
        let back_after = recovered.elapsed();
        // ln(20) = 3.0 time constants after its last slow answer, which came early in
        // its slow spell: about 2 after the recovery.
        assert!(
            back_after <= tau * 3,
            "tried again {back_after:?} after it recovered (tau {tau:?})"
        );
        // And once tried, it takes its share again at once (its estimate is not
        // pulled back up to the old slow one).
        let before: Vec<u64> = knobs.iter().map(|k| k.calls()).collect();
        for i in 0..200 {
            send(&b, i).await;
            tokio::time::sleep(tick).await;
        }
        let calls: Vec<u64> = knobs
            .iter()
            .zip(&before)
            .map(|(k, b)| k.calls() - b)
            .collect();
        assert!(
            calls[0] >= 30,
            "{calls:?} over 200 requests after its return"
        );
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
