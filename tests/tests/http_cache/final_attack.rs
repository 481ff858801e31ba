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
/// gets it whole (`cache-control` as given, ETag `"v<version>"`, tag `big`), or `304` when it asks
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
                    .header("surrogate-key", "big")
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
/// meanwhile (an unsafe method on it, its tag, a pattern). The purge wins: when the
/// client goes, the waiting response is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_during_the_replace_wait_wins() {
    tokio::time::timeout(BOUND, async {
        for purge in ["unsafe method", "tag", "pattern"] {
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

            match purge {
                "tag" => assert_eq!(store.invalidate_tag("big").await.unwrap(), 1),
                "pattern" => assert_eq!(store.invalidate_pattern("*").await.unwrap(), 1),
                _ => {
                    let post = Request::post("http://t/big").body(Full::default()).unwrap();
                    svc.clone().oneshot(post).await.unwrap();
                }
            }
            // A request of the URL: it waits for the response in flight (whose write is
            // held), then finds the URL purged.
            let next = tokio::spawn(answer_of(svc.clone()));
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(slow);
            let (x, body) = next.await.unwrap().expect("answered once the client went");
            assert_eq!(
                x, "MISS",
                "{purge}: the response that waited was stored over the purge"
            );
            assert!(body == body_of(2, LEN));
        }
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

/// Two origin servers behind one name with different modification times for one file
/// (a `Last-Modified` validator only): the stored response has `T1`; a revalidation
/// reaches the other server, which answers `304` with `Last-Modified: T0`. That `304`
/// names another representation (RFC 9111 section 4.3.4: its validator matches no
/// stored response), so it updates nothing: the stored body is never served as `T0`,
/// nor answered `304` to a client that holds `T0`'s body.
#[tokio::test]
async fn a_304_with_another_last_modified_does_not_relabel_the_stored_body() {
    tokio::time::timeout(BOUND, async {
        const T1: &str = "Tue, 01 Dec 2026 10:00:00 GMT";
        const T0: &str = "Mon, 30 Nov 2026 10:00:00 GMT";
        let origin = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let b = http::Response::builder();
            let res = if req.headers().contains_key("if-modified-since") {
                // The other server: its copy dates from T0, not modified since T1.
                b.status(304)
                    .header("last-modified", T0)
                    .header("cache-control", "max-age=600")
                    .body(Full::default())
            } else {
                b.header("last-modified", T1)
                    .header("cache-control", "max-age=0")
                    .body(Full::new(Bytes::from_static(b"the T1 body")))
            };
            Ok::<_, std::convert::Infallible>(res.unwrap())
        });
        let store = tower_cache::Cache::new(tower_cache::MemoryTier::builder().build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(origin);
        let send = |ims: Option<&'static str>| {
            let svc = svc.clone();
            async move {
                let mut b = Request::get("http://t/f");
                if let Some(d) = ims {
                    b = b.header("if-modified-since", d);
                }
                let res = svc.oneshot(b.body(Full::default()).unwrap()).await.unwrap();
                let (parts, body) = res.into_parts();
                (parts, body.collect().await.unwrap().to_bytes())
            }
        };
        let (first, _) = send(None).await;
        assert_eq!(first.headers["x-cache"], "MISS");
        // Stale: revalidated; the 304 comes from the other server.
        let (second, body) = send(None).await;
        assert_eq!(&body[..], b"the T1 body");
        assert_eq!(
            second.headers["last-modified"], T1,
            "the T1 body served as T0 ({:?})",
            second.headers["x-cache"]
        );
        // Nor is a client holding T0's body told by the cache that T1 is T0: its
        // condition goes to the origin (the stored response is stale), whose answer it
        // gets as it is.
        let (third, _) = send(Some(T0)).await;
        assert_eq!(third.headers["x-cache"], "PASS");
    })
    .await
    .expect("bounded");
}

