//! Unit tests of the coordinator that reach its internals.

use super::*;
use crate::{Cache, MemoryTier, WriteTiers};

#[tokio::test]
async fn a_gap_in_a_senders_sequence_drops_the_memory_tier() {
    let bus = InProcessBus::new();
    let cache = Cache::new(MemoryTier::builder().build().unwrap());
    let secret = b"sixteen+ bytes of shared secret";
    let node = Coordinator::builder(cache.clone(), bus.clone())
        .node_id(1)
        .secret(secret)
        .start()
        .unwrap();
    cache
        .set(
            "k",
            "v".into(),
            std::time::Duration::from_secs(60),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
    let frame = |seq| {
        Message {
            node: 7,
            incarnation: 1,
            seq,
            version: node.next_version(),
            target: Some(Target::Key("absent".into())),
        }
        .encode(secret)
        .unwrap()
    };
    bus.publish(frame(1)).unwrap();
    bus.publish(frame(2)).unwrap();
    node.applied(2).await;
    assert!(cache.get("k").await.is_some(), "no gap yet");
    bus.publish(frame(2)).unwrap(); // a duplicate: ignored
    bus.publish(frame(5)).unwrap(); // 3 and 4 were lost
    node.applied(3).await;
    assert!(
        cache.get("k").await.is_none(),
        "the memory tier was dropped"
    );
    let s = node.status();
    assert_eq!((s.memory_flushes, s.applied, s.received), (1, 3, 4));
}

#[tokio::test]
async fn a_frame_from_a_clock_a_year_ahead_is_refused_and_moves_no_clock() {
    let bus = InProcessBus::new();
    let cache = Cache::new(MemoryTier::builder().build().unwrap());
    let secret = b"sixteen+ bytes of shared secret";
    let node = Coordinator::builder(cache.clone(), bus.clone())
        .node_id(1)
        .secret(secret)
        .start()
        .unwrap();
    let ttl = std::time::Duration::from_secs(60);
    cache
        .set("k", "v".into(), ttl, WriteTiers::ALL)
        .await
        .unwrap();
    let year = (365 * 24 * 3600 * 1000u64) << clock::NODE_AND_COUNTER_BITS;
    let frame = |seq, version, key: &str| {
        Message {
            node: 7,
            incarnation: 1,
            seq,
            version,
            target: Some(Target::Key(key.into())),
        }
        .encode(secret)
        .unwrap()
    };
    let before = node.next_version();
    bus.publish(frame(1, before + year, "k")).unwrap();
    bus.publish(frame(2, node.next_version(), "absent"))
        .unwrap();
    node.applied(1).await;
    assert_eq!(cache.get("k").await.unwrap(), "v", "the frame was refused");
    let s = node.status();
    assert_eq!((s.clock_skew, s.applied), (1, 1), "{s:?}");
    // A versioned write a year ahead lands, but does not drag the clock either.
    node.set_versioned(
        "w",
        "x".into(),
        ttl,
        before + year,
        Default::default(),
        WriteTiers::ALL,
    )
    .await
    .unwrap();
    let ahead_ms = (node.next_version() - before) >> clock::NODE_AND_COUNTER_BITS;
    assert!(ahead_ms < 120_000, "the clock jumped {ahead_ms} ms");
    let e = Coordinator::builder(cache, bus)
        .secret(secret)
        .max_clock_skew(std::time::Duration::ZERO)
        .start()
        .unwrap_err();
    assert!(e.to_string().contains("max_clock_skew"), "{e}");
}

/// A read on this node takes its version (say, as it starts reading the origin), and
/// another node's invalidation issued in the same millisecond has a lower counter or
/// node id: the counters of two nodes say nothing of which came first, so the
/// invalidation wins, by key, pattern, tag and dependency, in memory and on disk, and
/// a write versioned in that millisecond after the invalidation never lands.
#[tokio::test]
async fn another_nodes_invalidation_in_the_same_millisecond_wins() {
    let dir = tempfile::tempdir().unwrap();
    let bus = InProcessBus::new();
    let cache = Cache::new(MemoryTier::builder().build().unwrap()).with_disk(
        crate::DiskTier::builder(dir.path())
            .map_size(16 << 20)
            .open()
            .unwrap(),
    );
    let secret = b"sixteen+ bytes of shared secret";
    let node = Coordinator::builder(cache.clone(), bus.clone())
        .node_id(2)
        .secret(secret)
        .start()
        .unwrap();
    let ttl = std::time::Duration::from_secs(60);
    let read = node.next_version();
    let ms = read >> clock::NODE_AND_COUNTER_BITS;
    // Node 1's first version of that millisecond: below `read` as a number.
    let remote = (ms << clock::NODE_AND_COUNTER_BITS) | 1;
    assert!(remote < read);
    let tagged = crate::Tags::from_iter(["t".to_owned()]);
    for (key, tags) in [
        ("k", crate::Tags::default()),
        ("p:1", crate::Tags::default()),
        ("tagged", tagged),
        ("dep", crate::Tags::default()),
    ] {
        let stored = node
            .set_versioned(key, "read".into(), ttl, read, tags, WriteTiers::ALL)
            .await
            .unwrap();
        assert_eq!(stored, Some(read));
    }
    cache.register_dependency("dep", "user").await.unwrap();
    cache.disk().unwrap().flush().await.unwrap();
    let frame = |seq, target| {
        Message {
            node: 1,
            incarnation: 1,
            seq,
            version: remote,
            target: Some(target),
        }
        .encode(secret)
        .unwrap()
    };
    bus.publish(frame(1, Target::Key("k".into()))).unwrap();
    bus.publish(frame(2, Target::Pattern("p:*".into())))
        .unwrap();
    bus.publish(frame(3, Target::Tag("t".into()))).unwrap();
    bus.publish(frame(4, Target::Dependents("user".into())))
        .unwrap();
    node.applied(4).await;
    for key in ["k", "p:1", "tagged", "dep"] {
        assert!(cache.memory().get(key).is_none(), "{key} stayed in memory");
        assert!(
            cache.disk().unwrap().get(key).is_none(),
            "{key} stayed on disk"
        );
    }
    assert_eq!(node.status().skipped_newer, 0);
    // A write versioned later in that millisecond by this node's counter is not
    // known to come after node 1's invalidation.
    let stored = node
        .set_versioned(
            "k",
            "late".into(),
            ttl,
            read + (1 << 8),
            Default::default(),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
    assert_eq!(stored, None);
    // One from a later millisecond lands.
    let later = (ms + 1) << clock::NODE_AND_COUNTER_BITS | 2;
    let stored = node
        .set_versioned(
            "k",
            "new".into(),
            ttl,
            later,
            Default::default(),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
    assert_eq!(stored, Some(later));
}
