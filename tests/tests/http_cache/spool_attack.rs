//! Attacks on the spool path of the HTTP cache (a response too large for the memory tier
//! copied to a spool file of the disk tier as it streams): bodies of tiny frames, a
//! runtime shut down mid-spool, a server that stops at `is_end_stream`, a purge while a
//! response is spooled.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_layer::Layer;

use super::disk_parts::{get, store_on};
use super::disk_spool::{fed_origin, spool_files, until, FedOrigin};
use super::*;

const MIB: usize = 1 << 20;

/// A body of `left` bytes in frames of `frame` bytes, each ready at once; with
/// `known_len` it says how long it is and that it has ended once all is sent (as a body
/// with a `Content-Length` from a real connection does).
struct Frames {
    left: usize,
    frame: usize,
    known_len: bool,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.frame.min(self.left);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.known_len && self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.known_len {
            SizeHint::with_exact(self.left as u64)
        } else {
            SizeHint::default()
        }
    }
}

type FramesOrigin = tower::util::BoxCloneSyncService<
    Request<Full<Bytes>>,
    Response<Frames>,
    std::convert::Infallible,
>;

/// An origin answering every request with a cacheable `200` of `len` bytes in frames of
/// `frame` bytes.
fn frames_origin(len: usize, frame: usize, known_len: bool) -> FramesOrigin {
    FramesOrigin::new(tower::service_fn(
        move |_req: Request<Full<Bytes>>| async move {
            let mut b = Response::builder()
                .header("cache-control", "max-age=600")
                .header("etag", "\"v1\"");
            if known_len {
                b = b.header("content-length", len);
            }
            Ok::<_, std::convert::Infallible>(
                b.body(Frames {
                    left: len,
                    frame,
                    known_len,
                })
                .unwrap(),
            )
        },
    ))
}

/// A response whose body is dropped while its runtime shuts down, mid-spool: its spool
/// file must go (the disk tier outlives the runtime and is used from another one).
/// With a multi-threaded runtime simply dropped, the file stays in most runs, not all.
#[test]
fn a_spool_file_dropped_as_its_runtime_shuts_down_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, disk) = store_on(dir.path(), MIB);
    // A runtime of one thread, shut down with a timeout: its tasks are dropped in its
    // context once its blocking pool has stopped taking work.
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        tokio::time::timeout(BOUND, async {
            let (origin, mut bodies) = fed_origin();
            let svc = HttpCacheLayer::new(store.clone())
                .max_body(80 * MIB)
                .layer(origin);
            let res = svc.oneshot(get("http://t/shut", None)).await.unwrap();
            let feed = bodies.recv().await.unwrap();
            let mut body = res.into_body();
            for _ in 0..3 {
                feed.send(Bytes::from(vec![1u8; MIB])).await.unwrap();
                body.frame().await.unwrap().unwrap();
            }
            until(|| spool_files(dir.path()).first().is_some_and(|&n| n > 0)).await;
            // The body is left in a task that waits for ever: the runtime's shutdown
            // drops it.
            tokio::spawn(async move {
                let _keep = (body, feed);
                std::future::pending::<()>().await;
            });
        })
        .await
        .expect("bounded");
    });
    first.shutdown_timeout(BOUND);
    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let gone = tokio::time::timeout(Duration::from_secs(5), async {
            until(|| spool_files(dir.path()).is_empty()).await;
        })
        .await;
        assert_eq!(disk.stats().spooled_bytes, 0, "the count went");
        assert!(
            gone.is_ok(),
            "spool files left behind while the tier is open: {:?}",
            spool_files(dir.path())
        );
    });
}

/// A server that stops polling once the body says it has ended (a known length, all
/// sent) still gets the large response stored, and no spool file stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_body_of_known_length_is_stored_when_the_server_stops_at_its_end() {
    tokio::time::timeout(BOUND, async {
        const LEN: usize = 5 * MIB;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let svc = HttpCacheLayer::new(store)
            .max_body(80 * MIB)
            .layer(frames_origin(LEN, 64 << 10, true));
        let res = svc
            .clone()
            .oneshot(get("http://t/known", None))
            .await
            .unwrap();
        let mut body = res.into_body();
        let mut got = 0;
        // As hyper's server does: no poll after the body says it has ended.
        while !body.is_end_stream() {
            let frame = body.frame().await.unwrap().unwrap();
            got += frame.into_data().unwrap().len();
        }
        drop(body);
        assert_eq!(got, LEN);
        until(|| disk.stats().entries == 1).await;
        until(|| spool_files(dir.path()).is_empty() && disk.stats().spooled_bytes == 0).await;
        let res = svc.oneshot(get("http://t/known", None)).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        let stored = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(stored.len(), LEN);
    })
    .await
    .expect("bounded");
}

