//! Attacks on parts kept on disk: a part next to a stored part the disk tier holds is
//! added around it in place. Two representations are never mixed, bodies streaming
//! across the seams get only their own bytes, and unions stay within `max_body`.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_layer::Layer;

use super::disk_parts::{body_of, get, store_on};
use super::*;

/// Long enough for a test to end first: waits that must not be cut short.
const FOREVER: std::time::Duration = std::time::Duration::from_secs(3600);

type Origin = tower::util::BoxCloneSyncService<
    Request<Full<Bytes>>,
    http::Response<Full<Bytes>>,
    std::convert::Infallible,
>;

/// What a ranged origin answers: the ETag, the complete length it claims, and which
/// body (version) its bytes come from.
#[derive(Clone)]
struct Answer {
    etag: &'static str,
    claimed: usize,
    version: usize,
}

/// An origin of a representation of `TOTAL` bytes that answers `bytes=a-b` with a `206`
/// as `answer` says at the time of the request.
fn ranged_origin(answer: Arc<std::sync::Mutex<Answer>>) -> Origin {
    Origin::new(tower::service_fn(move |req: Request<Full<Bytes>>| {
        let a = answer.lock().unwrap().clone();
        let range = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok()?.strip_prefix("bytes=")?.split_once('-'))
            .and_then(|(x, y)| Some((x.parse::<usize>().ok()?, y.parse::<usize>().ok()?)));
        let body = body_of(a.version, TOTAL);
        let b = http::Response::builder()
            .header("cache-control", "max-age=600")
            .header("etag", a.etag);
        let res = match range {
            Some((first, last)) => b
                .status(206)
                .header(
                    "content-range",
                    format!("bytes {first}-{last}/{}", a.claimed),
                )
                .body(Full::new(body.slice(first..=last))),
            None => b.body(Full::new(body)),
        };
        async move { Ok::<_, std::convert::Infallible>(res.unwrap()) }
    }))
}

const TOTAL: usize = 8 << 20;

