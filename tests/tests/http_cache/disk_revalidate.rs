//! Large stored responses that only the disk tier holds keep their bodies on disk on
//! every path, not only on hits: revalidated with a `304` (the new head is written in
//! front of the kept body by the disk tier's writer), served stale, a stored `206` part
//! answering a range it covers, and a response whose head is longer than a block.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_layer::Layer;

use super::disk_parts::{body_of, get, store_on, BLOCK};
use super::*;

type Origin = tower::util::BoxCloneSyncService<
    Request<Full<Bytes>>,
    Response<Full<Bytes>>,
    std::convert::Infallible,
>;

/// How the origin answers.
#[derive(Clone)]
struct Script {
    /// The body's length.
    len: usize,
    /// `Cache-Control` of a full answer, which is sent with `Age: 120`.
    cache_control: &'static str,
    /// Answer a request carrying `If-None-Match: "v1"` with `304` (else `500`).
    not_modified: bool,
    /// A field of this many bytes on full answers (a head longer than a block).
    big_field: usize,
}

/// Calls of the origin, and those it answered with a body.
#[derive(Default)]
struct Calls {
    all: AtomicUsize,
    bodies: AtomicUsize,
}

/// A range `bytes=a-b` of a request.
fn asked(req: &HeaderMap) -> Option<(usize, usize)> {
    let v = req.get("range")?.to_str().ok()?.strip_prefix("bytes=")?;
    let (a, b) = v.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// An origin with one representation (`"v1"`, body [`body_of`] call 1): `304` (or `500`)
/// to a revalidation, `206` to a `bytes=a-b` range, `200` otherwise.
fn origin_of(script: Script) -> (Origin, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let svc = tower::service_fn({
        let calls = calls.clone();
        move |req: Request<Full<Bytes>>| {
            let (calls, s) = (calls.clone(), script.clone());
            async move {
                calls.all.fetch_add(1, Ordering::SeqCst);
                let b = Response::builder()
                    .header("etag", "\"v1\"")
                    .header("surrogate-key", "big");
                let res = if req.headers().get("if-none-match").is_some() {
                    if s.not_modified {
                        b.status(304)
                            .header("cache-control", "max-age=600")
                            .header("x-revalidated", "yes")
                            .body(Full::default())
                    } else {
                        b.status(500).body(Full::default())
                    }
                } else {
                    calls.bodies.fetch_add(1, Ordering::SeqCst);
                    let body = body_of(1, s.len);
                    let b = b
                        .header("cache-control", s.cache_control)
                        .header("age", "120")
                        .header("x-big", "a".repeat(s.big_field));
                    match asked(req.headers()) {
                        Some((first, last)) => b
                            .status(206)
                            .header("content-range", format!("bytes {first}-{last}/{}", s.len))
                            .body(Full::new(body.slice(first..=last))),
                        None => b.body(Full::new(body)),
                    }
                };
                Ok::<_, std::convert::Infallible>(res.unwrap())
            }
        }
    });
    (Origin::new(svc), calls)
}

/// The length of the body of `res`, checked frame by frame against bytes `from..` of
/// the representation; from the store, no frame larger than one block (never read
/// whole).
async fn streamed(
    res: Response<tower_cache::http::HttpCacheBody<Full<Bytes>>>,
    len: usize,
    from: usize,
) -> usize {
    let want = body_of(1, len);
    // A miss passes the origin's own frames on.
    let stored = res.headers()["x-cache"] != "MISS";
    let mut body = res.into_body();
    let (mut at, mut largest) = (from, 0);
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        assert!(data == want.slice(at..at + data.len()), "bytes at {at}");
        at += data.len();
        largest = largest.max(data.len());
    }
    assert!(
        !stored || largest as u64 <= BLOCK,
        "a frame of {largest} bytes"
    );
    at - from
}

