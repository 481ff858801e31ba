//! Faults around a large stored response kept on disk while its head is rewritten (a
//! `304` splices a new head in front of the kept body): a part answered for a stale
//! complete response, a purge landing while the revalidation is at the origin, and a
//! body streaming while the record it reads is spliced, then replaced.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
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

const LEN: usize = 8 << 20;

/// Calls of an origin: all, and those answered with the whole body.
#[derive(Default)]
struct Calls {
    all: AtomicUsize,
    whole: AtomicUsize,
}

/// A range `bytes=a-b` of a request.
fn asked(req: &http::HeaderMap) -> Option<(usize, usize)> {
    let v = req.get("range")?.to_str().ok()?.strip_prefix("bytes=")?;
    let (a, b) = v.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Reads `res`'s body to its end; the bytes, or the error that ended it.
async fn drain(
    res: Response<tower_cache::http::HttpCacheBody<Full<Bytes>>>,
) -> Result<Vec<u8>, String> {
    let mut body = res.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// A `206` to a range request for a stale large `200` with the same strong `ETag` and
/// complete length refreshes the stored response (RFC 9111 section 3.4: the stored
/// body with the part's fields); it does not throw the stored body away. The origin
/// here ignores `If-None-Match` on a range request, as RFC 9110 lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_for_a_stale_large_response_on_disk_keeps_the_stored_body() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let calls = Arc::new(Calls::default());
        let origin = Origin::new(tower::service_fn({
            let calls = calls.clone();
            move |req: Request<Full<Bytes>>| {
                let calls = calls.clone();
                async move {
                    calls.all.fetch_add(1, Ordering::SeqCst);
                    let body = body_of(1, LEN);
                    let b = Response::builder().header("etag", "\"v1\"");
                    let res = match asked(req.headers()) {
                        Some((first, last)) => b
                            .status(206)
                            .header("cache-control", "max-age=600")
                            .header("content-range", format!("bytes {first}-{last}/{LEN}"))
                            .body(Full::new(body.slice(first..=last))),
                        None => {
                            calls.whole.fetch_add(1, Ordering::SeqCst);
                            b.header("cache-control", "max-age=60")
                                .header("age", "120")
                                .body(Full::new(body))
                        }
                    };
                    Ok::<_, std::convert::Infallible>(res.unwrap())
                }
            }
        }));
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert_eq!(drain(res).await.unwrap().len(), LEN);
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 1);

        // Stale: the range goes to the origin, which answers with a part of the same
        // representation (same strong ETag, same complete length).
        let res = svc
            .clone()
            .oneshot(get("http://t/big", Some("bytes=0-999")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert!(drain(res).await.unwrap()[..] == body_of(1, LEN)[..1000]);
        disk.flush().await.unwrap();

        // The stored response is still the whole one, refreshed by the part's fields:
        // no second transfer of the whole body.
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        let cached = res.headers()["x-cache"].clone();
        let got = drain(res).await.unwrap();
        assert!(got[..] == body_of(1, LEN)[..]);
        assert_eq!(
            calls.whole.load(Ordering::SeqCst),
            1,
            "the whole body was fetched again (x-cache {cached:?}): the stored one was lost"
        );
    })
    .await
    .expect("bounded");
}

/// A purge by tag that lands while the revalidation of a large stored response is at
/// the origin wins: the `304` arriving after it does not bring the purged response back
/// (the splice finds its record gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_during_a_large_revalidation_is_not_undone_by_its_304() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let calls = Arc::new(Calls::default());
        let arrived = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let origin = Origin::new(tower::service_fn({
            let (calls, arrived, release) = (calls.clone(), arrived.clone(), release.clone());
            move |req: Request<Full<Bytes>>| {
                let (calls, arrived, release) = (calls.clone(), arrived.clone(), release.clone());
                async move {
                    calls.all.fetch_add(1, Ordering::SeqCst);
                    let b = Response::builder()
                        .header("etag", "\"v1\"")
                        .header("surrogate-key", "big");
                    let res = if req.headers().contains_key("if-none-match") {
                        arrived.notify_one();
                        release.notified().await;
                        b.status(304)
                            .header("cache-control", "max-age=600")
                            .body(Full::default())
                    } else {
                        let call = calls.whole.fetch_add(1, Ordering::SeqCst) + 1;
                        b.header("cache-control", "max-age=60")
                            .header("age", "120")
                            .body(Full::new(body_of(call, LEN)))
                    };
                    Ok::<_, std::convert::Infallible>(res.unwrap())
                }
            }
        }));
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(drain(res).await.unwrap().len(), LEN);
        disk.flush().await.unwrap();

        let revalidation = tokio::spawn({
            let svc = svc.clone();
            async move { svc.oneshot(get("http://t/big", None)).await.unwrap() }
        });
        arrived.notified().await;
        assert!(store.invalidate_tag("big").await.unwrap() >= 1);
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 0, "purged");
        release.notify_one();
        let res = revalidation.await.unwrap();
        assert_eq!(res.headers()["x-cache"], "REVALIDATED");
        // The client of the revalidation read nothing before the purge; what it gets
        // now is cut short or whole, never other bytes.
        if let Ok(got) = drain(res).await {
            assert!(got[..] == body_of(1, LEN)[..]);
        }
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 0, "the 304 did not bring it back");
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert!(drain(res).await.unwrap()[..] == body_of(2, LEN)[..]);
    })
    .await
    .expect("bounded");
}