/// A stored response within its `stale-if-error` window is revalidated; the origin
/// answers `304` for another entity tag, and the request asked again without
/// validators fails. The origin failed: the stale response answers, as it does when the
/// first request fails (RFC 5861 section 4); an origin that keeps answering `304` is
/// asked twice per request, never more.
#[tokio::test]
async fn a_failed_retry_after_a_304_for_another_etag_is_covered_by_stale_if_error() {
    tokio::time::timeout(BOUND, async {
        for (retry_fails_with, name) in [
            (Some(304), "a 304 again"),
            (None, "an error"),
            (Some(503), "a 503"),
        ] {
            let calls = Arc::new(AtomicUsize::new(0));
            let origin = tower::service_fn({
                let calls = calls.clone();
                move |req: Request<Full<Bytes>>| {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let b = http::Response::builder();
                        let res = if n == 0 {
                            b.header("etag", "\"v1\"")
                                .header("cache-control", "max-age=0, stale-if-error=600")
                                .body(Full::new(Bytes::from_static(b"v1 body")))
                        } else if req.headers().contains_key("if-none-match") {
                            b.status(304).header("etag", "\"v2\"").body(Full::default())
                        } else {
                            match retry_fails_with {
                                Some(status) => b
                                    .status(status)
                                    .header("etag", "\"v2\"")
                                    .body(Full::default()),
                                None => {
                                    return Err::<http::Response<Full<Bytes>>, _>(
                                        std::io::Error::other("origin down"),
                                    )
                                }
                            }
                        };
                        Ok(res.unwrap())
                    }
                }
            });
            let store =
                tower_cache::Cache::new(tower_cache::MemoryTier::builder().build().unwrap());
            let svc = HttpCacheLayer::new(store).layer(origin);
            let get = || Request::get("http://t/s").body(Full::default()).unwrap();
            let res = svc.clone().oneshot(get()).await.unwrap();
            res.into_body().collect().await.unwrap();
            let res = svc.clone().oneshot(get()).await;
            assert_eq!(
                calls.load(Ordering::SeqCst),
                3,
                "{name}: asked twice, no more"
            );
            if retry_fails_with == Some(304) {
                // An origin that answers an unconditional request with 304: passed on
                // (the cache has no newer response), never the stored body relabelled.
                let res = res.unwrap();
                assert_ne!(res.status(), 200, "{name}");
                continue;
            }
            let res = res.unwrap_or_else(|e| panic!("{name}: the client got the error: {e}"));
            assert_eq!(
                res.status(),
                200,
                "{name}: {:?}",
                res.headers().get("x-cache")
            );
            assert_eq!(res.headers()["x-cache"], "STALE", "{name}");
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"v1 body", "{name}");
        }
    })
    .await
    .expect("bounded");
}

/// A small response is stored in both tiers; the URL's next response is large (spooled,
/// stored on disk only). A request that reads the disk tier while the large response's
/// write is queued (after the small one left memory, before the writer stored the large
/// one) finds the small one there: it must not put it back into memory, where it would
/// hide the large response for its whole lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_small_response_is_not_promoted_over_a_spooled_one_being_written() {
    tokio::time::timeout(BOUND, async {
        const BIG: usize = 32 << 20;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let version = Arc::new(AtomicUsize::new(1));
        let origin = Origin::new(tower::service_fn({
            let version = version.clone();
            move |_req: Request<Full<Bytes>>| {
                let v = version.load(Ordering::SeqCst);
                let len = if v == 1 { 1000 } else { BIG };
                let res = http::Response::builder()
                    .header("cache-control", "max-age=600")
                    .header("etag", format!("\"v{v}\""))
                    .body(Full::new(body_of(v, len)))
                    .unwrap();
                async move { Ok::<_, std::convert::Infallible>(res) }
            }
        }));
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .layer(origin);
        let (x, body) = answer_of(svc.clone()).await.expect("first");
        assert_eq!((x.as_str(), body.len()), ("MISS", 1000));
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 1, "the small response on disk too");
        // The new, large response (a client that asks the origin).
        version.store(2, Ordering::SeqCst);
        let req = Request::get("http://t/big")
            .header("cache-control", "no-cache")
            .body(Full::default())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes().len(),
            BIG
        );
        // Requests at once, while the writer stores it.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (x, body) = answer_of(svc.clone()).await.expect("answered");
            seen.push((x, body.len()));
        }
        disk.flush().await.unwrap();
        // The large response is on disk: only memory hides it.
        assert_eq!(disk.stats().writes, 2, "the large response was written");
        let (x, body) = answer_of(svc.clone()).await.expect("answered");
        assert!(
            body.len() == BIG,
            "after the write: {x} with {} bytes (before it: {seen:?})",
            body.len()
        );
    })
    .await
    .expect("bounded");
}

