//! Delivery: order despite jitter, frames given up, long targets, listeners, dependencies,
//! concurrency.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalidation_is_applied_in_order_despite_jitter() {
    let _w = common::watchdog("http_jitter", Duration::from_secs(120));
    const EACH: usize = 30;
    let (nodes, _) = cluster(vec![jitter(1, 30), jitter(2, 30), jitter(3, 30)]).await;
    let keys: Vec<String> = (1..=3)
        .flat_map(|n| (0..EACH).map(move |i| format!("n{n}:k{i}")))
        .collect();
    for n in &nodes {
        for k in &keys {
            put(n, k).await;
        }
    }
    let mut tasks = Vec::new();
    for n in &nodes {
        let n = n.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                n.invalidate(&format!("n{}:k{i}", n.node_id()))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for n in &nodes {
        applied(n, 2 * EACH as u64).await;
        for k in &keys {
            assert!(
                n.cache().get(k).await.is_none(),
                "node {} kept {k}",
                n.node_id()
            );
        }
        let s = n.status();
        assert_eq!(s.applied, 2 * EACH as u64, "{s:?}");
        assert_eq!((s.sequence_gaps, s.memory_flushes), (0, 0), "{s:?}");
        for p in &s.peer_nodes {
            assert_eq!(p.last_seq, EACH as u64, "{s:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_a_peer_gave_up_on_is_a_gap_the_receiver_counts_and_flushes() {
    let _w = common::watchdog("http_gap", Duration::from_secs(120));
    // The receiver's server fails every delivery of the second frame, so the sender
    // gives it up after its tries; the third goes through.
    let seen = Arc::new(Mutex::new(Vec::<Bytes>::new()));
    let hook: Hook = {
        let seen = seen.clone();
        Arc::new(move |frame| {
            let mut seen = seen.lock().unwrap();
            if !seen.contains(frame) {
                seen.push(frame.clone());
            }
            if seen.iter().position(|f| f == frame) == Some(1) {
                Action::Fail(500)
            } else {
                Action::Pass(Duration::ZERO)
            }
        })
    };
    let (nodes, _) = cluster(vec![pass(), hook]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    put(b, "unrelated").await;
    a.invalidate("one").await.unwrap();
    applied(b, 1).await;
    assert!(b.cache().get("unrelated").await.is_some());
    a.invalidate("two").await.unwrap(); // never delivered
    a.invalidate("three").await.unwrap();
    applied(b, 2).await;
    let s = b.status();
    assert_eq!((s.sequence_gaps, s.memory_flushes), (1, 1), "{s:?}");
    assert!(
        b.cache().get("unrelated").await.is_none(),
        "the memory tier was dropped"
    );
    let links = a.status().links;
    assert_eq!(links[0].failures, 1, "{links:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_longer_than_a_message_carries_is_refused_never_cut() {
    let _w = common::watchdog("http_long_target", common::LIMIT);
    use tower_cache::coordinator::TargetTooLong;
    let (b, url, _) = receiver(2, |b| b).await;
    let a = sender(&url, 1);
    let max = TargetTooLong::max();
    let long = "k".repeat(max + 100);
    let cut = &long[..max];
    for n in [&a, &b] {
        put(n, &long).await;
        put(n, cut).await;
    }
    for e in [
        a.invalidate(&long).await.unwrap_err(),
        a.invalidate_tag(&long).await.unwrap_err(),
    ] {
        let cause = std::error::Error::source(&e).expect("a typed cause");
        let too_long = cause
            .downcast_ref::<TargetTooLong>()
            .expect("TargetTooLong");
        assert_eq!(too_long.target_len(), max + 100);
    }
    assert!(
        a.cache().get(&long).await.is_some(),
        "nothing done locally either"
    );
    // The longest target a message carries goes whole.
    a.invalidate(cut).await.unwrap();
    applied(&b, 1).await;
    assert!(b.cache().get(cut).await.is_none());
    assert_eq!(b.cache().get(&long).await.unwrap(), "v");
    assert_eq!(a.status().published, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_listener_ends_no_remote_invalidation() {
    let _w = common::watchdog("http_listener_panic", common::LIMIT);
    let (b, url, _) = receiver(2, |b| b).await;
    let a = sender(&url, 1);
    let heard = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let heard = heard.clone();
        b.cache()
            .on_invalidate("*", move |key| {
                assert_ne!(key, "boom", "a listener that panics on one key");
                heard.lock().unwrap().push(key.to_owned());
            })
            .unwrap();
    }
    for k in ["boom", "k"] {
        put(&b, k).await;
    }
    a.invalidate("boom").await.unwrap();
    a.invalidate("k").await.unwrap();
    applied(&b, 2).await;
    assert!(b.cache().get("boom").await.is_none());
    assert!(
        b.cache().get("k").await.is_none(),
        "the receiving task lives on"
    );
    assert_eq!(
        *heard.lock().unwrap(),
        ["k"],
        "the listener stays registered"
    );
    assert_eq!(b.status().listener_panics, 1);
    // Locally too, the invalidation completes.
    put(&b, "boom").await;
    assert_eq!(b.cache().invalidate("boom").await.unwrap(), 1);
    assert_eq!(b.cache().listener_panics(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_invalidation_reaches_every_node_over_http() {
    let _w = common::watchdog("http_dependents", common::LIMIT);
    let (nodes, _) = cluster(vec![pass(), pass(), pass()]).await;
    for n in &nodes {
        let c = n.cache();
        for k in [
            "user:7",
            "ratelimit:user:7",
            "session:7",
            "user:8",
            "only-here",
        ] {
            put(n, k).await;
        }
        c.register_dependency("ratelimit:user:7", "user:7")
            .await
            .unwrap();
        c.register_dependency("session:7", "ratelimit:user:7")
            .await
            .unwrap();
        // An edge only the third node holds: it follows it, the others do not know it.
        if n.node_id() == 3 {
            c.register_dependency("only-here", "session:7")
                .await
                .unwrap();
        }
    }
    let done = nodes[0].invalidate_with_dependents("user:7").await.unwrap();
    assert_eq!(done.removed, 3);
    for n in &nodes[1..] {
        applied(n, 1).await;
    }
    for n in &nodes {
        for k in ["user:7", "ratelimit:user:7", "session:7"] {
            assert!(
                n.cache().get(k).await.is_none(),
                "node {} kept {k}",
                n.node_id()
            );
        }
        assert!(n.cache().get("user:8").await.is_some());
        assert_eq!(
            n.cache().get("only-here").await.is_none(),
            n.node_id() == 3,
            "node {}",
            n.node_id()
        );
    }
    // A write older than the invalidation does not land on a node that applied it.
    let old = done.version - 1;
    let stored = nodes[2]
        .set_versioned(
            "session:7",
            "stale".into(),
            TTL,
            old,
            Default::default(),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
    assert_eq!(stored, None, "a dependent's tombstone refuses older writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invalidations_of_one_node_all_arrive() {
    let _w = common::watchdog("http_concurrent", Duration::from_secs(120));
    let (b, url, _) = receiver(2, |b| b).await;
    let a = sender(&url, 1);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                a.invalidate(&format!("t{t}:k{i}")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    applied(&b, 800).await;
    let s = b.status();
    assert_eq!(
        (s.applied, s.duplicates, s.sequence_gaps),
        (800, 0, 0),
        "{s:?}"
    );
}