/// A body streaming from disk follows its record through a splice (same bytes, behind
/// a new head), and is cut short, never continued with other bytes, once the key holds
/// another representation of the same length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_follows_a_splice_and_stops_at_a_new_representation() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let calls = Arc::new(Calls::default());
        let origin = Origin::new(tower::service_fn({
            let calls = calls.clone();
            move |req: Request<Full<Bytes>>| {
                let calls = calls.clone();
                async move {
                    calls.all.fetch_add(1, Ordering::SeqCst);
                    let b = Response::builder()
                        .header("etag", "\"v1\"")
                        .header("surrogate-key", "big");
                    let res = if req.headers().contains_key("if-none-match") {
                        b.status(304)
                            .header("cache-control", "max-age=60, stale-while-revalidate=600")
                            .header("x-revalidated", "a header of another length")
                            .body(Full::default())
                    } else {
                        let call = calls.whole.fetch_add(1, Ordering::SeqCst) + 1;
                        b.header("cache-control", "max-age=60, stale-while-revalidate=600")
                            .header("age", "120")
                            .body(Full::new(body_of(call, LEN)))
                    };
                    Ok::<_, std::convert::Infallible>(res.unwrap())
                }
            }
        }));
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(drain(res).await.unwrap().len(), LEN);
        disk.flush().await.unwrap();

        // Served stale, streaming; the background refresh's 304 splices meanwhile.
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "STALE");
        let mut stream = res.into_body();
        let mut got = Vec::new();
        let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
        got.extend_from_slice(&first);
        let spliced_logical = loop {
            disk.flush().await.unwrap();
            let logical = disk.stats().logical_bytes;
            if logical != (LEN as u64) && calls.all.load(Ordering::SeqCst) >= 2 {
                break logical;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert!(spliced_logical > LEN as u64);
        // Half of the body read after the splice: the same bytes.
        while got.len() < LEN / 2 {
            let data = stream.frame().await.unwrap().unwrap().into_data().unwrap();
            got.extend_from_slice(&data);
        }
        assert!(
            got[..] == body_of(1, LEN)[..got.len()],
            "bytes after the splice"
        );

        // Purged and stored again (another body, same length): the stream stops.
        assert!(store.invalidate_tag("big").await.unwrap() >= 1);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert!(drain(res).await.unwrap()[..] == body_of(2, LEN)[..]);
        disk.flush().await.unwrap();
        let mut cut = false;
        while let Some(frame) = stream.frame().await {
            match frame {
                Ok(f) => got.extend_from_slice(&f.into_data().unwrap()),
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
        assert!(cut, "the stream ended without an error");
        assert!(got[..] == body_of(1, LEN)[..got.len()], "never other bytes");
        assert_eq!(disk.stats().corrupt, 0);
    })
    .await
    .expect("bounded");
}

/// A URL's index of variants (`Vary`) that the memory tier cannot take (its largest
/// value is smaller) and the disk tier holds in the addressable form is still read
/// (it is read whole, never opened in parts): the stored variants are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_variants_held_only_by_the_disk_tier_is_read() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let disk = tower_cache::DiskTier::builder(dir.path())
            .map_size(64 << 20)
            .addressable_threshold(0)
            .open()
            .unwrap();
        let memory = tower_cache::MemoryTier::builder()
            .max_entries(1000)
            .max_value_bytes(32)
            .build()
            .unwrap();
        let store = tower_cache::Cache::new(memory).with_disk(disk.clone());
        let calls = Arc::new(Calls::default());
        let origin = Origin::new(tower::service_fn({
            let calls = calls.clone();
            move |_req: Request<Full<Bytes>>| {
                let calls = calls.clone();
                async move {
                    let call = calls.all.fetch_add(1, Ordering::SeqCst) + 1;
                    let res = Response::builder()
                        .header("cache-control", "max-age=600")
                        .header("vary", "accept-encoding")
                        .body(Full::new(body_of(call, 100_000)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(res)
                }
            }
        }));
        let svc = HttpCacheLayer::new(store).layer(origin);
        let ask = || {
            Request::get("http://t/varies")
                .header("accept-encoding", "gzip")
                .body(Full::<Bytes>::default())
                .unwrap()
        };
        let res = svc.clone().oneshot(ask()).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert!(drain(res).await.unwrap()[..] == body_of(1, 100_000)[..]);
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 2, "the index and the variant");

        let res = svc.clone().oneshot(ask()).await.unwrap();
        let cached = res.headers()["x-cache"].clone();
        assert!(drain(res).await.unwrap()[..] == body_of(1, 100_000)[..]);
        assert_eq!(cached, "HIT-DISK");
        assert_eq!(calls.all.load(Ordering::SeqCst), 1);
    })
    .await
    .expect("bounded");
}

