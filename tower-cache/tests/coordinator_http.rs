//! Cluster-wide invalidation between nodes over the HTTP bus on real loopback sockets:
//! delivery order, gaps, restarts, replays, clock skew and floods.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower_cache::coordinator::{Coordinator, HttpBus, InvalidateEndpoint};
use tower_cache::{Cache, MemoryTier, WriteTiers};

const TTL: Duration = Duration::from_secs(600);
const SECRET: &[u8] = b"sixteen+ bytes of shared secret";

/// What the test server does with a request before the endpoint sees it.
#[derive(Clone, Copy, Debug)]
enum Action {
    /// Hands it to the endpoint after this delay.
    Pass(Duration),
    /// Answers with this status; the endpoint never sees it.
    Fail(u16),
}

type Hook = Arc<dyn Fn(&Bytes) -> Action + Send + Sync>;

fn pass() -> Hook {
    Arc::new(|_| Action::Pass(Duration::ZERO))
}

/// Serves `endpoint` on `listener`, letting `hook` delay or fail each request first.
fn serve(listener: tokio::net::TcpListener, endpoint: InvalidateEndpoint, hook: Hook) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (endpoint, hook) = (endpoint.clone(), hook.clone());
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (endpoint, hook) = (endpoint.clone(), hook.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        match hook(&body) {
                            Action::Pass(delay) => {
                                if !delay.is_zero() {
                                    tokio::time::sleep(delay).await;
                                }
                                let req = http::Request::from_parts(parts, Full::new(body));
                                let res = tower::ServiceExt::oneshot(endpoint, req).await;
                                Ok::<_, hyper::Error>(res.unwrap_or_else(|e| match e {}))
                            }
                            Action::Fail(code) => {
                                let mut res = http::Response::new(Full::default());
                                *res.status_mut() = http::StatusCode::from_u16(code).unwrap();
                                Ok(res)
                            }
                        }
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// `n` nodes, each serving its endpoint on a loopback port (with its hook) and sending to
/// every other one; node ids are 1..=n.
async fn cluster(hooks: Vec<Hook>) -> (Vec<Coordinator>, Vec<String>) {
    let mut listeners = Vec::new();
    for _ in &hooks {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}/_cache/invalidate", l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (i, (listener, hook)) in listeners.into_iter().zip(hooks).enumerate() {
        let mut b = HttpBus::builder(SECRET);
        for (j, url) in urls.iter().enumerate() {
            if i != j {
                b = b.peer(url.clone());
            }
        }
        let bus = b.build().unwrap();
        serve(listener, bus.endpoint(), hook);
        let node = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
            .node_id(i as u64 + 1)
            .secret(SECRET)
            .start()
            .unwrap();
        nodes.push(node);
    }
    (nodes, urls)
}