/// A write to the URL (an unsafe method, which invalidates it) while its response is
/// spooled: the spooled response is not stored, and its file goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_while_a_response_is_spooled_stores_nothing_and_leaves_no_file() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let (origin, mut bodies) = fed_origin();
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 * MIB)
            .layer(origin);
        let res = svc.clone().oneshot(get("http://t/p", None)).await.unwrap();
        let feed = bodies.recv().await.unwrap();
        let reader =
            tokio::spawn(
                async move { res.into_body().collect().await.map(|b| b.to_bytes().len()) },
            );
        for _ in 0..3 {
            feed.send(Bytes::from(vec![2u8; MIB])).await.unwrap();
        }
        until(|| !spool_files(dir.path()).is_empty()).await;
        // The write to the same URL, answered and invalidating.
        let post = tokio::spawn({
            let svc = svc.clone();
            async move {
                let req = Request::post("http://t/p").body(Full::default()).unwrap();
                let res = svc.oneshot(req).await.unwrap();
                res.into_body().collect().await.unwrap();
            }
        });
        drop(bodies.recv().await.unwrap());
        post.await.unwrap();
        for _ in 0..3 {
            feed.send(Bytes::from(vec![2u8; MIB])).await.unwrap();
        }
        drop(feed);
        assert_eq!(reader.await.unwrap().unwrap(), 6 * MIB);
        until(|| spool_files(dir.path()).is_empty() && disk.stats().spooled_bytes == 0).await;
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 0, "nothing stored past the purge");
    })
    .await
    .expect("bounded");
}

/// A URL whose stored response (small, in the memory tier) is replaced by a large one
/// (spooled, stored on disk only): later requests get the new response, not the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_replacing_a_small_one_is_what_later_requests_get() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let origin = tower::service_fn({
            let calls = calls.clone();
            move |_req: Request<Full<Bytes>>| {
                let call = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                async move {
                    let body = if call == 1 {
                        Bytes::from_static(b"small v1")
                    } else {
                        Bytes::from(vec![b'2'; 4 * MIB])
                    };
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .header("cache-control", "max-age=600")
                            .header("etag", format!("\"v{call}\""))
                            .body(Full::new(body))
                            .unwrap(),
                    )
                }
            }
        });
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 * MIB)
            .layer(origin);
        let body = svc
            .clone()
            .oneshot(get("http://t/r", None))
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"small v1");
        until(|| store.memory().stats().entries >= 1).await;
        disk.flush().await.unwrap();
        // The client asks for a fresh copy: the origin answers with the large one.
        let req = Request::get("http://t/r")
            .header("cache-control", "no-cache")
            .body(Full::default())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.headers()["etag"], "\"v2\"");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 4 * MIB);
        until(|| spool_files(dir.path()).is_empty() && disk.stats().spooled_bytes == 0).await;
        disk.flush().await.unwrap();
        let res = svc.oneshot(get("http://t/r", None)).await.unwrap();
        assert_eq!(
            res.headers()["etag"],
            "\"v2\"",
            "served from {:?}",
            res.headers().get("x-cache")
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    })
    .await
    .expect("bounded");
}

/// Streams a large response of `len` bytes through `svc` from the fed origin; returns
/// the bytes the client got.
async fn stream_one(
    svc: &tower_cache::http::HttpCacheService<FedOrigin>,
    bodies: &mut mpsc::Receiver<mpsc::Sender<Bytes>>,
    path: &str,
    chunks: usize,
) -> usize {
    let res = svc
        .clone()
        .oneshot(get(&format!("http://t/{path}"), None))
        .await
        .unwrap();
    let feed = bodies.recv().await.unwrap();
    let reader =
        tokio::spawn(async move { res.into_body().collect().await.map(|b| b.to_bytes().len()) });
    for _ in 0..chunks {
        feed.send(Bytes::from(vec![3u8; MIB])).await.unwrap();
    }
    drop(feed);
    reader.await.unwrap().unwrap()
}