/// An origin with one representation of `len` bytes (ETag `"v1"`, body [`body_of`]
/// call 1, fresh for 600 s): `206` to a `bytes=a-b` range, `200` otherwise; `304`
/// with `etag_304` to `If-None-Match`. A field of `field` bytes on every full answer.
fn one_representation(
    len: usize,
    cache_control: &'static str,
    etag_304: &'static str,
    field: usize,
) -> (Origin, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let svc = tower::service_fn({
        let calls = calls.clone();
        move |req: Request<Full<Bytes>>| {
            let calls = calls.clone();
            async move {
                calls.all.fetch_add(1, Ordering::SeqCst);
                let res = if req.headers().contains_key("if-none-match") {
                    Response::builder()
                        .status(304)
                        .header("etag", etag_304)
                        .header("cache-control", "max-age=600")
                        .body(Full::default())
                } else {
                    let body = body_of(1, len);
                    let b = Response::builder()
                        .header("etag", "\"v1\"")
                        .header("cache-control", cache_control)
                        .header("age", "120")
                        .header("x-big", "a".repeat(field));
                    match asked(req.headers()) {
                        Some((first, last)) => b
                            .status(206)
                            .header("content-range", format!("bytes {first}-{last}/{len}"))
                            .body(Full::new(body.slice(first..=last))),
                        None => {
                            calls.whole.fetch_add(1, Ordering::SeqCst);
                            b.body(Full::new(body))
                        }
                    }
                };
                Ok::<_, std::convert::Infallible>(res.unwrap())
            }
        }
    });
    (Origin::new(svc), calls)
}

/// A stored part on disk answers ranges at its exact ends and with an `If-Range` naming
/// it, and sends the ones a byte past its ends to the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_part_on_disk_answers_ranges_at_its_exact_ends_and_no_further() {
    tokio::time::timeout(BOUND, async {
        const TOTAL: usize = 16 << 20;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = one_representation(TOTAL, "max-age=600", "\"v1\"", 0);
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let want = body_of(1, TOTAL);
        let range =
            |svc: &tower_cache::http::HttpCacheService<Origin>, r: &str, if_range: Option<&str>| {
                let mut b = Request::get("http://t/part").header("range", r);
                if let Some(v) = if_range {
                    b = b.header("if-range", v);
                }
                svc.clone().oneshot(b.body(Full::default()).unwrap())
            };
        let res = range(&svc, "bytes=1000000-2999999", None).await.unwrap();
        assert_eq!(res.status(), 206);
        assert!(drain(res).await.unwrap()[..] == want[1_000_000..3_000_000]);
        disk.flush().await.unwrap();
        // `If-Range` naming the part holds.
        let res = range(&svc, "bytes=2000000-2000009", Some("\"v1\""))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert!(drain(res).await.unwrap()[..] == want[2_000_000..2_000_010]);
        let mut origin_calls = calls.all.load(Ordering::SeqCst);
        for (r, first, last, stored) in [
            ("bytes=1000000-1000000", 1_000_000, 1_000_000, true),
            ("bytes=2999999-2999999", 2_999_999, 2_999_999, true),
            ("bytes=1000000-2999999", 1_000_000, 2_999_999, true),
            ("bytes=1065535-1065536", 1_065_535, 1_065_536, true),
            ("bytes=2999999-3000000", 2_999_999, 3_000_000, false),
        ] {
            let res = range(&svc, r, None).await.unwrap();
            assert_eq!(res.status(), 206, "{r}");
            let x_cache = res.headers()["x-cache"].clone();
            assert_eq!(
                res.headers()["content-range"],
                format!("bytes {first}-{last}/{TOTAL}").as_str(),
                "{r}"
            );
            if stored {
                assert_eq!(
                    res.headers()["content-length"],
                    (last - first + 1).to_string().as_str(),
                    "{r}"
                );
            }
            assert!(drain(res).await.unwrap()[..] == want[first..=last], "{r}");
            let now = calls.all.load(Ordering::SeqCst);
            assert_eq!(x_cache == "HIT-DISK", stored, "{r}: {x_cache:?}");
            assert_eq!(now == origin_calls, stored, "{r}");
            origin_calls = now;
        }
        // `If-Range` naming another representation: to the origin.
        let res = range(&svc, "bytes=2999999-2999999", Some("\"v0\""))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        drain(res).await.unwrap();
        assert_eq!(disk.stats().corrupt, 0);
    })
    .await
    .expect("bounded");
}

