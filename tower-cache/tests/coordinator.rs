//! Cluster-wide invalidation on the in-process bus: three nodes in one process.

mod common;

use std::time::Duration;

use bytes::Bytes;
use tower_cache::coordinator::{Bus, Coordinator, InProcessBus};
use tower_cache::{Cache, EntryMeta, MemoryTier, WriteTiers};

const TTL: Duration = Duration::from_secs(600);
const SECRET: &[u8] = b"sixteen+ bytes of shared secret";

fn node(bus: &InProcessBus, id: u64) -> Coordinator {
    Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        bus.clone(),
    )
    .node_id(id)
    .secret(SECRET)
    .start()
    .unwrap()
}

async fn fill(c: &Coordinator) {
    for k in ["provider:1", "provider:2", "user:1"] {
        c.cache()
            .set(k, "v".into(), TTL, WriteTiers::ALL)
            .await
            .unwrap();
    }
    c.cache()
        .set_with(
            "report:1",
            "r".into(),
            TTL,
            EntryMeta {
                version: 0,
                tags: ["q4"].into_iter().collect(),
            },
            WriteTiers::ALL,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_invalidation_on_one_node_reaches_the_others() {
    let _w = common::watchdog("three_nodes", common::LIMIT);
    let bus = InProcessBus::new();
    let nodes = [node(&bus, 1), node(&bus, 2), node(&bus, 3)];
    for n in &nodes {
        fill(n).await;
    }
    nodes[0].invalidate_pattern("provider:*").await.unwrap();
    nodes[1].invalidate("user:1").await.unwrap();
    nodes[2].invalidate_tag("q4").await.unwrap();
    // Each node applies the two messages of the others.
    for n in &nodes {
        tokio::time::timeout(Duration::from_secs(10), n.applied(2))
            .await
            .expect("propagated");
        for k in ["provider:1", "provider:2", "user:1", "report:1"] {
            assert!(
                n.cache().get(k).await.is_none(),
                "node {} kept {k}",
                n.node_id()
            );
        }
        let s = n.status();
        assert_eq!((s.published, s.applied, s.rejected), (1, 2, 0), "{s:?}");
        assert_eq!(s.peers, 2);
    }
}

#[tokio::test]
async fn a_newer_local_entry_survives_an_older_remote_invalidation() {
    let _w = common::watchdog("newer_survives", common::LIMIT);
    let bus = InProcessBus::new();
    let (a, b) = (node(&bus, 1), node(&bus, 2));
    let newer = EntryMeta {
        version: u64::MAX,
        tags: Default::default(),
    };
    b.cache()
        .set_with("k-newer", "kept".into(), TTL, newer, WriteTiers::ALL)
        .await
        .unwrap();
    b.cache()
        .set("k-older", "old".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();
    a.invalidate("k-newer").await.unwrap();
    a.invalidate("k-older").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.applied(2))
        .await
        .unwrap();
    assert_eq!(b.cache().get("k-newer").await.unwrap(), "kept");
    assert!(b.cache().get("k-older").await.is_none());
    assert_eq!(b.coordination_status().skipped_newer, 1);
}

#[tokio::test]
async fn forged_and_malformed_frames_are_dropped_and_counted() {
    let _w = common::watchdog("forged", common::LIMIT);
    let bus = InProcessBus::new();
    let b = node(&bus, 2);
    b.cache()
        .set("k", "v".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();
    // A node with the wrong secret, and raw garbage.
    let forger = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        bus.clone(),
    )
    .node_id(9)
    .secret(b"not the shared secret at all")
    .start()
    .unwrap();
    forger.invalidate("k").await.unwrap();
    bus.publish(Bytes::from_static(b"garbage")).unwrap();
    bus.publish(Bytes::from(vec![0u8; 1 << 20])).unwrap();
    // A genuine message after them shows that they were processed first.
    let a = node(&bus, 1);
    a.invalidate("other").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.applied(1))
        .await
        .unwrap();
    assert_eq!(
        b.cache().get("k").await.unwrap(),
        "v",
        "a forgery changed nothing"
    );
    assert_eq!(b.status().rejected, 3);
}

#[tokio::test]
async fn a_secret_is_required() {
    let bus = InProcessBus::new();
    let cache = Cache::new(MemoryTier::builder().build().unwrap());
    let e = Coordinator::builder(cache.clone(), bus.clone())
        .start()
        .unwrap_err();
    assert!(e.to_string().contains("secret"), "{e}");
    let e = Coordinator::builder(cache, bus)
        .secret(b"short")
        .start()
        .unwrap_err();
    assert!(e.to_string().contains("at least 16"), "{e}");
}

/// A bus that drops the next frame published through it when told to.
#[derive(Clone)]
struct Lossy {
    inner: InProcessBus,
    drop_next: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Bus for Lossy {
    fn publish(&self, frame: Bytes) -> Result<(), tower_cache::coordinator::BusError> {
        if self
            .drop_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        self.inner.publish(frame)
    }

    fn subscribe(&self) -> Box<dyn tower_cache::coordinator::Subscription> {
        self.inner.subscribe()
    }
}

#[tokio::test(start_paused = true)]
async fn a_digest_shows_a_lost_last_frame_and_says_nothing_otherwise() {
    let _w = common::watchdog("digest", common::LIMIT);
    let bus = InProcessBus::new();
    let lossy = Lossy {
        inner: bus.clone(),
        drop_next: Default::default(),
    };
    let a = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        lossy.clone(),
    )
    .node_id(1)
    .secret(SECRET)
    .digest_interval(Duration::from_millis(50))
    .start()
    .unwrap();
    let b = node(&bus, 2);
    fill(&b).await;
    a.invalidate("user:1").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.applied(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = b.status();
    assert!(s.digests_received >= 5, "{s:?}");
    assert_eq!((s.sequence_gaps, s.memory_flushes), (0, 0), "{s:?}");
    assert!(b.cache().get("provider:1").await.is_some());
    assert_eq!(
        a.status().own,
        1,
        "its own invalidation came back; its own digests are not counted"
    );

    lossy
        .drop_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    a.invalidate("provider:1").await.unwrap(); // lost on the way
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = b.status();
    assert_eq!((s.sequence_gaps, s.memory_flushes), (1, 1), "{s:?}");
    assert_eq!(s.peer_nodes[0].last_seq, 2, "{s:?}");
    assert!(b.cache().get("provider:1").await.is_none());
    assert_eq!(s.applied, 1, "a digest applies nothing");
}

#[tokio::test(start_paused = true)]
async fn digests_stop_when_the_last_clone_of_a_coordinator_drops() {
    let _w = common::watchdog("digest_drop", common::LIMIT);
    let bus = InProcessBus::new();
    let mut rx = bus.subscribe();
    let a = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        bus.clone(),
    )
    .node_id(1)
    .secret(SECRET)
    .digest_interval(Duration::from_millis(50))
    .start()
    .unwrap();
    let clone = a.clone();
    drop(a);
    // The clone keeps the node, and its digests, going.
    let first = tokio::time::timeout(Duration::from_secs(10), rx.next())
        .await
        .expect("a digest comes");
    assert!(matches!(
        first,
        Some(tower_cache::coordinator::BusEvent::Frame(_))
    ));
    assert!(clone.status().digests_sent >= 1);
    drop(clone);
    // Whatever was on its way when it dropped, then nothing, however long.
    let mut after = 0;
    while let Ok(event) = tokio::time::timeout(Duration::from_secs(60), rx.next()).await {
        assert!(event.is_some(), "the bus outlives the node");
        after += 1;
        assert!(after <= 1, "digests go on after the node dropped");
    }
}

#[tokio::test]
async fn a_digest_interval_under_10_ms_is_refused_when_built() {
    let e = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        InProcessBus::new(),
    )
    .secret(SECRET)
    .digest_interval(Duration::from_millis(1))
    .start()
    .unwrap_err();
    assert!(e.to_string().contains("digest_interval"), "{e}");
}