/// The spool folder removed while the tier is open (a temporary-file cleaner, another
/// tier opening at the same moment): it is made again, and large responses are still
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_are_stored_again_after_the_spool_folder_is_removed() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let (origin, mut bodies) = fed_origin();
        let svc = HttpCacheLayer::new(store).max_body(80 * MIB).layer(origin);
        std::fs::remove_dir_all(dir.path().join("spool")).unwrap();
        // The folder is made again (and locked) for the next spool file.
        for path in ["a", "b"] {
            assert_eq!(stream_one(&svc, &mut bodies, path, 3).await, 3 * MIB);
            until(|| disk.stats().spooled_bytes == 0).await;
        }
        disk.flush().await.unwrap();
        let stats = disk.stats();
        assert_eq!(stats.spool_faults, 0, "{stats:?}");
        assert_eq!(stats.entries, 2, "{stats:?}");
    })
    .await
    .expect("bounded");
}

/// The disk tier closed while a response is spooled: the client gets it all, nothing is
/// stored, and neither the file nor its count stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_closed_mid_spool_leaves_no_file_and_no_count() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let (origin, mut bodies) = fed_origin();
        let svc = HttpCacheLayer::new(store).max_body(80 * MIB).layer(origin);
        let res = svc.clone().oneshot(get("http://t/c", None)).await.unwrap();
        let feed = bodies.recv().await.unwrap();
        let reader =
            tokio::spawn(
                async move { res.into_body().collect().await.map(|b| b.to_bytes().len()) },
            );
        for _ in 0..3 {
            feed.send(Bytes::from(vec![4u8; MIB])).await.unwrap();
        }
        until(|| !spool_files(dir.path()).is_empty()).await;
        disk.close().await;
        for _ in 0..3 {
            feed.send(Bytes::from(vec![4u8; MIB])).await.unwrap();
        }
        drop(feed);
        assert_eq!(reader.await.unwrap().unwrap(), 6 * MIB);
        until(|| spool_files(dir.path()).is_empty() && disk.stats().spooled_bytes == 0).await;
        assert_eq!(disk.stats().entries, 0);
    })
    .await
    .expect("bounded");
}

/// The bytes spooled at once are capped at the tier's byte bound, apart from what is
/// stored, which eviction keeps within the bound as spooled responses are stored: a full
/// tier still stores a new large response, and its disk use stays under twice the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tier_spools_a_new_response_within_twice_its_bound_and_makes_room_for_it() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let disk = tower_cache::DiskTier::builder(dir.path())
            .map_size(1 << 30)
            .max_bytes(18 * MIB as u64)
            .max_value_bytes(8 * MIB)
            .open()
            .unwrap();
        let memory = tower_cache::MemoryTier::builder()
            .max_value_bytes(MIB)
            .build()
            .unwrap();
        let store = tower_cache::Cache::new(memory).with_disk(disk.clone());
        let (origin, mut bodies) = fed_origin();
        let svc = HttpCacheLayer::new(store).max_body(80 * MIB).layer(origin);
        for path in ["a", "b"] {
            assert_eq!(stream_one(&svc, &mut bodies, path, 7).await, 7 * MIB);
        }
        disk.flush().await.unwrap();
        until(|| disk.stats().entries == 2).await;
        // The tier holds about 14 MiB; a third response of 7 MiB streams in.
        let res = svc.clone().oneshot(get("http://t/c", None)).await.unwrap();
        let feed = bodies.recv().await.unwrap();
        let reader =
            tokio::spawn(
                async move { res.into_body().collect().await.map(|b| b.to_bytes().len()) },
            );
        for _ in 0..7 {
            feed.send(Bytes::from(vec![5u8; MIB])).await.unwrap();
        }
        until(|| disk.stats().spooled_bytes >= 6 * MIB as u64 || disk.stats().spool_faults > 0)
            .await;
        let stats = disk.stats();
        drop(feed);
        assert_eq!(reader.await.unwrap().unwrap(), 7 * MIB);
        assert_eq!(stats.spool_faults, 0, "{stats:?}");
        assert!(stats.spooled_bytes <= stats.bound_bytes, "{stats:?}");
        assert!(
            stats.stored_bytes + stats.spooled_bytes <= 2 * stats.bound_bytes,
            "{stats:?}"
        );
        // Stored, with room made for it.
        until(|| disk.stats().spooled_bytes == 0).await;
        disk.flush().await.unwrap();
        let stats = disk.stats();
        assert!(stats.stored_bytes <= stats.bound_bytes, "{stats:?}");
        assert!(stats.evictions >= 1, "{stats:?}");
    })
    .await
    .expect("bounded");
}

