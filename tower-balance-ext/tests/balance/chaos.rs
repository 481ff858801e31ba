//! Everything failing at once on two threads, then the balancer's books checked.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tower::ServiceExt;
use tower_balance_ext::{discover, BalancerBuilder, EndpointState, Pick};

use crate::common::balance::{settle, tally, Bal};
use crate::common::{endpoints, until, Ep, LIMIT};

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