/// A `304` whose strong `ETag` is not the stored response's updates nothing (RFC 9111
/// section 4.3.4): the stored body is never served under another representation's
/// validator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_naming_another_etag_does_not_relabel_a_large_stored_body() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, _calls) = one_representation(LEN, "max-age=60", "\"v2\"", 0);
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        drain(res).await.unwrap();
        disk.flush().await.unwrap();
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        drain(res).await.unwrap();
        disk.flush().await.unwrap();
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        let etag = res.headers()["etag"].clone();
        let x_cache = res.headers()["x-cache"].clone();
        assert!(drain(res).await.unwrap()[..] == body_of(1, LEN)[..]);
        assert_eq!(
            etag, "\"v1\"",
            "the body of \"v1\" served as {etag:?} ({x_cache:?})"
        );
    })
    .await
    .expect("bounded");
}

/// An empty body behind a head longer than the memory tier's largest value: opened in
/// parts, its head read in doubling steps, revalidated (an empty kept tail), and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_body_behind_a_huge_head_is_revalidated_and_served_from_disk() {
    tokio::time::timeout(BOUND, async {
        const FIELD: usize = (1 << 20) + 300_000;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = one_representation(0, "max-age=60", "\"v1\"", FIELD);
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/empty", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert!(drain(res).await.unwrap().is_empty());
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 1);
        let res = svc
            .clone()
            .oneshot(get("http://t/empty", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "REVALIDATED");
        assert_eq!(res.headers()["x-big"].len(), FIELD);
        assert!(drain(res).await.unwrap().is_empty());
        disk.flush().await.unwrap();
        let res = svc
            .clone()
            .oneshot(get("http://t/empty", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(res.headers()["x-big"].len(), FIELD);
        assert_eq!(res.headers()["cache-control"], "max-age=600");
        assert!(drain(res).await.unwrap().is_empty());
        assert_eq!(calls.all.load(Ordering::SeqCst), 2);
        assert_eq!(disk.stats().corrupt, 0);
    })
    .await
    .expect("bounded");
}

/// A part adjacent to a large stored part of the same representation is combined with
/// it (RFC 9111 section 3.4), as it is when the stored part is in memory: a one-byte
/// range next to a stored 2 MB part does not throw the 2 MB away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_next_to_a_large_stored_part_on_disk_does_not_drop_it() {
    tokio::time::timeout(BOUND, async {
        const TOTAL: usize = 16 << 20;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = one_representation(TOTAL, "max-age=600", "\"v1\"", 0);
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let want = body_of(1, TOTAL);
        for r in ["bytes=1000000-2999999", "bytes=3000000-3000000"] {
            let res = svc
                .clone()
                .oneshot(get("http://t/part", Some(r)))
                .await
                .unwrap();
            assert_eq!(res.headers()["x-cache"], "MISS");
            drain(res).await.unwrap();
            disk.flush().await.unwrap();
        }
        let res = svc
            .clone()
            .oneshot(get("http://t/part", Some("bytes=1000000-1000009")))
            .await
            .unwrap();
        let x_cache = res.headers()["x-cache"].clone();
        assert!(drain(res).await.unwrap()[..] == want[1_000_000..1_000_010]);
        assert_eq!(x_cache, "HIT-DISK", "the stored 2 MB part was dropped");
        assert_eq!(calls.all.load(Ordering::SeqCst), 2);
        // The union answers from disk across the seam, and grows the other way too.
        for r in ["bytes=2999990-3000000", "bytes=900000-1000000"] {
            let res = svc
                .clone()
                .oneshot(get("http://t/part", Some(r)))
                .await
                .unwrap();
            let x_cache = res.headers()["x-cache"].clone();
            drain(res).await.unwrap();
            disk.flush().await.unwrap();
            if r == "bytes=2999990-3000000" {
                assert_eq!(x_cache, "HIT-DISK", "{r}");
            }
        }
        let res = svc
            .clone()
            .oneshot(get("http://t/part", Some("bytes=900000-3000000")))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes 900000-3000000/{TOTAL}").as_str()
        );
        assert!(drain(res).await.unwrap()[..] == want[900_000..=3_000_000]);
        assert_eq!(calls.all.load(Ordering::SeqCst), 3);
        // The rest of the representation, in one part: the stored one is now whole.
        for r in ["bytes=0-900000", &format!("bytes=3000000-{}", TOTAL - 1)] {
            let res = svc
                .clone()
                .oneshot(get("http://t/part", Some(r)))
                .await
                .unwrap();
            drain(res).await.unwrap();
            disk.flush().await.unwrap();
        }
        let res = svc
            .clone()
            .oneshot(get("http://t/part", None))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(res.headers()["content-length"], TOTAL.to_string().as_str());
        assert!(drain(res).await.unwrap()[..] == want[..]);
        assert_eq!(calls.all.load(Ordering::SeqCst), 5);
        assert_eq!(disk.stats().corrupt, 0);
    })
    .await
    .expect("bounded");
}

