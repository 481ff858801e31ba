use super::*;

fn req(range: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(::http::header::RANGE, HeaderValue::from_str(range).unwrap());
    h
}

fn one(first: u64, last: u64) -> Asked {
    Asked::One(ByteRange { first, last })
}

#[test]
fn ranges_of_ten_bytes() {
    // RFC 9110 sections 14.1.1 (syntax), 14.1.2 (satisfiable), 14.2 (ignoring).
    let table: &[(&str, Asked)] = &[
        ("bytes=0-0", one(0, 0)),
        ("bytes=2-5", one(2, 5)),
        ("bytes=7-", one(7, 9)),
        ("bytes=-3", one(7, 9)),
        ("bytes=-30", one(0, 9)),
        ("bytes=5-99", one(5, 9)),
        ("bytes=5-99999999999999999999999", one(5, 9)),
        ("BYTES=1-1", one(1, 1)),
        (" bytes=1-2 ", one(1, 2)),
        ("bytes= 1-2 ,", one(1, 2)),
        ("bytes=,,1-2", one(1, 2)),
        ("bytes=10-", Asked::Unsatisfiable),
        ("bytes=10-20", Asked::Unsatisfiable),
        ("bytes=99999999999999999999999-", Asked::Unsatisfiable),
        ("bytes=-0", Asked::Unsatisfiable),
        ("bytes=10-12,20-30", Asked::Unsatisfiable),
        // One satisfiable of several: a single part.
        ("bytes=20-30,1-2", one(1, 2)),
        ("bytes=0-1,4-5", Asked::Several),
        ("bytes=0-1,1-2", Asked::Several),
        ("bytes=5-4", Asked::Ignore),
        ("bytes=1-2,5-4", Asked::Ignore),
        ("bytes=", Asked::Ignore),
        ("bytes=,", Asked::Ignore),
        ("bytes = 1-2", Asked::Ignore),
        ("items=1-2", Asked::Ignore),
        ("bytes=a-b", Asked::Ignore),
        ("bytes=1", Asked::Ignore),
        ("bytes=-", Asked::Ignore),
        ("bytes=--1", Asked::Ignore),
        ("bytes=+1-2", Asked::Ignore),
        ("bytes=1-2-3", Asked::Ignore),
        ("", Asked::Ignore),
        ("=", Asked::Ignore),
    ];
    for (value, want) in table {
        assert_eq!(asked(&req(value), 10), *want, "{value:?}");
    }
    // Nothing of an empty representation is satisfiable.
    assert_eq!(asked(&req("bytes=-5"), 0), Asked::Unsatisfiable);
}

#[test]
fn the_number_of_ranges_is_bounded_and_two_lines_are_ignored() {
    let many = |n: usize| {
        let list: Vec<String> = (0..n).map(|i| format!("{i}-{i}")).collect();
        format!("bytes=50-50,{}", list.join(","))
    };
    assert_eq!(asked(&req(&many(MAX_RANGES - 1)), 10), Asked::Several);
    assert_eq!(asked(&req(&many(MAX_RANGES)), 10), Asked::Ignore);
    let mut two = req("bytes=1-2");
    two.append(::http::header::RANGE, HeaderValue::from_static("bytes=3-4"));
    assert_eq!(asked(&two, 10), Asked::Ignore);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let alphabet = b"bytes=-,0123456789 \t*/\"W";
    for len in 0..3_000usize {
        let v: Vec<u8> = (0..len % 40)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                alphabet[(x % alphabet.len() as u64) as usize]
            })
            .collect();
        if let Ok(v) = HeaderValue::from_bytes(&v) {
            let mut h = HeaderMap::new();
            h.insert(::http::header::RANGE, v.clone());
            h.insert(::http::header::CONTENT_RANGE, v.clone());
            h.insert(::http::header::IF_RANGE, v);
            for n in [0, 1, 10, u64::MAX] {
                let _ = asked(&h, n);
            }
            let _ = content_range(&h);
            let _ = if_range_holds(&h, &h);
            let mut stored = h.clone();
            let _ = from_piece(&h, &mut stored, Bytes::from_static(b"0123456789"));
            let _ = from_complete(&h, &mut stored, Bytes::from_static(b"0123456789"));
        }
    }
}

