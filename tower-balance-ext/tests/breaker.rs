//! The circuit breaker's state machine, in paused time.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{until, Answer, Ep, LIMIT};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Layer, Service, ServiceExt};
use tower_balance_ext::breaker::{
    BreakerOpen, BreakerState, CircuitBreaker, CircuitBreakerLayer, WhenOpen,
};
use tower_balance_ext::{discover, BalancerBuilder, EndpointState, Pick};

fn layer(consecutive: u32) -> CircuitBreakerLayer<Answer> {
    CircuitBreakerLayer::builder()
        .consecutive_failures(consecutive)
        .no_failure_rate()
        .open_for(Duration::from_secs(10), Duration::from_secs(40))
        .failure_if(|a: &Answer| a.status >= 500)
        .build()
        .unwrap()
}

async fn call(svc: &mut CircuitBreaker<Ep, Answer>) -> Result<Answer, tower_balance_ext::BoxError> {
    ServiceExt::<u32>::ready(svc).await?.call(1u32).await
}

#[tokio::test(start_paused = true)]
async fn trips_on_consecutive_failures_then_probes_one_at_a_time() {
    tokio::time::timeout(LIMIT, async {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        let (ep, knobs) = Ep::new(1);
        let mut svc = CircuitBreakerLayer::builder()
            .consecutive_failures(3)
            .no_failure_rate()
            .open_for(Duration::from_secs(10), Duration::from_secs(40))
            .failure_if(|a: &Answer| a.status >= 500)
            .on_state_change(move |from, to| seen.lock().unwrap().push((from, to)))
            .build()
            .unwrap()
            .layer(ep);
        let handle = svc.handle();
        knobs.unavailable.store(true, Ordering::SeqCst);
        // Two failures, a success: the count starts again.
        call(&mut svc).await.unwrap();
        call(&mut svc).await.unwrap();
        knobs.unavailable.store(false, Ordering::SeqCst);
        call(&mut svc).await.unwrap();
        knobs.unavailable.store(true, Ordering::SeqCst);
        call(&mut svc).await.unwrap();
        call(&mut svc).await.unwrap();
        assert_eq!(handle.state(), BreakerState::Closed);
        call(&mut svc).await.unwrap();
        assert_eq!(handle.state(), BreakerState::Open);
        // Open: refused at once, without a call.
        let calls = knobs.calls();
        let e = call(&mut svc).await.unwrap_err();
        let open = e.downcast_ref::<BreakerOpen>().expect("BreakerOpen");
        assert!(
            open.retry_after() > Duration::from_secs(7)
                && open.retry_after() <= Duration::from_secs(10)
        );
        assert_eq!(knobs.calls(), calls);
        // After the open time (at most 10 s): half-open, one probe at a time.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(handle.state(), BreakerState::HalfOpen);
        knobs.latency_ms.store(100, Ordering::SeqCst);
        let mut probe = svc.clone();
        let mut other = svc.clone();
        let mut t = task::spawn(ServiceExt::<u32>::ready(&mut probe));
        assert_ready_ok!(t.poll());
        drop(t);
        let mut t = task::spawn(ServiceExt::<u32>::ready(&mut other));
        let second = assert_ready!(t.poll());
        assert!(
            second.unwrap_err().is::<BreakerOpen>(),
            "a second probe is refused"
        );
        drop(t);
        // The probe fails: open again, for twice as long (20 s, less jitter).
        let r = probe.call(1).await.unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(handle.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(
            handle.state(),
            BreakerState::Open,
            "the second open time is longer"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        // This probe succeeds: closed.
        knobs.unavailable.store(false, Ordering::SeqCst);
        call(&mut svc).await.unwrap();
        assert_eq!(handle.state(), BreakerState::Closed);
        use BreakerState::*;
        assert_eq!(
            *changes.lock().unwrap(),
            vec![
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed)
            ]
        );
        let stats = handle.stats();
        assert_eq!(stats.trips, 2);
        assert_eq!(stats.rejected, 2);
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unused_probe_permit_is_given_back() {
    let (ep, knobs) = Ep::new(1);
    let mut svc = layer(1).layer(ep);
    let handle = svc.handle();
    knobs.failing.store(true, Ordering::SeqCst);
    assert!(call(&mut svc).await.is_err());
    assert_eq!(handle.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    // A clone takes the probe slot and is dropped without calling.
    let mut a = svc.clone();
    assert!(ServiceExt::<u32>::ready(&mut a).await.is_ok());
    drop(a);
    // Another may probe now; so may one whose call future was dropped half-way.
    knobs.latency_ms.store(1_000, Ordering::SeqCst);
    let mut b = svc.clone();
    let fut = ServiceExt::<u32>::ready(&mut b).await.unwrap().call(1);
    drop(fut);
    let mut c = svc.clone();
    assert!(
        ServiceExt::<u32>::ready(&mut c).await.is_ok(),
        "the slot came back"
    );
}

#[tokio::test(start_paused = true)]
async fn trips_on_a_failure_rate_once_the_window_holds_enough_calls() {
    let (ep, knobs) = Ep::new(1);
    let mut svc = CircuitBreakerLayer::builder()
        .consecutive_failures(0)
        .failure_rate(0.5)
        .window(Duration::from_secs(10), 10)
        .failure_if(|a: &Answer| a.status >= 500)
        .build()
        .unwrap()
        .layer(ep);
    let handle = svc.handle();
    // Alternate: 50% failures, but never two in a row.
    for i in 0..9 {
        knobs.unavailable.store(i % 2 == 0, Ordering::SeqCst);
        call(&mut svc).await.unwrap();
    }
    assert_eq!(
        handle.state(),
        BreakerState::Closed,
        "9 calls: under the minimum"
    );
    knobs.unavailable.store(false, Ordering::SeqCst);
    call(&mut svc).await.unwrap();
    // 10 calls, 5 failed: 50%.
    assert_eq!(handle.state(), BreakerState::Open);

    // Old calls leave the window.
    let (ep, knobs) = Ep::new(2);
    let mut svc = CircuitBreakerLayer::builder()
        .consecutive_failures(0)
        .failure_rate(0.5)
        .window(Duration::from_secs(10), 10)
        .failure_if(|a: &Answer| a.status >= 500)
        .build()
        .unwrap()
        .layer(ep);
    let handle = svc.handle();
    knobs.unavailable.store(true, Ordering::SeqCst);
    for _ in 0..4 {
        call(&mut svc).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    knobs.unavailable.store(false, Ordering::SeqCst);
    for _ in 0..6 {
        call(&mut svc).await.unwrap();
    }
    knobs.unavailable.store(true, Ordering::SeqCst);
    for _ in 0..4 {
        call(&mut svc).await.unwrap();
    }
    assert_eq!(
        handle.state(),
        BreakerState::Closed,
        "4 of 10 in the window"
    );
}

#[tokio::test(start_paused = true)]
async fn trips_on_slow_calls() {
    let (ep, knobs) = Ep::new(1);
    let mut svc = CircuitBreakerLayer::<Answer>::builder()
        .consecutive_failures(0)
        .no_failure_rate()
        .slow_calls(Duration::from_millis(500), 0.8)
        .window(Duration::from_secs(60), 5)
        .build()
        .unwrap()
        .layer(ep);
    let handle = svc.handle();
    knobs.latency_ms.store(600, Ordering::SeqCst);
    for _ in 0..4 {
        call(&mut svc).await.unwrap();
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    call(&mut svc).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Open);
    assert_eq!(handle.stats().slow, 5);
}

#[tokio::test(start_paused = true)]
async fn in_wait_mode_poll_ready_pends_until_half_open() {
    let (ep, knobs) = Ep::new(1);
    let mut svc = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .no_failure_rate()
        .open_for(Duration::from_secs(5), Duration::from_secs(5))
        .when_open(WhenOpen::Wait)
        .build()
        .unwrap()
        .layer(ep);
    knobs.failing.store(true, Ordering::SeqCst);
    assert!(call(&mut svc).await.is_err());
    let mut t = task::spawn(ServiceExt::<u32>::ready(&mut svc));
    assert_pending!(t.poll());
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(t.is_woken());
    assert_ready_ok!(t.poll());
}

#[tokio::test(start_paused = true)]
async fn behind_a_balancer_an_open_breaker_in_wait_mode_is_skipped_and_comes_back() {
    tokio::time::timeout(LIMIT, async {
        let breaker = CircuitBreakerLayer::builder()
            .consecutive_failures(2)
            .no_failure_rate()
            .open_for(Duration::from_secs(5), Duration::from_secs(5))
            .when_open(WhenOpen::Wait)
            .failure_if(|a: &Answer| a.status >= 500)
            .build()
            .unwrap();
        let (eps, knobs) = common::endpoints(2);
        let b = BalancerBuilder::new(Pick::RoundRobin)
            .build(discover::fixed(
                eps.into_iter().map(|e| (e.knobs.id, breaker.layer(e))),
            ))
            .unwrap();
        until(|| b.endpoints().len() == 2).await;
        knobs[0].unavailable.store(true, Ordering::SeqCst);
        for i in 0..4u32 {
            b.clone().oneshot(i).await.unwrap();
        }
        // Endpoint 0 failed twice: open; the balancer sees it pend and skips it.
        for i in 0..10u32 {
            assert_eq!(b.clone().oneshot(i).await.unwrap().id, 1);
        }
        assert_eq!(b.endpoints()[0].1, EndpointState::NotReady);
        knobs[0].unavailable.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(6)).await;
        until(|| b.endpoints()[0].1 == EndpointState::Ready).await;
        let mut ids = Vec::new();
        for i in 0..10u32 {
            ids.push(b.clone().oneshot(i).await.unwrap().id);
        }
        assert!(ids.contains(&0), "{ids:?}");
    })
    .await
    .unwrap();
}

#[test]
fn impossible_thresholds_are_refused_with_a_message() {
    let check = |b: tower_balance_ext::breaker::CircuitBreakerBuilder<()>, want: &str| {
        let e = b.build().unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
    };
    let b = CircuitBreakerLayer::<()>::builder;
    check(b().failure_rate(0.0), "failure_rate");
    check(b().failure_rate(1.5), "failure_rate");
    check(b().failure_rate(f64::NAN), "failure_rate");
    check(
        b().slow_calls(Duration::from_secs(1), 2.0),
        "slow_calls rate",
    );
    check(b().slow_calls(Duration::ZERO, 0.5), "threshold is zero");
    check(b().window(Duration::ZERO, 10), "window");
    check(b().window(Duration::from_secs(1), 0), "window");
    check(b().consecutive_failures(0).no_failure_rate(), "never trip");
    check(
        b().open_for(Duration::ZERO, Duration::from_secs(1)),
        "open_for",
    );
    check(
        b().open_for(Duration::from_secs(2), Duration::from_secs(1)),
        "open_for",
    );
    // Extremes that are valid build.
    assert!(b()
        .consecutive_failures(u32::MAX)
        .open_for(Duration::from_nanos(1), Duration::MAX)
        .window(Duration::MAX, u32::MAX)
        .build()
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn extreme_open_times_trip_and_recover_without_panics() {
    for (first, max) in [
        (Duration::from_nanos(1), Duration::MAX),
        (Duration::MAX, Duration::MAX),
    ] {
        let (ep, knobs) = Ep::new(1);
        let mut svc = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .open_for(first, max)
            .build()
            .unwrap()
            .layer(ep);
        let handle = svc.handle();
        knobs.failing.store(true, Ordering::SeqCst);
        for _ in 0..40 {
            let _ = call(&mut svc).await;
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(handle.stats().trips >= 1);
        if first == Duration::MAX {
            assert_eq!(handle.state(), BreakerState::Open);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_refuses_with_a_typed_error_that_answers_503() {
    tokio::time::timeout(LIMIT, async {
        let (ep, knobs) = Ep::new(1);
        let mut svc = layer(1).layer(ep);
        knobs.unavailable.store(true, Ordering::SeqCst);
        call(&mut svc).await.unwrap();
        let e = call(&mut svc).await.unwrap_err();
        let open = e.downcast_ref::<BreakerOpen>().expect("BreakerOpen");
        assert_eq!(open.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(open.to_string().contains("circuit breaker open"), "{open}");
    })
    .await
    .expect("bounded");
}

#[tokio::test(start_paused = true)]
async fn the_builder_starts_from_the_same_defaults_however_it_is_reached() {
    use tower_balance_ext::breaker::CircuitBreakerBuilder;
    tokio::time::timeout(LIMIT, async {
        // The defaults trip after 5 failures in a row, from any of the three starts.
        for builder in [
            CircuitBreakerLayer::builder(),
            CircuitBreakerBuilder::new(),
            CircuitBreakerBuilder::default(),
        ] {
            let (ep, knobs) = Ep::new(1);
            let mut svc = builder
                .failure_if(|a: &Answer| a.status >= 500)
                .build()
                .unwrap()
                .layer(ep);
            let handle = svc.handle();
            knobs.unavailable.store(true, Ordering::SeqCst);
            for _ in 0..4 {
                call(&mut svc).await.unwrap();
            }
            assert_eq!(handle.state(), BreakerState::Closed);
            call(&mut svc).await.unwrap();
            assert_eq!(handle.state(), BreakerState::Open);
        }
    })
    .await
    .expect("bounded");
}
