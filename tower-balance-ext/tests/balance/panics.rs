//! Panics in endpoints' code and in the discovery stream: caught, counted, and the
//! balancer goes on.

use std::sync::atomic::Ordering;

use tower::ServiceExt;
use tower_balance_ext::{discover, BalancerBuilder, EndpointState, Pick};

use crate::common::balance::{send, settle, Bal};
use crate::common::{endpoints, until, Answer, Ep, LIMIT};

/// An endpoint whose `poll_ready` or `call` panics a set number of times, then
/// behaves as the test endpoint it wraps.
#[derive(Clone, Debug)]
struct Panicky {
    inner: Ep,
    ready_panics: std::sync::Arc<std::sync::atomic::AtomicU32>,
    call_panics: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Panicky {
    fn new(id: u32) -> (Panicky, std::sync::Arc<crate::common::Knobs>) {
        let (inner, knobs) = Ep::new(id);
        let p = Panicky {
            inner,
            ready_panics: Default::default(),
            call_panics: Default::default(),
        };
        (p, knobs)
    }
}

impl tower::Service<u64> for Panicky {
    type Response = Answer;
    type Error = crate::common::Failed;
    type Future = <Ep as tower::Service<u64>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), crate::common::Failed>> {
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

fn take_one(n: &std::sync::atomic::AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
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
