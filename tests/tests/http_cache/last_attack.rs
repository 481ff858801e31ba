//! Attacks on the order of the writes that wait for the bodies streaming from the large
//! record they replace: the newest response a URL got is the one that stays stored.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_layer::Layer;

use super::disk_parts::{body_of, get, store_on};
use super::*;

/// Longer than any test runs.
const FOREVER: Duration = Duration::from_secs(3600);

/// Larger than the memory tier takes (1 MiB): spooled, stored on disk only.
const LEN: usize = 2 << 20;

/// A response body fed by the test, a chunk at a time; it ends when its sender goes.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|d| Ok(Frame::data(d))))
    }
}

type Origin =
    tower::util::BoxCloneSyncService<Request<Full<Bytes>>, Response<Fed>, std::convert::Infallible>;

/// An origin whose `n`th answer (from 1) is version `n`: a cacheable `200` (ETag
/// `"v<n>"`, `Vary: accept-language` for the answers `vary` picks) whose body the test
/// feeds through the sender handed out on `bodies`.
fn fed_origin(vary: fn(usize) -> bool) -> (Origin, mpsc::Receiver<(usize, mpsc::Sender<Bytes>)>) {
    let (tx, bodies) = mpsc::channel(4);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let svc = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let tx = tx.clone();
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        async move {
            let (feed, body) = mpsc::channel(8);
            tx.send((n, feed)).await.unwrap();
            let mut b = Response::builder()
                .header("cache-control", "max-age=600")
                .header("etag", format!("\"v{n}\""));
            if vary(n) {
                b = b.header("vary", "accept-language");
            }
            let res = b.body(Fed(body)).unwrap();
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    (Origin::new(svc), bodies)
}

/// Feeds the whole body of version `n`, in four chunks.
async fn feed_all(feed: &mpsc::Sender<Bytes>, n: usize) {
    let body = body_of(n, LEN);
    for i in 0..4 {
        let q = LEN / 4;
        feed.send(body.slice(i * q..(i + 1) * q)).await.unwrap();
    }
}

fn no_cache() -> Request<Full<Bytes>> {
    Request::get("http://t/big")
        .header("cache-control", "no-cache")
        .header("accept-language", "en")
        .body(Full::default())
        .unwrap()
}

/// Version 1 is stored on disk (a slow client streams it when `slow_client`). Request A
/// (which asks the origin: `no-cache`) gets version 2, whose body trickles; request B,
/// sent after A, gets version 3 whole (which waits for the slow client, if any). A's
/// body ends last. The ETag then stored.
async fn older_ending_last(slow_client: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (store, disk) = store_on(dir.path(), 1 << 20);
    let (origin, mut bodies) = fed_origin(|_| false);
    let svc = HttpCacheLayer::new(store.clone())
        .max_body(80 << 20)
        .collapse_wait(Duration::ZERO)
        .replace_wait(FOREVER)
        .layer(origin);
    let settle = || async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        disk.flush().await.unwrap();
    };

    // Version 1 stored.
    let res = svc
        .clone()
        .oneshot(get("http://t/big", None))
        .await
        .unwrap();
    let (n, feed) = bodies.recv().await.unwrap();
    assert_eq!(n, 1);
    let read = tokio::spawn(res.into_body().collect());
    feed_all(&feed, 1).await;
    drop(feed);
    read.await.unwrap().unwrap();
    settle().await;
    assert_eq!(disk.stats().entries, 1);

    // A slow client of version 1.
    let res = svc
        .clone()
        .oneshot(get("http://t/big", None))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "HIT-DISK");
    let mut slow = res.into_body();
    slow.frame().await.unwrap().unwrap();
    if !slow_client {
        drop(slow);
        slow = Default::default();
    }

    // A: version 2, its body held open.
    let a = svc.clone().oneshot(no_cache()).await.unwrap();
    let (n, feed_a) = bodies.recv().await.unwrap();
    assert_eq!(n, 2);
    let read_a = tokio::spawn(a.into_body().collect());
    feed_all(&feed_a, 2).await;

    // B, sent after A: version 3, whole.
    let b = svc.clone().oneshot(no_cache()).await.unwrap();
    let (n, feed_b) = bodies.recv().await.unwrap();
    assert_eq!(n, 3);
    let read_b = tokio::spawn(b.into_body().collect());
    feed_all(&feed_b, 3).await;
    drop(feed_b);
    assert!(read_b.await.unwrap().unwrap().to_bytes() == body_of(3, LEN));
    settle().await;

    // A's body ends now.
    drop(feed_a);
    assert!(read_a.await.unwrap().unwrap().to_bytes() == body_of(2, LEN));
    settle().await;

    // The slow client goes: a waiting write is made.
    drop(slow);
    settle().await;
    let res = svc
        .clone()
        .oneshot(get("http://t/big", None))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-cache"], "HIT-DISK");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let n: usize = etag.trim_matches('"')[1..].parse().unwrap();
    assert!(body == body_of(n, LEN), "the body is of the ETag's version");
    etag
}