const LEN: usize = 8 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_large_entry_revalidated_with_304_keeps_its_body_on_disk_and_its_tags() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = origin_of(Script {
            len: LEN,
            cache_control: "max-age=60",
            not_modified: true,
            big_field: 0,
        });
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert_eq!(streamed(res, LEN, 0).await, LEN);
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 1, "stored on disk");
        assert_eq!(store.memory().stats().entries, 0, "too large for memory");

        // Stale (Age 120 past max-age 60): revalidated, 304, and the client gets the
        // whole response, streamed from disk.
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "REVALIDATED");
        assert_eq!(res.headers()["x-revalidated"], "yes");
        assert_eq!(streamed(res, LEN, 0).await, LEN);
        assert_eq!(calls.all.load(Ordering::SeqCst), 2);

        // The new head is stored in front of the kept body: fresh now, from disk, with
        // the 304's fields, whole and by range.
        disk.flush().await.unwrap();
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(res.headers()["x-revalidated"], "yes");
        assert_eq!(res.headers()["cache-control"], "max-age=600");
        assert_eq!(streamed(res, LEN, 0).await, LEN);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", Some("bytes=5000000-5000999")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(streamed(res, LEN, 5_000_000).await, 1000);
        assert_eq!(calls.all.load(Ordering::SeqCst), 2, "no origin call");
        assert_eq!(calls.bodies.load(Ordering::SeqCst), 1);
        assert_eq!(disk.stats().corrupt, 0);

        // The revalidated entry keeps the tags its fields name: purged by them.
        assert!(store.invalidate_tag("big").await.unwrap() >= 1);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert_eq!(streamed(res, LEN, 0).await, LEN);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_entry_served_stale_streams_from_disk_and_its_background_refresh_lands() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = origin_of(Script {
            len: LEN,
            cache_control: "max-age=60, stale-while-revalidate=600",
            not_modified: true,
            big_field: 0,
        });
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        streamed(res, LEN, 0).await;
        disk.flush().await.unwrap();

        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "STALE");
        assert_eq!(streamed(res, LEN, 0).await, LEN);
        // The refresh in the background gets a 304 and rewrites the head on disk.
        let hit = loop {
            disk.flush().await.unwrap();
            let res = svc
                .clone()
                .oneshot(get("http://t/big", None))
                .await
                .unwrap();
            if res.headers()["x-cache"] == "HIT-DISK" {
                break res;
            }
            streamed(res, LEN, 0).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(hit.headers()["x-revalidated"], "yes");
        assert_eq!(streamed(hit, LEN, 0).await, LEN);
        assert_eq!(
            calls.bodies.load(Ordering::SeqCst),
            1,
            "never fetched again"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_entry_served_stale_on_an_origin_error_streams_from_disk() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = origin_of(Script {
            len: LEN,
            cache_control: "max-age=60, stale-if-error=600",
            not_modified: false,
            big_field: 0,
        });
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        streamed(res, LEN, 0).await;
        disk.flush().await.unwrap();
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "STALE");
        assert_eq!(streamed(res, LEN, 0).await, LEN);
        assert_eq!(
            calls.all.load(Ordering::SeqCst),
            2,
            "the revalidation failed"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_stored_part_answers_the_ranges_it_covers_from_disk() {
    tokio::time::timeout(BOUND, async {
        const TOTAL: usize = 64 << 20;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = origin_of(Script {
            len: TOTAL,
            cache_control: "max-age=600",
            not_modified: true,
            big_field: 0,
        });
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        // The origin's answer to a 4 MiB range, stored as a part (on disk only).
        let res = svc
            .clone()
            .oneshot(get("http://t/part", Some("bytes=0-4194303")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(streamed(res, TOTAL, 0).await, 4 << 20);
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 1);

        // A range within the part: from disk, its bytes and the head's block only.
        let before = disk.stats().value_bytes_read;
        let res = svc
            .clone()
            .oneshot(get("http://t/part", Some("bytes=3000000-3000999")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes 3000000-3000999/{TOTAL}").as_str()
        );
        assert_eq!(res.headers()["content-length"], "1000");
        assert_eq!(streamed(res, TOTAL, 3_000_000).await, 1000);
        let read = disk.stats().value_bytes_read - before;
        assert!(
            read <= 1000 + BLOCK,
            "{read} bytes read for a 1,000-byte range"
        );
        assert_eq!(calls.all.load(Ordering::SeqCst), 1, "no origin call");

        // A range past the part goes to the origin.
        let res = svc
            .clone()
            .oneshot(get("http://t/part", Some("bytes=5000000-5000999")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert_eq!(streamed(res, TOTAL, 5_000_000).await, 1000);
        assert_eq!(calls.all.load(Ordering::SeqCst), 2);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_whose_head_is_longer_than_a_block_is_still_read_in_parts() {
    tokio::time::timeout(BOUND, async {
        const HEAD_FIELD: usize = 100_000;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = origin_of(Script {
            len: LEN,
            cache_control: "max-age=600",
            not_modified: true,
            big_field: HEAD_FIELD,
        });
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/head", None))
            .await
            .unwrap();
        streamed(res, LEN, 0).await;
        disk.flush().await.unwrap();

        let before = disk.stats().value_bytes_read;
        let res = svc
            .clone()
            .oneshot(get("http://t/head", Some("bytes=7000000-7000999")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(res.headers()["x-big"].len(), HEAD_FIELD);
        assert_eq!(streamed(res, LEN, 7_000_000).await, 1000);
        // The first block, then a prefix of two: the head, not the body.
        let read = disk.stats().value_bytes_read - before;
        assert!(read <= 1000 + 3 * BLOCK, "{read} bytes read");
        let res = svc
            .clone()
            .oneshot(get("http://t/head", None))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(streamed(res, LEN, 0).await, LEN);
        assert_eq!(calls.all.load(Ordering::SeqCst), 1, "no origin call");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_entry_revalidated_with_304_keeps_its_tags_too() {
    tokio::time::timeout(BOUND, async {
        const SMALL: usize = 1000;
        let dir = tempfile::tempdir().unwrap();
        let (store, _disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = origin_of(Script {
            len: SMALL,
            cache_control: "max-age=60",
            not_modified: true,
            big_field: 0,
        });
        let svc = HttpCacheLayer::new(store.clone()).layer(origin);
        let res = svc.clone().oneshot(get("http://t/s", None)).await.unwrap();
        streamed(res, SMALL, 0).await;
        let res = svc.clone().oneshot(get("http://t/s", None)).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "REVALIDATED");
        streamed(res, SMALL, 0).await;
        let res = svc.clone().oneshot(get("http://t/s", None)).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-MEM");
        streamed(res, SMALL, 0).await;
        assert!(store.invalidate_tag("big").await.unwrap() >= 1);
        let res = svc.clone().oneshot(get("http://t/s", None)).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        streamed(res, SMALL, 0).await;
        assert_eq!(calls.bodies.load(Ordering::SeqCst), 2);
    })
    .await
    .expect("bounded");
}