/// A stored large part (bytes 1000000-2999999 of `"v1"`), then a second part next to it,
/// inside it or over one end, whose fields may lie (another ETag, a weak one, another
/// complete length) or whose bytes come from another representation. Whatever is
/// stored, every range asked afterwards is answered with the bytes of one
/// representation only, under the fields of that one, never a mix across the seam.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_part_never_mixes_two_representations_in_what_is_served() {
    tokio::time::timeout(BOUND * 4, async {
        let strong = Answer {
            etag: "\"v1\"",
            claimed: TOTAL,
            version: 1,
        };
        let cases: [(&str, &str, Answer); 9] = [
            (
                "after, other etag",
                "bytes=3000000-3000999",
                Answer {
                    etag: "\"v2\"",
                    version: 2,
                    ..strong
                },
            ),
            (
                "before, other etag",
                "bytes=999000-999999",
                Answer {
                    etag: "\"v2\"",
                    version: 2,
                    ..strong
                },
            ),
            (
                "one byte after, other etag",
                "bytes=3000000-3000000",
                Answer {
                    etag: "\"v2\"",
                    version: 2,
                    ..strong
                },
            ),
            (
                "after, weak etag",
                "bytes=3000000-3000999",
                Answer {
                    etag: "W/\"v1\"",
                    ..strong
                },
            ),
            (
                "after, other length",
                "bytes=3000000-3000999",
                Answer {
                    claimed: TOTAL + 1,
                    ..strong
                },
            ),
            (
                "overlapping the end, other etag",
                "bytes=2999000-3000999",
                Answer {
                    etag: "\"v2\"",
                    version: 2,
                    ..strong
                },
            ),
            (
                "inside, other etag",
                "bytes=2000000-2000999",
                Answer {
                    etag: "\"v2\"",
                    version: 2,
                    ..strong
                },
            ),
            (
                "over both ends, other etag",
                "bytes=999999-3000000",
                Answer {
                    etag: "\"v2\"",
                    version: 2,
                    ..strong
                },
            ),
            ("after, same etag", "bytes=3000000-3000999", strong.clone()),
        ];
        for (name, second, answer) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (store, disk) = store_on(dir.path(), 1 << 20);
            let now = Arc::new(std::sync::Mutex::new(strong.clone()));
            let svc = HttpCacheLayer::new(store)
                .max_body(80 << 20)
                .layer(ranged_origin(now.clone()));
            let fetch = |r: String| {
                let svc = svc.clone();
                async move {
                    let res = svc.oneshot(get("http://t/p", Some(&r))).await.unwrap();
                    let head = res.headers().clone();
                    let status = res.status();
                    let body = res.into_body().collect().await.unwrap().to_bytes();
                    (status, head, body)
                }
            };
            fetch("bytes=1000000-2999999".into()).await;
            disk.flush().await.unwrap();
            *now.lock().unwrap() = answer.clone();
            fetch(second.into()).await;
            disk.flush().await.unwrap();
            // The origin now answers as the second part did; what the cache serves
            // of every range around the seams must be one representation's bytes.
            for r in [
                "bytes=999000-1000999",
                "bytes=1000000-2999999",
                "bytes=2000000-2000999",
                "bytes=2999000-3000999",
                "bytes=999000-3000999",
                "bytes=3000000-3000000",
            ] {
                let (status, head, body) = fetch(r.into()).await;
                let x = head["x-cache"].to_str().unwrap();
                assert_eq!(status, 206, "{name}: {r}");
                let cr = head["content-range"].to_str().unwrap();
                let (span, claimed) = cr
                    .strip_prefix("bytes ")
                    .and_then(|s| s.split_once('/'))
                    .unwrap();
                let (first, last) = span.split_once('-').unwrap();
                let (first, last): (usize, usize) = (first.parse().unwrap(), last.parse().unwrap());
                assert_eq!(body.len(), last - first + 1, "{name}: {r} ({x})");
                let etag = head["etag"].to_str().unwrap();
                let version = if etag.contains("v2") { 2 } else { 1 };
                assert!(
                    body == body_of(version, TOTAL).slice(first..=last),
                    "{name}: {r} ({x}, {cr}, {etag}): bytes not all of the representation named"
                );
                let claimed: usize = claimed.parse().unwrap();
                assert!(last < claimed, "{name}: {r} ({x}, {cr})");
            }
            assert_eq!(disk.stats().corrupt, 0, "{name}");
        }
    })
    .await
    .expect("bounded");
}

/// Bodies streaming from a stored part while parts are added before and after it (the
/// record rewritten with the stored bytes kept): each goes on with the bytes of the
/// record it opened, or ends with an error; never with bytes it did not open, nor as
/// complete when cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_streaming_across_parts_added_around_them_get_only_their_own_bytes() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let answer = Answer {
            etag: "\"v1\"",
            claimed: TOTAL,
            version: 1,
        };
        let svc = HttpCacheLayer::new(store)
            .max_body(80 << 20)
            .layer(ranged_origin(Arc::new(std::sync::Mutex::new(answer))));
        let want = body_of(1, TOTAL);
        let open = |r: &'static str| {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(get("http://t/p", Some(r))).await.unwrap();
                (res.headers()["x-cache"].clone(), res.into_body())
            }
        };
        let (_, b) = open("bytes=1000000-2999999").await;
        b.collect().await.unwrap();
        disk.flush().await.unwrap();
        // Readers of the stored part, one frame in; a part before it (new bytes in
        // front of the kept ones), another reader, a part after it.
        let mut readers = Vec::new();
        for step in [
            "bytes=990000-999999",
            "bytes=3000000-3099999",
            "bytes=900000-989999",
        ] {
            let (x, mut body) = open("bytes=1000000-2999999").await;
            assert_eq!(x, "HIT-DISK", "{step}");
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert!(first == want.slice(1_000_000..1_000_000 + first.len()));
            readers.push((first.len(), body));
            let (x, b) = open(step).await;
            assert_eq!(x, "MISS", "{step}");
            b.collect().await.unwrap();
            disk.flush().await.unwrap();
        }
        for (i, (mut at, mut body)) in readers.into_iter().enumerate() {
            let at0 = at;
            let cut = loop {
                match body.frame().await {
                    Some(Ok(f)) => {
                        let d = f.into_data().unwrap();
                        let from = 1_000_000 + at;
                        assert!(d == want.slice(from..from + d.len()), "reader {i} at {at}");
                        at += d.len();
                    }
                    Some(Err(_)) => break true,
                    None => break false,
                }
            };
            assert!(
                cut || at == 2_000_000,
                "reader {i} ended as complete at {at} (from {at0})"
            );
        }
        // And the union is served whole from disk.
        let (x, b) = open("bytes=900000-3099999").await;
        assert_eq!(x, "HIT-DISK");
        assert!(b.collect().await.unwrap().to_bytes() == want.slice(900_000..3_100_000));
        assert_eq!(disk.stats().corrupt, 0);
    })
    .await
    .expect("bounded");
}

