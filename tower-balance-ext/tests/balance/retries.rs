//! Retries on another endpoint: the budget and `max_attempts`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tower_balance_ext::{discover, BalancerBuilder, Pick};

use crate::common::balance::{send, settle, Bal};
use crate::common::{endpoints, Answer, Ep, LIMIT};

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
