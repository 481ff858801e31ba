//! The memory tier: bounds, TTL, stats, bad input.

mod common;

use std::time::Duration;

use bytes::Bytes;
use tower_cache::{EntryMeta, InsertErrorKind, MemoryTier, TimeSource};

const TTL: Duration = Duration::from_secs(60);

fn value(n: usize) -> Bytes {
    Bytes::from(vec![b'v'; n])
}

#[test]
fn eviction_keeps_the_entry_bound() {
    let m = MemoryTier::builder().max_entries(50).build().unwrap();
    for i in 0..500 {
        m.set(&format!("k{i}"), value(10), TTL).unwrap();
    }
    let s = m.stats();
    assert!(s.entries <= 50, "{} entries in a 50-entry tier", s.entries);
    assert!(
        s.entries >= 40,
        "the tier should be nearly full, has {}",
        s.entries
    );
    assert_eq!(s.inserts, 500);
    assert_eq!(
        s.evictions,
        500 - s.entries,
        "every missing entry was evicted"
    );
}

#[test]
fn eviction_keeps_the_byte_bound() {
    let m = MemoryTier::builder()
        .bytes_only(64 * 1024)
        .max_value_bytes(4096)
        .build()
        .unwrap();
    for i in 0..200 {
        m.set(&format!("k{i}"), value(1000), TTL).unwrap();
    }
    let s = m.stats();
    assert!(s.bytes <= 64 * 1024, "{} bytes in a 64 KiB tier", s.bytes);
    assert!(s.evictions > 100);
    assert!(s.entries > 30);
}

#[test]
fn both_bounds_hold_at_once() {
    let m = MemoryTier::builder()
        .max_entries(100)
        .max_bytes(20_000)
        .max_value_bytes(5_000)
        .build()
        .unwrap();
    // Small values: the entry bound binds.
    for i in 0..300 {
        m.set(&format!("s{i}"), value(1), TTL).unwrap();
    }
    assert!(m.stats().entries <= 100);
    // Large values: the byte bound binds.
    for i in 0..300 {
        m.set(&format!("l{i}"), value(2000), TTL).unwrap();
    }
    let s = m.stats();
    assert!(s.bytes <= 20_000, "{} bytes", s.bytes);
    assert!(s.entries <= 100);
}