/// Revalidating a large stored response reads its head, not its body: a `304` for a
/// ranged request copies the head's block and the range out of LMDB, nothing more (the
/// kept body is copied by the disk tier's writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ranged_revalidation_of_a_large_response_reads_its_head_and_the_range_only() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = one_representation(LEN, "max-age=60", "\"v1\"", 0);
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        drain(res).await.unwrap();
        disk.flush().await.unwrap();
        let before = disk.stats().value_bytes_read;
        let res = svc
            .clone()
            .oneshot(get("http://t/big", Some("bytes=4000000-4000999")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["x-cache"], "REVALIDATED");
        assert!(drain(res).await.unwrap()[..] == body_of(1, LEN)[4_000_000..4_001_000]);
        disk.flush().await.unwrap();
        let read = disk.stats().value_bytes_read - before;
        assert!(read <= 1000 + BLOCK, "{read} bytes read");
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert!(drain(res).await.unwrap()[..] == body_of(1, LEN)[..]);
        assert_eq!(calls.whole.load(Ordering::SeqCst), 1);
    })
    .await
    .expect("bounded");
}

/// A large response served stale while it is refreshed (stale-while-revalidate) is
/// sent whole even when the refresh brings a new representation: the cache chose to
/// send it, and its own refresh, started at the same moment, lands while it streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_served_stale_is_sent_whole_when_its_refresh_brings_a_new_one() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let calls = Arc::new(Calls::default());
        let origin = Origin::new(tower::service_fn({
            let calls = calls.clone();
            move |_req: Request<Full<Bytes>>| {
                let calls = calls.clone();
                async move {
                    calls.all.fetch_add(1, Ordering::SeqCst);
                    // Every answer is a new representation (one byte longer each time).
                    let call = calls.whole.fetch_add(1, Ordering::SeqCst) + 1;
                    let res = Response::builder()
                        .header("etag", format!("\"v{call}\""))
                        .header("cache-control", "max-age=60, stale-while-revalidate=600")
                        .header("age", "120")
                        .body(Full::new(body_of(call, LEN + call)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(res)
                }
            }
        }));
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(drain(res).await.unwrap().len(), LEN + 1);
        disk.flush().await.unwrap();

        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "STALE");
        let mut stream = res.into_body();
        let mut got = Vec::new();
        got.extend_from_slice(&stream.frame().await.unwrap().unwrap().into_data().unwrap());
        // The refresh has its new response, whole and spooled, while the client is
        // still reading: it waits for the client before it replaces the record.
        loop {
            disk.flush().await.unwrap();
            let s = disk.stats();
            assert_eq!(s.rejections, 0);
            if calls.whole.load(Ordering::SeqCst) >= 2 && s.spooled_bytes >= (LEN + 2) as u64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        disk.flush().await.unwrap();
        assert_eq!(
            disk.stats().writes,
            1,
            "the newer response waits for the download"
        );
        while let Some(frame) = stream.frame().await {
            match frame {
                Ok(f) => got.extend_from_slice(&f.into_data().unwrap()),
                Err(e) => panic!("cut short after {} of {} bytes: {e}", got.len(), LEN + 1),
            }
        }
        assert!(got[..] == body_of(1, LEN + 1)[..]);
        drop(stream);
        // Then it is stored.
        while disk.stats().writes < 2 {
            disk.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert!(drain(res).await.unwrap()[..] == body_of(2, LEN + 2)[..]);
    })
    .await
    .expect("bounded");
}
