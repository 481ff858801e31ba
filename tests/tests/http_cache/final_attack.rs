//! Attacks on the newest parts of the HTTP cache's disk path: the wait of a new response
//! for the bodies streaming from the large record it replaces, and what a purge and the
//! URL's other requests see meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_layer::Layer;

use super::disk_parts::{body_of, get, store_on};
use super::*;

/// Longer than any test runs: a wait that ends only when its reason goes.
const FOREVER: Duration = Duration::from_secs(3600);

/// How long a request that should not wait at all is given before it counts as stuck.
const STUCK: Duration = Duration::from_secs(20);

/// Larger than the memory tier takes (1 MiB): stored on disk only, read in parts.
const LEN: usize = 2 << 20;

type Origin = tower::util::BoxCloneSyncService<
    Request<Full<Bytes>>,
    http::Response<Full<Bytes>>,
    std::convert::Infallible,
>;

/// An origin whose representation is version `version` (the test changes it): a `GET`
/// gets it whole (`cache-control` as given, ETag `"v<version>"`), or `304` when it asks
/// with that ETag; any other method gets an empty `200`. Counts the `GET`s answered
/// whole.
fn versioned_origin(cc: &'static str) -> (Origin, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let version = Arc::new(AtomicUsize::new(1));
    let whole = Arc::new(AtomicUsize::new(0));
    let svc = tower::service_fn({
        let (version, whole) = (version.clone(), whole.clone());
        move |req: Request<Full<Bytes>>| {
            let v = version.load(Ordering::SeqCst);
            let etag = format!("\"v{v}\"");
            let b = http::Response::builder();
            let res = if req.method() != Method::GET {
                b.body(Full::default())
            } else if req
                .headers()
                .get("if-none-match")
                .is_some_and(|t| t.as_bytes() == etag.as_bytes())
            {
                b.status(304)
                    .header("cache-control", cc)
                    .header("etag", etag)
                    .body(Full::default())
            } else {
                whole.fetch_add(1, Ordering::SeqCst);
                b.header("cache-control", cc)
                    .header("content-length", LEN)
                    .header("etag", etag)
                    .body(Full::new(body_of(v, LEN)))
            };
            async move { Ok::<_, std::convert::Infallible>(res.unwrap()) }
        }
    });
    (Origin::new(svc), version, whole)
}

/// A request of the URL that should be answered without waiting on anything: its answer
/// (`x-cache`, body), or `None` when it did not come within [`STUCK`].
async fn answer_of<S>(svc: S) -> Option<(String, Bytes)>
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = http::Response<tower_cache::http::HttpCacheBody<Full<Bytes>>>,
        > + Send,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    tokio::time::timeout(STUCK, async move {
        let res = svc.oneshot(get("http://t/big", None)).await.unwrap();
        let x = res.headers()["x-cache"].to_str().unwrap().to_owned();
        (x, res.into_body().collect().await.unwrap().to_bytes())
    })
    .await
    .ok()
}

/// A response that must be revalidated on every request (`no-cache`) is stored on
/// disk; a client is streaming it (slowly) when the origin changes it. The next request
/// brings the new representation, which waits for that client before it is stored. A
/// request for the URL meanwhile must not wait for that client too: its answer (the new
/// response from the origin, or anything else) does not depend on the download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reproduces: requests for a URL wait (collapse_wait, 10 s by default) while the response fetched for them waits for a slow download of the record it replaces"]
async fn a_request_does_not_wait_for_a_download_the_new_response_waits_for() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, version, whole) = versioned_origin("no-cache");
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .collapse_wait(FOREVER)
            .replace_wait(FOREVER)
            .layer(origin);
        let (x, body) = answer_of(svc.clone()).await.expect("first fetch");
        assert_eq!((x.as_str(), body.len()), ("MISS", LEN));
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 1);

        // A slow client: revalidated (304), streamed from disk, one frame read.
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "REVALIDATED");
        let mut slow = res.into_body();
        slow.frame().await.unwrap().unwrap();

        // The origin changes; the next request brings the new response whole.
        version.store(2, Ordering::SeqCst);
        let (_, body) = answer_of(svc.clone()).await.expect("the changed response");
        assert!(body == body_of(2, LEN));
        assert_eq!(whole.load(Ordering::SeqCst), 2);

        // Another request for the URL: answered, not held until the slow client ends.
        let next = answer_of(svc.clone()).await;
        drop(slow);
        let (_, body) = next.expect("a request held by another client's download");
        assert!(body == body_of(2, LEN));
    })
    .await
    .expect("bounded");
}

