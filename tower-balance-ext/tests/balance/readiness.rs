//! Endpoints that are not ready or fail `poll_ready`: skipped, set aside, re-admitted;
//! requests that wait for one; panic mode and slow start.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tower::ServiceExt;
use tower_balance_ext::{discover, BalancerBuilder, EndpointState, NoReadyEndpoints, Pick};

use crate::common::balance::{build, settle, tally, Bal};
use crate::common::{endpoints, until, Ep, LIMIT};

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