/// Spooled parts (larger than the memory tier takes) that overlap a stored part on disk
/// at its start, then at its end, then a small part that completes the representation:
/// the new bytes are read off the spool files around the kept ones, every union served
/// is the representation's bytes, and the last one is stored as the whole `200`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_parts_overlapping_a_stored_part_build_the_whole_response() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let answer = Answer {
            etag: "\"v1\"",
            claimed: TOTAL,
            version: 1,
        };
        let hits = Arc::new(std::sync::Mutex::new(answer));
        let svc = HttpCacheLayer::new(store)
            .max_body(80 << 20)
            .layer(ranged_origin(hits));
        let want = body_of(1, TOTAL);
        let fetch = |r: Option<String>| {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(get("http://t/s", r.as_deref())).await.unwrap();
                let (parts, body) = res.into_parts();
                (parts, body.collect().await.unwrap().to_bytes())
            }
        };
        let steps: [(usize, usize, usize, usize); 4] = [
            // The part asked, and the union stored after it.
            (4_000_000, 5_999_999, 4_000_000, 5_999_999),
            (1_000_000, 4_500_000, 1_000_000, 5_999_999),
            (5_500_000, TOTAL - 1, 1_000_000, TOTAL - 1),
            (0, 1_000_000, 0, TOTAL - 1),
        ];
        for (first, last, u_first, u_last) in steps {
            let (parts, body) = fetch(Some(format!("bytes={first}-{last}"))).await;
            assert_eq!(parts.headers["x-cache"], "MISS", "{first}-{last}");
            assert!(body == want.slice(first..=last), "{first}-{last}");
            disk.flush().await.unwrap();
            let (parts, body) = fetch(Some(format!("bytes={u_first}-{u_last}"))).await;
            assert_eq!(
                parts.headers["x-cache"], "HIT-DISK",
                "union {u_first}-{u_last}"
            );
            assert!(
                body == want.slice(u_first..=u_last),
                "union {u_first}-{u_last}"
            );
        }
        let (parts, body) = fetch(None).await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["x-cache"], "HIT-DISK");
        assert_eq!(parts.headers["content-length"], TOTAL.to_string().as_str());
        assert!(parts.headers.get("content-range").is_none());
        assert!(body == want);
        assert_eq!(disk.stats().corrupt, 0);
        assert_eq!(disk.stats().spooled_bytes, 0, "no spool file left counted");
    })
    .await
    .expect("bounded");
}

