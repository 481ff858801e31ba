//! The latency-aware pick's learned concurrency limits, on tokio's paused clock: a slow
//! pair gets a small share while the fast endpoints have room, a recovered endpoint
//! takes its share again, a slow one is still tried now and then, and fast endpoints
//! that serve few requests at a time do not collect a queue. Requests arrive open loop,
//! one every millisecond, whatever the answers do.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::util::BoxCloneService;
use tower::ServiceExt;
use tower_balance_ext::{discover, Balancer, BalancerBuilder, Pick};

use crate::common::balance::{settle, Bal};
use crate::common::{endpoints, Knobs, LIMIT};

/// A request every millisecond for `ms` milliseconds (open loop): the calls each
/// endpoint got meanwhile.
async fn open_loop(b: &Bal, knobs: &[Arc<Knobs>], ms: u64) -> Vec<u64> {
    let before: Vec<u64> = knobs.iter().map(|k| k.calls()).collect();
    let mut tasks = Vec::with_capacity(ms as usize);
    for i in 0..ms {
        let b = b.clone();
        tasks.push(tokio::spawn(async move { b.oneshot(i).await.unwrap() }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    knobs
        .iter()
        .zip(&before)
        .map(|(k, b)| k.calls() - b)
        .collect()
}

/// Four endpoints of 10 ms, the first two at `slow_ms`, latency-aware with learned
/// limits up to `max` (0: none).
async fn four(max: u32, slow_ms: u64) -> (Bal, Vec<Arc<Knobs>>) {
    let (eps, knobs) = endpoints(4);
    let b: Bal = BalancerBuilder::new(Pick::LatencyAware)
        .learned_limit(max)
        .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
        .unwrap();
    settle(&b, 4).await;
    for (i, k) in knobs.iter().enumerate() {
        let ms = if i < 2 { slow_ms } else { 10 };
        k.latency_ms.store(ms, Ordering::SeqCst);
    }
    (b, knobs)
}

fn share(calls: &[u64], which: std::ops::Range<usize>) -> f64 {
    calls[which].iter().sum::<u64>() as f64 / calls.iter().sum::<u64>() as f64
}

/// At 1,000 requests a second, about five are in flight on each fast endpoint: with
/// latency x (in-flight + 1) that costs more than an idle endpoint half again as slow,
/// so the slow pair takes a large share; against a learned limit it costs little.
#[tokio::test(start_paused = true)]
async fn learned_limits_keep_a_slow_pair_to_a_small_share_while_fast_ones_have_room() {
    tokio::time::timeout(LIMIT, async {
        let (b, knobs) = four(1_000, 15).await;
        open_loop(&b, &knobs, 1_000).await;
        let calls = open_loop(&b, &knobs, 3_000).await;
        let with = share(&calls, 0..2);
        assert!(with < 0.05, "the slow pair took {with:.3}: {calls:?}");

        let (b, knobs) = four(0, 15).await;
        open_loop(&b, &knobs, 1_000).await;
        let calls = open_loop(&b, &knobs, 3_000).await;
        let without = share(&calls, 0..2);
        assert!(
            without > 0.15,
            "without limits the slow pair took {without:.3}: {calls:?}"
        );
    })
    .await
    .unwrap();
}

/// Once the slow pair is as fast as the others again, it takes its share again
/// within a few seconds of requests.
#[tokio::test(start_paused = true)]
async fn a_recovered_endpoint_takes_its_share_again() {
    tokio::time::timeout(LIMIT, async {
        let (b, knobs) = four(1_000, 15).await;
        open_loop(&b, &knobs, 4_000).await;
        for k in &knobs[..2] {
            k.latency_ms.store(10, Ordering::SeqCst);
        }
        open_loop(&b, &knobs, 5_000).await;
        let calls = open_loop(&b, &knobs, 2_000).await;
        for (i, &c) in calls.iter().enumerate() {
            let s = c as f64 / calls.iter().sum::<u64>() as f64;
            assert!(s > 0.10, "endpoint {i} took {s:.3}: {calls:?}");
        }
    })
    .await
    .unwrap();
}

/// An endpoint that stays slower is not forgotten: its estimate fades while it gets
/// no requests, so it is tried again, in every five seconds of a minute.
#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_is_still_tried_now_and_then() {
    // A minute of requests on the paused clock.
    tokio::time::timeout(Duration::from_secs(600), async {
        let (b, knobs) = four(1_000, 15).await;
        open_loop(&b, &knobs, 1_000).await;
        for span in 0..12 {
            let calls = open_loop(&b, &knobs, 5_000).await;
            assert!(
                calls[0] > 0 && calls[1] > 0,
                "span {span}: a slow endpoint got no request: {calls:?}"
            );
        }
    })
    .await
    .unwrap();
}

/// An endpoint that serves `slots` calls at a time, each taking `ms`; the others wait.
/// Counts its calls and the most that ever waited.
#[derive(Clone, Default)]
struct Counters {
    calls: Arc<AtomicU64>,
    waiting: Arc<AtomicU64>,
    most_waiting: Arc<AtomicU64>,
}

fn with_slots(ms: u64, slots: usize, n: Counters) -> BoxCloneService<u64, u64, Infallible> {
    let slots = Arc::new(Semaphore::new(slots));
    BoxCloneService::new(tower::service_fn(move |x: u64| {
        let slots = slots.clone();
        let n = n.clone();
        async move {
            n.calls.fetch_add(1, Ordering::SeqCst);
            let w = n.waiting.fetch_add(1, Ordering::SeqCst) + 1;
            n.most_waiting.fetch_max(w, Ordering::SeqCst);
            let _slot = slots.acquire_owned().await.unwrap();
            n.waiting.fetch_sub(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(x)
        }
    }))
}

/// Two fast endpoints that serve two calls at a time (400 a second between them) and
/// two slower ones with room for many, at 1,000 requests a second: the fast ones take
/// what they serve without a queue, the slow ones the rest; no queue builds up on the
/// fast ones (each waiting call raises their latency and lowers their limit).
#[tokio::test(start_paused = true)]
async fn fast_endpoints_with_little_room_do_not_collect_a_queue() {
    tokio::time::timeout(LIMIT, async {
        let counters: Vec<Counters> = (0..4).map(|_| Counters::default()).collect();
        let eps = (0..4u32).map(|i| {
            let (ms, slots) = if i < 2 { (15, 100) } else { (10, 2) };
            (i, with_slots(ms, slots, counters[i as usize].clone()))
        });
        let b: Balancer<u32, BoxCloneService<u64, u64, Infallible>, u64> =
            BalancerBuilder::new(Pick::LatencyAware)
                .build(discover::fixed(eps))
                .unwrap();
        while b.endpoints().len() < 4 {
            tokio::task::yield_now().await;
        }
        let mut tasks = Vec::new();
        for i in 0..3_000u64 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move { b.oneshot(i).await.unwrap() }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let calls: Vec<u64> = counters
            .iter()
            .map(|c| c.calls.load(Ordering::SeqCst))
            .collect();
        let most: Vec<u64> = counters
            .iter()
            .map(|c| c.most_waiting.load(Ordering::SeqCst))
            .collect();
        // Two in service plus at most a few waiting, never a growing queue.
        assert!(
            most[2] <= 10 && most[3] <= 10,
            "most calls waiting per endpoint {most:?}; calls {calls:?}"
        );
        assert!(
            calls[2] + calls[3] >= 900,
            "the fast pair took {} of 3000: {calls:?}",
            calls[2] + calls[3]
        );
    })
    .await
    .unwrap();
}
