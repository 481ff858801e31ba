//! The disk tier on a real LMDB environment in a temp dir.

mod common;

use std::time::Duration;

use bytes::Bytes;
use tower_cache::{DiskTier, EntryMeta, InsertErrorKind};

const TTL: Duration = Duration::from_secs(3600);

fn open(dir: &std::path::Path) -> DiskTier {
    DiskTier::builder(dir).map_size(64 << 20).open().unwrap()
}

/// A xorshift stream: random-looking, repeatable.
fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

/// Bytes that snap cannot shrink.
fn noise(n: usize, seed: u64) -> Bytes {
    xorshift(seed)
        .take(n)
        .map(|x| x as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn data_survives_closing_and_reopening() {
    let _w = common::watchdog("data_survives_closing_and_reopening", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    {
        let disk = open(dir.path());
        let meta = EntryMeta {
            version: 9,
            tags: ["user:1", "team:3"].into_iter().collect(),
        };
        disk.set_with("a", "alpha".into(), TTL, meta).await.unwrap();
        disk.set("b", noise(5000, 3), TTL).await.unwrap();
        disk.close().await;
    }
    let disk = open(dir.path());
    let a = disk.get_entry("a").unwrap();
    assert_eq!(a.value, "alpha");
    assert_eq!(a.meta.version, 9, "versions persist");
    assert_eq!(
        a.meta.tags.iter().collect::<Vec<_>>(),
        ["user:1", "team:3"],
        "tags persist"
    );
    assert_eq!(disk.get("b").unwrap(), noise(5000, 3));
    assert_eq!(disk.stats().entries, 2);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_on_disk() {
    let _w = common::watchdog("entries_expire_on_disk", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    disk.set("k", "v".into(), Duration::from_secs(2))
        .await
        .unwrap();
    let left = disk.get_entry("k").unwrap().ttl_left;
    assert!(left <= Duration::from_secs(2) && left > Duration::from_millis(1900));
    tokio::time::advance(Duration::from_millis(2001)).await;
    assert!(disk.get("k").is_none(), "an expired entry is never served");
    assert!(!disk.has("k"));
}

#[tokio::test(start_paused = true)]
async fn remove_expired_walks_only_the_expiry_index() {
    let _w = common::watchdog("cleanup_removes_only_expired", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    for i in 0..100u64 {
        let ttl = Duration::from_secs(if i % 4 == 0 { 1 } else { 100 });
        disk.set(&format!("k{i}"), "v".into(), ttl).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(disk.remove_expired().await.unwrap(), 25);
    let s = disk.stats();
    assert_eq!(s.entries, 75);
    assert_eq!(s.expirations, 25);
    assert!(disk.get("k1").is_some());
    assert_eq!(
        disk.remove_expired().await.unwrap(),
        0,
        "nothing left to clean"
    );
}

#[tokio::test]
async fn compression_round_trips_and_is_reported() {
    let _w = common::watchdog("compression_round_trips", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    let text = Bytes::from("the quick brown fox jumps over the lazy dog. ".repeat(500));
    disk.set("text", text.clone(), TTL).await.unwrap();
    assert_eq!(disk.get("text").unwrap(), text);
    let s = disk.stats();
    assert_eq!(s.logical_bytes, text.len() as u64);
    assert!(
        s.compression_ratio() > 5.0,
        "ratio {}",
        s.compression_ratio()
    );
}

#[tokio::test]
async fn incompressible_values_are_stored_as_they_are() {
    let _w = common::watchdog("incompressible_values", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    let raw = noise(64 * 1024, 7);
    disk.set("noise", raw.clone(), TTL).await.unwrap();
    assert_eq!(disk.get("noise").unwrap(), raw);
    let s = disk.stats();
    assert!(
        s.stored_bytes >= raw.len() as u64,
        "no compression overhead beyond a header"
    );
    assert!(s.stored_bytes < raw.len() as u64 + 100);
    let small = Bytes::from_static(b"tiny");
    disk.set("small", small.clone(), TTL).await.unwrap();
    assert_eq!(disk.get("small").unwrap(), small);
}

#[tokio::test]
async fn compaction_shrinks_the_file_and_keeps_the_data() {
    let _w = common::watchdog("compaction_shrinks_the_file", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    for i in 0..400 {
        disk.try_set(
            &format!("k{i}"),
            noise(8 * 1024, i),
            TTL,
            EntryMeta::default(),
        )
        .unwrap();
    }
    disk.flush().await.unwrap();
    for i in 0..390 {
        assert!(disk.delete(&format!("k{i}")).await.unwrap());
    }
    let report = disk.compact().await.unwrap();
    assert!(
        report.after_bytes * 4 < report.before_bytes,
        "compaction should shrink {} bytes to well under a quarter, got {}",
        report.before_bytes,
        report.after_bytes
    );
    assert_eq!(disk.stats().entries, 10);
    assert_eq!(disk.get("k395").unwrap(), noise(8 * 1024, 395));
    // Still writable after the swap.
    disk.set("after", "yes".into(), TTL).await.unwrap();
    assert_eq!(disk.get("after").unwrap(), "yes");
}

#[tokio::test]
async fn byte_bound_evicts_the_oldest_writes() {
    let _w = common::watchdog("byte_bound_evicts_the_oldest", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(8 << 20)
        .max_bytes(200 * 1024)
        .max_value_bytes(16 * 1024)
        .compress_threshold(usize::MAX)
        .open()
        .unwrap();
    for i in 0..100u64 {
        disk.set(&format!("k{i:03}"), noise(10 * 1024, i), TTL)
            .await
            .unwrap();
    }
    let s = disk.stats();
    assert!(
        s.stored_bytes <= 200 * 1024,
        "{} bytes stored",
        s.stored_bytes
    );
    assert!(s.evictions >= 80, "{} evictions", s.evictions);
    assert!(disk.get("k000").is_none(), "the oldest write goes first");
    assert!(disk.get("k099").is_some(), "the newest write stays");
}

#[tokio::test]
async fn a_full_map_evicts_instead_of_failing_writes() {
    // Small records under random keys cost LMDB far more than their bytes (half-full
    // B-tree pages, two index rows each), so the default bound (three quarters of the
    // map, counted in record bytes) is reached by the map first. Writes must still land:
    // the tier makes room and lowers its bound, it does not lose batches.
    let _w = common::watchdog("a_full_map_evicts_instead_of_failing_writes", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(2 << 20)
        .open()
        .unwrap();
    let keys: Vec<u64> = xorshift(7).take(20_000).collect();
    for (round, chunk) in keys.chunks(500).enumerate() {
        let mut acks = Vec::new();
        for &x in chunk {
            let disk = disk.clone();
            let key = format!("user:{x:016x}");
            acks.push(tokio::spawn(async move {
                disk.set(&key, noise(200, x), TTL).await
            }));
        }
        for a in acks {
            a.await.unwrap().unwrap_or_else(|e| {
                panic!("a write failed in round {round}: {e}; {:?}", disk.stats())
            });
        }
    }
    let s = disk.stats();
    assert_eq!(s.writes, 20_000);
    assert_eq!(s.errors, 0, "{s:?}");
    assert!(s.evictions > 0, "the bound was enforced by eviction");
    assert!(
        s.bound_bytes < (2 << 20) / 4 * 3,
        "the bound was lowered to what the map holds: {s:?}"
    );
    assert!(s.stored_bytes <= s.bound_bytes, "{s:?}");
    assert!(
        s.entries < 20_000 && s.entries > 500,
        "{} entries kept: {s:?}",
        s.entries
    );
    // The newest write is there to read.
    let last = keys[keys.len() - 1];
    assert!(disk.get(&format!("user:{last:016x}")).is_some());
}

#[tokio::test(start_paused = true)]
async fn expired_entries_are_evicted_before_older_live_ones() {
    let _w = common::watchdog("expired_entries_are_evicted_first", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(8 << 20)
        .max_bytes(100 * 1024)
        .max_value_bytes(16 * 1024)
        .compress_threshold(usize::MAX)
        .open()
        .unwrap();
    disk.set("old-live", noise(10 * 1024, 1), TTL)
        .await
        .unwrap();
    for i in 0..5u64 {
        disk.set(
            &format!("short{i}"),
            noise(10 * 1024, i + 10),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    for i in 0..5u64 {
        disk.set(&format!("new{i}"), noise(10 * 1024, i + 20), TTL)
            .await
            .unwrap();
    }
    let s = disk.stats();
    assert!(s.expirations >= 1, "expired entries made room");
    assert!(
        disk.get("old-live").is_some(),
        "the older live entry was kept"
    );
}

#[tokio::test]
async fn group_commit_puts_many_writes_in_one_transaction() {
    let _w = common::watchdog("group_commit", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    let mut acks = Vec::new();
    for i in 0..2000 {
        let disk = disk.clone();
        acks.push(tokio::spawn(async move {
            disk.set(&format!("k{i}"), "v".into(), TTL).await
        }));
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    let s = disk.stats();
    assert_eq!(s.writes, 2000);
    assert_eq!(s.entries, 2000);
    assert!(
        s.write_batches < 1000,
        "2000 concurrent writes took {} commits; group commit should batch them",
        s.write_batches
    );
}

#[tokio::test]
async fn bad_configuration_is_a_build_error_that_says_what_to_change() {
    let _w = common::watchdog(
        "bad_configuration_is_a_build_error_that_says_what_to_change",
        common::LIMIT,
    );
    let dir = tempfile::tempdir().unwrap();
    let tiny = DiskTier::builder(dir.path())
        .map_size(4096)
        .open()
        .unwrap_err();
    assert!(tiny.to_string().contains("raise map_size"), "{tiny}");
    let too_small_for_one = DiskTier::builder(dir.path())
        .map_size(2 << 20)
        .max_value_bytes(4 << 20)
        .open()
        .unwrap_err();
    assert!(
        too_small_for_one
            .to_string()
            .contains("too small for entries of max_value_bytes"),
        "{too_small_for_one}"
    );
    // The case where a lowered bound once fell below one entry: refused up front now.
    let entry_over_map = DiskTier::builder(dir.path())
        .map_size(1 << 20)
        .max_value_bytes(384 << 10)
        .open()
        .unwrap_err();
    assert!(
        entry_over_map
            .to_string()
            .contains("max_value_bytes (393216)"),
        "{entry_over_map}"
    );
    // Extremes never panic.
    for map in [usize::MAX, usize::MAX - 1, usize::MAX / 2] {
        let e = DiskTier::builder(dir.path())
            .map_size(map)
            .open()
            .unwrap_err();
        assert!(e.to_string().contains("lower map_size"), "{e}");
    }
    let e = DiskTier::builder(dir.path())
        .max_value_bytes(usize::MAX)
        .open()
        .unwrap_err();
    assert!(e.to_string().contains("max_value_bytes"), "{e}");
    let e = DiskTier::builder(dir.path())
        .max_bytes(u64::MAX)
        .open()
        .unwrap_err();
    assert!(e.to_string().contains("90% of map_size"), "{e}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let unwritable = DiskTier::builder(file.join("cache")).open().unwrap_err();
    assert!(
        unwritable
            .to_string()
            .contains("choose a writable directory"),
        "{unwritable}"
    );
    let greedy = DiskTier::builder(dir.path())
        .map_size(8 << 20)
        .max_bytes(8 << 20)
        .open()
        .unwrap_err();
    assert!(greedy.to_string().contains("90% of map_size"), "{greedy}");
}

#[tokio::test]
async fn bad_entries_are_counted_rejections() {
    let _w = common::watchdog("bad_entries_disk", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(8 << 20)
        .max_value_bytes(1000)
        .open()
        .unwrap();
    let big = disk.set("k", noise(1001, 1), TTL).await.unwrap_err();
    assert_eq!(big.kind(), InsertErrorKind::TooLarge);
    let long_key = "k".repeat(600);
    assert_eq!(
        disk.set(&long_key, "v".into(), TTL)
            .await
            .unwrap_err()
            .kind(),
        InsertErrorKind::Key
    );
    assert_eq!(
        disk.set("", "v".into(), TTL).await.unwrap_err().kind(),
        InsertErrorKind::Key
    );
    assert_eq!(
        disk.set("k", "v".into(), Duration::ZERO)
            .await
            .unwrap_err()
            .kind(),
        InsertErrorKind::Ttl
    );
    assert_eq!(disk.stats().rejections, 4);
    assert_eq!(disk.stats().entries, 0);
}

#[tokio::test]
async fn a_closed_tier_fails_softly_and_counts() {
    let _w = common::watchdog("a_closed_tier_fails_softly", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    disk.set("k", "v".into(), TTL).await.unwrap();
    disk.close().await;
    assert!(disk.get("k").is_none());
    assert!(disk.try_get_entry("k").is_err());
    let e = disk.set("k2", "v".into(), TTL).await.unwrap_err();
    assert_eq!(e.kind(), InsertErrorKind::Disk);
    assert!(disk.delete("k").await.is_err());
    assert!(disk.stats().errors >= 3);
}

#[tokio::test]
async fn delete_and_clear() {
    let _w = common::watchdog("delete_and_clear", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = open(dir.path());
    disk.set("a", "1".into(), TTL).await.unwrap();
    disk.set("b", "2".into(), TTL).await.unwrap();
    assert!(disk.delete("a").await.unwrap());
    assert!(!disk.delete("a").await.unwrap());
    assert!(disk.get("a").is_none());
    disk.clear().await.unwrap();
    assert!(disk.get("b").is_none());
    let s = disk.stats();
    assert_eq!((s.entries, s.stored_bytes), (0, 0));
}

#[tokio::test]
async fn a_lowered_bound_still_holds_an_entry_of_the_largest_value_and_rises_again() {
    let _w = common::watchdog("lowered_bound_floor", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let max_value = 64 << 10;
    let disk = DiskTier::builder(dir.path())
        .map_size(2 << 20)
        .max_value_bytes(max_value)
        .compress_threshold(usize::MAX)
        .open()
        .unwrap();
    // Small records under random keys fill the map long before the byte bound; entries of
    // the largest value come in between.
    let keys: Vec<u64> = xorshift(11).take(12_000).collect();
    let mut big_landed = 0;
    for (round, chunk) in keys.chunks(400).enumerate() {
        let acks: Vec<_> = chunk
            .iter()
            .map(|&x| {
                let disk = disk.clone();
                tokio::spawn(
                    async move { disk.set(&format!("s:{x:016x}"), noise(150, x), TTL).await },
                )
            })
            .collect();
        for a in acks {
            a.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}: {:?}", disk.stats()));
        }
        // A write acknowledged is a write kept: never Ok, then evicted by its own commit.
        // (LMDB needs contiguous pages for a large value; in a fragmented, full map it may
        // find none, and then the write fails, counted, instead.)
        let big = noise(max_value, round as u64);
        if disk
            .set(&format!("big{round}"), big.clone(), TTL)
            .await
            .is_ok()
        {
            assert_eq!(
                disk.get(&format!("big{round}")).as_ref(),
                Some(&big),
                "round {round}: acknowledged, then gone: {:?}",
                disk.stats()
            );
            big_landed += 1;
        }
    }
    assert!(big_landed > 0);
    let lowered = disk.stats();
    assert!(
        lowered.bound_bytes < (2 << 20) / 4 * 3,
        "the small records lowered the bound: {lowered:?}"
    );
    assert!(
        lowered.bound_bytes >= max_value as u64,
        "the bound never drops below one entry of the largest value: {lowered:?}"
    );
    // Once space frees (here: everything deleted, then compaction), the bound rises again
    // with the next writes, and a large entry finds room.
    disk.clear().await.unwrap();
    disk.compact().await.unwrap();
    let big = noise(max_value, 99);
    disk.set("big", big.clone(), TTL).await.unwrap();
    assert_eq!(disk.get("big").unwrap(), big);
    for i in 0..40 {
        disk.set(&format!("after:{i}"), noise(100, i), TTL)
            .await
            .unwrap();
    }
    let raised = disk.stats();
    assert!(
        raised.bound_bytes > lowered.bound_bytes,
        "the bound rose after space freed: {lowered:?} then {raised:?}"
    );
}

#[tokio::test]
async fn a_path_reopens_right_after_its_tier_is_dropped() {
    let _w = common::watchdog("reopen_after_drop", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let disk = open(dir.path());
        disk.set(&format!("k{round}"), "v".into(), TTL)
            .await
            .unwrap();
        // The same path twice in one process is a clear error, not heed's.
        let twice = DiskTier::builder(dir.path()).map_size(64 << 20).open();
        assert!(
            twice
                .unwrap_err()
                .to_string()
                .contains("already open in this process"),
            "round {round}"
        );
        drop(disk);
        // No close(): the writer is still closing the environment when this opens.
    }
    let disk = open(dir.path());
    assert_eq!(disk.stats().entries, 20);
}

#[tokio::test]
async fn extreme_settings_work_or_fail_with_a_message() {
    let _w = common::watchdog("disk_extreme_settings", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    // The largest batch, compression of everything, then of nothing.
    for (i, threshold) in [0usize, 1, usize::MAX].into_iter().enumerate() {
        let path = dir.path().join(format!("t{i}"));
        let disk = DiskTier::builder(&path)
            .map_size(8 << 20)
            .max_batch(usize::MAX)
            .compress_threshold(threshold)
            .blocking_read_threshold(0)
            .open()
            .unwrap();
        disk.set("k", noise(3000, 1), TTL).await.unwrap();
        disk.set("empty", Bytes::new(), TTL).await.unwrap();
        assert_eq!(disk.get("k").unwrap(), noise(3000, 1));
        assert_eq!(disk.get("empty").unwrap(), Bytes::new());
        disk.close().await;
    }
    // A one-byte value limit takes one byte, refuses two.
    let disk = DiskTier::builder(dir.path().join("one"))
        .map_size(8 << 20)
        .max_value_bytes(1)
        .open()
        .unwrap();
    disk.set("k", "x".into(), TTL).await.unwrap();
    assert!(disk.set("k2", "xy".into(), TTL).await.is_err());
    // TTLs: zero and past the limit are refused, the limit itself is taken.
    assert!(disk.set("z", "v".into(), Duration::ZERO).await.is_err());
    assert!(disk.set("m", "v".into(), Duration::MAX).await.is_err());
    disk.set("l", "v".into(), tower_cache::MAX_TTL)
        .await
        .unwrap();
    // Keys: empty and over the limit are refused.
    assert!(disk.set("", "v".into(), TTL).await.is_err());
    let long = "k".repeat(tower_cache::disk::MAX_KEY_LEN + 1);
    assert!(disk.set(&long, "v".into(), TTL).await.is_err());
}
