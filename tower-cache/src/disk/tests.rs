use super::*;

#[tokio::test]
async fn corrupt_record_is_dropped_and_counted_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(8 << 20)
        .open()
        .unwrap();
    disk.set("k", Bytes::from(vec![7u8; 5000]), Duration::from_secs(60))
        .await
        .unwrap();
    disk.corrupt_for_test("k");
    assert!(
        disk.get("k").is_none(),
        "a corrupt record must not be served"
    );
    disk.flush().await.unwrap();
    let s = disk.stats();
    assert_eq!(s.corrupt, 1);
    assert_eq!(s.entries, 0, "the corrupt record was deleted");
}

#[tokio::test]
async fn a_large_record_is_read_in_parts_and_a_damaged_block_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(64 << 20)
        .addressable_threshold(1 << 20)
        .open()
        .unwrap();
    let value: Vec<u8> = (0..3 << 20).map(|i: usize| (i % 253) as u8).collect();
    let len = value.len();
    disk.set("big", Bytes::from(value.clone()), Duration::from_secs(60))
        .await
        .unwrap();
    // Read whole by callers that want it whole, as before.
    assert!(disk.get("big").as_deref() == Some(&value[..]));
    let before = disk.stats().value_bytes_read;
    let DiskRead::Record(record) = disk.try_read_async("big", 1 << 20).await.unwrap() else {
        panic!("a record over the limit is opened in parts")
    };
    assert_eq!(record.len(), len as u64);
    assert!(record.first_block()[..] == value[..BLOCK]);
    let part = record.read_async(2_000_000, 100).await.unwrap();
    assert!(part[..] == value[2_000_000..2_000_100]);
    assert_eq!(
        disk.stats().value_bytes_read - before,
        (BLOCK + 100) as u64,
        "the first block and the part, not the value"
    );
    assert!(record.read(len as u64 - 1, 2).is_err(), "past the end");
    // Up to the limit, a record is read whole.
    assert!(matches!(
        disk.try_read_async("big", len).await.unwrap(),
        DiskRead::Entry(Some(_))
    ));
    // The last byte of the value flipped: its block fails, the others still read.
    disk.corrupt_for_test("big");
    assert!(record.read(0, 10).is_ok());
    let err = record.read(len as u64 - 10, 10).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    disk.flush().await.unwrap();
    let s = disk.stats();
    assert_eq!((s.corrupt, s.entries), (1, 0), "counted and dropped");
    assert!(record
        .read(0, 10)
        .unwrap_err()
        .to_string()
        .contains("removed"));
}

#[tokio::test]
async fn with_no_addressable_threshold_every_size_round_trips_in_the_addressable_form() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(8 << 20)
        .addressable_threshold(0)
        .open()
        .unwrap();
    let block = BLOCK;
    for len in [0, 1, block - 1, block, block + 1, 3 * block] {
        let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let key = format!("k{len}");
        disk.set(&key, Bytes::from(value.clone()), Duration::from_secs(60))
            .await
            .unwrap();
        disk.flush().await.unwrap();
        assert_eq!(disk.get(&key).as_deref(), Some(&value[..]), "length {len}");
        match disk.try_read_async(&key, 0).await.unwrap() {
            DiskRead::Record(r) => {
                let whole = r.read_async(0, r.len() as usize).await.unwrap();
                assert_eq!(&whole[..], &value[..], "length {len}, read in parts");
                // Past the end: an error, never a panic (checked arithmetic).
                assert!(r.read(len as u64, 1).is_err(), "length {len}");
                assert!(r.read(u64::MAX, 1).is_err(), "length {len}");
                assert!(r.read(0, usize::MAX).is_err(), "length {len}");
                assert!(r.read(len as u64, 0).is_ok_and(|b| b.is_empty()));
            }
            DiskRead::Entry(e) => {
                assert_eq!(
                    e.map(|e| e.value).as_deref(),
                    Some(&value[..]),
                    "length {len}"
                );
            }
        }
    }
    assert_eq!(disk.stats().corrupt, 0);
}

