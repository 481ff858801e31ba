//! How each pick spreads requests: round robin's turns, smooth weighted shares,
//! least connections, consistent hash (sticky, bounded loads) and the latency-aware pick.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tower::ServiceExt;
use tower_balance_ext::{discover, hash_key, BalancerBuilder, EndpointState, Pick};

use crate::common::balance::{build, send, settle, tally, Bal};
use crate::common::{endpoints, until, Answer, LIMIT};

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