/// The tier compacted while a response is spooled: the response is stored whole from
/// its file afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_spooled_across_a_compaction_is_stored_whole() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let (origin, mut bodies) = fed_origin();
        let svc = HttpCacheLayer::new(store).max_body(80 * MIB).layer(origin);
        let res = svc.clone().oneshot(get("http://t/k", None)).await.unwrap();
        let feed = bodies.recv().await.unwrap();
        let reader =
            tokio::spawn(
                async move { res.into_body().collect().await.map(|b| b.to_bytes().len()) },
            );
        let chunk = |i: u8| Bytes::from(vec![i; MIB]);
        for i in 0..3 {
            feed.send(chunk(i)).await.unwrap();
        }
        until(|| !spool_files(dir.path()).is_empty()).await;
        disk.compact().await.unwrap();
        for i in 3..6 {
            feed.send(chunk(i)).await.unwrap();
        }
        drop(feed);
        assert_eq!(reader.await.unwrap().unwrap(), 6 * MIB);
        until(|| disk.stats().entries == 1 && spool_files(dir.path()).is_empty()).await;
        let res = svc.oneshot(get("http://t/k", None)).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 6 * MIB);
        for i in 0..6u8 {
            let at = usize::from(i) * MIB;
            assert!(got[at..at + MIB].iter().all(|&b| b == i), "MiB {i}");
        }
    })
    .await
    .expect("bounded");
}

/// Two variants of one URL (`Vary: Accept-Language`) spooled at the same time, each
/// from its own body: each request gets its own variant's bytes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_spooled_at_once_each_keep_their_own_bytes() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let origin = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let lang = req.headers()["accept-language"].as_bytes()[0];
            let body = Frames {
                left: 3 * MIB + usize::from(lang),
                frame: 64 << 10,
                known_len: false,
            };
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=600")
                    .header("vary", "accept-language")
                    .header("content-language", req.headers()["accept-language"].clone())
                    .body(body)
                    .unwrap(),
            )
        });
        let svc = HttpCacheLayer::new(store).max_body(80 * MIB).layer(origin);
        let ask = |lang: &'static str| {
            let svc = svc.clone();
            async move {
                let req = Request::get("http://t/v")
                    .header("accept-language", lang)
                    .body(Full::default())
                    .unwrap();
                let res = svc.oneshot(req).await.unwrap();
                let status = res.headers()["x-cache"].to_str().unwrap().to_owned();
                let lang = res.headers()["content-language"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                let len = res.into_body().collect().await.unwrap().to_bytes().len();
                (status, lang, len)
            }
        };
        let (a, b) = tokio::join!(ask("en"), ask("fr"));
        assert_eq!((a.1.as_str(), a.2), ("en", 3 * MIB + usize::from(b'e')));
        assert_eq!((b.1.as_str(), b.2), ("fr", 3 * MIB + usize::from(b'f')));
        until(|| spool_files(dir.path()).is_empty() && disk.stats().spooled_bytes == 0).await;
        disk.flush().await.unwrap();
        for (lang, first) in [("en", b'e'), ("fr", b'f')] {
            let (status, got_lang, len) = ask(lang).await;
            assert_eq!(status, "HIT-DISK", "{lang}");
            assert_eq!(
                (got_lang.as_str(), len),
                (lang, 3 * MIB + usize::from(first))
            );
        }
    })
    .await
    .expect("bounded");
}

/// An origin that answers a range of a representation of `total` bytes (byte `i` is
/// `i % 251`) with a `206` of that range, and anything else with the whole `200`.
fn range_origin(total: usize) -> FramesOriginBytes {
    FramesOriginBytes::new(tower::service_fn(
        move |req: Request<Full<Bytes>>| async move {
            let whole: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            let range = req
                .headers()
                .get("range")
                .and_then(|r| r.to_str().ok())
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split_once('-'))
                .map(|(a, b)| {
                    let a: usize = a.parse().unwrap();
                    let b: usize = if b.is_empty() {
                        total - 1
                    } else {
                        b.parse().unwrap()
                    };
                    (a, b.min(total - 1))
                });
            let b = Response::builder()
                .header("cache-control", "max-age=600")
                .header("etag", "\"r1\"");
            let res = match range {
                Some((a, z)) => b
                    .status(206)
                    .header("content-range", format!("bytes {a}-{z}/{total}"))
                    .body(Full::new(Bytes::from(whole[a..=z].to_vec()))),
                None => b.body(Full::new(Bytes::from(whole))),
            };
            Ok::<_, std::convert::Infallible>(res.unwrap())
        },
    ))
}

