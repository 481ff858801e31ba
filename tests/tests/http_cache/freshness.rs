//! Freshness as deployed caches compute it (RFC 9111 section 4.2): heuristics, very large
//! deltas, `Expires` in every date form, odd `Age` values, `must-understand`, and the
//! statuses that may be stored.

use std::time::Duration;

use tower_cache::http::HttpPolicy;

use super::rfc_cases::{fields, imf, run_all, shift, two_gets, RfcCase};

/// What `cache_proxy` runs with: 10% of the time since the last change, at most a day.
fn heuristic() -> HttpPolicy {
    HttpPolicy::new().heuristic(0.1, Duration::from_secs(86_400))
}

/// RFC 850 form, `Sunday, 06-Nov-94 08:49:37 GMT`.
fn rfc850(t: std::time::SystemTime) -> String {
    let imf = httpdate::fmt_http_date(t);
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let (wd, rest) = imf.split_once(", ").unwrap();
    let p: Vec<&str> = rest.split(' ').collect();
    let long = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ]
    .into_iter()
    .find(|d| d.starts_with(wd))
    .unwrap();
    format!("{long}, {}-{}-{} {} GMT", p[0], p[1], &p[2][2..], p[3])
}

/// asctime form, `Sun Nov  6 08:49:37 1994`.
fn asctime(t: std::time::SystemTime) -> String {
    let imf = httpdate::fmt_http_date(t);
    let (wd, rest) = imf.split_once(", ").unwrap();
    let p: Vec<&str> = rest.split(' ').collect();
    let day: u32 = p[0].parse().unwrap();
    format!("{wd} {} {day:>2} {} {}", p[1], p[3], p[2])
}

