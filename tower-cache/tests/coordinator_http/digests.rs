//! Digests: a quiet sender's last number, and what they must never do.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_last_frame_of_a_sender_gone_quiet_is_found_by_its_digest() {
    let _w = common::watchdog("http_digest_gap", common::LIMIT);
    // The receiver's server answers 503 while `down` is set, so the sender gives up the
    // frame sent then; the sender publishes nothing after it.
    let (down, hook) = failing_while(false);
    let (listener, url) = listen().await;
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), hook);
    let b = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(2)
        .secret(SECRET)
        .start()
        .unwrap();
    let a = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        HttpBus::builder(SECRET).peer(url).build().unwrap(),
    )
    .node_id(1)
    .secret(SECRET)
    .digest_interval(Duration::from_millis(100))
    .start()
    .unwrap();
    a.invalidate("one").await.unwrap();
    applied(&b, 1).await;
    put(&b, "two").await;
    // Quiet and nothing lost: digests come, and change nothing.
    let heard = async {
        while b.status().digests_received < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), heard)
        .await
        .expect("digests arrive");
    assert_eq!(b.status().memory_flushes, 0, "{:?}", b.status());
    assert!(b.cache().get("two").await.is_some());

    down.store(true, Ordering::SeqCst);
    a.invalidate("two").await.unwrap();
    let given_up = async {
        while a.status().links[0].failures == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), given_up)
        .await
        .expect("the frame is given up");
    assert!(
        b.cache().get("two").await.is_some(),
        "b has not heard of the invalidation yet"
    );
    down.store(false, Ordering::SeqCst);
    // No further invalidation from a: only its digest can tell b.
    let flushed = async {
        while b.status().sequence_gaps == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), flushed)
        .await
        .unwrap_or_else(|_| panic!("the gap is never seen: {:?}", b.status()));
    let s = b.status();
    assert_eq!((s.sequence_gaps, s.memory_flushes), (1, 1), "{s:?}");
    assert_eq!(s.peer_nodes[0].last_seq, 2, "{s:?}");
    assert!(
        b.cache().get("two").await.is_none(),
        "two went with the flush"
    );
    // Digests are neither retried nor counted as failed deliveries.
    let links = a.status().links;
    assert_eq!(links[0].failures, 1, "{links:?}");
    assert!(a.status().digests_sent >= 3, "{:?}", a.status());
}

/// A sender that gave a frame up, then restarted and publishes nothing: its digests
/// alone tell the receiver of the new start (and so of the frames the earlier one may
/// have given up), before any invalidation of the new start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sender_that_publishes_nothing_is_heard_by_its_digests() {
    let _w = common::watchdog("http_restart_quiet", common::LIMIT);
    let (down, hook) = failing_while(false);
    let (listener, url) = listen().await;
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), hook);
    let b = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(2)
        .secret(SECRET)
        .digest_interval(Duration::from_millis(50))
        .start()
        .unwrap();
    let quiet_sender = || {
        Coordinator::builder(
            Cache::new(MemoryTier::builder().build().unwrap()),
            HttpBus::builder(SECRET).peer(url.clone()).build().unwrap(),
        )
        .node_id(1)
        .secret(SECRET)
        .digest_interval(Duration::from_millis(50))
        .start()
        .unwrap()
    };
    let a = quiet_sender();
    a.invalidate("w").await.unwrap();
    applied(&b, 1).await; // b knows a's first start
    down.store(true, Ordering::SeqCst);
    put(&b, "x").await;
    a.invalidate("x").await.unwrap();
    let given_up = async {
        while a.status().links[0].failures == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), given_up)
        .await
        .expect("the frame is given up");
    drop(a);
    down.store(false, Ordering::SeqCst);

    // The new start invalidates nothing. (A digest the earlier start had queued may
    // still arrive first, and show the gap itself.)
    let a = quiet_sender();
    let heard = async {
        loop {
            let s = b.status();
            if s.memory_flushes >= 1 && s.peer_nodes[0].last_seq == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), heard)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the new start is never heard: {:?}; the sender says {:?}",
                b.status(),
                a.status()
            )
        });
    let s = b.status();
    assert!((1..=2).contains(&s.memory_flushes), "{s:?}");
    assert_eq!(s.sequence_gaps, s.memory_flushes, "{s:?}");
    assert!(
        b.cache().get("x").await.is_none(),
        "x went with the flush: {s:?}"
    );
    // b has no peer: none of its digests was sent anywhere, and none is counted.
    assert_eq!(s.digests_sent, 0, "{s:?}");
    assert!(a.status().digests_sent >= 1, "{:?}", a.status());
}

