//! A response too large for the memory tier is copied to a spool file of the disk tier
//! as it streams to the client, and stored from that file: the cache does not hold the
//! whole body in memory while it arrives. A body cut short or over the limit stores
//! nothing and leaves no file behind.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::sync::{mpsc, Mutex};
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_layer::Layer;

use super::disk_parts::{body_of, get, store_on, BLOCK};
use super::*;

const MIB: usize = 1 << 20;

/// A response body fed by the test, a chunk at a time.
pub(super) struct Fed(mpsc::Receiver<Bytes>);

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

pub(super) type FedOrigin =
    tower::util::BoxCloneSyncService<Request<Full<Bytes>>, Response<Fed>, std::convert::Infallible>;

/// An origin whose next answer's body is fed through the sender it hands out on
/// `bodies`: a cacheable `200` with no length given.
pub(super) fn fed_origin() -> (FedOrigin, mpsc::Receiver<mpsc::Sender<Bytes>>) {
    let (tx, bodies) = mpsc::channel(4);
    let svc = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        let tx = tx.clone();
        async move {
            let (feed, body) = mpsc::channel(2);
            tx.send(feed).await.unwrap();
            let res = Response::builder()
                .header("cache-control", "max-age=600")
                .header("etag", "\"v1\"")
                .body(Fed(body))
                .unwrap();
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    (FedOrigin::new(svc), bodies)
}

/// The sizes of the spool files in the disk tier's spool folder (one folder per open
/// tier, holding its lock and its files).
pub(super) fn spool_files(dir: &Path) -> Vec<u64> {
    let Ok(tiers) = std::fs::read_dir(dir.join("spool")) else {
        return Vec::new();
    };
    tiers
        .flatten()
        .filter_map(|t| std::fs::read_dir(t.path()).ok())
        .flatten()
        .flatten()
        .filter(|f| f.file_name() != "lock")
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .collect()
}

/// Waits (bounded by the test's own timeout) until `check` holds.
pub(super) async fn until(mut check: impl FnMut() -> bool) {
    while !check() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_goes_to_a_spool_file_as_it_streams_and_is_stored_from_it() {
    tokio::time::timeout(BOUND, async {
        const LEN: usize = 40 * MIB;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let (origin, mut bodies) = fed_origin();
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 * MIB)
            .layer(origin);
        let want = body_of(1, LEN);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        let feed = bodies.recv().await.unwrap();
        // The client reads in a task of its own, and says how far it got.
        let received = Arc::new(Mutex::new(0usize));
        let reader = tokio::spawn({
            let (received, want) = (received.clone(), want.clone());
            async move {
                let mut body = res.into_body();
                while let Some(frame) = body.frame().await {
                    let data = frame.unwrap().into_data().unwrap();
                    let mut at = received.lock().await;
                    assert!(data == want.slice(*at..*at + data.len()), "bytes at {at}");
                    *at += data.len();
                }
            }
        });
        for chunk in want.slice(..32 * MIB).chunks(MIB) {
            feed.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        // Mid-stream: the copy is on disk, in one spool file that holds about all the
        // client got; nothing is stored yet.
        until(|| {
            spool_files(dir.path())
                .first()
                .is_some_and(|&n| n >= 31 * MIB as u64)
        })
        .await;
        assert_eq!(spool_files(dir.path()).len(), 1);
        assert!(*received.lock().await >= 30 * MIB);
        assert_eq!(disk.stats().entries, 0);
        assert_eq!(store.memory().stats().entries, 0);
        assert!(
            disk.stats().spooled_bytes >= 31 * MIB as u64,
            "counted while spooled"
        );
        for chunk in want.slice(32 * MIB..).chunks(MIB) {
            feed.send(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        drop(feed);
        reader.await.unwrap();
        assert_eq!(*received.lock().await, LEN);

        // Stored from the file, which is gone.
        until(|| disk.stats().entries == 1).await;
        until(|| spool_files(dir.path()).is_empty()).await;
        until(|| disk.stats().spooled_bytes == 0).await;
        assert_eq!(disk.stats().spool_faults, 0);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(res.headers()["etag"], "\"v1\"");
        let mut body = res.into_body();
        let mut at = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() as u64 <= BLOCK);
            assert!(
                data == want.slice(at..at + data.len()),
                "stored bytes at {at}"
            );
            at += data.len();
        }
        assert_eq!(at, LEN);
        let res = svc
            .oneshot(get("http://t/big", Some("bytes=39000000-39000099")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert!(got == want.slice(39_000_000..39_000_100));
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_response_cut_short_or_over_the_limit_stores_nothing_and_leaves_no_file() {
    tokio::time::timeout(BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let (origin, mut bodies) = fed_origin();
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(8 * MIB)
            .layer(origin);
        let chunk = Bytes::from(vec![7u8; MIB]);

        // The client goes away mid-stream.
        let res = svc
            .clone()
            .oneshot(get("http://t/cut", None))
            .await
            .unwrap();
        let feed = bodies.recv().await.unwrap();
        let mut body = res.into_body();
        for _ in 0..4 {
            feed.send(chunk.clone()).await.unwrap();
            body.frame().await.unwrap().unwrap();
        }
        until(|| !spool_files(dir.path()).is_empty()).await;
        drop(body);
        until(|| spool_files(dir.path()).is_empty()).await;

        // Over the limit (8 MiB): streams on, not stored, its file removed.
        let res = svc
            .clone()
            .oneshot(get("http://t/over", None))
            .await
            .unwrap();
        let feed = bodies.recv().await.unwrap();
        let reader =
            tokio::spawn(
                async move { res.into_body().collect().await.map(|b| b.to_bytes().len()) },
            );
        for _ in 0..10 {
            feed.send(chunk.clone()).await.unwrap();
        }
        drop(feed);
        assert_eq!(
            reader.await.unwrap().unwrap(),
            10 * MIB,
            "the client gets it all"
        );
        until(|| spool_files(dir.path()).is_empty()).await;
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 0, "nothing stored");
        assert_eq!(store.memory().stats().entries, 0);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_bytes_are_capped_by_the_disk_tier_s_byte_bound() {
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
        // Three large responses at once: the third passes the bound (18 MiB) while the
        // others are still spooled, and is given up; the others are stored.
        let mut feeds = Vec::new();
        let mut readers = Vec::new();
        for path in ["a", "b", "c"] {
            let res = svc
                .clone()
                .oneshot(get(&format!("http://t/{path}"), None))
                .await
                .unwrap();
            feeds.push(bodies.recv().await.unwrap());
            readers.push(tokio::spawn(async move {
                res.into_body().collect().await.map(|b| b.to_bytes().len())
            }));
        }
        let chunk = Bytes::from(vec![1u8; MIB]);
        for (i, feed) in feeds.iter().enumerate() {
            if i == 2 {
                // The first two are spooled whole (and still open) before the third.
                until(|| disk.stats().spooled_bytes == 14 * MIB as u64).await;
            }
            for _ in 0..7 {
                feed.send(chunk.clone()).await.unwrap();
            }
        }
        drop(feeds);
        for r in readers {
            assert_eq!(
                r.await.unwrap().unwrap(),
                7 * MIB,
                "each client gets it all"
            );
        }
        until(|| disk.stats().spooled_bytes == 0 && spool_files(dir.path()).is_empty()).await;
        disk.flush().await.unwrap();
        let stats = disk.stats();
        assert_eq!(stats.spool_faults, 1, "{stats:?}");
        assert_eq!(stats.entries, 2, "{stats:?}");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_a_large_miss_find_it_on_disk_and_do_not_all_go_to_the_origin() {
    tokio::time::timeout(BOUND, async {
        const LEN: usize = 6 * MIB;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), MIB);
        let (origin, mut bodies) = fed_origin();
        let svc = HttpCacheLayer::new(store)
            .max_body(80 * MIB)
            .collapse_wait(Duration::from_secs(30))
            .layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        let feed = bodies.recv().await.unwrap();
        // Others ask for the URL while its first response streams: they wait for it.
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let res = svc.oneshot(get("http://t/big", None)).await.unwrap();
                    let x_cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
                    let len = res.into_body().collect().await.unwrap().to_bytes().len();
                    (x_cache, len)
                })
            })
            .collect();
        let reader =
            tokio::spawn(
                async move { res.into_body().collect().await.map(|b| b.to_bytes().len()) },
            );
        for _ in 0..6 {
            feed.send(Bytes::from(vec![4u8; MIB])).await.unwrap();
        }
        drop(feed);
        assert_eq!(reader.await.unwrap().unwrap(), LEN);
        // None of them goes to the origin: they wake once the response is on disk.
        while !waiters.iter().all(|w| w.is_finished()) {
            assert!(
                bodies.try_recv().is_err(),
                "a waiting request went to the origin"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for w in waiters {
            let (x_cache, len) = w.await.unwrap();
            assert_eq!((x_cache.as_str(), len), ("HIT-DISK", LEN));
        }
        assert_eq!(disk.stats().entries, 1);
    })
    .await
    .expect("bounded");
}
