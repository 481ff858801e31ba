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

use super::disk_parts::{body_of, get, store_on};
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
#[ignore = "reproduces: a part answered for a stale large 200 on disk replaces the stored complete response (the combination is skipped for bodies held by the disk tier)"]
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
