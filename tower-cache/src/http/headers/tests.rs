//! Tables of the header parsers.

use super::cache_control::*;
use super::date::*;
use super::etag::*;
use super::vary::*;
use super::*;
use ::http::HeaderValue;

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    h
}

#[test]
fn cache_control_directives_parse_with_quotes_case_and_duplicates() {
    let cc = CacheControl::parse(&headers(&[
        (
            "cache-control",
            b"Public, MAX-AGE=60, private=\"set-cookie, x\"",
        ),
        ("cache-control", b"s-maxage=\"30\", must-revalidate"),
    ]));
    assert!(cc.public && cc.private && cc.must_revalidate);
    assert_eq!(cc.max_age, Some(Delta::Secs(60)));
    assert_eq!(cc.s_maxage, Some(Delta::Secs(30)));
    let cc = CacheControl::parse(&headers(&[("cache-control", b"max-age=60, max-age=61")]));
    assert_eq!(
        cc.max_age,
        Some(Delta::Invalid),
        "conflicting duplicates are distrusted"
    );
    let cc = CacheControl::parse(&headers(&[(
        "cache-control",
        b"max-age=99999999999999999999",
    )]));
    assert_eq!(cc.max_age, Some(Delta::Secs(DELTA_MAX)));
    let cc = CacheControl::parse(&headers(&[("cache-control", b"max-age=-1, max-stale")]));
    assert_eq!(cc.max_age, Some(Delta::Invalid));
    assert_eq!(cc.max_stale, Some(Delta::Secs(DELTA_MAX)));
}

#[test]
fn vary_lists_normalise_and_star_is_none() {
    assert_eq!(
        vary(&headers(&[
            ("vary", b"Accept-Encoding, accept-language"),
            ("vary", b"accept-encoding")
        ]))
        .unwrap()
        .iter()
        .map(HeaderName::as_str)
        .collect::<Vec<_>>(),
        ["accept-encoding", "accept-language"]
    );
    assert!(vary(&headers(&[("vary", b"accept, *")])).is_none());
    assert_eq!(
        vary_value(
            &headers(&[
                ("accept-encoding", b" gzip ,br"),
                ("accept-encoding", b"zstd")
            ]),
            &::http::header::ACCEPT_ENCODING,
            false
        ),
        Some(b"gzip, br, zstd".to_vec())
    );
}

#[test]
fn entity_tags_parse_and_compare_weakly() {
    let h = headers(&[("etag", b"W/\"abc\"")]);
    let e = etag(&h).unwrap();
    assert!(e.weak);
    let inm = if_none_match(&headers(&[("if-none-match", b"\"x\", \"abc\"")]))
        .unwrap()
        .unwrap();
    assert!(inm.iter().any(|t| t.weak_eq(&e)));
    assert_eq!(
        if_none_match(&headers(&[("if-none-match", b"*")])),
        Some(None)
    );
    assert!(
        etag(&headers(&[("etag", b"abc")])).is_none(),
        "unquoted is invalid"
    );
}

#[test]
fn hop_by_hop_fields_and_those_connection_names_are_stripped() {
    let mut h = headers(&[
        ("connection", b"close, x-secret"),
        ("x-secret", b"1"),
        ("keep-alive", b"timeout=5"),
        ("transfer-encoding", b"chunked"),
        ("proxy-authenticate", b"Basic"),
        ("proxy-foo", b"1"),
        ("content-type", b"text/plain"),
    ]);
    strip_hop_by_hop(&mut h);
    assert_eq!(
        h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
        ["content-type"]
    );
}