/// Without a slow client, B's write overtakes A's fill: version 3 stays stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newer_response_stays_stored_when_nothing_waits() {
    let etag = tokio::time::timeout(BOUND, older_ending_last(false))
        .await
        .expect("bounded");
    assert_eq!(etag, "\"v3\"");
}

/// With a slow client, B's version 3 waits for it; A's older version 2, whose body ends
/// later, supersedes it (a newer registration drops the one waiting) and is stored once
/// the client goes: the outcome flips on whether someone was downloading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_response_ending_last_does_not_supersede_a_newer_waiting_one() {
    let etag = tokio::time::timeout(BOUND, older_ending_last(true))
        .await
        .expect("bounded");
    assert_eq!(
        etag, "\"v3\"",
        "the response of the request sent before the newest"
    );
}

/// A spooled response ends while its URL is purged (its key deleted), the request
/// having been sent before the purge began: the purge must win, whatever the order the
/// two meet in. Swept over many small spooled responses, the purge started at offsets
/// around the body's end. The store of a spooled response once checked its ticket, then
/// queued its write with no fence, so a purge queued between the two was applied first
/// (1 to 2 times in 3,000 rounds on a loaded 2-core machine). Its write now begins only
/// if the ticket holds, in one step, and the writer applies it only if no other write
/// began since; the sweep stays as a check of that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_as_a_spooled_response_ends_always_wins() {
    const SMALL: usize = 16 << 10;
    tokio::time::timeout(BOUND * 8, async {
        let dir = tempfile::tempdir().unwrap();
        let disk = tower_cache::DiskTier::builder(dir.path())
            .map_size(1 << 30)
            .max_value_bytes(1 << 20)
            .open()
            .unwrap();
        let memory = tower_cache::MemoryTier::builder()
            .max_entries(1000)
            .max_value_bytes(4 << 10)
            .build()
            .unwrap();
        let store = tower_cache::Cache::new(memory).with_disk(disk.clone());
        let (origin, mut bodies) = fed_origin(|_| false);
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(1 << 20)
            .layer(origin);
        let mut stored_after_purge = Vec::new();
        for i in 0..3000usize {
            let res = svc
                .clone()
                .oneshot(get(&format!("http://t/k{i}"), None))
                .await
                .unwrap();
            let (_, feed) = bodies.recv().await.unwrap();
            let read = tokio::spawn(res.into_body().collect());
            feed.send(Bytes::from(vec![7u8; SMALL])).await.unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let purge = tokio::spawn({
                let (store, barrier) = (store.clone(), barrier.clone());
                async move {
                    barrier.wait();
                    let spin = std::time::Instant::now();
                    while spin.elapsed() < Duration::from_micros((i * 7 % 120) as u64) {
                        std::hint::spin_loop();
                    }
                    store.delete(&format!("http:t/k{i}")).await.unwrap();
                }
            });
            barrier.wait();
            drop(feed);
            read.await.unwrap().unwrap();
            purge.await.unwrap();
            // Any spooled write still under way is applied.
            tokio::time::sleep(Duration::from_millis(2)).await;
            disk.flush().await.unwrap();
            if disk.stats().entries > 0 {
                stored_after_purge.push(i);
                store.clear().await.unwrap();
            }
        }
        assert!(
            stored_after_purge.is_empty(),
            "stored after the purge in rounds {stored_after_purge:?}"
        );
    })
    .await
    .expect("bounded");
}