#[tokio::test]
async fn a_splice_keeps_a_large_value_s_bytes_behind_a_new_head_only_while_its_record_stands() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(64 << 20)
        .addressable_threshold(1 << 20)
        .open()
        .unwrap();
    let generations = crate::generation::Generations::default();
    let value: Vec<u8> = (0..3 << 20).map(|i: usize| (i % 251) as u8).collect();
    let ttl = Duration::from_secs(60);
    disk.set("big", Bytes::from(value.clone()), ttl)
        .await
        .unwrap();
    let open = |disk: DiskTier| async move {
        match disk.try_read_async("big", 0).await.unwrap() {
            DiskRead::Record(r) => r,
            DiskRead::Entry(_) => panic!("opened in parts"),
        }
    };
    // A head of another length in front of bytes 1,000.. : every block boundary moves.
    let record = open(disk.clone()).await;
    let tail = record.tail(1_000, value.len() as u64 - 1_000).unwrap();
    assert!(record.tail(1, value.len() as u64).is_none(), "past the end");
    assert!(record.tail(u64::MAX, 2).is_none());
    let head = Bytes::from(vec![b'h'; 70_001]);
    let ticket = generations.ticket("big");
    disk.queue_splice(
        "big",
        head.clone(),
        tail,
        Around::After(Bytes::new()),
        ttl,
        EntryMeta::default(),
        ticket,
    )
    .unwrap();
    disk.flush().await.unwrap();
    let mut want = head.to_vec();
    want.extend_from_slice(&value[1_000..]);
    let spliced = open(disk.clone()).await;
    assert_eq!(spliced.len(), want.len() as u64);
    // Every block checks (a read touching all of them), and the bytes are the ones kept.
    let whole = spliced.read_async(0, want.len()).await.unwrap();
    assert!(whole[..] == want[..], "head, then the kept bytes");
    assert!(disk.get("big").as_deref() == Some(&want[..]));
    assert_eq!(disk.stats().corrupt, 0);
    assert_eq!(disk.stats().logical_bytes, want.len() as u64);
    // A reader of the record from before goes on reading the kept bytes where they are
    // now; the bytes not kept are gone for it.
    let moved = record.read_async(2_000_000, 100_000).await.unwrap();
    assert!(moved[..] == value[2_000_000..2_100_000]);
    let err = record.read(0, 10).unwrap_err().to_string();
    assert!(err.contains("replaced"), "{err}");
    // And a second splice keeps the lineage: the first reader still follows.
    let tail = spliced
        .tail(70_001 + 500, want.len() as u64 - 70_501)
        .unwrap();
    let ticket = generations.ticket("big");
    disk.queue_splice(
        "big",
        Bytes::from_static(b"xy"),
        tail,
        Around::After(Bytes::new()),
        ttl,
        EntryMeta::default(),
        ticket,
    )
    .unwrap();
    disk.flush().await.unwrap();
    let moved = record.read_async(3_000_000, 50).await.unwrap();
    assert!(moved[..] == value[3_000_000..3_000_050]);
    let mut twice = b"xy".to_vec();
    twice.extend_from_slice(&value[1_500..]);
    assert!(disk.get("big").as_deref() == Some(&twice[..]));
    let spliced = open(disk.clone()).await;

    // A splice whose record was replaced since it was opened keeps nothing: the newer
    // value stands, and the dropped write is counted.
    let stale = spliced.tail(0, 10).unwrap();
    disk.set("big", Bytes::from(value.clone()), ttl)
        .await
        .unwrap();
    let superseded = disk.stats().superseded;
    let ticket = generations.ticket("big");
    disk.queue_splice(
        "big",
        head.clone(),
        stale,
        Around::After(Bytes::new()),
        ttl,
        EntryMeta::default(),
        ticket,
    )
    .unwrap();
    disk.flush().await.unwrap();
    assert!(
        disk.get("big").as_deref() == Some(&value[..]),
        "the newer value"
    );
    assert_eq!(disk.stats().superseded, superseded + 1);
    // A new value of the key is another lineage: the old readers stop.
    let err = record.read(3_000_000, 10).unwrap_err().to_string();
    assert!(err.contains("replaced"), "{err}");
    assert!(spliced.read(10, 10).is_err());
    // Nor after a removal: nothing is written.
    let gone = open(disk.clone()).await.tail(0, 10).unwrap();
    disk.delete("big").await.unwrap();
    let ticket = generations.ticket("big");
    disk.queue_splice(
        "big",
        head,
        gone,
        Around::After(Bytes::new()),
        ttl,
        EntryMeta::default(),
        ticket,
    )
    .unwrap();
    disk.flush().await.unwrap();
    assert!(disk.get("big").is_none());
    assert_eq!(disk.stats().superseded, superseded + 2);
}