#[test]
fn frequently_read_keys_survive_a_scan() {
    // S3-FIFO keeps a re-read working set when one-hit keys stream through.
    let m = MemoryTier::builder().max_entries(100).build().unwrap();
    for i in 0..20 {
        m.set(&format!("hot{i}"), value(1), TTL).unwrap();
    }
    for round in 0..50 {
        for i in 0..20 {
            assert!(
                m.get(&format!("hot{i}")).is_some(),
                "hot{i} lost in round {round}"
            );
        }
        for j in 0..20 {
            m.set(&format!("scan{round}-{j}"), value(1), TTL).unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl() {
    let _w = common::watchdog("entries_expire_after_their_ttl", common::LIMIT);
    let m = MemoryTier::builder().build().unwrap();
    m.set("short", value(3), Duration::from_secs(1)).unwrap();
    m.set("long", value(3), Duration::from_secs(10)).unwrap();
    assert!(m.has("short"));
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(m.get("short").is_some());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(
        m.get("short").is_none(),
        "an expired entry must never be served"
    );
    assert!(!m.has("short"));
    assert!(m.get("long").is_some());
    let s = m.stats();
    assert_eq!(s.expirations, 1);
    assert_eq!(s.entries, 1, "the expired entry is removed when read");
}

#[tokio::test(start_paused = true)]
async fn remove_expired_drops_entries_nobody_reads() {
    let _w = common::watchdog("sweep_removes_expired_entries_nobody_reads", common::LIMIT);
    let m = MemoryTier::builder().build().unwrap();
    for i in 0..10 {
        m.set(&format!("k{i}"), value(100), Duration::from_secs(1 + i % 2))
            .unwrap();
    }
    let before = m.stats().bytes;
    tokio::time::advance(Duration::from_millis(1500)).await;
    assert_eq!(m.remove_expired(), 5);
    let s = m.stats();
    assert_eq!(s.entries, 5);
    assert_eq!(s.expirations, 5);
    assert!(s.bytes < before && s.bytes > 0);
}

#[tokio::test(start_paused = true)]
async fn sweeper_task_runs_periodically_and_stops_with_the_tier() {
    let _w = common::watchdog(
        "sweeper_task_runs_periodically_and_stops_with_the_tier",
        common::LIMIT,
    );
    let m = MemoryTier::builder().build().unwrap();
    m.set("a", value(1), Duration::from_secs(1)).unwrap();
    let task = m.spawn_expiry_sweeper(Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(m.stats().entries, 0);
    assert_eq!(m.stats().expirations, 1);
    drop(m);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(task.is_finished(), "the sweeper ends once the tier is gone");
}

#[test]
fn set_get_has_delete_clear_and_stats() {
    let m = MemoryTier::builder().build().unwrap();
    m.set("a", Bytes::from_static(b"1"), TTL).unwrap();
    m.set("b", Bytes::from_static(b"2"), TTL).unwrap();
    m.set("a", Bytes::from_static(b"3"), TTL).unwrap();
    assert_eq!(m.get("a").unwrap(), "3");
    assert!(m.get("zz").is_none());
    assert!(m.has("b"));
    assert!(m.delete("b"));
    assert!(!m.delete("b"));
    let entry = m.get_entry("a").unwrap();
    assert!(entry.ttl_left <= TTL && entry.ttl_left > TTL - Duration::from_secs(5));
    let s = m.stats();
    assert_eq!((s.hits, s.misses, s.inserts, s.entries), (2, 1, 3, 1));
    assert!((s.hit_ratio() - 2.0 / 3.0).abs() < 1e-9);
    m.clear();
    assert_eq!(m.stats().entries, 0);
    assert_eq!(m.stats().bytes, 0);
}

#[test]
fn byte_count_is_exact_across_overwrites_and_deletes() {
    let m = MemoryTier::builder().build().unwrap();
    m.set("k", value(100), TTL).unwrap();
    let one = m.stats().bytes;
    m.set("k", value(100), TTL).unwrap();
    assert_eq!(m.stats().bytes, one, "overwriting must not double count");
    m.delete("k");
    assert_eq!(m.stats().bytes, 0);
}

#[test]
fn max_entries_can_shrink_in_place() {
    let m = MemoryTier::builder().max_entries(100).build().unwrap();
    for i in 0..100 {
        m.set(&format!("k{i}"), value(1), TTL).unwrap();
    }
    m.set_max_entries(10).unwrap();
    assert!(m.stats().entries <= 10);
    assert_eq!(m.stats().max_entries, Some(10));
    let err = m.set_max_entries(0).unwrap_err().to_string();
    assert!(err.contains("max_entries is 0"), "{err}");
    let bytes_only = MemoryTier::builder().bytes_only(1 << 20).build().unwrap();
    assert!(bytes_only.set_max_entries(5).is_err());
    bytes_only.set_max_bytes(1 << 19).unwrap();
}

#[test]
fn bad_configuration_is_a_build_error_that_says_what_to_change() {
    let zero = MemoryTier::builder().max_entries(0).build().unwrap_err();
    assert!(zero.to_string().contains("max_entries is 0"), "{zero}");
    let zero_bytes = MemoryTier::builder().bytes_only(0).build().unwrap_err();
    assert!(zero_bytes.to_string().contains("max_bytes is 0"));
    let value_over = MemoryTier::builder()
        .max_bytes(100)
        .max_value_bytes(1000)
        .build()
        .unwrap_err();
    assert!(
        value_over.to_string().contains("lower max_value_bytes"),
        "{value_over}"
    );
}

#[test]
fn bad_entries_are_counted_rejections_not_panics() {
    let m = MemoryTier::builder().max_value_bytes(10).build().unwrap();
    let e = m.set("k", value(1), Duration::ZERO).unwrap_err();
    assert_eq!(e.kind(), InsertErrorKind::Ttl);
    assert!(e.to_string().contains("positive"));
    let e = m
        .set("k", value(1), Duration::from_secs(400 * 24 * 3600))
        .unwrap_err();
    assert_eq!(e.kind(), InsertErrorKind::Ttl);
    assert!(e.to_string().contains("365 days"));
    let e = m.set("k", value(11), TTL).unwrap_err();
    assert_eq!(e.kind(), InsertErrorKind::TooLarge);
    assert!(e.to_string().contains("raise max_value_bytes"));
    assert_eq!(m.stats().rejections, 3);
    assert_eq!(m.stats().entries, 0);
}

#[test]
fn the_coarse_clock_expires_entries_in_real_time() {
    let m = MemoryTier::builder()
        .time_source(TimeSource::Coarse)
        .build()
        .unwrap();
    m.set("short", value(1), Duration::from_millis(20)).unwrap();
    m.set("long", value(1), Duration::from_secs(600)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        m.get("short").is_none(),
        "expired after fifteen times its ttl"
    );
    assert!(m.get("long").is_some());
}

#[test]
fn the_default_clock_is_coarse_outside_a_runtime() {
    let m = MemoryTier::builder().build().unwrap();
    assert_eq!(m.time_source(), TimeSource::Coarse);
    assert_eq!(TimeSource::Auto.resolve(), TimeSource::Coarse);
    assert_eq!(TimeSource::Tokio.resolve(), TimeSource::Tokio);
}

#[tokio::test]
async fn the_default_clock_is_coarse_under_a_running_tokio_clock() {
    let m = MemoryTier::builder().build().unwrap();
    assert_eq!(m.time_source(), TimeSource::Coarse);
}

#[tokio::test(start_paused = true)]
async fn the_default_clock_follows_a_paused_tokio_clock() {
    let _watchdog = common::watchdog("paused clock", Duration::from_secs(10));
    let m = MemoryTier::builder().build().unwrap();
    assert_eq!(m.time_source(), TimeSource::Tokio);
    m.set("k", value(1), Duration::from_secs(30)).unwrap();
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(m.get("k").is_some(), "29 s into a 30 s ttl");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(m.get("k").is_none(), "31 s into a 30 s ttl");
    // Asked for explicitly, the coarse clock ignores the paused one.
    let coarse = MemoryTier::builder()
        .time_source(TimeSource::Coarse)
        .build()
        .unwrap();
    coarse.set("k", value(1), Duration::from_secs(30)).unwrap();
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(coarse.get("k").is_some(), "real time has not moved 30 s");
}

#[test]
fn versions_and_tags_are_kept_and_replaced_with_the_entry() {
    let m = MemoryTier::builder().build().unwrap();
    let meta = tower_cache::EntryMeta {
        version: 42,
        tags: ["user:1", "team:9"].into_iter().collect(),
    };
    m.set_with("k", value(3), TTL, meta.clone()).unwrap();
    let e = m.get_entry("k").unwrap();
    assert_eq!(e.meta, meta);
    let tagged_bytes = m.stats().bytes;
    m.set("k", value(3), TTL).unwrap();
    let e = m.get_entry("k").unwrap();
    assert_eq!(
        (e.meta.version, e.meta.tags.len()),
        (0, 0),
        "an overwrite drops the old tags"
    );
    assert!(
        m.stats().bytes < tagged_bytes,
        "tags count towards the bytes"
    );
    m.set_with("k", value(3), TTL, meta.clone()).unwrap();
    assert!(m.delete("k"));
    m.set("k", value(3), TTL).unwrap();
    assert!(
        m.get_entry("k").unwrap().meta.tags.is_empty(),
        "a delete drops the tags"
    );
}

#[test]
fn both_bounds_can_be_raised_and_lowered_in_place() {
    let m = MemoryTier::builder()
        .max_entries(50)
        .max_bytes(1 << 20)
        .build()
        .unwrap();
    let fill = |prefix: &str| {
        for i in 0..400 {
            m.set(&format!("{prefix}{i}"), value(10), TTL).unwrap();
        }
    };
    fill("a");
    assert!(m.stats().entries <= 50);
    // Raising the entry bound (the byte bound does not bind for small values) makes room.
    m.set_max_entries(200).unwrap();
    fill("b");
    let s = m.stats();
    assert!(
        s.entries > 100 && s.entries <= 200,
        "raised to 200 entries, holding {}",
        s.entries
    );
    // Lowering the byte bound under what is held evicts at once.
    m.set_max_bytes(4_000).unwrap();
    let s = m.stats();
    assert!(
        s.bytes <= 4_000,
        "lowered to 4000 bytes, holding {}",
        s.bytes
    );
    // And raising it again lets large values in.
    m.set_max_bytes(1 << 20).unwrap();
    for i in 0..100 {
        m.set(&format!("c{i}"), value(5_000), TTL).unwrap();
    }
    let s = m.stats();
    assert!(s.entries > 80 && s.bytes <= 1 << 20, "{s:?}");
}

#[test]
fn an_overwrite_is_one_insert_not_an_eviction_and_keeps_the_new_tags() {
    let m = MemoryTier::builder().max_entries(100).build().unwrap();
    let tagged = |t: &str| EntryMeta {
        version: 1,
        tags: [t].into_iter().collect(),
    };
    m.set_with("k", value(3), TTL, tagged("old")).unwrap();
    m.set_with("k", value(4), TTL, tagged("new")).unwrap();
    let s = m.stats();
    assert_eq!(s.evictions, 0, "a replacement is not an eviction");
    assert_eq!(s.entries, 1);
    let e = m.get_entry("k").unwrap();
    assert_eq!(e.value, value(4));
    assert_eq!(e.meta.tags.iter().collect::<Vec<_>>(), ["new"]);
    // Bytes are exact after replacements.
    let before = m.stats().bytes;
    m.set("k", value(4), TTL).unwrap();
    assert_eq!(m.get_entry("k").unwrap().meta.tags.len(), 0, "untagged now");
    assert!(m.stats().bytes < before, "the tags' bytes went with them");
    assert!(m.delete("k"));
    assert_eq!(m.stats().bytes, 0);
}

#[test]
fn an_overwritten_key_is_never_missing_and_stays_hot() {
    let m = MemoryTier::builder().max_entries(100).build().unwrap();
    m.set("hot", value(1), TTL).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (m, stop) = (m.clone(), stop.clone());
        move || {
            let mut misses = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if m.get("hot").is_none() {
                    misses += 1;
                }
            }
            misses
        }
    });
    // Overwrites of the hot key while one-hit keys stream through.
    for round in 0..2_000 {
        m.set("hot", value(1 + round % 3), TTL).unwrap();
        m.set(&format!("scan{round}"), value(1), TTL).unwrap();
        assert!(m.get("hot").is_some(), "round {round}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reader.join().unwrap(), 0, "a reader saw the key missing");
}

#[test]
fn extreme_settings_build_or_fail_with_a_message_never_panic() {
    for entries in [1, u64::MAX / 2, u64::MAX] {
        let m = MemoryTier::builder().max_entries(entries).build().unwrap();
        m.set("k", value(10), TTL).unwrap();
        assert_eq!(m.get("k").unwrap(), value(10));
        m.set_max_entries(entries).unwrap();
    }
    for bytes in [u64::MAX / 2, u64::MAX] {
        let m = MemoryTier::builder().bytes_only(bytes).build().unwrap();
        m.set("k", value(10), TTL).unwrap();
        assert!(m.get("k").is_some());
        let both = MemoryTier::builder()
            .max_entries(u64::MAX)
            .max_bytes(bytes)
            .build()
            .unwrap();
        both.set("k", value(10), TTL).unwrap();
        assert!(both.get("k").is_some());
        both.set_max_bytes(1).unwrap();
        assert!(both.get("k").is_none(), "a 1-byte bound holds nothing");
    }
    // Tiny byte bounds: an error that says what to change, or a tier that holds what fits.
    for bytes in [1, 64, 100] {
        match MemoryTier::builder().bytes_only(bytes).build() {
            Ok(m) => {
                let _ = m.set("k", value(1), TTL);
            }
            Err(e) => assert!(e.to_string().contains("max_"), "{e}"),
        }
    }
    let e = MemoryTier::builder()
        .max_value_bytes(usize::MAX)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("max_value_bytes"), "{e}");
    // TTLs at and past the limit.
    let m = MemoryTier::builder().build().unwrap();
    assert!(m.set("max", value(1), tower_cache::MAX_TTL).is_ok());
    assert_eq!(
        m.set("over", value(1), Duration::MAX).unwrap_err().kind(),
        InsertErrorKind::Ttl
    );
    assert_eq!(
        m.set("zero", value(1), Duration::ZERO).unwrap_err().kind(),
        InsertErrorKind::Ttl
    );
}