fn cases() -> Vec<RfcCase> {
    let mut cases = vec![
        // --- heuristic freshness (section 4.2.2) ---
        two_gets(
            "heuristic: 10% of an hour since Last-Modified is fresh",
            "9111 4.2.2",
            heuristic,
            |now| (200, vec![("last-modified", imf(now, -3600))]),
            true,
        ),
        // The cap: 10% of 1,000 days is far past a day; an Age just under a day is
        // still fresh, one just over is not.
        two_gets(
            "heuristic: capped at a day (Age 86,000 is fresh)",
            "9111 4.2.2",
            heuristic,
            |now| {
                (
                    200,
                    vec![
                        ("last-modified", imf(now, -86_400_000)),
                        ("age", "86000".into()),
                    ],
                )
            },
            true,
        ),
        two_gets(
            "heuristic: capped at a day (Age 86,500 is stale)",
            "9111 4.2.2",
            heuristic,
            |now| {
                (
                    200,
                    vec![
                        ("last-modified", imf(now, -86_400_000)),
                        ("age", "86500".into()),
                    ],
                )
            },
            false,
        ),
        two_gets(
            "heuristic: off, Last-Modified alone is not fresh",
            "9111 4.2.2",
            HttpPolicy::new,
            |now| (200, vec![("last-modified", imf(now, -3600))]),
            false,
        ),
        two_gets(
            "heuristic: not with explicit freshness (Expires in the past)",
            "9111 4.2.2",
            heuristic,
            |now| {
                (
                    200,
                    vec![
                        ("last-modified", imf(now, -36_000)),
                        ("expires", imf(now, -10)),
                    ],
                )
            },
            false,
        ),
    ];
    // Heuristically cacheable statuses (RFC 9110 section 15.1), and some that are not.
    for (status, stored) in [
        (200, true),
        (203, true),
        (204, true),
        (300, true),
        (301, true),
        (308, true),
        (404, true),
        (405, true),
        (410, true),
        (414, true),
        (501, true),
        (302, false),
        (307, false),
        (403, false),
        (500, false),
        (503, false),
    ] {
        let head: super::rfc_cases::Head = match status {
            200 => |now| (200, vec![("last-modified", imf(now, -3600))]),
            203 => |now| (203, vec![("last-modified", imf(now, -3600))]),
            204 => |now| (204, vec![("last-modified", imf(now, -3600))]),
            300 => |now| (300, vec![("last-modified", imf(now, -3600))]),
            301 => |now| (301, vec![("last-modified", imf(now, -3600))]),
            308 => |now| (308, vec![("last-modified", imf(now, -3600))]),
            404 => |now| (404, vec![("last-modified", imf(now, -3600))]),
            405 => |now| (405, vec![("last-modified", imf(now, -3600))]),
            410 => |now| (410, vec![("last-modified", imf(now, -3600))]),
            414 => |now| (414, vec![("last-modified", imf(now, -3600))]),
            501 => |now| (501, vec![("last-modified", imf(now, -3600))]),
            302 => |now| (302, vec![("last-modified", imf(now, -3600))]),
            307 => |now| (307, vec![("last-modified", imf(now, -3600))]),
            403 => |now| (403, vec![("last-modified", imf(now, -3600))]),
            500 => |now| (500, vec![("last-modified", imf(now, -3600))]),
            _ => |now| (503, vec![("last-modified", imf(now, -3600))]),
        };
        cases.push(two_gets(
            if stored {
                "heuristic: a status cacheable by default is stored"
            } else {
                "heuristic: a status not cacheable by default is not stored"
            },
            "9110 15.1, 9111 4.2.2",
            heuristic,
            head,
            stored,
        ));
    }
    cases.extend([
        // --- explicit freshness of other statuses (section 3) ---
        two_gets(
            "204 with max-age is stored",
            "9110 15.3.5, 9111 3",
            HttpPolicy::new,
            |_| (204, fields(&[("cache-control", "max-age=60")])),
            true,
        ),
        two_gets(
            "302 with max-age is stored",
            "9110 15.4.3, 9111 3",
            HttpPolicy::new,
            |_| {
                (
                    302,
                    fields(&[("cache-control", "max-age=60"), ("location", "/x")]),
                )
            },
            true,
        ),
        two_gets(
            "410 with Expires is stored",
            "9110 15.5.11, 9111 3",
            HttpPolicy::new,
            |now| (410, vec![("expires", imf(now, 600))]),
            true,
        ),
        // --- delta-seconds past 2^31 (section 1.2.2) ---
        two_gets(
            "max-age past 2^31 is 2^31, not refused",
            "9111 1.2.2",
            HttpPolicy::new,
            |_| (200, fields(&[("cache-control", "max-age=4294967296")])),
            true,
        ),
        two_gets(
            "s-maxage of 30 digits is 2^31",
            "9111 1.2.2",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("cache-control", "s-maxage=999999999999999999999999999999")]),
                )
            },
            true,
        ),
        // --- Expires in every form (section 5.3, RFC 9110 section 5.6.7) ---
        two_gets(
            "Expires as IMF-fixdate",
            "9110 5.6.7",
            HttpPolicy::new,
            |now| (200, vec![("expires", imf(now, 600))]),
            true,
        ),
        two_gets(
            "Expires in RFC 850 form",
            "9110 5.6.7",
            HttpPolicy::new,
            |now| (200, vec![("expires", rfc850(shift(now, 600)))]),
            true,
        ),
        two_gets(
            "Expires in asctime form",
            "9110 5.6.7",
            HttpPolicy::new,
            |now| (200, vec![("expires", asctime(shift(now, 600)))]),
            true,
        ),
        two_gets(
            "Expires in asctime form, in the past",
            "9110 5.6.7, 9111 5.3",
            HttpPolicy::new,
            |now| (200, vec![("expires", asctime(shift(now, -600)))]),
            false,
        ),
        // Years 70 to 76 are 2070 to 2076 from now until 2020 + 50; httpdate-style
        // parsers (and so many caches) read them as 1970-1976, which expires them.
        two_gets(
            "a two-digit year at most 50 years ahead is in this century (70 -> 2070)",
            "9110 5.6.7 (caches disagree; choice: the RFC's rule)",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("expires", "Thursday, 01-Jan-70 00:00:00 GMT")]),
                )
            },
            true,
        ),
        two_gets(
            "a two-digit year more than 50 years ahead is in the last century (99 -> 1999)",
            "9110 5.6.7",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("expires", "Friday, 31-Dec-99 23:59:59 GMT")]),
                )
            },
            false,
        ),
        two_gets(
            "Expires past 2038",
            "9111 5.3",
            HttpPolicy::new,
            |_| (200, fields(&[("expires", "Wed, 01 Jan 2059 00:00:00 GMT")])),
            true,
        ),
        two_gets(
            "Expires in year 9999",
            "9111 5.3, 1.2.2",
            HttpPolicy::new,
            |_| (200, fields(&[("expires", "Fri, 31 Dec 9999 23:59:59 GMT")])),
            true,
        ),
        two_gets(
            "Expires with names and zone in lower case",
            "9110 5.6.7 (robust recipients)",
            HttpPolicy::new,
            |now| (200, vec![("expires", imf(now, 600).to_lowercase())]),
            true,
        ),
        two_gets(
            "Expires in UTC",
            "9110 5.6.7 (robust recipients)",
            HttpPolicy::new,
            |now| (200, vec![("expires", imf(now, 600).replace("GMT", "UTC"))]),
            true,
        ),
        two_gets(
            "Expires without a weekday",
            "9110 5.6.7 (robust recipients)",
            HttpPolicy::new,
            |now| (200, vec![("expires", imf(now, 600)[5..].to_string())]),
            true,
        ),
        two_gets(
            "Expires with a numeric zone",
            "9110 5.6.7, 5322 3.3",
            HttpPolicy::new,
            |now| {
                (
                    200,
                    vec![(
                        "expires",
                        imf(shift(now, 3600 + 600), 0).replace("GMT", "+0100"),
                    )],
                )
            },
            true,
        ),
        two_gets(
            "Expires: 0 is already expired",
            "9111 5.3",
            HttpPolicy::new,
            |_| (200, fields(&[("expires", "0")])),
            false,
        ),
        two_gets(
            "an invalid Expires is already expired (a day that does not exist)",
            "9111 5.3",
            HttpPolicy::new,
            |_| (200, fields(&[("expires", "Thu, 30 Feb 2060 00:00:00 GMT")])),
            false,
        ),
        two_gets(
            "an invalid Expires is already expired (ISO 8601)",
            "9111 5.3",
            HttpPolicy::new,
            |_| (200, fields(&[("expires", "2060-01-01T00:00:00Z")])),
            false,
        ),
        // --- Age (section 5.1) ---
        two_gets(
            "Age below max-age: fresh",
            "9111 5.1, 4.2.3",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("cache-control", "max-age=60"), ("age", "30")]),
                )
            },
            true,
        ),
        two_gets(
            "Age past max-age: stale on arrival",
            "9111 5.1, 4.2.3",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("cache-control", "max-age=60"), ("age", "100")]),
                )
            },
            false,
        ),
        two_gets(
            "an Age list is read as its first member (10, 100)",
            "9111 5.1",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("cache-control", "max-age=60"), ("age", "10, 100")]),
                )
            },
            true,
        ),
        two_gets(
            "an Age list is read as its first member (100, 10)",
            "9111 5.1",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("cache-control", "max-age=60"), ("age", "100, 10")]),
                )
            },
            false,
        ),
        two_gets(
            "two Age lines: the first",
            "9111 5.1",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[
                        ("cache-control", "max-age=60"),
                        ("age", "100"),
                        ("age", "10"),
                    ]),
                )
            },
            false,
        ),
        // Deployed caches disagree on an invalid Age (some read a prefix, "100s" as 100);
        // choice: as the RFC says, ignored (the Date still bounds the age).
        two_gets(
            "an invalid Age (negative) is ignored",
            "9111 5.1 (caches disagree; choice: ignored)",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("cache-control", "max-age=60"), ("age", "-100")]),
                )
            },
            true,
        ),
        two_gets(
            "an invalid Age (with a unit) is ignored",
            "9111 5.1 (caches disagree; choice: ignored)",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("cache-control", "max-age=60"), ("age", "100s")]),
                )
            },
            true,
        ),
        two_gets(
            "a huge Age saturates: stale",
            "9111 5.1, 1.2.2",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[
                        ("cache-control", "max-age=60"),
                        ("age", "99999999999999999999999"),
                    ]),
                )
            },
            false,
        ),
        // --- must-understand (section 5.2.2.3) ---
        two_gets(
            "must-understand with an understood status: stored, no-store ignored",
            "9111 5.2.2.3",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("cache-control", "max-age=60, no-store, must-understand")]),
                )
            },
            true,
        ),
        two_gets(
            "must-understand with a 404: stored",
            "9111 5.2.2.3",
            HttpPolicy::new,
            |_| {
                (
                    404,
                    fields(&[("cache-control", "must-understand, no-store, max-age=60")]),
                )
            },
            true,
        ),
        two_gets(
            "must-understand with a status the cache does not implement: not stored",
            "9111 5.2.2.3",
            HttpPolicy::new,
            |_| {
                (
                    500,
                    fields(&[("cache-control", "max-age=60, must-understand")]),
                )
            },
            false,
        ),
        two_gets(
            "must-understand with an unknown status: not stored",
            "9111 5.2.2.3",
            HttpPolicy::new,
            |_| {
                (
                    299,
                    fields(&[("cache-control", "max-age=60, no-store, must-understand")]),
                )
            },
            false,
        ),
        two_gets(
            "must-understand does not override private",
            "9111 5.2.2.3, 5.2.2.7",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[("cache-control", "max-age=60, private, must-understand")]),
                )
            },
            false,
        ),
    ]);
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_9111_freshness_as_deployed_caches_compute_it() {
    run_all(&cases()).await;
}