#[tokio::test]
async fn spooled_values_are_stored_from_their_files_which_then_go_and_leftovers_are_cleared() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let generations = crate::generation::Generations::default();
    let ttl = Duration::from_secs(60);
    let value: Vec<u8> = (0..2 << 20).map(|i: usize| (i % 249) as u8).collect();
    {
        let disk = DiskTier::builder(dir.path())
            .map_size(64 << 20)
            .addressable_threshold(1 << 20)
            .open()
            .unwrap();
        let (mut file, spool) = disk.spool_file().unwrap();
        file.write_all(&value).unwrap();
        let path = spool.path().to_owned();
        let ticket = generations.ticket("k");
        let head = Bytes::from_static(b"head:");
        disk.queue_spooled(
            "k",
            head,
            spool,
            value.len() as u64,
            ttl,
            EntryMeta::default(),
            Some(Fence::Ticket(ticket)),
        )
        .unwrap();
        disk.flush().await.unwrap();
        let mut want = b"head:".to_vec();
        want.extend_from_slice(&value);
        assert!(disk.get("k").as_deref() == Some(&want[..]));
        assert!(!path.exists(), "the spool file is removed once stored");

        // A file holding less than it should stores nothing, and goes too: read whole
        // (a small value) or into its record (a large one).
        for (has, says) in [(1000, 2000), (1_500_000, 2_000_000)] {
            let (mut file, spool) = disk.spool_file().unwrap();
            file.write_all(&value[..has]).unwrap();
            let path = spool.path().to_owned();
            let faults = disk.stats().spool_faults;
            let ticket = generations.ticket("cut");
            disk.queue_spooled(
                "cut",
                Bytes::new(),
                spool,
                says,
                ttl,
                EntryMeta::default(),
                Some(Fence::Ticket(ticket)),
            )
            .unwrap();
            disk.flush().await.unwrap();
            assert!(disk.get("cut").is_none(), "{has} of {says}");
            assert_eq!(disk.stats().spool_faults, faults + 1);
            assert!(!path.exists());
        }

        // Larger than the disk tier takes: refused when queued, the file removed.
        let (_, spool) = disk.spool_file().unwrap();
        let path = spool.path().to_owned();
        let ticket = generations.ticket("huge");
        let refused = disk.queue_spooled(
            "huge",
            Bytes::new(),
            spool,
            1 << 40,
            ttl,
            EntryMeta::default(),
            Some(Fence::Ticket(ticket)),
        );
        assert!(refused.is_err());
        // Removed on the blocking pool: a moment later.
        tokio::time::timeout(Duration::from_secs(10), async {
            while path.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the refused spool file is removed");

        disk.close().await;
    }
    // What a stopped process left (its folder's lock free) goes when a tier opens; the
    // folder of a tier still open (its lock held) stays.
    let spool = dir.path().join("spool");
    let left = spool.join("4242-1-0");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("lock"), b"").unwrap();
    std::fs::write(left.join("0.part"), b"half a body").unwrap();
    let live = spool.join("4243-1-0");
    std::fs::create_dir_all(&live).unwrap();
    let lock = std::fs::File::create(live.join("lock")).unwrap();
    lock.try_lock().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(64 << 20)
        .open()
        .unwrap();
    assert!(!left.exists(), "an abandoned spool folder is removed");
    assert!(live.join("lock").exists(), "a held one stays");
    let (_, file) = disk.spool_file().unwrap();
    let own = file.path().parent().unwrap().to_owned();
    assert!(own.starts_with(&spool) && own != live);
    drop(file);
    disk.close().await;
    drop(disk);
    tokio::time::timeout(Duration::from_secs(10), async {
        while own.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a tier's spool folder goes with it");
}

fn seq_of(disk: &DiskTier, key: &str) -> u64 {
    let state = disk.shared.state();
    let o = state.as_ref().unwrap();
    let rtxn = o.env.read_txn().unwrap();
    let raw = o.dbs.entries.get(&rtxn, key.as_bytes()).unwrap().unwrap();
    record::decode_header(raw).unwrap().seq
}

/// Opens `key` of `disk` in parts.
async fn open_in_parts(disk: &DiskTier, key: &str) -> DiskRecord {
    match disk.try_read_async(key, 0).await.unwrap() {
        DiskRead::Record(r) => r,
        DiskRead::Entry(_) => panic!("opened whole"),
    }
}

#[tokio::test]
async fn a_splice_over_a_damaged_kept_block_counts_the_record_corrupt_and_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(64 << 20)
        .addressable_threshold(1 << 20)
        .open()
        .unwrap();
    let generations = crate::generation::Generations::default();
    let value: Vec<u8> = (0..3 << 20).map(|i: usize| (i % 251) as u8).collect();
    let ttl = Duration::from_secs(60);
    disk.set("big", Bytes::from(value.clone()), ttl)
        .await
        .unwrap();
    let record = open_in_parts(&disk, "big").await;
    let tail = record.tail(1_000, value.len() as u64 - 1_000).unwrap();
    // The value's last byte flipped: the last block of the kept bytes fails its check.
    disk.corrupt_for_test("big");
    let superseded = disk.stats().superseded;
    let ticket = generations.ticket("big");
    disk.queue_splice(
        "big",
        Bytes::from_static(b"head"),
        tail,
        Around::After(Bytes::new()),
        ttl,
        EntryMeta::default(),
        ticket,
    )
    .unwrap();
    disk.flush().await.unwrap();
    let s = disk.stats();
    assert!(disk.get("big").is_none(), "no damaged bytes are served");
    // What every other reader of a damaged record does: count it, drop it.
    assert_eq!(
        (s.corrupt, s.superseded - superseded),
        (1, 0),
        "the writer met a damaged record (corrupt {}, superseded {})",
        s.corrupt,
        s.superseded - superseded
    );
}

#[tokio::test]
async fn a_splice_of_a_record_whose_lineage_is_near_the_end_of_u64_does_not_panic_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(64 << 20)
        .addressable_threshold(1 << 20)
        .open()
        .unwrap();
    let generations = crate::generation::Generations::default();
    let value: Vec<u8> = (0..2 << 20).map(|i: usize| (i % 251) as u8).collect();
    let ttl = Duration::from_secs(60);
    disk.set("big", Bytes::from(value.clone()), ttl)
        .await
        .unwrap();
    // The record rewritten with a lineage whose offsets are at the end of their range:
    // well formed, every checksum right (a file another build wrote, say).
    {
        let state = disk.shared.state();
        let o = state.as_ref().unwrap();
        let mut wtxn = o.env.write_txn().unwrap();
        let old = o.dbs.entries.get(&wtxn, b"big").unwrap().unwrap();
        let h = record::decode_header(old).unwrap();
        let lineage = record::Lineage {
            id: h.seq,
            at: 0,
            from: u64::MAX - 5,
        };
        let rec = record::encode_record_of(
            &[&value],
            Some(lineage),
            h.expires_ms,
            &EntryMeta::default(),
            h.seq,
            usize::MAX,
            1 << 20,
        );
        o.dbs.entries.put(&mut wtxn, b"big", &rec).unwrap();
        wtxn.commit().unwrap();
    }
    let record = open_in_parts(&disk, "big").await;
    assert!(record.read(0, 10).is_ok(), "the record reads");
    let tail = record.tail(100, value.len() as u64 - 100).unwrap();
    let ticket = generations.ticket("big");
    disk.queue_splice(
        "big",
        Bytes::from_static(b"head"),
        tail,
        Around::After(Bytes::new()),
        ttl,
        EntryMeta::default(),
        ticket,
    )
    .unwrap();
    // The writer goes on: the splice is applied or dropped, never a dead writer.
    let flushed = tokio::time::timeout(Duration::from_secs(30), disk.flush()).await;
    assert!(
        matches!(flushed, Ok(Ok(()))),
        "the writer is gone: {flushed:?}"
    );
    disk.set("other", Bytes::from_static(b"v"), ttl)
        .await
        .unwrap();
    assert_eq!(disk.get("other").as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn a_reader_never_follows_into_a_value_written_after_a_clear_or_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(64 << 20)
        .addressable_threshold(1 << 20)
        .open()
        .unwrap();
    let generations = crate::generation::Generations::default();
    let ttl = Duration::from_secs(60);
    let value_of = |n: u8| -> Bytes {
        (0..2usize << 20)
            .map(|i| (i % 251) as u8 ^ n)
            .collect::<Vec<u8>>()
            .into()
    };
    disk.set("big", value_of(1), ttl).await.unwrap();
    let first = open_in_parts(&disk, "big").await;
    // Spliced: the reader of the first record follows.
    let ticket = generations.ticket("big");
    let tail = first.tail(10, first.len() - 10).unwrap();
    disk.queue_splice(
        "big",
        Bytes::from_static(b"h1"),
        tail,
        Around::After(Bytes::new()),
        ttl,
        EntryMeta::default(),
        ticket,
    )
    .unwrap();
    disk.flush().await.unwrap();
    assert!(first.read(1_000_000, 10).unwrap()[..] == value_of(1)[1_000_000..1_000_010]);
    // Cleared, then the key written and spliced again, the same way: another lineage.
    disk.clear().await.unwrap();
    disk.set("big", value_of(2), ttl).await.unwrap();
    let second = open_in_parts(&disk, "big").await;
    let ticket = generations.ticket("big");
    let tail = second.tail(10, second.len() - 10).unwrap();
    disk.queue_splice(
        "big",
        Bytes::from_static(b"h1"),
        tail,
        Around::After(Bytes::new()),
        ttl,
        EntryMeta::default(),
        ticket,
    )
    .unwrap();
    disk.flush().await.unwrap();
    assert!(first.read(1_000_000, 10).is_err(), "after a clear");
    // Compacted, then written and spliced again.
    disk.compact().await.unwrap();
    assert!(second.read(1_000_000, 10).unwrap()[..] == value_of(2)[1_000_000..1_000_010]);
    disk.set("big", value_of(3), ttl).await.unwrap();
    let third_seq = seq_of(&disk, "big");
    let third = open_in_parts(&disk, "big").await;
    let ticket = generations.ticket("big");
    let tail = third.tail(10, third.len() - 10).unwrap();
    disk.queue_splice(
        "big",
        Bytes::from_static(b"h1"),
        tail,
        Around::After(Bytes::new()),
        ttl,
        EntryMeta::default(),
        ticket,
    )
    .unwrap();
    disk.flush().await.unwrap();
    assert!(first.read(1_000_000, 10).is_err(), "after a compaction");
    assert!(second.read(1_000_000, 10).is_err(), "after a compaction");
    assert!(third.read(1_000_000, 10).unwrap()[..] == value_of(3)[1_000_000..1_000_010]);
    // Reopened: the sequence numbers go on from where they were.
    drop((first, second, third));
    disk.close().await;
    drop(disk);
    let disk = DiskTier::builder(dir.path())
        .map_size(64 << 20)
        .addressable_threshold(1 << 20)
        .open()
        .unwrap();
    disk.set("big", value_of(4), ttl).await.unwrap();
    let fourth_seq = seq_of(&disk, "big");
    assert!(fourth_seq > third_seq, "{fourth_seq} after {third_seq}");
    assert_eq!(disk.stats().corrupt, 0);
}

#[tokio::test]
async fn a_flipped_lineage_byte_or_a_cut_spliced_record_serves_no_bytes_and_is_dropped() {
    for damage in ["lineage", "cut"] {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::builder(dir.path())
            .map_size(64 << 20)
            .addressable_threshold(1 << 20)
            .open()
            .unwrap();
        let generations = crate::generation::Generations::default();
        let value: Vec<u8> = (0..3 << 20).map(|i: usize| (i % 251) as u8).collect();
        let ttl = Duration::from_secs(60);
        disk.set("big", Bytes::from(value.clone()), ttl)
            .await
            .unwrap();
        let first = open_in_parts(&disk, "big").await;
        let tail = first.tail(1_000, first.len() - 1_000).unwrap();
        disk.queue_splice(
            "big",
            Bytes::from_static(b"head"),
            tail,
            Around::After(Bytes::new()),
            ttl,
            EntryMeta::default(),
            generations.ticket("big"),
        )
        .unwrap();
        disk.flush().await.unwrap();
        let spliced = open_in_parts(&disk, "big").await;
        {
            let state = disk.shared.state();
            let o = state.as_ref().unwrap();
            let mut wtxn = o.env.write_txn().unwrap();
            let mut rec = o.dbs.entries.get(&wtxn, b"big").unwrap().unwrap().to_vec();
            assert_eq!(rec[1], record::FLAG_LINEAGE);
            match damage {
                // The lineage's `from` (no tags: it starts right after the header).
                "lineage" => rec[record::HEADER + 17] ^= 1,
                _ => rec.truncate(rec.len() - 5),
            }
            o.dbs.entries.put(&mut wtxn, b"big", &rec).unwrap();
            wtxn.commit().unwrap();
        }
        // Readers of the record from before the splice and of the spliced one: errors.
        assert!(first.read(2_000_000, 10).is_err(), "{damage}");
        let read = spliced.read(2_000_000, 10);
        assert!(
            read.as_ref()
                .map_or(true, |b| b[..] == value[2_000_000 - 4 + 1_000..][..10]),
            "{damage}: {read:?}"
        );
        // A splice of the damaged record is dropped; the writer goes on.
        disk.queue_splice(
            "big",
            Bytes::from_static(b"again"),
            spliced.tail(4, spliced.len() - 4).unwrap(),
            Around::After(Bytes::new()),
            ttl,
            EntryMeta::default(),
            generations.ticket("big"),
        )
        .unwrap();
        disk.flush().await.unwrap();
        // A lookup finds it damaged: counted, dropped, nothing served.
        assert!(disk.get("big").is_none(), "{damage}");
        disk.flush().await.unwrap();
        let s = disk.stats();
        assert!(s.corrupt >= 1, "{damage}: {s:?}");
        assert_eq!(s.entries, 0, "{damage}");
    }
}

#[tokio::test]
async fn a_splice_can_add_bytes_after_the_kept_ones_and_readers_still_follow() {
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(64 << 20)
        .addressable_threshold(1 << 20)
        .open()
        .unwrap();
    let generations = crate::generation::Generations::default();
    let value: Vec<u8> = (0..2 << 20).map(|i: usize| (i % 241) as u8).collect();
    let ttl = Duration::from_secs(60);
    disk.set("big", Bytes::from(value.clone()), ttl)
        .await
        .unwrap();
    let record = open_in_parts(&disk, "big").await;
    let after = Bytes::from(vec![9u8; 100_000]);
    let tail = record.tail(10, value.len() as u64 - 10).unwrap();
    disk.queue_splice(
        "big",
        Bytes::from_static(b"new head"),
        tail,
        Around::After(after.clone()),
        ttl,
        EntryMeta::default(),
        generations.ticket("big"),
    )
    .unwrap();
    disk.flush().await.unwrap();
    let mut want = b"new head".to_vec();
    want.extend_from_slice(&value[10..]);
    want.extend_from_slice(&after);
    // Every block checks across the three parts.
    let now = open_in_parts(&disk, "big").await;
    assert!(now.read_async(0, want.len()).await.unwrap()[..] == want[..]);
    // A reader of the record before reads its own bytes where they are now, up to its
    // own end.
    let end = value.len() as u64;
    assert!(record.read_async(end - 1000, 1000).await.unwrap()[..] == value[value.len() - 1000..]);
    assert!(record.read(end, 1).is_err(), "past its own end");
    assert_eq!(disk.stats().corrupt, 0);
}