#[test]
fn content_ranges_of_single_parts() {
    // RFC 9110 section 14.4.
    type Row = (&'static str, Option<(u64, u64, u64)>);
    let table: &[Row] = &[
        ("bytes 0-9/10", Some((0, 9, 10))),
        ("bytes 3-4/100", Some((3, 4, 100))),
        ("BYTES 3-4/100", Some((3, 4, 100))),
        ("bytes 3-4/*", None),
        ("bytes */100", None),
        ("bytes 4-3/100", None),
        ("bytes 3-100/100", None),
        ("items 3-4/100", None),
        ("bytes 3-4", None),
    ];
    for (value, want) in table {
        let mut h = HeaderMap::new();
        h.insert(
            ::http::header::CONTENT_RANGE,
            HeaderValue::from_str(value).unwrap(),
        );
        let got = content_range(&h).map(|(r, c)| (r.first, r.last, c));
        assert_eq!(got, *want, "{value:?}");
    }
}

#[test]
fn if_range_needs_a_strong_match() {
    // RFC 9110 section 13.1.5, with the strong comparison (8.8.3.2) and the strength
    // of a date (8.8.2.2).
    let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
    let one_second_later = "Sun, 06 Nov 1994 08:49:38 GMT";
    let stored = |etag: &str, date: &str| {
        let mut h = HeaderMap::new();
        h.insert("etag", HeaderValue::from_str(etag).unwrap());
        h.insert("last-modified", HeaderValue::from_static(lm));
        h.insert("date", HeaderValue::from_str(date).unwrap());
        h
    };
    let table: &[(&str, &str, &str, bool)] = &[
        ("\"v1\"", "\"v1\"", one_second_later, true),
        ("\"v1\"", "\"v2\"", one_second_later, false),
        // Weak tags never match for If-Range, on either side.
        ("W/\"v1\"", "\"v1\"", one_second_later, false),
        ("\"v1\"", "W/\"v1\"", one_second_later, false),
        (lm, "\"v1\"", one_second_later, true),
        // Last-Modified equal to Date is weak.
        (lm, "\"v1\"", lm, false),
        (
            "Sun, 06 Nov 1994 08:49:36 GMT",
            "\"v1\"",
            one_second_later,
            false,
        ),
        ("not a date", "\"v1\"", one_second_later, false),
        ("\"v1", "\"v1\"", one_second_later, false),
    ];
    for (if_range, etag, date, want) in table {
        let mut req = req("bytes=0-0");
        req.insert("if-range", HeaderValue::from_str(if_range).unwrap());
        assert_eq!(
            if_range_holds(&req, &stored(etag, date)),
            *want,
            "If-Range {if_range} on ETag {etag}, Date {date}"
        );
    }
    // No If-Range: the Range is acted on.
    assert!(if_range_holds(&req("bytes=0-0"), &HeaderMap::new()));
}

/// A part's fields: its `Content-Range` of 26 bytes and an `ETag`.
fn part(first: u64, last: u64, etag: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    set(
        &mut h,
        ::http::header::CONTENT_RANGE,
        format!("bytes {first}-{last}/26"),
    );
    if !etag.is_empty() {
        h.insert("etag", HeaderValue::from_str(etag).unwrap());
    }
    h
}

const ABC: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";

fn slice(first: u64, last: u64) -> Bytes {
    Bytes::from_static(&ABC[first as usize..=last as usize])
}

#[test]
fn parts_of_one_representation_are_combined() {
    // RFC 9111 section 3.4. (new part, stored part or None) => (status, span, body).
    type Part = (u64, u64, &'static str);
    type Row = (
        Part,
        Option<Part>,
        Option<(u16, &'static str, &'static [u8])>,
    );
    let s = "\"v1\"";
    let table: &[Row] = &[
        // Alone.
        ((2, 4, s), None, Some((206, "bytes 2-4/26", b"cde"))),
        // The whole representation in one part: complete.
        ((0, 25, ""), None, Some((200, "", ABC))),
        // Overlapping, touching, containing: one span.
        (
            (2, 6, s),
            Some((5, 9, s)),
            Some((206, "bytes 2-9/26", b"cdefghij")),
        ),
        (
            (5, 9, s),
            Some((2, 6, s)),
            Some((206, "bytes 2-9/26", b"cdefghij")),
        ),
        (
            (2, 4, s),
            Some((5, 9, s)),
            Some((206, "bytes 2-9/26", b"cdefghij")),
        ),
        (
            (5, 9, s),
            Some((2, 4, s)),
            Some((206, "bytes 2-9/26", b"cdefghij")),
        ),
        ((0, 25, s), Some((2, 4, s)), Some((200, "", ABC))),
        (
            (3, 4, s),
            Some((2, 9, s)),
            Some((206, "bytes 2-9/26", b"cdefghij")),
        ),
        // Covering everything together: complete.
        ((0, 12, s), Some((13, 25, s)), Some((200, "", ABC))),
        ((13, 25, s), Some((0, 12, s)), Some((200, "", ABC))),
        // A gap: the newest alone.
        (
            (0, 4, s),
            Some((6, 9, s)),
            Some((206, "bytes 0-4/26", b"abcde")),
        ),
        // Another, a weak or no validator: the newest alone.
        (
            (0, 12, s),
            Some((13, 25, "\"v2\"")),
            Some((206, "bytes 0-12/26", b"abcdefghijklm")),
        ),
        (
            (0, 12, "W/\"v1\""),
            Some((13, 25, "W/\"v1\"")),
            Some((206, "bytes 0-12/26", b"abcdefghijklm")),
        ),
        (
            (0, 12, ""),
            Some((13, 25, "")),
            Some((206, "bytes 0-12/26", b"abcdefghijklm")),
        ),
    ];
    for (new, old, want) in table {
        let old_parts = old.map(|(f, l, e)| (part(f, l, e), slice(f, l)));
        let before = old_parts
            .as_ref()
            .map(|(h, b)| (StatusCode::PARTIAL_CONTENT, h, b));
        let got = combine(
            &part(new.0, new.1, new.2),
            slice(new.0, new.1),
            before,
            1 << 20,
        );
        let got = got.map(|(status, h, body)| {
            let range = h
                .get("content-range")
                .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
            if let Some(len) = h.get("content-length") {
                assert_eq!(len, body.len().to_string().as_str());
            }
            (status.as_u16(), range, body)
        });
        let want = want.map(|(st, r, b)| (st, r.to_owned(), Bytes::from_static(b)));
        assert_eq!(got, want, "new {new:?}, stored {old:?}");
    }
}

#[test]
fn parts_that_lie_or_differ_are_not_combined() {
    let s = "\"v1\"";
    // A body shorter than its Content-Range: not stored.
    assert!(combine(&part(0, 9, s), slice(0, 4), None, 1 << 20).is_none());
    // A multipart or unknown-length 206: not stored.
    let mut h = HeaderMap::new();
    h.insert("content-range", HeaderValue::from_static("bytes 0-4/*"));
    assert!(combine(&h, slice(0, 4), None, 1 << 20).is_none());
    // Another complete length: the newest alone.
    let mut other = HeaderMap::new();
    other.insert("content-range", HeaderValue::from_static("bytes 5-9/30"));
    other.insert("etag", HeaderValue::from_static("\"v1\""));
    let before = Some((StatusCode::PARTIAL_CONTENT, &other, &slice(5, 9)));
    let (st, h, _) = combine(&part(0, 4, s), slice(0, 4), before, 1 << 20).unwrap();
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h["content-range"], "bytes 0-4/26");
    // A span over the limit: the newest alone.
    let old = (part(5, 9, s), slice(5, 9));
    let before = Some((StatusCode::PARTIAL_CONTENT, &old.0, &old.1));
    let (_, h, _) = combine(&part(0, 4, s), slice(0, 4), before, 9).unwrap();
    assert_eq!(h["content-range"], "bytes 0-4/26");
    // A stored complete 200 of the same representation: its body, the part's fields.
    let mut whole = HeaderMap::new();
    whole.insert("etag", HeaderValue::from_static("\"v1\""));
    let abc = Bytes::from_static(ABC);
    let mut newest = part(0, 4, s);
    newest.insert("x-newest", HeaderValue::from_static("1"));
    let (st, h, body) = combine(
        &newest,
        slice(0, 4),
        Some((StatusCode::OK, &whole, &abc)),
        1 << 20,
    )
    .unwrap();
    assert_eq!((st, body.len()), (StatusCode::OK, 26));
    assert_eq!(h["x-newest"], "1");
    assert!(!h.contains_key("content-range"));
}

#[test]
fn a_range_is_a_slice_of_the_stored_body_not_a_copy() {
    let body = Bytes::from(vec![7u8; 1 << 16]);
    let mut h = HeaderMap::new();
    let (status, part) = from_complete(&req("bytes=1000-1999"), &mut h, body.clone());
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.len(), 1000);
    // The same memory, 1000 bytes in.
    assert_eq!(part.as_ptr(), body[1000..].as_ptr());
    assert_eq!(h["content-range"], "bytes 1000-1999/65536");
    assert_eq!(h["content-length"], "1000");
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn a_range_answered_is_within_the_body_and_described_right(
            range in "(bytes|BYTES|x)?=?[0-9,\\- ]{0,40}",
            len in 0usize..64,
        ) {
            let Ok(v) = HeaderValue::from_str(&range) else { return Ok(()) };
            let mut req = HeaderMap::new();
            req.insert(::http::header::RANGE, v);
            if let Asked::One(r) = asked(&req, len as u64) {
                prop_assert!(r.first <= r.last && r.last < len as u64);
            }
            let body = Bytes::from(vec![1u8; len]);
            let mut h = HeaderMap::new();
            let (status, part) = from_complete(&req, &mut h, body);
            match status.as_u16() {
                206 => {
                    prop_assert_eq!(h["content-length"].to_str().ok(), Some(&*part.len().to_string()));
                    let (r, complete) = content_range(&h).unwrap();
                    prop_assert_eq!((r.len(), complete), (part.len() as u64, len as u64));
                }
                416 => prop_assert!(part.is_empty()),
                200 => prop_assert_eq!(part.len(), len),
                other => prop_assert!(false, "status {}", other),
            }
        }

        #[test]
        fn combining_arbitrary_parts_never_panics_and_stays_consistent(
            a in (0u64..40, 0u64..40, 1u64..40, 0usize..45),
            b in (0u64..40, 0u64..40, 1u64..40, 0usize..45),
            weak in any::<bool>(),
        ) {
            let head = |(first, last, complete, _): (u64, u64, u64, usize)| {
                let mut h = HeaderMap::new();
                set(&mut h, ::http::header::CONTENT_RANGE, format!("bytes {first}-{last}/{complete}"));
                let tag = if weak { "W/\"t\"" } else { "\"t\"" };
                h.insert("etag", HeaderValue::from_static(tag));
                h
            };
            let (ha, hb) = (head(a), head(b));
            let (ba, bb) = (Bytes::from(vec![0u8; a.3]), Bytes::from(vec![0u8; b.3]));
            for status in [StatusCode::PARTIAL_CONTENT, StatusCode::OK] {
                let got = combine(&ha, ba.clone(), Some((status, &hb, &bb)), 32);
                if let Some((st, h, body)) = got {
                    if st == StatusCode::OK {
                        prop_assert_eq!(h["content-length"].to_str().ok(), Some(&*body.len().to_string()));
                        prop_assert!(!h.contains_key("content-range"));
                    } else {
                        let (r, _) = content_range(&h).unwrap();
                        prop_assert_eq!(r.len(), body.len() as u64);
                    }
                }
            }
        }
    }
}

#[test]
fn a_range_of_a_decoded_record_points_into_the_record() {
    // What a tier hands back is one record (from the disk tier, the one copy read
    // out of the map); the entry's body and the range are slices of it.
    use super::super::entry::{self, HttpEntry, Record};
    let body = Bytes::from(vec![3u8; 1 << 20]);
    let stored = HttpEntry {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body,
        freshness: super::super::policy::Freshness {
            response_time: 0,
            initial_age: 0,
            lifetime: 60,
            must_revalidate: false,
            no_cache: false,
            validator: false,
            stale_while_revalidate: 0,
            stale_if_error: 0,
        },
        vary: Vec::new(),
        on_disk: None,
    };
    let record = entry::encode_entry(&stored).unwrap();
    let Some(Record::Entry(e)) = entry::decode(&record) else {
        panic!("not an entry")
    };
    let mut h = e.headers;
    let (_, part) = from_complete(&req("bytes=-4096"), &mut h, e.body);
    let inside = record.as_ptr_range();
    assert!(inside.contains(&part.as_ptr()) && part.len() == 4096);
    assert_eq!(part.as_ptr(), record[record.len() - 4096..].as_ptr());
}
