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