#[test]
fn field_values_are_parsed_as_bytes_and_obs_text_loses_nothing() {
    // A legal line: obs-text inside a quoted extension value.
    let cc = CacheControl::parse(&headers(&[(
        "cache-control",
        b"private, ext=\"caf\xe9\", max-age=60",
    )]));
    assert!(cc.private && !cc.malformed);
    assert_eq!(cc.max_age, Some(Delta::Secs(60)));
    let cc = CacheControl::parse(&headers(&[("cache-control", b"no-store, x=\"\xe9\"")]));
    assert!(cc.no_store);
    // Not a directive list: malformed, so neither stored nor served.
    for bad in [
        &b"max-age=60, ext=caf\xe9"[..],
        b"max-age=60, ext=\"open",
        b"max-age=60 private",
        b"max-age=, public",
        b"=60",
    ] {
        let cc = CacheControl::parse(&headers(&[("cache-control", bad)]));
        assert!(cc.malformed, "{}", String::from_utf8_lossy(bad));
    }
    // Empty list elements and spaces are legal.
    let cc = CacheControl::parse(&headers(&[("cache-control", b" , public ,, max-age=5 ,")]));
    assert!(cc.public && !cc.malformed);
    assert!(pragma_no_cache(&headers(&[(
        "pragma",
        b"x=\"\xe9\", no-cache"
    )])));
    assert_eq!(age(&headers(&[("age", b" 7 "), ("age", b"\xe9")])), Some(7));
    assert_eq!(age(&headers(&[("age", b"\xe9"), ("age", b" 7 ")])), None);
    let mut h = headers(&[("connection", b"x-secret, caf\xe9"), ("x-secret", b"1")]);
    strip_hop_by_hop(&mut h);
    assert!(h.is_empty(), "{h:?}");
}

#[test]
fn dates_ages_and_invalid_values() {
    let h = headers(&[
        ("expires", b"0"),
        ("date", b"Sun, 06 Nov 1994 08:49:37 GMT"),
        ("age", b"abc"),
        ("age", b"7"),
    ]);
    assert_eq!(date(&h, ::http::header::EXPIRES), Some(Err(())));
    assert!(date(&h, ::http::header::DATE).unwrap().is_ok());
    assert_eq!(age(&h), None, "the first member is invalid: ignored");
    assert_eq!(date(&h, ::http::header::LAST_MODIFIED), None);
}

#[test]
fn targeted_fields_are_structured_dictionaries_rfc_9213_section_2_2() {
    let name = HeaderName::from_static("cdn-cache-control");
    let parse =
        |v: &[u8]| CacheControl::parse_targeted(&headers(&[("cdn-cache-control", v)]), &name);
    // (value, max-age, no-store, private): valid fields.
    let valid: &[(&[u8], Option<Delta>, bool, bool)] = &[
        (b"max-age=60", Some(Delta::Secs(60)), false, false),
        (b"no-store", None, true, false),
        (b"private, max-age=60", Some(Delta::Secs(60)), false, true),
        (b"private=\"set-cookie\"", None, false, true),
        (
            b"no-store=?0, max-age=5",
            Some(Delta::Secs(5)),
            false,
            false,
        ),
        (b"no-store=?1", None, true, false),
        (b"max-age=60;p=1;q", Some(Delta::Secs(60)), false, false),
        (
            b"max-age=60, max-age=30",
            Some(Delta::Secs(30)),
            false,
            false,
        ),
        (
            b"max-age=999999999999999",
            Some(Delta::Secs(DELTA_MAX)),
            false,
            false,
        ),
        (b"max-age=\"60\"", Some(Delta::Invalid), false, false),
        (b"max-age=-1", Some(Delta::Invalid), false, false),
        (b"max-age=1.5", Some(Delta::Invalid), false, false),
        (b"max-age=(1 2)", Some(Delta::Invalid), false, false),
        (b"max-age=tok", Some(Delta::Invalid), false, false),
        (b"max-age=:AQID:", Some(Delta::Invalid), false, false),
        (
            b"x-ext=\"a,b\", max-age=1",
            Some(Delta::Secs(1)),
            false,
            false,
        ),
        (b"max-age=1,\tno-store", Some(Delta::Secs(1)), true, false),
    ];
    for (v, max_age, no_store, private) in valid {
        let cc = parse(v).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(v)));
        assert_eq!(
            (cc.max_age, cc.no_store, cc.private),
            (*max_age, *no_store, *private),
            "{}",
            String::from_utf8_lossy(v)
        );
    }
    // Empty or not a Dictionary: ignored as if absent.
    for v in [
        &b""[..],
        b"   ",
        b"Max-Age=60",
        b"max-age=60,",
        b"max-age = 60",
        b"max-age=60 private",
        b"max-age=1234567890123456",
        b"max-age=\"open",
        b"max-age=\"caf\xe9\"",
        b"1max-age=60",
        b"max-age=?2",
    ] {
        assert_eq!(parse(v), None, "{}", String::from_utf8_lossy(v));
    }
    assert_eq!(CacheControl::parse_targeted(&HeaderMap::new(), &name), None);
    // Two lines are one Dictionary.
    let cc = CacheControl::parse_targeted(
        &headers(&[
            ("cdn-cache-control", b"max-age=60"),
            ("cdn-cache-control", b"private"),
        ]),
        &name,
    )
    .unwrap();
    assert!(cc.private && cc.max_age == Some(Delta::Secs(60)));
}