/// A part stored on disk, then a part before it (new bytes in front of the kept ones),
/// then one after it: bodies streaming from the first record or the second are not cut
/// by the third, which keeps every byte they read (as the first extension did for the
/// first record's bodies). A part added beside a download does not cut it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_of_a_stored_part_go_on_through_two_parts_added_around_it() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let answer = Answer {
            etag: "\"v1\"",
            claimed: TOTAL,
            version: 1,
        };
        let svc = HttpCacheLayer::new(store)
            .max_body(80 << 20)
            .replace_wait(FOREVER)
            .layer(ranged_origin(Arc::new(std::sync::Mutex::new(answer))));
        let want = body_of(1, TOTAL);
        let open = |r: &'static str| {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(get("http://t/p", Some(r))).await.unwrap();
                (res.headers()["x-cache"].clone(), res.into_body())
            }
        };
        let (_, b) = open("bytes=1000000-2999999").await;
        b.collect().await.unwrap();
        disk.flush().await.unwrap();
        let mut readers = Vec::new();
        for step in ["bytes=990000-999999", "bytes=3000000-3099999"] {
            let (x, mut body) = open("bytes=1000000-2999999").await;
            assert_eq!(x, "HIT-DISK", "{step}");
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            readers.push((first.len(), body));
            let (x, b) = open(step).await;
            assert_eq!(x, "MISS", "{step}");
            b.collect().await.unwrap();
            disk.flush().await.unwrap();
        }
        for (i, (mut at, mut body)) in readers.into_iter().enumerate() {
            while let Some(frame) = body.frame().await {
                let d = frame
                    .unwrap_or_else(|e| panic!("reader {i} cut after {at} bytes: {e}"))
                    .into_data()
                    .unwrap();
                let from = 1_000_000 + at;
                assert!(d == want.slice(from..from + d.len()), "reader {i} at {at}");
                at += d.len();
            }
            assert_eq!(at, 2_000_000, "reader {i}");
        }
    })
    .await
    .expect("bounded");
}

/// Parts combined on disk are bounded by the largest body the cache stores
/// (`max_body`), as parts combined in memory are: two adjacent parts each within it,
/// whose union is not, do not make a stored body past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_combined_on_disk_stay_within_max_body() {
    tokio::time::timeout(BOUND, async {
        const MAX: usize = 3 << 20;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let answer = Answer {
            etag: "\"v1\"",
            claimed: TOTAL,
            version: 1,
        };
        let svc = HttpCacheLayer::new(store)
            .max_body(MAX)
            .layer(ranged_origin(Arc::new(std::sync::Mutex::new(answer))));
        for r in ["bytes=0-2499999", "bytes=2500000-4999999"] {
            let res = svc
                .clone()
                .oneshot(get("http://t/m", Some(r)))
                .await
                .unwrap();
            assert_eq!(res.headers()["x-cache"], "MISS", "{r}");
            res.into_body().collect().await.unwrap();
            disk.flush().await.unwrap();
        }
        let res = svc
            .clone()
            .oneshot(get("http://t/m", Some("bytes=0-4999999")))
            .await
            .unwrap();
        let x = res.headers()["x-cache"].clone();
        let cr = res.headers().get("content-range").cloned();
        res.into_body().collect().await.unwrap();
        assert!(
            x != "HIT-DISK" && x != "HIT-MEM",
            "5,000,000 bytes stored with max_body {MAX} ({cr:?})"
        );
    })
    .await
    .expect("bounded");
}

/// The one byte a stored part lacks at either end, asked as a one-byte part, completes
/// it: stored as the whole `200`, every byte in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_byte_part_at_either_end_completes_a_stored_part() {
    tokio::time::timeout(BOUND, async {
        for (stored, missing) in [
            (format!("bytes=1-{}", TOTAL - 1), "bytes=0-0".to_owned()),
            (
                format!("bytes=0-{}", TOTAL - 2),
                format!("bytes={0}-{0}", TOTAL - 1),
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (store, disk) = store_on(dir.path(), 1 << 20);
            let answer = Answer {
                etag: "\"v1\"",
                claimed: TOTAL,
                version: 1,
            };
            let svc = HttpCacheLayer::new(store)
                .max_body(80 << 20)
                .layer(ranged_origin(Arc::new(std::sync::Mutex::new(answer))));
            for r in [&stored, &missing] {
                let res = svc
                    .clone()
                    .oneshot(get("http://t/o", Some(r)))
                    .await
                    .unwrap();
                assert_eq!(res.headers()["x-cache"], "MISS", "{r}");
                res.into_body().collect().await.unwrap();
                disk.flush().await.unwrap();
            }
            let res = svc.clone().oneshot(get("http://t/o", None)).await.unwrap();
            assert_eq!(res.status(), 200, "{missing}");
            assert_eq!(res.headers()["x-cache"], "HIT-DISK", "{missing}");
            assert_eq!(res.headers()["content-length"], TOTAL.to_string().as_str());
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(body == body_of(1, TOTAL), "{missing}");
        }
    })
    .await
    .expect("bounded");
}