/// One slow client of a large stored response, and many requests that make the cache
/// ask the origin for that URL (`no-cache`), each bringing a new response that waits
/// for the slow client. Only the newest of them can ever be the one stored: the older
/// ones do not stay spooled (counted against the disk tier's bound, which every other
/// URL's large responses need) for the whole wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_waiting_for_one_slow_client_do_not_pile_up() {
    tokio::time::timeout(BOUND, async {
        const N: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, version, whole) = versioned_origin("max-age=600");
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .collapse_wait(Duration::ZERO)
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
        for v in 2..2 + N {
            version.store(v, Ordering::SeqCst);
            let req = Request::get("http://t/big")
                .header("cache-control", "no-cache")
                .body(Full::default())
                .unwrap();
            let res = svc.clone().oneshot(req).await.unwrap();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(body == body_of(v, LEN));
        }
        assert_eq!(whole.load(Ordering::SeqCst), 1 + N);
        let held = disk.stats().spooled_bytes;
        drop(slow);
        // The newest is stored.
        let stored = tokio::time::timeout(STUCK, async {
            loop {
                disk.flush().await.unwrap();
                if let Some((_, body)) = answer_of(svc.clone()).await {
                    if body == body_of(1 + N, LEN) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            held <= 2 * LEN as u64,
            "{held} bytes spooled for {N} responses of {LEN} bytes waiting on one client"
        );
        stored.expect("the newest response stored once the client went");
    })
    .await
    .expect("bounded");
}

/// A large stored response without `Vary` is being downloaded when the origin's next
/// response for the URL varies (`Vary: Accept-Encoding`): the URL's record becomes an
/// index of variants. That too replaces the record being read: it waits for the
/// download as any new response does, so the download ends whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_not_cut_by_a_new_response_that_varies() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let version = Arc::new(AtomicUsize::new(1));
        let origin = Origin::new(tower::service_fn({
            let version = version.clone();
            move |_req: Request<Full<Bytes>>| {
                let v = version.load(Ordering::SeqCst);
                let mut b = http::Response::builder()
                    .header("cache-control", "max-age=600")
                    .header("etag", format!("\"v{v}\""));
                if v > 1 {
                    b = b.header("vary", "accept-encoding");
                }
                let res = b.body(Full::new(body_of(v, LEN))).unwrap();
                async move { Ok::<_, std::convert::Infallible>(res) }
            }
        }));
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
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
        let first = slow.frame().await.unwrap().unwrap().into_data().unwrap();
        let mut at = first.len();

        version.store(2, Ordering::SeqCst);
        let req = Request::get("http://t/big")
            .header("cache-control", "no-cache")
            .body(Full::default())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
        disk.flush().await.unwrap();

        let old = body_of(1, LEN);
        let ended = loop {
            match slow.frame().await {
                Some(Ok(f)) => {
                    let d = f.into_data().unwrap();
                    assert!(d == old.slice(at..at + d.len()), "old bytes only");
                    at += d.len();
                }
                Some(Err(e)) => break Some(e.to_string()),
                None => break None,
            }
        };
        assert_eq!(ended, None, "the download was cut after {at} bytes");
        assert_eq!(at, LEN);
    })
    .await
    .expect("bounded");
}