// === the HTTP bus, on real sockets ===

use tower_cache::coordinator::HttpBus;

/// Serves an endpoint on a fresh loopback port; returns its URL.
async fn serve_endpoint(
    listener: tokio::net::TcpListener,
    endpoint: tower_cache::coordinator::InvalidateEndpoint,
) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = hyper_util::service::TowerToHyperService::new(endpoint.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_real_sockets_over_the_http_bus() {
    let _w = common::watchdog("http_bus", common::LIMIT);
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}/_cache/invalidate", l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut b = HttpBus::builder(SECRET);
        for (j, url) in urls.iter().enumerate() {
            if i != j {
                b = b.peer(url.clone());
            }
        }
        let bus = b.build().unwrap();
        serve_endpoint(listener, bus.endpoint()).await;
        let cache = Cache::new(MemoryTier::builder().build().unwrap());
        let node = Coordinator::builder(cache, bus)
            .node_id(i as u64 + 1)
            .secret(SECRET)
            .start()
            .unwrap();
        fill(&node).await;
        nodes.push(node);
    }
    nodes[0].invalidate_pattern("provider:*").await.unwrap();
    nodes[1].invalidate("user:1").await.unwrap();
    nodes[2].invalidate_tag("q4").await.unwrap();
    for n in &nodes {
        tokio::time::timeout(Duration::from_secs(20), n.applied(2))
            .await
            .expect("propagated over http");
        for k in ["provider:1", "provider:2", "user:1", "report:1"] {
            assert!(
                n.cache().get(k).await.is_none(),
                "node {} kept {k}",
                n.node_id()
            );
        }
        let status = n.status();
        let heard: Vec<(u64, u64)> = status
            .peer_nodes
            .iter()
            .map(|p| (p.node, p.last_seq))
            .collect();
        let others: Vec<(u64, u64)> = (1..=3)
            .filter(|&id| id != n.node_id())
            .map(|id| (id, 1))
            .collect();
        assert_eq!(heard, others, "node {}", n.node_id());
        assert_eq!(status.links.len(), 2);
        for link in &status.links {
            assert!(link.up && link.failures == 0, "{link:?}");
            assert!(urls.contains(&link.target), "{link:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_shows_as_a_down_link_and_the_local_invalidation_stands() {
    let _w = common::watchdog("http_bus_down", common::LIMIT);
    // A loopback port nothing listens on any more.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{closed}/_cache/invalidate");
    let bus = HttpBus::builder(SECRET).peer(url.clone()).build().unwrap();
    let node = Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
        .node_id(1)
        .secret(SECRET)
        .start()
        .unwrap();
    fill(&node).await;
    assert_eq!(
        node.status().links,
        vec![tower_cache::coordinator::LinkState::new(
            url.clone(),
            true,
            0
        )],
        "no delivery tried yet"
    );
    let done = node.invalidate("user:1").await.unwrap();
    assert_eq!(done.removed, 1);
    assert!(node.cache().get("user:1").await.is_none());
    // Six tries with backoff, then the frame is given up on.
    let down = async {
        loop {
            let links = node.status().links;
            if !links[0].up {
                return links;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let links = tokio::time::timeout(Duration::from_secs(30), down)
        .await
        .expect("the link goes down");
    assert_eq!(links[0].failures, 1);
    assert_eq!(links[0].target, url);
    assert!(node.status().peer_nodes.is_empty());
}

#[tokio::test]
async fn the_http_endpoint_answers_401_to_a_forgery_and_changes_nothing() {
    use tower::ServiceExt;
    let bus = HttpBus::builder(SECRET).build().unwrap();
    let cache = Cache::new(MemoryTier::builder().build().unwrap());
    cache
        .set("k", "v".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();
    let node = Coordinator::builder(cache.clone(), bus.clone())
        .node_id(1)
        .secret(SECRET)
        .start()
        .unwrap();
    // A frame signed with another secret, garbage, a GET and an oversized body.
    let other = InProcessBus::new();
    let mut rx = other.subscribe();
    let forger = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()),
        other.clone(),
    )
    .node_id(9)
    .secret(b"a different sixteen-byte secret")
    .start()
    .unwrap();
    forger.invalidate("k").await.unwrap();
    let forged = match rx.next().await.unwrap() {
        tower_cache::coordinator::BusEvent::Frame(f) => f,
        other => panic!("{other:?}"),
    };
    let post = |body: Bytes| {
        http::Request::post("/_cache/invalidate")
            .body(http_body_util::Full::new(body))
            .unwrap()
    };
    let e = bus.endpoint();
    assert_eq!(e.clone().oneshot(post(forged)).await.unwrap().status(), 401);
    assert_eq!(
        e.clone()
            .oneshot(post(Bytes::from_static(b"junk")))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        e.clone()
            .oneshot(post(Bytes::from(vec![0; 1 << 20])))
            .await
            .unwrap()
            .status(),
        413
    );
    let get = http::Request::get("/_cache/invalidate")
        .body(http_body_util::Full::<Bytes>::default())
        .unwrap();
    assert_eq!(e.oneshot(get).await.unwrap().status(), 405);
    tokio::task::yield_now().await;
    assert_eq!(cache.get("k").await.unwrap(), "v");
    assert_eq!(node.status().applied, 0);
    assert_eq!(bus.counts().2, 3);
    let bad = HttpBus::builder(SECRET)
        .peer("ftp://x")
        .build()
        .unwrap_err();
    assert!(bad.to_string().contains("not an http"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_keeps_a_value_older_than_an_invalidation_it_applied() {
    let _w = common::watchdog("coordinator_race", common::LIMIT);
    use std::sync::Mutex;
    let bus = InProcessBus::new();
    let nodes: Vec<Coordinator> = (1..=3).map(|i| node(&bus, i)).collect();
    // The newest invalidation version of each key, over every node.
    let newest: std::sync::Arc<Mutex<std::collections::HashMap<String, u64>>> = Default::default();
    let published = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (n, c) in nodes.iter().enumerate() {
        for w in 0..2u64 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (n as u64 * 31 + w);
                for _ in 0..400 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = format!("k{}", x % 8);
                    let _ = c
                        .set(
                            &key,
                            Bytes::from("v"),
                            TTL,
                            Default::default(),
                            WriteTiers::ALL,
                        )
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                }
            }));
        }
        let (c, newest, published) = (c.clone(), newest.clone(), published.clone());
        tasks.push(tokio::spawn(async move {
            let mut x = 0x2545_F491_4F6C_DD1Du64 ^ n as u64;
            for _ in 0..150 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = format!("k{}", x % 8);
                let inv = if x.is_multiple_of(5) {
                    c.invalidate_pattern("k*").await.unwrap()
                } else {
                    c.invalidate(&key).await.unwrap()
                };
                published.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                {
                    let mut m = newest.lock().unwrap();
                    let keys: Vec<String> = if x.is_multiple_of(5) {
                        (0..8).map(|i| format!("k{i}")).collect()
                    } else {
                        vec![key]
                    };
                    for k in keys {
                        let v = m.entry(k).or_insert(0);
                        *v = (*v).max(inv.version);
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Quiescence: each node applied every other node's invalidations.
    let total = published.load(std::sync::atomic::Ordering::SeqCst);
    for c in &nodes {
        let others = total - c.status().published;
        tokio::time::timeout(Duration::from_secs(20), c.applied(others))
            .await
            .expect("every invalidation applied");
    }
    let newest = newest.lock().unwrap().clone();
    for c in &nodes {
        for i in 0..8 {
            let key = format!("k{i}");
            if let Some(e) = c.cache().memory().get_entry(&key) {
                let inv = newest.get(&key).copied().unwrap_or(0);
                assert!(
                    e.meta.version > inv,
                    "node {} keeps {key} at version {} though an invalidation at {inv} was applied",
                    c.node_id(),
                    e.meta.version
                );
            }
        }
    }
}

#[tokio::test]
async fn a_write_older_than_an_applied_invalidation_never_lands() {
    let _w = common::watchdog("tombstone", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let bus = InProcessBus::new();
    let a = node(&bus, 1);
    let b = Coordinator::builder(
        Cache::new(MemoryTier::builder().build().unwrap()).with_disk(
            tower_cache::DiskTier::builder(dir.path())
                .map_size(16 << 20)
                .open()
                .unwrap(),
        ),
        bus.clone(),
    )
    .node_id(2)
    .secret(SECRET)
    .start()
    .unwrap();
    // B took a version for a write (say, it began reading the data), then A invalidated
    // the key, then B's write arrives.
    let old = b.next_version();
    let pattern_old = b.next_version();
    // A hears from B first, so that its clock is past B's (as it is when the invalidation
    // really comes after the version was taken).
    b.invalidate("warm-up").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), a.applied(1))
        .await
        .unwrap();
    a.invalidate("k").await.unwrap();
    a.invalidate_pattern("p:*").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.applied(2))
        .await
        .unwrap();
    let stored = b
        .set_versioned(
            "k",
            "stale".into(),
            TTL,
            old,
            Default::default(),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
    assert_eq!(stored, None, "the memory tier refused the older write");
    let stored = b
        .set_versioned(
            "p:1",
            "stale".into(),
            TTL,
            pattern_old,
            Default::default(),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
    assert_eq!(stored, None);
    assert!(b.cache().get("k").await.is_none(), "neither tier holds it");
    assert!(b.cache().get("p:1").await.is_none());
    assert!(b.cache().disk().unwrap().get("k").is_none());
    // A newer write lands.
    let v = b
        .set(
            "k",
            "fresh".into(),
            TTL,
            Default::default(),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
    assert!(v.is_some());
    assert_eq!(b.cache().get("k").await.unwrap(), "fresh");
}

#[tokio::test]
async fn a_restarted_node_remembers_the_invalidations_it_applied() {
    let _w = common::watchdog("persistent tombstones", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let bus = InProcessBus::new();
    let open = |bus: &InProcessBus| {
        Coordinator::builder(
            Cache::new(MemoryTier::builder().build().unwrap()).with_disk(
                tower_cache::DiskTier::builder(dir.path())
                    .map_size(16 << 20)
                    .open()
                    .unwrap(),
            ),
            bus.clone(),
        )
        .node_id(2)
        .secret(SECRET)
        .start()
        .unwrap()
    };
    let a = node(&bus, 1);
    let b = open(&bus);
    // Versions taken before the invalidations (writes that began before them).
    let old_key = b.next_version();
    let old_pattern = b.next_version();
    let old_tag = b.next_version();
    b.invalidate("k").await.unwrap();
    // Pattern and tag invalidations arrive from another node.
    b.invalidate("warm-up").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), a.applied(1))
        .await
        .unwrap();
    a.invalidate_pattern("p:*").await.unwrap();
    a.invalidate_tag("q4").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.applied(2))
        .await
        .unwrap();
    drop(b);

    // The node restarts on the same directory: its memory tombstones are gone, the disk
    // ones come back.
    let b = open(&bus);
    let tags = |t: &str| -> tower_cache::Tags { [t].into_iter().collect() };
    for (key, version, t) in [
        ("k", old_key, tags("x")),
        ("p:1", old_pattern, tags("x")),
        ("r:1", old_tag, tags("q4")),
    ] {
        let stored = b
            .set_versioned(key, "stale".into(), TTL, version, t, WriteTiers::ALL)
            .await
            .unwrap();
        assert_eq!(stored, None, "{key}: a write older than its invalidation");
        assert!(b.cache().get(key).await.is_none(), "{key}");
        assert!(b.cache().disk().unwrap().get(key).is_none(), "{key}");
    }
    // Writes newer than the invalidations land, and the restarted clock is past them.
    let v = b
        .set("k", "fresh".into(), TTL, tags("x"), WriteTiers::ALL)
        .await
        .unwrap();
    assert!(v.is_some_and(|v| v > old_tag));
    assert_eq!(b.cache().get("k").await.unwrap(), "fresh");
}

/// Writes rows no version of this crate writes into the `tombs` table of the closed
/// environment at `dir`: a key that is not UTF-8, a value of the wrong length.
#[allow(unsafe_code)]
fn damage_tombstone_rows(dir: &std::path::Path) {
    let mut options = heed::EnvOpenOptions::new();
    options.map_size(16 << 20).max_dbs(6);
    // SAFETY: the tier that used this directory is closed; nothing else maps the file.
    let env = unsafe { options.open(dir) }.unwrap();
    let mut wtxn = env.write_txn().unwrap();
    let tombs: heed::Database<heed::types::Bytes, heed::types::Bytes> =
        env.create_database(&mut wtxn, Some("tombs")).unwrap();
    tombs.put(&mut wtxn, b"\xff\xfe", &[0u8; 16]).unwrap();
    tombs.put(&mut wtxn, b"k:short", b"abc").unwrap();
    tombs.put(&mut wtxn, b"k:long", &[7u8; 40]).unwrap();
    wtxn.commit().unwrap();
    drop(env);
}

/// Tombstones on disk outlive a restart but not their time, and rows the crate cannot
/// read are skipped at start and swept away, never a panic or a failed start.
#[tokio::test]
async fn persisted_tombstones_expire_and_damaged_rows_are_ignored() {
    let _w = common::watchdog("tombstone expiry", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let bus = InProcessBus::new();
    let open = |bus: &InProcessBus| {
        let disk = tower_cache::DiskTier::builder(dir.path())
            .map_size(16 << 20)
            .open()
            .unwrap();
        Coordinator::builder(
            Cache::new(MemoryTier::builder().build().unwrap()).with_disk(disk),
            bus.clone(),
        )
        .node_id(2)
        .secret(SECRET)
        // The shortest time a tombstone is kept.
        .tombstone_ttl(Duration::from_secs(1))
        .start()
        .unwrap()
    };
    let b = open(&bus);
    let old = b.next_version();
    b.invalidate("k").await.unwrap();
    b.cache().disk().unwrap().close().await;
    drop(b);
    damage_tombstone_rows(dir.path());

    // Restarted at once: the damaged rows are skipped, the tombstone holds.
    let b = open(&bus);
    let stored = b
        .set_versioned(
            "k",
            "stale".into(),
            TTL,
            old,
            Default::default(),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
    assert_eq!(stored, None, "a write older than the invalidation");
    assert!(b.cache().get("k").await.is_none());
    b.cache().disk().unwrap().close().await;
    drop(b);

    // Past the tombstone's time, and after a sweep, the same old write lands: the
    // tombstone no longer holds (its 1 s is real time, as tombstones are wall-clock).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let b = open(&bus);
    b.cache().disk().unwrap().remove_expired().await.unwrap();
    let stored = b
        .set_versioned(
            "k",
            "late".into(),
            TTL,
            old,
            Default::default(),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
    assert!(stored.is_some(), "an expired tombstone refuses nothing");
    assert_eq!(b.cache().get("k").await.unwrap(), "late");
    b.cache().disk().unwrap().close().await;
    drop(b);

    // The sweep dropped the expired tombstone and every damaged row.
    #[allow(unsafe_code)]
    // SAFETY: the tier is closed again.
    let env = unsafe { heed::EnvOpenOptions::new().max_dbs(6).open(dir.path()) }.unwrap();
    let rtxn = env.read_txn().unwrap();
    let tombs: heed::Database<heed::types::Bytes, heed::types::Bytes> =
        env.open_database(&rtxn, Some("tombs")).unwrap().unwrap();
    assert_eq!(tombs.len(&rtxn).unwrap(), 0);
}
