//! Invalidation by key, pattern, tag and dependency, across memory and disk, and after a
//! restart.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tower_cache::{Cache, DiskTier, EntryMeta, MemoryTier, WriteTiers};

const TTL: Duration = Duration::from_secs(600);

fn open(dir: &std::path::Path) -> Cache {
    Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap())
        .with_disk(DiskTier::builder(dir).map_size(32 << 20).open().unwrap())
}

fn tagged(tags: &[&str]) -> EntryMeta {
    EntryMeta {
        version: 0,
        tags: tags.iter().copied().collect(),
    }
}

#[tokio::test]
async fn a_pattern_reaches_memory_and_disk_and_only_matching_keys() {
    let _w = common::watchdog("pattern", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    for i in 0..50 {
        c.set(
            &format!("provider:{i}:rates"),
            "r".into(),
            TTL,
            WriteTiers::ALL,
        )
        .await
        .unwrap();
        c.set(&format!("providers:{i}"), "x".into(), TTL, WriteTiers::DISK)
            .await
            .unwrap();
        c.set(&format!("user:{i}"), "u".into(), TTL, WriteTiers::MEMORY)
            .await
            .unwrap();
    }
    // Only on disk: reached through the disk's range scan.
    c.set("provider:disk-only", "d".into(), TTL, WriteTiers::DISK)
        .await
        .unwrap();
    assert_eq!(c.invalidate_pattern("provider:*").await.unwrap(), 51);
    for i in 0..50 {
        assert!(c.get(&format!("provider:{i}:rates")).await.is_none());
        assert!(c.get(&format!("providers:{i}")).await.is_some());
        assert!(c.get(&format!("user:{i}")).await.is_some());
    }
    assert!(c.get("provider:disk-only").await.is_none());
    assert_eq!(c.invalidate_pattern("user:?").await.unwrap(), 10);
    assert_eq!(c.invalidate_pattern("*:4?").await.unwrap(), 10 + 10);
}

#[tokio::test]
async fn tags_and_dependencies_persist_across_a_restart() {
    let _w = common::watchdog("persist", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    {
        let c = open(dir.path());
        c.set_with(
            "budget:1",
            "b".into(),
            TTL,
            tagged(&["provider:7"]),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
        c.set_with(
            "report:1",
            "r".into(),
            TTL,
            tagged(&["provider:7", "q4"]),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
        c.set_with(
            "report:2",
            "r".into(),
            TTL,
            tagged(&["q4"]),
            WriteTiers::ALL,
        )
        .await
        .unwrap();
        c.set("user:7", "alice".into(), TTL, WriteTiers::ALL)
            .await
            .unwrap();
        c.set("ratelimit:user:7", "3".into(), TTL, WriteTiers::ALL)
            .await
            .unwrap();
        c.set("quota:user:7", "9".into(), TTL, WriteTiers::ALL)
            .await
            .unwrap();
        c.register_dependency("ratelimit:user:7", "user:7")
            .await
            .unwrap();
        c.register_dependency("quota:user:7", "ratelimit:user:7")
            .await
            .unwrap();
        c.disk().unwrap().close().await;
    }
    // A new process: nothing in memory, tags and edges only on disk.
    let c = open(dir.path());
    assert_eq!(c.invalidate_tag("provider:7").await.unwrap(), 2);
    assert!(c.get("budget:1").await.is_none() && c.get("report:1").await.is_none());
    assert!(c.get("report:2").await.is_some());
    assert_eq!(c.invalidate_with_dependents("user:7").await.unwrap(), 3);
    for k in ["user:7", "ratelimit:user:7", "quota:user:7"] {
        assert!(c.get(k).await.is_none(), "{k} survived its dependency");
    }
}

#[tokio::test]
async fn a_dependency_cycle_ends_where_it_began_and_listeners_hear_each_key() {
    let _w = common::watchdog("cycle", common::LIMIT);
    let c = Cache::new(MemoryTier::builder().build().unwrap());
    let heard = Arc::new(Mutex::new(Vec::new()));
    c.on_invalidate("user:*", {
        let heard = heard.clone();
        move |k| heard.lock().unwrap().push(k.to_string())
    })
    .unwrap();
    for k in ["user:a", "user:b", "user:c", "other"] {
        c.set(k, "v".into(), TTL, WriteTiers::ALL).await.unwrap();
    }
    c.register_dependency("user:b", "user:a").await.unwrap();
    c.register_dependency("user:c", "user:b").await.unwrap();
    c.register_dependency("user:a", "user:c").await.unwrap();
    c.register_dependency("other", "user:c").await.unwrap();
    assert_eq!(c.invalidate_with_dependents("user:b").await.unwrap(), 4);
    let mut heard = heard.lock().unwrap().clone();
    heard.sort();
    assert_eq!(
        heard,
        ["user:a", "user:b", "user:c"],
        "other does not match user:*"
    );
}

#[tokio::test]
async fn bad_input_is_a_typed_error() {
    let c = Cache::new(MemoryTier::builder().build().unwrap());
    assert!(c.invalidate("").await.is_err());
    assert!(c.invalidate_pattern("").await.is_err());
    assert!(c.invalidate_pattern(&"*".repeat(5000)).await.is_err());
    assert!(c.invalidate_tag("").await.is_err());
    assert!(c.register_dependency("", "a").await.is_err());
    assert!(c.on_invalidate("", |_| {}).is_err());
    assert_eq!(c.invalidate("absent").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_invalidation_stops_a_fill_in_flight() {
    let _w = common::watchdog("pattern_vs_fill", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let loader = tokio::spawn({
        let c = c.clone();
        async move {
            c.get_or_load("provider:9", TTL, async move {
                started_tx.send(()).unwrap();
                release_rx.await.unwrap();
                Ok::<_, std::io::Error>(Bytes::from("old"))
            })
            .await
            .unwrap()
        }
    });
    started_rx.await.unwrap();
    c.invalidate_pattern("provider:*").await.unwrap();
    release_tx.send(()).unwrap();
    assert_eq!(
        loader.await.unwrap(),
        "old",
        "the caller gets what it loaded"
    );
    c.disk().unwrap().flush().await.unwrap();
    assert!(
        c.get("provider:9").await.is_none(),
        "a load in flight during the invalidation must not land"
    );
}

const CHILD_DIR: &str = "TOWER_CACHE_INVALIDATE_CHILD_DIR";

/// The child's side: writes, invalidates, says so, then waits to be killed.
#[test]
fn child_invalidates_then_waits_to_be_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = open(std::path::Path::new(&dir));
        for i in 0..100 {
            c.set_with(
                &format!("provider:{i}"),
                "v".into(),
                TTL,
                tagged(&["t"]),
                WriteTiers::ALL,
            )
            .await
            .unwrap();
        }
        c.set("keep", "k".into(), TTL, WriteTiers::ALL)
            .await
            .unwrap();
        c.set("user:1", "u".into(), TTL, WriteTiers::ALL)
            .await
            .unwrap();
        c.invalidate_pattern("provider:1*").await.unwrap();
        c.invalidate_tag("t").await.unwrap();
        c.invalidate("user:1").await.unwrap();
        println!("INVALIDATED");
        use std::io::Write;
        std::io::stdout().flush().unwrap();
        // Keep writing until killed, so the kill lands mid-work.
        let mut n = 0u64;
        loop {
            n += 1;
            let _ = c
                .set(&format!("noise:{n}"), "n".into(), TTL, WriteTiers::ALL)
                .await;
        }
    });
}

#[test]
fn an_invalidation_survives_sigkill() {
    let _w = common::watchdog("invalidation_sigkill", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_invalidates_then_waits_to_be_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "the child ended before invalidating");
        if line.contains("INVALIDATED") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = open(dir.path());
        for i in 0..100 {
            assert!(
                c.get(&format!("provider:{i}")).await.is_none(),
                "provider:{i} came back after the kill"
            );
        }
        assert!(c.get("user:1").await.is_none());
        assert_eq!(c.get("keep").await.unwrap(), "k");
    });
}