/// A stale response served while it is refreshed in the background
/// (`stale-while-revalidate`); the origin answers the refresh with `304` for another
/// entity tag. The refresh then has nothing to update; the response it names is the one
/// to store, so it is fetched (as a request in the foreground does): clients are not
/// served the old representation, and the origin asked again, on every request of the
/// window.
#[tokio::test]
async fn a_background_refresh_answered_304_for_another_etag_brings_the_new_response() {
    tokio::time::timeout(BOUND, async {
        let calls = Arc::new(AtomicUsize::new(0));
        let origin = tower::service_fn({
            let calls = calls.clone();
            move |req: Request<Full<Bytes>>| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let b = http::Response::builder();
                    let res = if n == 0 {
                        b.header("etag", "\"v1\"")
                            .header("cache-control", "max-age=1, stale-while-revalidate=600")
                            .header("age", "5")
                            .body(Full::new(Bytes::from_static(b"v1 body")))
                    } else if req.headers().contains_key("if-none-match") {
                        b.status(304).header("etag", "\"v2\"").body(Full::default())
                    } else {
                        b.header("etag", "\"v2\"")
                            .header("cache-control", "max-age=600")
                            .body(Full::new(Bytes::from_static(b"v2 body")))
                    };
                    Ok::<_, std::convert::Infallible>(res.unwrap())
                }
            }
        });
        let store = tower_cache::Cache::new(tower_cache::MemoryTier::builder().build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(origin);
        let send = || {
            let svc = svc.clone();
            async move {
                let res = svc
                    .oneshot(Request::get("http://t/w").body(Full::default()).unwrap())
                    .await
                    .unwrap();
                let x = res.headers()["x-cache"].to_str().unwrap().to_owned();
                (x, res.into_body().collect().await.unwrap().to_bytes())
            }
        };
        assert_eq!(send().await.0, "MISS");
        let mut seen = Vec::new();
        for _ in 0..10 {
            let (x, body) = send().await;
            if &body[..] == b"v2 body" {
                break;
            }
            seen.push(x);
            // The refresh runs in the background: give it its turn.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            seen.len() < 10,
            "the old body served {} times ({seen:?}); origin asked {} times",
            seen.len(),
            calls.load(Ordering::SeqCst)
        );
    })
    .await
    .expect("bounded");
}

/// A `HEAD` for a stale stored response is revalidated; the origin answers `304` for
/// another entity tag, so the cache asks again without validators: with `HEAD`, the
/// method the client used, not a `GET` that makes the origin send the whole body.
#[tokio::test]
async fn a_head_asked_again_after_a_304_for_another_etag_stays_a_head() {
    tokio::time::timeout(BOUND, async {
        let methods = Arc::new(std::sync::Mutex::new(Vec::new()));
        let origin = tower::service_fn({
            let methods = methods.clone();
            move |req: Request<Full<Bytes>>| {
                let n = {
                    let mut m = methods.lock().unwrap();
                    m.push(req.method().clone());
                    m.len() - 1
                };
                async move {
                    let b = http::Response::builder();
                    let res = if n == 0 {
                        b.header("etag", "\"v1\"")
                            .header("cache-control", "max-age=0")
                            .body(Full::new(Bytes::from_static(b"v1 body")))
                    } else if req.headers().contains_key("if-none-match") {
                        b.status(304).header("etag", "\"v2\"").body(Full::default())
                    } else {
                        let body = if req.method() == Method::HEAD {
                            Bytes::new()
                        } else {
                            Bytes::from_static(b"v2 body")
                        };
                        b.header("etag", "\"v2\"")
                            .header("cache-control", "max-age=600")
                            .body(Full::new(body))
                    };
                    Ok::<_, std::convert::Infallible>(res.unwrap())
                }
            }
        });
        let store = tower_cache::Cache::new(tower_cache::MemoryTier::builder().build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(origin);
        let res = svc
            .clone()
            .oneshot(Request::get("http://t/h").body(Full::default()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
        let res = svc
            .clone()
            .oneshot(Request::head("http://t/h").body(Full::default()).unwrap())
            .await
            .unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let asked = methods.lock().unwrap().clone();
        assert_eq!(
            asked,
            [Method::GET, Method::HEAD, Method::HEAD],
            "methods the origin saw"
        );
        assert!(body.is_empty(), "a HEAD answered with a body");
    })
    .await
    .expect("bounded");
}
