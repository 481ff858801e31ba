//! Settings refused at build time with a message naming them, and requests the
//! settings cannot serve.

use std::time::Duration;

use tower::ServiceExt;
use tower_balance_ext::{discover, hash_key, BalancerBuilder, Pick};

use crate::common::balance::{send, settle, Bal};
use crate::common::{endpoints, Answer, Ep};

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
