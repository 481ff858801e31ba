//! Targeted cache control (RFC 9213): a field on the cache's target list replaces
//! `Cache-Control` and `Expires` for this cache, and only for it.

use tower_cache::http::{HttpPolicy, CDN_CACHE_CONTROL};

use super::rfc_cases::{expect, fields, imf, run_all, two_gets, RfcCase};

fn cdn() -> HttpPolicy {
    HttpPolicy::new().target_fields([CDN_CACHE_CONTROL])
}

/// A field of the cache's own before the CDN one.
fn own_then_cdn() -> HttpPolicy {
    HttpPolicy::new().target_fields([
        http::HeaderName::from_static("edge-cache-control"),
        CDN_CACHE_CONTROL,
    ])
}

fn cases() -> Vec<RfcCase> {
    vec![
        RfcCase {
            check: Some(|h| {
                // Downstream gets the origin's fields unchanged, the targeted one included.
                expect(h, "x-cache", "HIT-MEM")?;
                expect(h, "cache-control", "no-store")?;
                expect(h, "cdn-cache-control", "max-age=60")
            }),
            ..two_gets(
                "CDN-Cache-Control max-age stores what Cache-Control forbids",
                "9213 2.1",
                cdn,
                |_| {
                    (
                        200,
                        fields(&[
                            ("cdn-cache-control", "max-age=60"),
                            ("cache-control", "no-store"),
                        ]),
                    )
                },
                true,
            )
        },
        two_gets(
            "CDN-Cache-Control no-store wins over Cache-Control max-age",
            "9213 2.1, 9111 5.2.2.5",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "no-store"),
                        ("cache-control", "max-age=60"),
                    ]),
                )
            },
            false,
        ),
        two_gets(
            "CDN-Cache-Control private wins over Cache-Control public",
            "9213 2.1, 9111 5.2.2.7",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "private"),
                        ("cache-control", "public, max-age=60"),
                    ]),
                )
            },
            false,
        ),
        two_gets(
            "CDN-Cache-Control no-cache is validated on every use",
            "9213 2.1, 9111 5.2.2.4",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "no-cache"),
                        ("cache-control", "max-age=60"),
                    ]),
                )
            },
            false,
        ),
        two_gets(
            "CDN-Cache-Control max-age=0 is not served",
            "9213 2.1, 9111 5.2.2.1",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "max-age=0"),
                        ("cache-control", "max-age=60"),
                    ]),
                )
            },
            false,
        ),
        two_gets(
            "CDN-Cache-Control private ignores a Cache-Control that would store",
            "9213 2.1",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "private=\"x\""),
                        ("cache-control", "s-maxage=60"),
                    ]),
                )
            },
            false,
        ),
        two_gets(
            "CDN-Cache-Control s-maxage stores a Cache-Control private response (the origin \
             shares it with the CDN only)",
            "9213 2.1",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "s-maxage=60"),
                        ("cache-control", "private"),
                    ]),
                )
            },
            true,
        ),
        two_gets(
            "a targeted field makes Expires ignored too",
            "9213 2.1",
            cdn,
            |now| {
                (
                    200,
                    vec![
                        ("cdn-cache-control", "must-revalidate".into()),
                        ("expires", imf(now, 600)),
                    ],
                )
            },
            false,
        ),
        two_gets(
            "an invalid targeted field is ignored: Cache-Control applies (no-store)",
            "9213 2.2",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "max-age=60,"),
                        ("cache-control", "no-store"),
                    ]),
                )
            },
            false,
        ),
        two_gets(
            "an invalid targeted field (upper-case key) is ignored: Cache-Control applies",
            "9213 2.2, 8941 3.2",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "Max-Age=60"),
                        ("cache-control", "max-age=60"),
                    ]),
                )
            },
            true,
        ),
        two_gets(
            "a targeted field that is not a Dictionary (Cache-Control syntax) is ignored",
            "9213 2.2",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "no-store max-age=1"),
                        ("cache-control", "max-age=60"),
                    ]),
                )
            },
            true,
        ),
        two_gets(
            "an empty targeted field is ignored",
            "9213 2.2",
            cdn,
            |_| {
                (
                    200,
                    fields(&[("cdn-cache-control", ""), ("cache-control", "max-age=60")]),
                )
            },
            true,
        ),
        // Deployed CDNs differ on `max-age="60"` (a String, not an Integer): some read 60,
        // some ignore the directive. Choice: the directive is invalid, and an invalid
        // max-age makes the response stale, as it does in Cache-Control.
        two_gets(
            "a max-age String in a targeted field is invalid: stale",
            "9213 2.2 (caches disagree; choice: stale)",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "max-age=\"60\""),
                        ("cache-control", "max-age=60"),
                    ]),
                )
            },
            false,
        ),
        two_gets(
            "?0 turns a directive off",
            "9213 2.2, 8941 3.3.6",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "no-store=?0, max-age=60"),
                        ("cache-control", "no-store"),
                    ]),
                )
            },
            true,
        ),
        two_gets(
            "parameters on a directive are ignored",
            "9213 2.2",
            cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "max-age=60;x=1"),
                        ("cache-control", "no-store"),
                    ]),
                )
            },
            true,
        ),
        two_gets(
            "a max-age past 2^31 in a targeted field is 2^31",
            "9213 2.2, 9111 1.2.2",
            cdn,
            |_| {
                (
                    200,
                    fields(&[("cdn-cache-control", "max-age=999999999999999")]),
                )
            },
            true,
        ),
        two_gets(
            "the first field on the target list wins",
            "9213 2.1",
            own_then_cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("edge-cache-control", "no-store"),
                        ("cdn-cache-control", "max-age=60"),
                    ]),
                )
            },
            false,
        ),
        two_gets(
            "an invalid first target falls back to the next one",
            "9213 2.1, 2.2",
            own_then_cdn,
            |_| {
                (
                    200,
                    fields(&[
                        ("edge-cache-control", "max-age=a b"),
                        ("cdn-cache-control", "max-age=60"),
                        ("cache-control", "no-store"),
                    ]),
                )
            },
            true,
        ),
        two_gets(
            "a targeted field not on the list changes nothing",
            "9213 2.1",
            HttpPolicy::new,
            |_| {
                (
                    200,
                    fields(&[
                        ("cdn-cache-control", "no-store"),
                        ("cache-control", "max-age=60"),
                    ]),
                )
            },
            true,
        ),
        two_gets(
            "must-understand in a targeted field with an understood status stores despite no-store",
            "9213 2.1, 9111 5.2.2.3",
            cdn,
            |_| {
                (
                    200,
                    fields(&[("cdn-cache-control", "no-store, must-understand, max-age=60")]),
                )
            },
            true,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_9213_targeted_cache_control() {
    run_all(&cases()).await;
}
