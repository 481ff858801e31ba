//! Restarts, replays, the replay window and floods at the endpoint.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sender_is_heard_and_its_earlier_start_is_refused() {
    let _w = common::watchdog("http_restart", common::LIMIT);
    let (b, url, frames) = receiver(2, |b| b).await;
    let a = sender(&url, 1);
    for k in ["x1", "x2", "x3"] {
        a.invalidate(k).await.unwrap();
    }
    applied(&b, 3).await;
    let old_frame = frames.lock().unwrap()[0].clone();
    drop(a);

    // The same node id starts again: its numbers start again at 1.
    let a = sender(&url, 1);
    put(&b, "y").await;
    a.invalidate("y").await.unwrap();
    applied(&b, 4).await;
    assert!(
        b.cache().get("y").await.is_none(),
        "the new start was heard"
    );
    // What the earlier start may have given up on is unknown: one gap, one flush.
    let s = b.status();
    assert_eq!(
        (s.duplicates, s.sequence_gaps, s.memory_flushes),
        (0, 1, 1),
        "{s:?}"
    );
    assert_eq!(s.peer_nodes[0].last_seq, 1);

    // A frame of the earlier start, sent again, is refused and counted.
    put(&b, "x1").await;
    let _ = post(&url, old_frame).await;
    a.invalidate("z").await.unwrap();
    applied(&b, 5).await;
    assert_eq!(b.cache().get("x1").await.unwrap(), "v");
    assert_eq!(b.status().older_incarnation, 1, "{:?}", b.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_pattern_and_tag_frames_leave_newer_entries_on_a_node_that_joined_later() {
    let _w = common::watchdog("http_replay_newer", common::LIMIT);
    let (b, url, frames) = receiver(2, |b| b).await;
    let a = sender(&url, 1);
    a.invalidate_pattern("p:*").await.unwrap();
    a.invalidate_tag("t").await.unwrap();
    applied(&b, 2).await;
    let captured = frames.lock().unwrap().clone();
    assert_eq!(captured.len(), 2);

    // A node that joins afterwards writes newer entries; the captured frames, sent to it,
    // leave them in place.
    let (c, c_url, _) = receiver(3, |b| b).await;
    let tags: tower_cache::Tags = ["t"].into_iter().collect();
    c.set(
        "p:1",
        "new".into(),
        TTL,
        Default::default(),
        WriteTiers::ALL,
    )
    .await
    .unwrap()
    .unwrap();
    c.set("r:1", "new".into(), TTL, tags, WriteTiers::ALL)
        .await
        .unwrap()
        .unwrap();
    for f in captured {
        let _ = post(&c_url, f).await;
    }
    applied(&c, 2).await;
    assert_eq!(c.cache().get("p:1").await.unwrap(), "new");
    assert_eq!(c.cache().get("r:1").await.unwrap(), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_replayed_after_the_replay_window_is_refused_and_counted() {
    let _w = common::watchdog("http_replay_window", common::LIMIT);
    let (b, url, frames) = receiver(2, |b| b).await;
    let a = sender(&url, 1);
    a.invalidate("k").await.unwrap();
    applied(&b, 1).await;
    let captured = frames.lock().unwrap()[0].clone();

    // Past the (shortest) window, a node that joins afterwards refuses it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (c, c_url, _) = receiver(3, |b| b.replay_window(Duration::from_secs(1))).await;
    put(&c, "k").await;
    let _ = post(&c_url, captured).await;
    // A fresh frame after it shows it was handled.
    sender(&c_url, 4).invalidate("other").await.unwrap();
    applied(&c, 1).await;
    assert_eq!(c.cache().get("k").await.unwrap(), "v");
    let s = c.status();
    assert_eq!((s.outside_window, s.applied), (1, 1), "{s:?}");

    let e = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        HttpBus::builder(SECRET).build().unwrap(),
    )
    .secret(SECRET)
    .replay_window(Duration::ZERO)
    .start()
    .unwrap_err();
    assert!(e.to_string().contains("replay_window"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_one_replayed_frame_cannot_flush_a_node() {
    let _w = common::watchdog("http_flood", Duration::from_secs(180));
    let (b, url, frames) = receiver(2, |b| b).await;
    let a = sender(&url, 1);
    a.invalidate("k").await.unwrap();
    applied(&b, 1).await;
    let captured = frames.lock().unwrap()[0].clone();
    put(&b, "unrelated").await;

    // 16 connections send the captured frame 1,000 times each.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (url, frame) = (url.clone(), captured.clone());
        tasks.push(tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(1)
                    .build_http::<Full<Bytes>>();
            let mut codes = std::collections::BTreeMap::<u16, u32>::new();
            for _ in 0..1_000 {
                let req = http::Request::post(&url)
                    .body(Full::new(frame.clone()))
                    .unwrap();
                let res = client.request(req).await.unwrap();
                *codes.entry(res.status().as_u16()).or_default() += 1;
            }
            codes
        }));
    }
    for t in tasks {
        let codes = t.await.unwrap();
        assert!(codes.keys().all(|&c| c == 204), "{codes:?}");
    }
    // A fresh frame after the flood is applied.
    a.invalidate("after").await.unwrap();
    applied(&b, 2).await;
    let s = b.status();
    assert_eq!(s.memory_flushes, 0, "{s:?}");
    assert_eq!(b.cache().get("unrelated").await.unwrap(), "v");
    assert_eq!(s.applied, 2, "{s:?}");
}

/// The endpoint called faster than the node applies (no socket in between, on one
/// thread): a replayed frame 16 x 1,000 times, then 5,000 distinct frames of one sender.
#[tokio::test(flavor = "current_thread")]
async fn floods_at_the_endpoint_are_bounded_per_sender_and_never_flush_a_node() {
    let _w = common::watchdog("endpoint_flood", common::LIMIT);
    let bus = HttpBus::builder(SECRET).build().unwrap();
    let endpoint = bus.endpoint();
    let b = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(2)
        .secret(SECRET)
        .start()
        .unwrap();
    put(&b, "unrelated").await;
    let frames = frames_of_another_node(5_000).await;

    assert_eq!(call(&endpoint, frames[0].clone()).await, 204);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (endpoint, frame) = (endpoint.clone(), frames[0].clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..1_000 {
                assert_eq!(call(&endpoint, frame.clone()).await, 204);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    applied(&b, 1).await;
    let s = b.status();
    assert_eq!((s.memory_flushes, s.duplicates), (0, 16_000), "{s:?}");

    // Distinct frames of one sender, faster than they are applied: past its bound the
    // sender is asked to come back later; nothing is lost, nothing flushed.
    let mut busy = Vec::new();
    for f in &frames[1..] {
        match call(&endpoint, f.clone()).await {
            204 => {}
            503 => busy.push(f.clone()),
            other => panic!("{other}"),
        }
    }
    assert!(!busy.is_empty(), "the bound was reached");
    assert_eq!(b.status().busy, busy.len() as u64);
    // Sent again (as the sender's retries would), in order, once there is room.
    for f in busy {
        loop {
            match call(&endpoint, f.clone()).await {
                204 => break,
                503 => tokio::task::yield_now().await,
                other => panic!("{other}"),
            }
        }
    }
    applied(&b, 5_000).await;
    let s = b.status();
    assert_eq!((s.memory_flushes, s.sequence_gaps), (0, 0), "{s:?}");
    assert_eq!(b.cache().get("unrelated").await.unwrap(), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_pattern_frame_leaves_newer_entries_on_disk_too() {
    let _w = common::watchdog("http_replay_disk", common::LIMIT);
    let (b, url, frames) = receiver(2, |b| b).await;
    let a = sender(&url, 1);
    a.invalidate_pattern("p:*").await.unwrap();
    applied(&b, 1).await;
    let captured = frames.lock().unwrap()[0].clone();

    // A node with a disk tier joins afterwards: one entry older than the frame, one newer.
    let dir = tempfile::tempdir().unwrap();
    let disk = tower_cache::DiskTier::builder(dir.path())
        .map_size(16 << 20)
        .open()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c_url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), pass());
    let c = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()).with_disk(disk),
        bus,
    )
    .node_id(3)
    .secret(SECRET)
    .start()
    .unwrap();
    let older = tower_cache::EntryMeta {
        version: 1,
        tags: Default::default(),
    };
    c.cache()
        .set_with("p:old", "old".into(), TTL, older, WriteTiers::ALL)
        .await
        .unwrap();
    c.set(
        "p:new",
        "new".into(),
        TTL,
        Default::default(),
        WriteTiers::ALL,
    )
    .await
    .unwrap()
    .unwrap();
    c.cache().memory().clear(); // only the disk tier holds them now
    assert_eq!(post(&c_url, captured).await, 204);
    applied(&c, 1).await;
    let disk = c.cache().disk().unwrap();
    assert!(disk.get("p:old").is_none(), "an older entry goes");
    assert_eq!(disk.get("p:new").unwrap(), "new", "a newer one stays");
}

/// A sender cut off from a peer gives a frame up, then restarts: the new start counts
/// as a gap, so the entry the lost frame invalidated is not served on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_restarts_after_giving_up_a_frame_leaves_nothing_stale() {
    let _w = common::watchdog("http_restart_gap", common::LIMIT);
    let (down, hook) = failing_while(true);
    let (listener, url) = listen().await;
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), hook);
    let b = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(2)
        .secret(SECRET)
        .start()
        .unwrap();
    down.store(false, Ordering::SeqCst);
    let a = sender(&url, 1);
    a.invalidate("w").await.unwrap();
    applied(&b, 1).await; // b knows a's first start
    down.store(true, Ordering::SeqCst);
    put(&b, "x").await;
    a.invalidate("x").await.unwrap();
    // b is cut off long enough for a to give the frame up (6 tries, 50 ms doubling).
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(a);
    down.store(false, Ordering::SeqCst);
    let a = sender(&url, 1);
    a.invalidate("y").await.unwrap();
    applied(&b, 2).await;
    let s = b.status();
    assert!(
        b.cache().get("x").await.is_none(),
        "x is still served after its invalidation was lost: {s:?}"
    );
}
