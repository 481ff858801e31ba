//! The readiness gate: pending mode wakes on change without spinning; reject modes;
//! draining waits for requests in flight.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::watch;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{service_fn, ServiceExt};
use tower_health::{Gate, ReadinessLayer, Rejected};
use tower_layer::Layer;
use tower_service::Service;

/// An inner service that counts how often its `poll_ready` is called.
#[derive(Clone, Default)]
struct CountingInner {
    polls: Arc<AtomicUsize>,
}

impl Service<u32> for CountingInner {
    type Response = u32;
    type Error = Infallible;
    type Future = std::future::Ready<Result<u32, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, x: u32) -> Self::Future {
        std::future::ready(Ok(x + 1))
    }
}

#[tokio::test]
async fn pending_mode_wakes_on_readiness_change_and_does_not_spin() {
    let (tx, rx) = watch::channel(false);
    let inner = CountingInner::default();
    let polls = inner.polls.clone();
    let mut svc = ReadinessLayer::pending(Gate::new(rx)).layer(inner);

    let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_pending!(ready.poll());
    // Polled again without a change: still pending, nobody woke the task.
    assert!(!ready.is_woken());
    assert_pending!(ready.poll());
    assert_eq!(
        polls.load(Ordering::SeqCst),
        0,
        "the inner service is not polled while closed"
    );

    tx.send(true).unwrap();
    assert!(
        ready.is_woken(),
        "a readiness change wakes the waiting task"
    );
    assert_ready_ok!(ready.poll());
    assert_eq!(polls.load(Ordering::SeqCst), 1);
    assert_eq!(
        ready.waker_ref_count(),
        1,
        "no stray wakers left registered"
    );
    drop(ready);
    assert_eq!(svc.call(1).await.unwrap(), 2);

    // Closing again pends again, and a change that keeps it closed does not wake it
    // into a busy loop: it re-registers and stays pending.
    tx.send(false).unwrap();
    let mut again = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_pending!(again.poll());
    tx.send(false).unwrap();
    if again.is_woken() {
        assert_pending!(again.poll());
    }
    assert!(!again.is_woken());
}

#[tokio::test]
async fn draining_closes_a_ready_gate() {
    let (_tx, rx) = watch::channel(true);
    let gate = Gate::new(rx);
    let mut svc = ReadinessLayer::pending(gate.clone()).layer(CountingInner::default());
    assert!(gate.is_open());
    gate.set_draining(true);
    let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_pending!(ready.poll());
    gate.set_draining(false);
    assert!(ready.is_woken());
    assert_ready_ok!(ready.poll());
}

#[tokio::test]
async fn reject_mode_fails_fast_with_rejected() {
    let (tx, rx) = watch::channel(false);
    let svc = ReadinessLayer::reject(Gate::new(rx)).layer(CountingInner::default());
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert!(err.is::<Rejected>(), "{err}");
    tx.send(true).unwrap();
    assert_eq!(svc.oneshot(1).await.unwrap(), 2);
}

#[tokio::test]
async fn http_reject_mode_answers_503_with_retry_after() {
    let (tx, rx) = watch::channel(false);
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = service_fn({
        let calls = calls.clone();
        move |_req: http::Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("hello")))) }
        }
    });
    let svc = ReadinessLayer::reject_http(Gate::new(rx), Duration::from_secs(7)).layer(inner);
    // The refusal is an answer: over an infallible service the gate is infallible too,
    // so axum takes it without an error handler.
    fn infallible<S: tower::Service<http::Request<()>, Error = Infallible>>(s: S) -> S {
        s
    }
    let svc = infallible(svc);
    let res = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "7");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the inner service is not called"
    );
    tx.send(true).unwrap();
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_requests_in_flight() {
    let gate = Gate::always_ready();
    let inner = service_fn(|d: u64| async move {
        tokio::time::sleep(Duration::from_millis(d)).await;
        Ok::<_, Infallible>(d)
    });
    let svc = ReadinessLayer::reject(gate.clone()).layer(inner);
    let slow = tokio::spawn(svc.clone().oneshot(500));
    let fast = tokio::spawn(svc.clone().oneshot(100));
    tokio::task::yield_now().await;
    assert_eq!(gate.in_flight(), 2);

    let drain = tokio::spawn({
        let gate = gate.clone();
        async move { gate.drain(Duration::from_secs(5)).await }
    });
    tokio::task::yield_now().await;
    assert!(!gate.is_open(), "drain closes the gate at once");
    let refused = svc.clone().oneshot(1).await.unwrap_err();
    assert!(refused.is::<Rejected>());

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!drain.is_finished(), "one request is still in flight");
    assert_eq!(gate.in_flight(), 1);
    let report = drain.await.unwrap();
    assert!(report.drained);
    assert_eq!(report.in_flight, 0);
    assert_eq!(
        slow.await.unwrap().unwrap(),
        500,
        "the in-flight request finished"
    );
    assert_eq!(fast.await.unwrap().unwrap(), 100);
}

#[tokio::test(start_paused = true)]
async fn drain_gives_up_at_its_deadline() {
    let gate = Gate::always_ready();
    let svc = ReadinessLayer::reject(gate.clone()).layer(service_fn(|_: ()| async {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(())
    }));
    let _stuck = tokio::spawn(svc.oneshot(()));
    tokio::task::yield_now().await;
    let report = gate.drain(Duration::from_secs(2)).await;
    assert!(!report.drained);
    assert_eq!(report.in_flight, 1);
}

/// A body that yields the chunks sent on a channel, then ends when the sender drops.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

#[tokio::test]
async fn an_http_request_stays_in_flight_until_its_body_ends() {
    use http_body_util::BodyExt;
    let gate = Gate::always_ready();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let rx = std::sync::Mutex::new(Some(rx));
    let svc = ReadinessLayer::pending_http(gate.clone()).layer(service_fn(move |_: ()| {
        let body = ChannelBody(rx.lock().unwrap().take().unwrap());
        async move { Ok::<_, Infallible>(http::Response::new(body)) }
    }));
    let res = svc.oneshot(()).await.unwrap();
    assert_eq!(
        gate.in_flight(),
        1,
        "the head went out, the body is still streaming"
    );
    let mut body = res.into_body();
    tx.send(Bytes::from("part")).await.unwrap();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "part"
    );
    assert_eq!(gate.in_flight(), 1);
    // A drain started now waits for the stream.
    let drain = tokio::spawn({
        let gate = gate.clone();
        async move { gate.drain(Duration::from_secs(10)).await }
    });
    tokio::task::yield_now().await;
    assert!(!drain.is_finished());
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(gate.in_flight(), 0, "the body ended");
    assert!(drain.await.unwrap().drained);
}

#[tokio::test]
async fn a_dropped_http_body_is_no_longer_in_flight() {
    let gate = Gate::always_ready();
    let svc = ReadinessLayer::reject_http(gate.clone(), Duration::from_secs(1)).layer(service_fn(
        |_: ()| async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("x")))) },
    ));
    let res = svc.oneshot(()).await.unwrap();
    assert_eq!(gate.in_flight(), 1);
    drop(res);
    assert_eq!(gate.in_flight(), 0);
}