/// A peer busy with frames (the gate's bound per sender) answers a digest `503`: it is
/// up all the same, and the link says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_answered_busy_leaves_the_link_up() {
    let _w = common::watchdog("http_digest_busy", common::LIMIT);
    let busy_digests = Arc::new(AtomicU64::new(0));
    let hook: Hook = {
        let busy_digests = busy_digests.clone();
        Arc::new(move |frame| {
            if is_digest(frame) {
                busy_digests.fetch_add(1, Ordering::SeqCst);
                Action::Fail(503)
            } else {
                Action::Pass(Duration::ZERO)
            }
        })
    };
    let (listener, url) = listen().await;
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), hook);
    let b = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(2)
        .secret(SECRET)
        .start()
        .unwrap();
    let a = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        HttpBus::builder(SECRET).peer(url).build().unwrap(),
    )
    .node_id(1)
    .secret(SECRET)
    .digest_interval(Duration::from_millis(50))
    .start()
    .unwrap();
    a.invalidate("w").await.unwrap();
    applied(&b, 1).await;
    let answered = async {
        while busy_digests.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), answered)
        .await
        .expect("digests are sent");
    let links = a.status().links;
    assert!(links[0].up, "{links:?}");
    assert_eq!(links[0].failures, 0, "{links:?}");
}