/// A slow client holds a body of a large stored response that is then purged (an
/// unsafe method on its URL). The next response for the URL replaces nothing that is
/// read (the record the client reads is gone): it is stored at once, and the URL is
/// served from it, not held by the download of a record that no longer exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reproduces: a body of a purged record still counts as a reader of its key, so the next response for the URL waits for it (and holds the URL's requests)"]
async fn a_reader_of_a_purged_record_does_not_hold_the_next_response() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, version, whole) = versioned_origin("max-age=600");
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .collapse_wait(FOREVER)
            .replace_wait(FOREVER)
            .layer(origin);
        let (x, _) = answer_of(svc.clone()).await.expect("first fetch");
        assert_eq!(x, "MISS");
        disk.flush().await.unwrap();
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        let mut slow = res.into_body();
        slow.frame().await.unwrap().unwrap();

        // Purged.
        let post = Request::post("http://t/big").body(Full::default()).unwrap();
        svc.clone().oneshot(post).await.unwrap();
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 0, "purged");

        version.store(2, Ordering::SeqCst);
        let (x, body) = answer_of(svc.clone()).await.expect("refetched");
        assert_eq!(x, "MISS");
        assert!(body == body_of(2, LEN));
        // The new response is stored, and the URL answered from it.
        let next = answer_of(svc.clone()).await;
        disk.flush().await.unwrap();
        let stored = disk.stats().entries;
        // The slow client's body is of a removed record: it fails, never goes on.
        let rest = slow.collect().await;
        assert!(rest.is_err(), "the purged record's body is cut");
        let (x, body) = next.expect("a request held by a purged record's reader");
        assert_eq!(stored, 1, "stored while the purged record's body was open");
        assert_eq!(x, "HIT-DISK");
        assert!(body == body_of(2, LEN));
        assert_eq!(whole.load(Ordering::SeqCst), 2);
    })
    .await
    .expect("bounded");
}

/// A new response waits for a slow client of the record it replaces; the URL is purged
/// meanwhile. The purge wins: when the client goes, the waiting response is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_during_the_replace_wait_wins() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, version, _) = versioned_origin("max-age=600");
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .collapse_wait(FOREVER)
            .replace_wait(FOREVER)
            .layer(origin);
        answer_of(svc.clone()).await.expect("first fetch");
        disk.flush().await.unwrap();
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        let mut slow = res.into_body();
        slow.frame().await.unwrap().unwrap();

        // A client that asks the origin (`no-cache`) brings version 2, which waits.
        version.store(2, Ordering::SeqCst);
        let req = Request::get("http://t/big")
            .header("cache-control", "no-cache")
            .body(Full::default())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body == body_of(2, LEN));
        disk.flush().await.unwrap();
        assert_eq!(
            disk.stats().writes,
            1,
            "version 2 waits for the slow client"
        );

        let post = Request::post("http://t/big").body(Full::default()).unwrap();
        svc.clone().oneshot(post).await.unwrap();
        // A request of the URL: it waits for the response in flight (whose write is
        // held), then finds the URL purged.
        let next = tokio::spawn(answer_of(svc.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(slow);
        let (x, body) = next.await.unwrap().expect("answered once the client went");
        assert_eq!(
            x, "MISS",
            "the response that waited was not stored over the purge"
        );
        assert!(body == body_of(2, LEN));
    })
    .await
    .expect("bounded");
}

/// Every way a body of a large stored record ends or goes (read whole and kept, dropped
/// unread, dropped mid-way, a range, a `HEAD`, a `304`, a `416`) stops counting it as a
/// reader: a new response for the URL is then stored at once, without its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_body_of_a_stored_record_counts_as_a_reader_after_it_ends_or_goes() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, version, _) = versioned_origin("max-age=600");
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .collapse_wait(FOREVER)
            .replace_wait(FOREVER)
            .layer(origin);
        answer_of(svc.clone()).await.expect("first fetch");
        disk.flush().await.unwrap();
        let send = |b: http::request::Builder| {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(b.body(Full::default()).unwrap()).await.unwrap();
                assert_eq!(res.headers()["x-cache"], "HIT-DISK");
                res
            }
        };
        let plain = || Request::get("http://t/big");
        let mut kept = Vec::new();
        // Read whole, the body kept.
        let mut whole = send(plain()).await.into_body();
        while let Some(f) = whole.frame().await {
            f.unwrap();
        }
        kept.push(whole);
        // Dropped unread, and after one frame.
        drop(send(plain()).await);
        let mut mid = send(plain()).await.into_body();
        mid.frame().await.unwrap().unwrap();
        drop(mid);
        // A range read whole (kept), a range dropped unread, one that ends mid-block.
        for (range, read) in [
            ("bytes=0-99", true),
            ("bytes=100-", false),
            ("bytes=-1", true),
        ] {
            let res = send(plain().header("range", range)).await;
            assert_eq!(res.status(), 206, "{range}");
            let mut b = res.into_body();
            if read {
                while let Some(f) = b.frame().await {
                    f.unwrap();
                }
                kept.push(b);
            }
        }
        // HEAD, a 304, a 416: no body to read, kept.
        for b in [
            Request::head("http://t/big"),
            plain().header("if-none-match", "\"v1\""),
            plain().header("range", format!("bytes={LEN}-")),
        ] {
            kept.push(send(b).await.into_body());
        }

        // A new response for the URL is stored without waiting.
        version.store(2, Ordering::SeqCst);
        let req = Request::get("http://t/big")
            .header("cache-control", "no-cache")
            .body(Full::default())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
        let stored = tokio::time::timeout(STUCK, async {
            loop {
                disk.flush().await.unwrap();
                if let Some((x, body)) = answer_of(svc.clone()).await {
                    if body == body_of(2, LEN) {
                        break x;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the new response waited for bodies that had ended or gone");
        assert_eq!(stored, "HIT-DISK");
        drop(kept);
    })
    .await
    .expect("bounded");
}