/// A stored response (`ETag: "v1"`, stale at once) is revalidated; the origin answers
/// with a `304` whose `ETag` names something, but not in a form the cache reads: bare
/// (`v2`), or two fields. Such a `304` does not name the stored response, so it must not
/// update it (the retry without validators brings the whole response); read as "no
/// `ETag`", it freshens the stored body and serves it under the `304`'s fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_with_an_etag_the_cache_cannot_read_updates_nothing() {
    tokio::time::timeout(BOUND, async {
        let mut updated = Vec::new();
        for etags in [&["v2"][..], &["\"v2\"", "\"v2\""][..]] {
            let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let origin = tower::service_fn({
                let calls = calls.clone();
                move |req: Request<Full<Bytes>>| {
                    let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    let res = if req.headers().contains_key("if-none-match") {
                        let mut b = Response::builder()
                            .status(304)
                            .header("cache-control", "max-age=600");
                        for e in etags {
                            b = b.header("etag", *e);
                        }
                        b.body(Full::default())
                    } else {
                        Response::builder()
                            .header("cache-control", "max-age=0")
                            .header("etag", format!("\"v{n}\""))
                            .body(Full::new(Bytes::from(format!("body {n}"))))
                    };
                    async move { Ok::<_, std::convert::Infallible>(res.unwrap()) }
                }
            });
            let store = tower_cache::Cache::new(
                tower_cache::MemoryTier::builder()
                    .max_entries(100)
                    .build()
                    .unwrap(),
            );
            let svc = HttpCacheLayer::new(store).layer(origin);
            let res = svc.clone().oneshot(get("http://t/e", None)).await.unwrap();
            res.into_body().collect().await.unwrap();
            let res = svc.clone().oneshot(get("http://t/e", None)).await.unwrap();
            let x = res.headers()["x-cache"].to_str().unwrap().to_owned();
            let etag = format!(
                "{:?}",
                res.headers().get_all("etag").iter().collect::<Vec<_>>()
            );
            let body = res.into_body().collect().await.unwrap().to_bytes();
            if (x.as_str(), &body[..]) != ("MISS", &b"body 3"[..]) {
                updated.push(format!("304 with {etags:?}: {x} {body:?} under {etag}"));
            }
        }
        assert!(updated.is_empty(), "{updated:#?}");
    })
    .await
    .expect("bounded");
}

/// The origin of a URL flips between a response that varies (`accept-language`) and one
/// that does not, each large (stored on disk). Each varying one makes a new index of
/// variants and stores its variant under it; each plain one replaces the index where it
/// is, but the variants it listed stay on disk, listed nowhere, until their TTL: one
/// more large record per flip, past `max_variants`, that no request can reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_response_that_replaces_an_index_leaves_no_variant_behind() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, mut bodies) = fed_origin(|n| n % 2 == 0);
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .max_variants(2)
            .layer(origin);
        let mut entries = Vec::new();
        for n in 1..=7 {
            let res = svc.clone().oneshot(no_cache()).await.unwrap();
            let (m, feed) = bodies.recv().await.unwrap();
            assert_eq!(m, n);
            let read = tokio::spawn(res.into_body().collect());
            feed_all(&feed, n).await;
            drop(feed);
            assert!(read.await.unwrap().unwrap().to_bytes() == body_of(n, LEN));
            tokio::time::sleep(Duration::from_millis(100)).await;
            disk.flush().await.unwrap();
            entries.push(disk.stats().entries);
        }
        // A plain response: its record alone; a varying one: its index and variant.
        assert_eq!(
            entries,
            [1, 2, 1, 2, 1, 2, 1],
            "records on disk after each response"
        );
    })
    .await
    .expect("bounded");
}