type FramesOriginBytes = tower::util::BoxCloneSyncService<
    Request<Full<Bytes>>,
    Response<Full<Bytes>>,
    std::convert::Infallible,
>;

/// A large `206` spooled: stored as the part it is (a range within it is then answered
/// from disk with the right bytes), or as the whole `200` when it covers everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_parts_are_stored_as_what_they_cover() {
    tokio::time::timeout(BOUND, async {
        const TOTAL: usize = 8 * MIB;
        let want = |a: usize, z: usize| -> Vec<u8> { (a..=z).map(|i| (i % 251) as u8).collect() };
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let svc = HttpCacheLayer::new(store)
            .max_body(80 * MIB)
            .layer(range_origin(TOTAL));
        // A part in the middle, 3 MiB.
        let (a, z) = (MIB + 7, 4 * MIB + 6);
        let res = svc
            .clone()
            .oneshot(get("http://t/part", Some(&format!("bytes={a}-{z}"))))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert!(got == want(a, z));
        until(|| disk.stats().entries >= 1 && spool_files(dir.path()).is_empty()).await;
        disk.flush().await.unwrap();
        let (b, y) = (2 * MIB + 3, 3 * MIB + 100);
        let res = svc
            .clone()
            .oneshot(get("http://t/part", Some(&format!("bytes={b}-{y}"))))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {b}-{y}/{TOTAL}").as_str()
        );
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert!(got == want(b, y), "bytes of the stored part");

        // A part that covers it all: stored as the whole 200.
        let res = svc
            .clone()
            .oneshot(get("http://t/all", Some("bytes=0-")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), TOTAL);
        until(|| spool_files(dir.path()).is_empty() && disk.stats().spooled_bytes == 0).await;
        disk.flush().await.unwrap();
        let res = svc.oneshot(get("http://t/all", None)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert!(res.headers().get("content-range").is_none());
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert!(got == want(0, TOTAL - 1), "the whole stored");
    })
    .await
    .expect("bounded");
}

/// A body that yields the frames (or the error) it was given, in order.
struct Script(std::collections::VecDeque<Result<Frame<Bytes>, std::io::Error>>);

impl Body for Script {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front())
    }
}

/// A large body ending in trailers, or in an error, once spooled: the client gets the
/// trailers (and the response is stored) or the error (and nothing is stored); no
/// spool file nor count stays either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_body_ending_in_trailers_or_an_error() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let origin = tower::service_fn(|req: Request<Full<Bytes>>| async move {
            let mut frames: std::collections::VecDeque<_> = (0..4)
                .map(|_| Ok(Frame::data(Bytes::from(vec![6u8; MIB]))))
                .collect();
            if req.uri().path() == "/trailers" {
                let mut t = http::HeaderMap::new();
                t.insert("x-sum", "42".parse().unwrap());
                frames.push_back(Ok(Frame::trailers(t)));
            } else {
                frames.push_back(Err(std::io::Error::other("origin went away")));
            }
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=600")
                    .body(Script(frames))
                    .unwrap(),
            )
        });
        let svc = HttpCacheLayer::new(store).max_body(80 * MIB).layer(origin);

        let res = svc
            .clone()
            .oneshot(get("http://t/trailers", None))
            .await
            .unwrap();
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "42");
        assert_eq!(collected.to_bytes().len(), 4 * MIB);
        until(|| disk.stats().entries == 1).await;

        let res = svc
            .clone()
            .oneshot(get("http://t/error", None))
            .await
            .unwrap();
        assert!(res.into_body().collect().await.is_err());
        until(|| spool_files(dir.path()).is_empty() && disk.stats().spooled_bytes == 0).await;
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 1, "the cut body is not stored");
        let res = svc.oneshot(get("http://t/error", None)).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
    })
    .await
    .expect("bounded");
}