/// Captured digests, replayed by someone without the secret (to the node they were sent
/// to, to a node that joined later, after their sender restarted) or altered, flush
/// nothing: only the sender's restart does, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_or_altered_digests_flush_no_node() {
    let _w = common::watchdog("http_digest_replay", common::LIMIT);
    let (b, url, frames) = receiver(2, |b| b).await;
    let chatty_sender = || {
        Coordinator::builder(
            Cache::new(MemoryTier::builder().build().unwrap()),
            HttpBus::builder(SECRET).peer(url.clone()).build().unwrap(),
        )
        .node_id(1)
        .secret(SECRET)
        .digest_interval(Duration::from_millis(50))
        .start()
        .unwrap()
    };
    let a = chatty_sender();
    a.invalidate("k").await.unwrap();
    applied(&b, 1).await;
    let captured = async {
        loop {
            if let Some(d) = frames.lock().unwrap().iter().find(|f| is_digest(f)) {
                return d.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let digest = tokio::time::timeout(Duration::from_secs(20), captured)
        .await
        .expect("a digest is sent");
    put(&b, "unrelated").await;

    for _ in 0..200 {
        assert_eq!(post(&url, digest.clone()).await, 204);
    }
    // Altered without the secret: a higher number, an invalidation kind with no target,
    // a target added, cut short.
    let mut higher = digest.to_vec();
    higher[17] = higher[17].wrapping_add(5);
    let mut key_kind = digest.to_vec();
    key_kind[33] = 0;
    let mut with_target = digest[..36].to_vec();
    with_target[34] = 1;
    with_target.push(b'k');
    with_target.extend_from_slice(&digest[36..]);
    let short = digest.slice(..digest.len() - 1);
    for forged in [higher.into(), key_kind.into(), with_target.into(), short] {
        assert_eq!(post(&url, forged).await, 401);
    }
    let s = b.status();
    assert_eq!(
        (s.memory_flushes, s.sequence_gaps, s.rejected),
        (0, 0, 4),
        "{s:?}"
    );
    assert_eq!(b.cache().get("unrelated").await.unwrap(), "v");

    // A node that joined later takes it as its first word from the sender: no flush.
    let (c, c_url, _) = receiver(3, |b| b).await;
    put(&c, "unrelated").await;
    assert_eq!(post(&c_url, digest.clone()).await, 204);
    assert_eq!(c.status().memory_flushes, 0, "{:?}", c.status());
    assert_eq!(c.cache().get("unrelated").await.unwrap(), "v");

    // The sender restarts: its new start is seen once; its earlier start's digest, sent
    // again, is refused.
    drop(a);
    let a = chatty_sender();
    let restart_seen = async {
        while b.status().memory_flushes == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), restart_seen)
        .await
        .unwrap_or_else(|_| panic!("the restart is never seen: {:?}", b.status()));
    put(&b, "unrelated").await;
    for _ in 0..50 {
        assert_eq!(post(&url, digest.clone()).await, 409);
    }
    let s = b.status();
    assert_eq!((s.memory_flushes, s.sequence_gaps), (1, 1), "{s:?}");
    assert!(s.older_incarnation >= 50, "{s:?}");
    assert_eq!(b.cache().get("unrelated").await.unwrap(), "v");
    assert!(a.status().digests_sent >= 1);
}

/// Bursts of invalidations with quiet pauses between them (each pause long enough for
/// digests), every request delayed at random: no digest overtakes the frame it numbers,
/// so none shows a gap that is not there, and every frame is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_between_jittered_bursts_show_no_false_gap() {
    let _w = common::watchdog("http_digest_jitter", common::LIMIT);
    let (listener, url) = listen().await;
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), jitter(7, 15));
    let b = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(2)
        .secret(SECRET)
        .start()
        .unwrap();
    let a = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        HttpBus::builder(SECRET).peer(url).build().unwrap(),
    )
    .node_id(1)
    .secret(SECRET)
    .digest_interval(Duration::from_millis(10))
    .start()
    .unwrap();
    put(&b, "unrelated").await;
    let mut sent = 0;
    for burst in 0..20 {
        for i in 0..=burst % 4 {
            a.invalidate(&format!("k{burst}-{i}")).await.unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    applied(&b, sent).await;
    let digests = async {
        while b.status().digests_received == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), digests)
        .await
        .expect("digests arrive");
    let s = b.status();
    assert_eq!(
        (s.applied, s.sequence_gaps, s.memory_flushes, s.duplicates),
        (sent, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(b.cache().get("unrelated").await.unwrap(), "v");
    assert_eq!(a.status().links[0].failures, 0);
}

/// A quiet sender's digests, though they change nothing (the gate takes them and queues
/// nothing), show in the ages of the status: the sender is heard from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usual_digests_of_a_quiet_sender_refresh_its_age() {
    let _w = common::watchdog("http_digest_age", common::LIMIT);
    let (b, url, _) = receiver(2, |b| b).await;
    let a = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        HttpBus::builder(SECRET).peer(url).build().unwrap(),
    )
    .node_id(1)
    .secret(SECRET)
    .digest_interval(Duration::from_millis(20))
    .start()
    .unwrap();
    a.invalidate("k").await.unwrap();
    applied(&b, 1).await;
    let since_applied = std::time::Instant::now();
    let before = b.status().digests_received;
    let heard = async {
        while b.status().digests_received < before + 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), heard)
        .await
        .expect("digests arrive");
    let elapsed = since_applied.elapsed();
    let s = b.status();
    assert_eq!((s.applied, s.memory_flushes), (1, 0), "{s:?}");
    assert!(
        s.peer_nodes[0].last_message_age < elapsed,
        "its age counts from its last invalidation, not its last digest: {elapsed:?}, {s:?}"
    );
    assert!(s.last_message_age.unwrap() < elapsed, "{elapsed:?}, {s:?}");
}

