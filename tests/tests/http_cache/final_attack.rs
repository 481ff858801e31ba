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

/// Two origin servers behind one name with different modification times for one file
/// (a `Last-Modified` validator only): the stored response has `T1`; a revalidation
/// reaches the other server, which answers `304` with `Last-Modified: T0`. That `304`
/// names another representation (RFC 9111 section 4.3.4: its validator matches no
/// stored response), so it updates nothing: the stored body is never served as `T0`,
/// nor answered `304` to a client that holds `T0`'s body.
#[tokio::test]
#[ignore = "reproduces: a 304 with no ETag and another Last-Modified relabels the stored body with the other representation's date"]
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
        // A client holding T0's body asks whether it changed: it did.
        let (third, body) = send(Some(T0)).await;
        assert_eq!(third.status, 200, "{:?}", third.headers["x-cache"]);
        assert_eq!(&body[..], b"the T1 body");
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
#[ignore = "reproduces: when the request asked again after a 304 naming another ETag fails (error or 5xx), stale-if-error is not applied"]
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
#[ignore = "reproduces: a lookup between a spooled response's queueing and its write promotes the older small response back into memory, hiding the new one"]
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
#[ignore = "reproduces: every new response for a URL waiting on a slow reader stays spooled for the whole wait: one slow client and N requests hold N bodies of the disk tier's spool bound"]
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
#[ignore = "reproduces: a new response that varies replaces a large record without Vary at once (the index is written under the URL): the download in progress is cut, replace_wait is bypassed"]
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
#[ignore = "reproduces: a second part added to a record that had bytes put in front of its kept ones loses the record's lineage: downloads of the stored part are cut"]
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

/// A stale response served while it is refreshed in the background
/// (`stale-while-revalidate`); the origin answers the refresh with `304` for another
/// entity tag. The refresh then has nothing to update; the response it names is the one
/// to store, so it is fetched (as a request in the foreground does): clients are not
/// served the old representation, and the origin asked again, on every request of the
/// window.
#[tokio::test]
#[ignore = "reproduces: a background refresh answered 304 for another ETag stores nothing and fetches nothing: every request of the stale-while-revalidate window gets the old body and sends one more conditional request"]
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

/// A body that sends `frames` frames of `frame` bytes, each after a short pause (an
/// origin trickling its bytes).
struct Trickle {
    frames: usize,
    frame: usize,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.frames == 0 {
            return std::task::Poll::Ready(None);
        }
        let pause = self
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(2))));
        std::task::ready!(std::future::Future::poll(pause.as_mut(), cx));
        self.pause = None;
        self.frames -= 1;
        let n = self.frame;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![b'x'; n])))))
    }
}

/// Write system calls made by this process so far.
fn write_calls() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// An origin that trickles a large body in small frames, a pause between each: the
/// spool file still gets the frames gathered, not a write (and a trip to the blocking
/// pool) per frame because the file kept up with the previous one. The write calls are
/// counted against the same trickle through a cache that spools nothing (the runtime's
/// own wake-ups write too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reproduces: frames that arrive slower than the file takes them are written one by one (a write and a blocking-pool trip per frame)"]
async fn a_trickled_body_is_spooled_in_gathered_writes() {
    const FRAMES: usize = 200;
    const FRAME: usize = 1024;
    async fn writes_through(store: tower_cache::Cache, disk: Option<tower_cache::DiskTier>) -> u64 {
        let origin = tower::service_fn(|_req: Request<Full<Bytes>>| async move {
            // The first frame fills what memory keeps; the trickle is spooled.
            let head = Full::new(Bytes::from(vec![b'x'; 1 << 20]));
            let trickle = Trickle {
                frames: FRAMES,
                frame: FRAME,
                pause: None,
            };
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("cache-control", "max-age=600")
                    .body(Chain(Some(head), trickle))
                    .unwrap(),
            )
        });
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let before = write_calls();
        let res = svc.oneshot(get("http://t/trickle", None)).await.unwrap();
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), (1 << 20) + FRAMES * FRAME);
        let writes = write_calls() - before;
        if let Some(disk) = disk {
            while disk.stats().entries == 0 {
                disk.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        writes
    }
    tokio::time::timeout(BOUND, async {
        let memory_only = tower_cache::Cache::new(
            tower_cache::MemoryTier::builder()
                .max_value_bytes(1 << 20)
                .build()
                .unwrap(),
        );
        let baseline = writes_through(memory_only, None).await;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let spooled = writes_through(store, Some(disk)).await;
        let extra = spooled.saturating_sub(baseline);
        assert!(
            extra < FRAMES as u64 / 4,
            "{extra} more write calls ({spooled} against {baseline}) for {FRAMES} spooled frames of {FRAME} bytes"
        );
    })
    .await
    .expect("bounded");
}

/// A body of one ready frame, then another body.
struct Chain(Option<Full<Bytes>>, Trickle);

impl http_body::Body for Chain {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(mut first) = self.0.take() {
            if let std::task::Poll::Ready(Some(f)) = std::pin::Pin::new(&mut first).poll_frame(cx) {
                return std::task::Poll::Ready(Some(f));
            }
        }
        std::pin::Pin::new(&mut self.1).poll_frame(cx)
    }
}

/// A `HEAD` for a stale stored response is revalidated; the origin answers `304` for
/// another entity tag, so the cache asks again without validators: with `HEAD`, the
/// method the client used, not a `GET` that makes the origin send the whole body.
#[tokio::test]
#[ignore = "reproduces: the request asked again after a 304 for another ETag is always a GET: a client's HEAD makes the origin send the whole body"]
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

/// Parts combined on disk are bounded by the largest body the cache stores
/// (`max_body`), as parts combined in memory are: two adjacent parts each within it,
/// whose union is not, do not make a stored body past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reproduces: a part extending a stored part on disk ignores max_body: the union is stored past it"]
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
        assert_eq!(
            x, "MISS",
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