#[test]
fn http_dates_in_every_form_rfc_9110_section_5_6_7() {
    use std::time::UNIX_EPOCH;
    // 2026-12-02: two-digit years up to 76 are this century.
    let now = UNIX_EPOCH + Duration::from_secs(1_796_169_600);
    let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
    let cases: &[(&str, Option<SystemTime>)] = &[
        ("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777)),
        ("Sunday, 06-Nov-94 08:49:37 GMT", at(784_111_777)),
        ("Sun Nov  6 08:49:37 1994", at(784_111_777)),
        // Robust recipients: case, zone names, no weekday, numeric zones.
        ("sun, 06 nov 1994 08:49:37 gmt", at(784_111_777)),
        ("SUN, 06 NOV 1994 08:49:37 GMT", at(784_111_777)),
        ("Sun, 06 Nov 1994 08:49:37 UTC", at(784_111_777)),
        ("06 Nov 1994 08:49:37 GMT", at(784_111_777)),
        ("Sun, 6 Nov 1994 08:49:37 GMT", at(784_111_777)),
        ("Sun, 06 Nov 1994 09:49:37 +0100", at(784_111_777)),
        ("Sun, 06 Nov 1994 03:49:37 -0500", at(784_111_777)),
        ("Sun, 06 November 1994 08:49:37 GMT", at(784_111_777)),
        ("Mon, 06 Nov 1994 08:49:37 GMT", at(784_111_777)),
        ("  Sun, 06 Nov 1994 08:49:37 GMT  ", at(784_111_777)),
        // Two-digit years: more than 50 years ahead is the century before.
        ("Thursday, 01-Jan-70 00:00:00 GMT", at(3_155_760_000)),
        ("Friday, 01-Jan-76 00:00:00 GMT", at(3_345_062_400)),
        ("Friday, 01-Jan-77 00:00:00 GMT", at(220_924_800)),
        ("Friday, 31-Dec-99 23:59:59 GMT", at(946_684_799)),
        ("Saturday, 01-Jan-00 00:00:00 GMT", at(946_684_800)),
        // Past 2038 and far ahead; before 1970.
        ("Tue, 19 Jan 2038 03:14:08 GMT", at(2_147_483_648)),
        ("Fri, 31 Dec 9999 23:59:59 GMT", at(253_402_300_799)),
        ("Thu, 29 Feb 2024 00:00:00 GMT", at(1_709_164_800)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", at(0)),
        ("Sun, 06 Nov 1994 08:49:60 GMT", at(784_111_799)),
        // Invalid.
        ("0", None),
        ("-1", None),
        ("", None),
        ("Sun, 32 Nov 1994 08:49:37 GMT", None),
        ("Wed, 29 Feb 2023 00:00:00 GMT", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 GMT", None),
        ("Sun, 06 Nov 08:49:37 GMT", None),
        ("1994-11-06T08:49:37Z", None),
        ("Sun, 06 Nov 1994 08:49:37 GMT GMT", None),
        ("Sun, 06 Nov 1994 08:49:37 EST", None),
        ("Sun, 06 Nov 19945 08:49:37 GMT", None),
        ("Sun, 06 Nov 0000 08:49:37 GMT", None),
        ("GMT, 06 Nov 1994 08:49:37 Sun", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_http_date(text.as_bytes(), now), *want, "{text:?}");
    }
}

#[test]
fn age_values_as_rfc_9111_section_5_1_reads_them() {
    let cases: &[(&[&[u8]], Option<u64>)] = &[
        (&[b"7"], Some(7)),
        (&[b" 7 "], Some(7)),
        (&[b"0"], Some(0)),
        (&[b"10, 20"], Some(10)),
        (&[b"10", b"20"], Some(10)),
        (&[b"-5"], None),
        (&[b"+5"], None),
        (&[b"1.5"], None),
        (&[b"\"7\""], None),
        (&[b"100s"], None),
        (&[b""], None),
        (&[b"abc, 7"], None),
        (&[b"99999999999999999999999"], Some(DELTA_MAX)),
    ];
    for (lines, want) in cases {
        let mut h = HeaderMap::new();
        for l in *lines {
            h.append(::http::header::AGE, HeaderValue::from_bytes(l).unwrap());
        }
        assert_eq!(age(&h), *want, "{lines:?}");
    }
}

#[test]
fn accept_lists_are_normalised_by_meaning() {
    let norm = |v: &str, encoding: bool| {
        normalized_accept(std::iter::once(v.as_bytes()), encoding)
            .map(|b| String::from_utf8(b).unwrap())
    };
    let ae: &[(&str, Option<&str>)] = &[
        ("gzip, deflate, br", Some("br, deflate, gzip")),
        ("br,deflate,gzip", Some("br, deflate, gzip")),
        ("GZIP , Deflate,br", Some("br, deflate, gzip")),
        (
            "gzip;q=1, br;q=1.0, deflate;Q=1.000",
            Some("br, deflate, gzip"),
        ),
        ("gzip;q=0.50", Some("gzip;q=0.5")),
        ("gzip;q=0.125, br;q=0.1", Some("br;q=0.1, gzip;q=0.125")),
        ("gzip ; q=0.5", Some("gzip;q=0.5")),
        ("gzip, br;q=0", Some("gzip")),
        ("gzip;q=0.000", Some("")),
        ("*, gzip;q=0", Some("*, gzip;q=0")),
        ("identity;q=0, gzip", Some("gzip, identity;q=0")),
        ("", Some("")),
        (" , gzip,, ", Some("gzip")),
        ("gzip, gzip;q=0.5", None),
        ("gzip;level=1", None),
        ("gzip;q=2", None),
        ("gzip;q=1.001", None),
        ("gzip;q=0.1234", None),
        ("gzip;q=", None),
        ("gz\u{e9}p", None),
    ];
    for (v, want) in ae {
        assert_eq!(norm(v, true).as_deref(), *want, "accept-encoding {v:?}");
    }
    let al: &[(&str, Option<&str>)] = &[
        ("en-US, fr;q=0.5", Some("en-us, fr;q=0.5")),
        ("fr;q=0.5,EN-us", Some("en-us, fr;q=0.5")),
        ("de;q=0, *", Some("*, de;q=0")),
        ("en_US", None),
    ];
    for (v, want) in al {
        assert_eq!(norm(v, false).as_deref(), *want, "accept-language {v:?}");
    }
}

mod arbitrary_bytes {
    use super::*;
    use proptest::prelude::*;

    fn map_of(name: &'static str, lines: &[Vec<u8>]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            if let Ok(v) = HeaderValue::from_bytes(l) {
                h.append(name, v);
            }
        }
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_header_parser_panics(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4)) {
            let cc = map_of("cache-control", &lines);
            let _ = CacheControl::parse(&cc);
            let _ = pragma_no_cache(&map_of("pragma", &lines));
            let _ = age(&map_of("age", &lines));
            let _ = date(&map_of("date", &lines), ::http::header::DATE);
            let v = map_of("vary", &lines);
            if let Some(names) = vary(&v) {
                for n in &names {
                    let _ = vary_value(&v, n, true);
                }
            }
            let _ = normalized_accept(lines.iter().map(Vec::as_slice), true);
            let _ = normalized_accept(lines.iter().map(Vec::as_slice), false);
            let _ = parse_http_date(&lines.concat(), SystemTime::now());
            for name in ["cdn-cache-control", "cache-control"] {
                let _ = CacheControl::parse_targeted(&map_of(name, &lines), &HeaderName::from_static(name));
            }
            let _ = etag(&map_of("etag", &lines));
            let _ = if_none_match(&map_of("if-none-match", &lines));
            let mut hop = map_of("connection", &lines);
            strip_hop_by_hop(&mut hop);
        }

        #[test]
        fn cache_control_text_never_panics(text in "[ -~]{0,120}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&text) {
                h.insert("cache-control", v);
            }
            let cc = CacheControl::parse(&h);
            // A value it read is never past the RFC's ceiling.
            for d in [cc.max_age, cc.s_maxage, cc.max_stale, cc.min_fresh].into_iter().flatten() {
                prop_assert!(d.or(0) <= DELTA_MAX);
            }
        }

        #[test]
        fn stored_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = crate::http::entry::decode(&bytes::Bytes::from(bytes));
        }
    }
}
