//! The tiered store: write-through, promotion, delete ordering, degradation.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tower_cache::{Cache, DiskTier, MemoryTier, WriteTiers};

const TTL: Duration = Duration::from_secs(600);

fn store(dir: &std::path::Path) -> Cache {
    Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap())
        .with_disk(DiskTier::builder(dir).map_size(32 << 20).open().unwrap())
}

#[tokio::test]
async fn write_through_reaches_only_the_chosen_tiers() {
    let _w = common::watchdog("write_through", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.set("both", "1".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();
    s.set("mem", "2".into(), TTL, WriteTiers::MEMORY)
        .await
        .unwrap();
    s.set("disk", "3".into(), TTL, WriteTiers::DISK)
        .await
        .unwrap();
    let (m, d) = (s.memory(), s.disk().unwrap());
    assert!(m.has("both") && d.has("both"));
    assert!(m.has("mem") && !d.has("mem"));
    assert!(!m.has("disk") && d.has("disk"));
}

#[tokio::test(start_paused = true)]
async fn disk_hit_is_promoted_with_its_remaining_ttl() {
    let _w = common::watchdog("promotion", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.set("k", "v".into(), Duration::from_secs(10), WriteTiers::DISK)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(s.get("k").await.unwrap(), "v");
    let st = s.stats();
    assert_eq!((st.disk_hits, st.memory_hits), (1, 0));
    let promoted = s.memory().get_entry("k").expect("promoted to memory");
    assert!(
        promoted.ttl_left <= Duration::from_secs(6)
            && promoted.ttl_left > Duration::from_millis(5900),
        "promotion keeps the remaining ttl, got {:?}",
        promoted.ttl_left
    );
    assert_eq!(s.get("k").await.unwrap(), "v");
    assert_eq!(s.stats().memory_hits, 2, "later reads are memory hits");
    assert_eq!(s.stats().disk_hits, 1);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(
        s.get("k").await.is_none(),
        "the promoted entry expires with the original"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_reaches_every_tier_and_promotion_cannot_undo_it() {
    let _w = common::watchdog("delete_vs_promotion", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    for round in 0..200 {
        let key = format!("k{round}");
        s.set(&key, "v".into(), TTL, WriteTiers::DISK)
            .await
            .unwrap();
        // Readers race the delete, each trying to promote the disk entry.
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        s.get(&key).await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        s.delete(&key).await.unwrap();
        for r in readers {
            r.await.unwrap();
        }
        assert!(
            !s.memory().has(&key),
            "round {round}: a promotion brought a deleted entry back"
        );
        assert!(s.get(&key).await.is_none(), "round {round}");
    }
}

#[tokio::test]
async fn clear_reaches_every_tier() {
    let _w = common::watchdog("clear", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.set("a", "1".into(), TTL, WriteTiers::ALL).await.unwrap();
    s.clear().await.unwrap();
    assert!(s.get("a").await.is_none());
    assert_eq!(s.stats().disk.unwrap().entries, 0);
}

#[tokio::test]
async fn concurrent_loads_of_one_key_run_the_origin_once() {
    let _w = common::watchdog("single_flight_tiered", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let s = s.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                s.get_or_load("hot", TTL, async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>(Bytes::from("loaded"))
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "loaded");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(s.stats().loads, 1);
    s.disk().unwrap().flush().await.unwrap();
    assert!(
        s.disk().unwrap().has("hot"),
        "the load was written through to disk"
    );
}

#[tokio::test]
async fn a_failed_disk_tier_degrades_to_memory_and_origin() {
    let _w = common::watchdog("disk_failure_degrades", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.disk().unwrap().close().await;
    // Reads and loads still work; the faults are counted.
    let v = s
        .get_or_load("k", TTL, async {
            Ok::<_, std::io::Error>(Bytes::from("origin"))
        })
        .await
        .unwrap();
    assert_eq!(v, "origin");
    assert_eq!(s.get("k").await.unwrap(), "origin", "served from memory");
    assert!(s.set("k2", "v".into(), TTL, WriteTiers::ALL).await.is_err());
    assert!(
        s.memory().has("k2"),
        "the memory write happened before the disk fault"
    );
    assert!(s.stats().disk_faults >= 2, "{:?}", s.stats());
}

#[tokio::test(start_paused = true)]
async fn remove_expired_reaches_both_tiers() {
    let _w = common::watchdog("optimize", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.set("short", "1".into(), Duration::from_secs(1), WriteTiers::ALL)
        .await
        .unwrap();
    s.set("long", "2".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    let r = s.remove_expired().await.unwrap();
    assert_eq!((r.memory_expired, r.disk_expired), (1, 1));
    assert_eq!(s.get("long").await.unwrap(), "2");
}

#[tokio::test]
async fn promotion_keeps_versions_and_tags() {
    let _w = common::watchdog("promotion_keeps_meta", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let meta = tower_cache::EntryMeta {
        version: 7,
        tags: ["provider:3"].into_iter().collect(),
    };
    s.set_with("k", "v".into(), TTL, meta.clone(), WriteTiers::DISK)
        .await
        .unwrap();
    assert_eq!(s.get("k").await.unwrap(), "v");
    assert_eq!(s.memory().get_entry("k").unwrap().meta, meta);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_and_reads_during_compaction_are_served_correctly() {
    let _w = common::watchdog("large_values_and_compaction", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let s = Cache::new(MemoryTier::builder().max_entries(2).build().unwrap()).with_disk(
        DiskTier::builder(dir.path())
            .map_size(256 << 20)
            .max_value_bytes(8 << 20)
            .open()
            .unwrap(),
    );
    // Over the blocking-read threshold: read on the blocking pool.
    let big: Bytes = (0..(2 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    s.set("big", big.clone(), TTL, WriteTiers::DISK)
        .await
        .unwrap();
    assert_eq!(s.get("big").await.unwrap(), big);
    for i in 0..50 {
        s.set(
            &format!("small{i}"),
            Bytes::from(format!("v{i}")),
            TTL,
            WriteTiers::DISK,
        )
        .await
        .unwrap();
    }
    // Readers keep reading while compaction runs; they see the right value or a miss,
    // never another value and never an error.
    let compacting = tokio::spawn({
        let disk = s.disk().unwrap().clone();
        async move {
            for _ in 0..5 {
                disk.compact().await.unwrap();
            }
        }
    });
    let mut served = 0;
    while !compacting.is_finished() {
        for i in 0..50 {
            s.memory().delete(&format!("small{i}"));
            if let Some(v) = s.get(&format!("small{i}")).await {
                assert_eq!(v, format!("v{i}"));
                served += 1;
            }
        }
    }
    compacting.await.unwrap();
    assert!(served > 0);
    assert_eq!(s.get("big").await.unwrap(), big);
    assert_eq!(s.stats().disk.unwrap().errors, 0);
}

#[tokio::test]
async fn failed_loads_of_made_up_keys_do_not_push_out_entries_in_use() {
    const ROUNDS: usize = 3;
    let _w = common::watchdog("one_hit_keys", common::LIMIT);
    // A small memory tier, as an edge that caches per-user records has: 500 users in
    // use, then a client asking for 50,000 ids that do not exist (each load fails and
    // leaves a short pass mark, a one-hit key).
    let c = Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap());
    let ttl = Duration::from_secs(600);
    for round in 0..ROUNDS {
        for u in 0..500 {
            let v = c
                .get_or_load(&format!("user:{u}"), ttl, async {
                    Ok::<_, std::io::Error>(Bytes::from("limit"))
                })
                .await
                .unwrap();
            assert_eq!(v, "limit", "round {round}");
        }
    }
    for i in 0..50_000 {
        let r = c
            .get_or_load(&format!("user:made-up-{i}"), ttl, async {
                Err::<Bytes, _>(std::io::Error::other("no such user"))
            })
            .await;
        assert!(r.is_err());
        // The users go on being served meanwhile.
        if i % 100 == 0 {
            let _ = c.get(&format!("user:{}", (i / 100) % 500)).await;
        }
    }
    let mut kept = 0;
    for u in 0..500 {
        kept += usize::from(c.memory().get(&format!("user:{u}")).is_some());
    }
    assert!(
        kept >= 450,
        "only {kept} of 500 entries in use survived 50,000 one-hit keys"
    );
}