/// A node that starts after the receiver, gives up its first frame to it and goes quiet:
/// its first digest is the first the receiver hears of it, and, as the sender started
/// after the receiver, the frames it numbers were sent to the receiver: a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sender_whose_first_frames_were_given_up_is_found_by_its_digest() {
    let _w = common::watchdog("http_new_sender_gap", common::LIMIT);
    let (down, hook) = failing_while(true);
    let (listener, url) = listen().await;
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), hook);
    let b = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(2)
        .secret(SECRET)
        .max_clock_skew(Duration::from_secs(1))
        .start()
        .unwrap();
    put(&b, "x").await;
    // Later than the receiver's start by more than twice the skew bound (one host's clock
    // here, so the order is certain).
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let a = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        HttpBus::builder(SECRET).peer(url).build().unwrap(),
    )
    .node_id(1)
    .secret(SECRET)
    .digest_interval(Duration::from_millis(50))
    .start()
    .unwrap();
    a.invalidate("x").await.unwrap();
    let given_up = async {
        while a.status().links[0].failures == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), given_up)
        .await
        .expect("the frame is given up");
    down.store(false, Ordering::SeqCst);
    let flushed = async {
        while b.status().memory_flushes == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), flushed)
        .await
        .unwrap_or_else(|_| panic!("the lost frame is never seen: {:?}", b.status()));
    let s = b.status();
    assert_eq!((s.sequence_gaps, s.memory_flushes), (1, 1), "{s:?}");
    assert_eq!(s.peer_nodes[0].last_seq, 1, "{s:?}");
    assert!(b.cache().get("x").await.is_none(), "{s:?}");
}

/// A peer slow to answer: a digest queued while another is on its way is dropped once
/// an invalidation is queued behind it, so the invalidation waits for no digest but the
/// one already sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_queued_behind_a_digest_goes_first() {
    let _w = common::watchdog("http_digest_behind", common::LIMIT);
    // Digests are answered after a while; the order requests arrive in is kept.
    let order = Arc::new(Mutex::new(Vec::<bool>::new()));
    let hook: Hook = {
        let order = order.clone();
        Arc::new(move |frame| {
            order.lock().unwrap().push(is_digest(frame));
            if is_digest(frame) {
                Action::Pass(Duration::from_secs(5))
            } else {
                Action::Pass(Duration::ZERO)
            }
        })
    };
    let (listener, url) = listen().await;
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), hook);
    let b = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(2)
        .secret(SECRET)
        .start()
        .unwrap();
    let a = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        HttpBus::builder(SECRET)
            .peer(url)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    )
    .node_id(1)
    .secret(SECRET)
    .digest_interval(Duration::from_millis(10))
    .start()
    .unwrap();
    // A digest on its way (seen by the server, not answered) and another queued.
    let queued = async {
        loop {
            let seen = order.lock().unwrap().iter().filter(|&&d| d).count() as u64;
            if seen >= 1 && a.status().digests_sent > seen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), queued)
        .await
        .expect("a digest is queued behind one on its way");
    let before = order.lock().unwrap().len();
    a.invalidate("k").await.unwrap();
    applied(&b, 1).await;
    let after: Vec<bool> = order.lock().unwrap()[before..].to_vec();
    assert_eq!(
        after.first(),
        Some(&false),
        "a digest went before the invalidation queued behind it: {after:?}"
    );
}

/// A captured digest of a sender that has gone, replayed, does not make it look alive:
/// only a message newer than any before it counts as hearing from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_digest_does_not_refresh_a_gone_senders_age() {
    let _w = common::watchdog("http_digest_replay_age", common::LIMIT);
    let (b, url, frames) = receiver(2, |b| b).await;
    let a = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        HttpBus::builder(SECRET).peer(url.clone()).build().unwrap(),
    )
    .node_id(1)
    .secret(SECRET)
    .digest_interval(Duration::from_millis(20))
    .start()
    .unwrap();
    a.invalidate("k").await.unwrap();
    applied(&b, 1).await;
    let captured = async {
        loop {
            if let Some(d) = frames.lock().unwrap().iter().find(|f| is_digest(f)) {
                return d.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let digest = tokio::time::timeout(Duration::from_secs(20), captured)
        .await
        .expect("a digest is sent");
    drop(a);
    // Whatever it had on its way has arrived.
    let quiet = async {
        loop {
            let n = frames.lock().unwrap().len();
            tokio::time::sleep(Duration::from_millis(200)).await;
            if frames.lock().unwrap().len() == n {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), quiet)
        .await
        .expect("the sender stops");
    let gone = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(post(&url, digest.clone()).await, 204);
    }
    let elapsed = gone.elapsed();
    let s = b.status();
    assert!(
        s.peer_nodes[0].last_message_age >= elapsed,
        "a replay counted as hearing from the sender: {elapsed:?}, {s:?}"
    );
    assert!(s.last_message_age.unwrap() >= elapsed, "{elapsed:?}, {s:?}");
}
