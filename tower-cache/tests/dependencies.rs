//! Entry-scoped dependency edges: they go with their entries (expired, evicted, deleted),
//! in memory and on disk and across a restart, they never pile up for keys that are
//! never stored, and a prune never leaves an entry without the edges recorded for it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use tower_cache::{Cache, DiskTier, InvalidateError, MemoryTier, TimeSource, WriteTiers};

const TTL: Duration = Duration::from_secs(600);

fn memory_only() -> Cache {
    Cache::new(
        MemoryTier::builder()
            .max_entries(100_000)
            .time_source(TimeSource::Tokio)
            .build()
            .unwrap(),
    )
}

fn open(dir: &std::path::Path) -> Cache {
    Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap())
        .with_disk(DiskTier::builder(dir).map_size(32 << 20).open().unwrap())
}

/// Loads `key` the way a service does: the edge is recorded before the value is read.
async fn load(c: &Cache, key: &str, on: &str, ttl: Duration) -> Bytes {
    c.get_or_load(key, ttl, async {
        c.register_entry_dependency(key, on).await?;
        Ok::<_, InvalidateError>(Bytes::from("v"))
    })
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn entry_scoped_edges_go_with_their_entries_and_lasting_ones_stay() {
    let _w = common::watchdog("scoped", common::LIMIT);
    let c = memory_only();
    for i in 0..10 {
        let ttl = if i < 5 { Duration::from_secs(10) } else { TTL };
        load(
            &c,
            &format!("ratelimit:user:{i}"),
            &format!("user:{i}"),
            ttl,
        )
        .await;
    }
    // A lasting edge for a key with no entry, and one recorded both ways.
    c.register_dependency("static:a", "config").await.unwrap();
    c.register_dependency("ratelimit:user:9", "user:9")
        .await
        .unwrap();
    assert_eq!(c.dependency_count(), 11);
    assert_eq!(
        c.prune_dependencies().await.unwrap(),
        0,
        "every entry is here"
    );

    c.delete("ratelimit:user:8").await.unwrap();
    c.delete("ratelimit:user:9").await.unwrap();
    assert_eq!(
        c.prune_dependencies().await.unwrap(),
        1,
        "user:9's edge lasts"
    );
    assert_eq!(c.dependency_count(), 10);

    tokio::time::advance(Duration::from_secs(11)).await;
    let report = c.remove_expired().await.unwrap();
    assert_eq!(report.dependencies_pruned, 5);
    assert_eq!(c.dependency_count(), 5);
    assert_eq!(c.stats().dependencies_pruned, 6);

    // What is left still works: the entry goes with what it depends on.
    assert_eq!(c.invalidate_with_dependents("user:6").await.unwrap(), 1);
    assert!(c.get("ratelimit:user:6").await.is_none());
    // A lasting edge still reaches an entry stored later without recording it again.
    c.set("ratelimit:user:9", "3".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();
    assert_eq!(c.invalidate_with_dependents("user:9").await.unwrap(), 1);
    assert!(c.get("ratelimit:user:9").await.is_none());
}

#[tokio::test]
async fn edges_for_keys_that_are_never_stored_do_not_pile_up() {
    let _w = common::watchdog("bounded", common::LIMIT);
    let c = memory_only();
    // Loads that record their edge and then fail (say, a user that does not exist), as
    // a client rotating made-up ids would cause.
    let mut most = 0;
    for i in 0..20_000 {
        let key = format!("report:user:{i}");
        let r = c
            .get_or_load(&key, TTL, async {
                c.register_entry_dependency(&key, &format!("user:{i}"))
                    .await
                    .map_err(|e| e.to_string())?;
                Err::<Bytes, _>(format!("no user {i}"))
            })
            .await;
        assert!(r.is_err());
        most = most.max(c.dependency_count());
    }
    assert!(most <= 4096, "edges grew to {most}");
    assert!(c.stats().dependencies_pruned >= 16_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_during_a_load_never_leaves_its_entry_without_an_edge() {
    let _w = common::watchdog("prune_vs_fill", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    for cache in [memory_only(), open(dir.path())] {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let loader = tokio::spawn({
            let c = cache.clone();
            async move {
                c.get_or_load("report:user:1", TTL, async {
                    c.register_entry_dependency("report:user:1", "user:1")
                        .await?;
                    started_tx.send(()).unwrap();
                    release_rx.await.unwrap();
                    Ok::<_, InvalidateError>(Bytes::from("old"))
                })
                .await
                .unwrap()
            }
        });
        started_rx.await.unwrap();
        assert_eq!(cache.prune_dependencies().await.unwrap(), 1);
        release_tx.send(()).unwrap();
        assert_eq!(
            loader.await.unwrap(),
            "old",
            "the caller gets what it loaded"
        );
        if let Some(disk) = cache.disk() {
            disk.flush().await.unwrap();
        }
        // Either the load was not stored, or its edge is there: never an entry that an
        // invalidation of the user cannot reach.
        cache.invalidate_with_dependents("user:1").await.unwrap();
        assert!(
            cache.get("report:user:1").await.is_none(),
            "an entry outlived what it depends on"
        );
        // The next load records its edge again and is stored.
        load(&cache, "report:user:1", "user:1", TTL).await;
        assert!(cache.get("report:user:1").await.is_some());
        assert_eq!(cache.dependency_count(), 1);
    }
}

#[tokio::test]
async fn edges_on_disk_go_with_their_entries_across_a_restart() {
    let _w = common::watchdog("restart", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    {
        let c = open(dir.path());
        for i in 0..4 {
            load(&c, &format!("report:user:{i}"), &format!("user:{i}"), TTL).await;
        }
        c.disk().unwrap().flush().await.unwrap();
        // Gone from disk before the restart, while their edges were on disk.
        c.disk().unwrap().delete("report:user:0").await.unwrap();
        c.disk().unwrap().delete("report:user:1").await.unwrap();
        c.disk().unwrap().close().await;
    }
    let c = open(dir.path());
    assert_eq!(c.dependency_count(), 0, "nothing in memory after a restart");
    // report:user:2 comes back into memory from disk; then its disk copy goes.
    assert!(c.get("report:user:2").await.is_some());
    c.disk().unwrap().delete("report:user:2").await.unwrap();
    assert_eq!(
        c.prune_dependencies().await.unwrap(),
        2,
        "the edges of user 0 and 1 go; user 2's entry is still in memory"
    );
    for (user, held) in [(2, true), (3, true)] {
        assert!(c.get(&format!("report:user:{user}")).await.is_some() == held);
        assert_eq!(
            c.invalidate_with_dependents(&format!("user:{user}"))
                .await
                .unwrap(),
            1,
            "user {user}'s edge must survive the prune"
        );
        assert!(c.get(&format!("report:user:{user}")).await.is_none());
    }
    c.disk().unwrap().close().await;
    drop(c);
    let c = open(dir.path());
    // Only edges of entries that were there are left to prune now.
    assert_eq!(c.prune_dependencies().await.unwrap(), 2);
    assert_eq!(c.prune_dependencies().await.unwrap(), 0);
}