async fn put(c: &Coordinator, key: &str) {
    c.cache()
        .set(key, "v".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();
}

async fn applied(c: &Coordinator, n: u64) {
    tokio::time::timeout(Duration::from_secs(40), c.applied(n))
        .await
        .unwrap_or_else(|_| panic!("node {} applied {:?}", c.node_id(), c.status()));
}

/// A small deterministic generator (xorshift), for jitter.
fn jitter(seed: u64, max_ms: u64) -> Hook {
    let state = Arc::new(AtomicU64::new(seed | 1));
    Arc::new(move |_| {
        let mut x = state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.store(x, Ordering::Relaxed);
        Action::Pass(Duration::from_millis(x % (max_ms + 1)))
    })
}

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
async fn a_lost_last_frame_of_a_sender_gone_quiet_is_found_by_its_digest() {
    let _w = common::watchdog("http_digest_gap", common::LIMIT);
    // The receiver's server answers 503 while `down` is set, so the sender gives up the
    // frame sent then; the sender publishes nothing after it.
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook: Hook = {
        let down = down.clone();
        Arc::new(move |_| {
            if down.load(Ordering::SeqCst) {
                Action::Fail(503)
            } else {
                Action::Pass(Duration::ZERO)
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
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

/// A node with id `id` that sends to `url` only (it serves no endpoint).
fn sender(url: &str, id: u64) -> Coordinator {
    let bus = HttpBus::builder(SECRET).peer(url).build().unwrap();
    Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(id)
        .secret(SECRET)
        .start()
        .unwrap()
}

/// A receiver with id `id` serving its endpoint on loopback, recording every frame its
/// server is sent; returns it, its URL and the frames.
async fn receiver(
    id: u64,
    configure: impl FnOnce(
        tower_cache::coordinator::CoordinatorBuilder<HttpBus>,
    ) -> tower_cache::coordinator::CoordinatorBuilder<HttpBus>,
) -> (Coordinator, String, Arc<Mutex<Vec<Bytes>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
    let frames = Arc::new(Mutex::new(Vec::new()));
    let hook: Hook = {
        let frames = frames.clone();
        Arc::new(move |f| {
            frames.lock().unwrap().push(f.clone());
            Action::Pass(Duration::ZERO)
        })
    };
    let bus = HttpBus::builder(SECRET).build().unwrap();
    serve(listener, bus.endpoint(), hook);
    let node = configure(
        Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
            .node_id(id)
            .secret(SECRET),
    )
    .start()
    .unwrap();
    (node, url, frames)
}

/// POSTs `frame` to `url` over a fresh connection; returns the status.
async fn post(url: &str, frame: Bytes) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = http::Request::post(url).body(Full::new(frame)).unwrap();
    client.request(req).await.unwrap().status().as_u16()
}

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

/// `n` distinct signed frames from node 9 (invalidations of `f0`, `f1`, ...), in order.
async fn frames_of_another_node(n: usize) -> Vec<Bytes> {
    use tower_cache::coordinator::{Bus, BusEvent, InProcessBus};
    let bus = InProcessBus::with_capacity(n + 1);
    let mut rx = bus.subscribe();
    let other = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(9)
        .secret(SECRET)
        .start()
        .unwrap();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        other.invalidate(&format!("f{i}")).await.unwrap();
        match rx.next().await.unwrap() {
            BusEvent::Frame(f) => out.push(f),
            e => panic!("{e:?}"),
        }
    }
    out
}

async fn call(endpoint: &InvalidateEndpoint, frame: Bytes) -> u16 {
    let req = http::Request::post("/_cache/invalidate")
        .body(Full::new(frame))
        .unwrap();
    tower::ServiceExt::oneshot(endpoint.clone(), req)
        .await
        .unwrap()
        .status()
        .as_u16()
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

/// A sender cut off from a peer gives a frame up, then restarts: the new start counts
/// as a gap, so the entry the lost frame invalidated is not served on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_restarts_after_giving_up_a_frame_leaves_nothing_stale() {
    let _w = common::watchdog("http_restart_gap", common::LIMIT);
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hook: Hook = {
        let down = down.clone();
        Arc::new(move |_| {
            if down.load(Ordering::SeqCst) {
                Action::Fail(503)
            } else {
                Action::Pass(Duration::ZERO)
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
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

/// A sender that gave a frame up, then restarted and publishes nothing: its digests
/// alone tell the receiver of the new start (and so of the frames the earlier one may
/// have given up), before any invalidation of the new start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sender_that_publishes_nothing_is_heard_by_its_digests() {
    let _w = common::watchdog("http_restart_quiet", common::LIMIT);
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook: Hook = {
        let down = down.clone();
        Arc::new(move |_| {
            if down.load(Ordering::SeqCst) {
                Action::Fail(503)
            } else {
                Action::Pass(Duration::ZERO)
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
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

/// Whether `frame` is a digest (kind 4, no target: 36 bytes of head and a 32-byte tag).
fn is_digest(frame: &[u8]) -> bool {
    frame.len() == 68 && frame[33] == 4
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
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
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hook: Hook = {
        let down = down.clone();
        Arc::new(move |_| {
            if down.load(Ordering::SeqCst) {
                Action::Fail(503)
            } else {
                Action::Pass(Duration::ZERO)
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/_cache/invalidate",
        listener.local_addr().unwrap()
    );
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
