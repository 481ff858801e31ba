//! Large bodies held only by the disk tier are served in parts: a range copies only its
//! bytes out of LMDB, a whole body streams in bounded chunks, and a record replaced
//! while it streams ends the body with an error instead of mixing two bodies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_cache::{Cache, DiskTier, MemoryTier};
use tower_layer::Layer;

use super::*;

/// The checksum block of the disk tier's addressable form, and the largest chunk a
/// body read from it is sent in.
pub(super) const BLOCK: u64 = 64 << 10;

/// Byte `i` of the body of origin call `call`.
fn byte(call: usize, i: usize) -> u8 {
    ((i * 7 + call * 13) % 251) as u8
}

pub(super) fn body_of(call: usize, len: usize) -> Bytes {
    (0..len).map(|i| byte(call, i)).collect::<Vec<u8>>().into()
}

type Origin = tower::util::BoxCloneSyncService<
    Request<Full<Bytes>>,
    http::Response<Full<Bytes>>,
    std::convert::Infallible,
>;

/// An origin that answers every request with a cacheable body of `len` bytes that
/// differs per call; the number of calls so far.
fn big_origin(len: usize) -> (Origin, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = tower::service_fn({
        let calls = calls.clone();
        move |_req: Request<Full<Bytes>>| {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let res = http::Response::builder()
                    .header("cache-control", "max-age=600")
                    .header("content-type", "application/octet-stream")
                    .header("content-length", len)
                    .header("etag", format!("\"v{call}\""))
                    .body(Full::new(body_of(call, len)))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(res)
            }
        }
    });
    (Origin::new(svc), calls)
}

/// A store whose memory tier takes nothing over 1 MiB, over a disk tier in `dir`.
pub(super) fn store_on(dir: &std::path::Path, addressable: usize) -> (Cache, DiskTier) {
    let disk = DiskTier::builder(dir)
        .map_size(1 << 30)
        .max_value_bytes(80 << 20)
        .addressable_threshold(addressable)
        .open()
        .unwrap();
    let memory = MemoryTier::builder()
        .max_entries(1000)
        .max_value_bytes(1 << 20)
        .build()
        .unwrap();
    (Cache::new(memory).with_disk(disk.clone()), disk)
}

pub(super) fn get(uri: &str, range: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get(uri);
    if let Some(r) = range {
        b = b.header("range", r);
    }
    b.body(Full::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_on_disk_is_served_by_range_and_streamed_without_a_whole_copy() {
    tokio::time::timeout(BOUND, async {
        const LEN: usize = 64 << 20;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = big_origin(LEN);
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .layer(origin);
        let want = body_of(1, LEN);

        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes().len(),
            LEN
        );
        disk.flush().await.unwrap();
        assert_eq!(disk.stats().entries, 1, "stored on disk");
        assert_eq!(store.memory().stats().entries, 0, "too large for memory");

        // A 1 KiB range: 206 with its bytes; out of LMDB come the range and the first
        // block (the stored head), not the body.
        let before = disk.stats().value_bytes_read;
        let res = svc
            .clone()
            .oneshot(get("http://t/big", Some("bytes=1000000-1001023")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes 1000000-1001023/{LEN}").as_str()
        );
        assert_eq!(res.headers()["content-length"], "1024");
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert!(got == want.slice(1_000_000..1_001_024), "the range's bytes");
        let read = disk.stats().value_bytes_read - before;
        assert!(read <= 1024 + BLOCK, "{read} bytes read for a 1 KiB range");

        // A suffix range and an open-ended one.
        for (range, first) in [("bytes=-500", LEN - 500), ("bytes=67100000-", 67_100_000)] {
            let before = disk.stats().value_bytes_read;
            let res = svc
                .clone()
                .oneshot(get("http://t/big", Some(range)))
                .await
                .unwrap();
            assert_eq!(res.status(), 206, "{range}");
            assert_eq!(
                res.headers()["content-range"],
                format!("bytes {first}-{}/{LEN}", LEN - 1).as_str()
            );
            let got = res.into_body().collect().await.unwrap().to_bytes();
            assert!(got == want.slice(first..), "{range}");
            let read = disk.stats().value_bytes_read - before;
            assert!(
                read <= (LEN - first) as u64 + 2 * BLOCK,
                "{range}: {read} bytes"
            );
        }

        // An unsatisfiable range: 416, nothing read but the head.
        let res = svc
            .clone()
            .oneshot(get("http://t/big", Some("bytes=70000000-")))
            .await
            .unwrap();
        assert_eq!(res.status(), 416);
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes */{LEN}").as_str()
        );

        // A HEAD and a conditional GET that the stored ETag satisfies: heads only.
        let before = disk.stats().value_bytes_read;
        let res = svc
            .clone()
            .oneshot(Request::head("http://t/big").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-length"], LEN.to_string().as_str());
        assert!(res
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty());
        let res = svc
            .clone()
            .oneshot(
                Request::get("http://t/big")
                    .header("if-none-match", "\"v1\"")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 304);
        assert!(res
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty());
        let read = disk.stats().value_bytes_read - before;
        assert!(read <= 2 * BLOCK, "{read} bytes read for two heads");

        // The whole body streams in chunks of at most one block, with the right bytes.
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        let mut body = res.into_body();
        let (mut at, mut largest, mut frames) = (0usize, 0usize, 0usize);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data == want.slice(at..at + data.len()), "bytes at {at}");
            at += data.len();
            largest = largest.max(data.len());
            frames += 1;
        }
        assert_eq!(at, LEN);
        assert!(largest as u64 <= BLOCK, "largest chunk {largest}");
        assert!(frames >= LEN / BLOCK as usize);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "every hit came from disk");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_replaced_or_removed_mid_stream_ends_the_body_with_an_error() {
    tokio::time::timeout(BOUND, async {
        const LEN: usize = 4 << 20;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = big_origin(LEN);
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .layer(origin);
        let mut old = body_of(1, LEN);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
        disk.flush().await.unwrap();

        for replace in [true, false] {
            let res = svc
                .clone()
                .oneshot(get("http://t/big", None))
                .await
                .unwrap();
            assert_eq!(res.headers()["x-cache"], "HIT-DISK");
            let mut body = res.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert!(first == old.slice(..first.len()), "the stored bytes");
            if replace {
                // The origin's next answer replaces the record (a request that must
                // not be answered from the cache, answered and stored).
                let req = Request::get("http://t/big")
                    .header("cache-control", "no-cache")
                    .body(Full::default())
                    .unwrap();
                let res = svc.clone().oneshot(req).await.unwrap();
                assert_eq!(
                    res.into_body().collect().await.unwrap().to_bytes().len(),
                    LEN
                );
                disk.flush().await.unwrap();
                assert_eq!(calls.load(Ordering::SeqCst), 2);
            } else {
                disk.clear().await.unwrap();
            }
            let mut at = first.len();
            let ended = loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        let data = frame.into_data().unwrap();
                        assert!(data == old.slice(at..at + data.len()), "old bytes only");
                        at += data.len();
                    }
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break None,
                }
            };
            if replace {
                // The newer response waited for this download: it ends whole, with the
                // old bytes; then the newer one is stored and served.
                assert_eq!(ended, None, "cut after {at} bytes");
                assert_eq!(at, LEN);
                drop(body);
                let new = body_of(2, LEN);
                let served = loop {
                    disk.flush().await.unwrap();
                    let res = svc
                        .clone()
                        .oneshot(get("http://t/big", None))
                        .await
                        .unwrap();
                    let got = res.into_body().collect().await.unwrap().to_bytes();
                    if got == new {
                        break got;
                    }
                    assert!(got == old, "one response or the other, whole");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                };
                assert_eq!(served.len(), LEN);
                assert_eq!(calls.load(Ordering::SeqCst), 2, "no third fetch");
            } else {
                let ended = ended.expect("a removed record cuts the body");
                assert!(at < LEN, "cut short");
                assert!(ended.contains("removed"), "{ended}");
                assert!(body.frame().await.is_none(), "nothing after the error");
            }
            old = body_of(2, LEN);
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_stored_whole_and_compressed_before_are_still_served() {
    tokio::time::timeout(BOUND, async {
        const LEN: usize = 3 << 20;
        let dir = tempfile::tempdir().unwrap();
        let want = body_of(1, LEN);
        {
            // Written as earlier versions wrote every value: whole, compressed.
            let (store, disk) = store_on(dir.path(), usize::MAX);
            let (origin, _) = big_origin(LEN);
            let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
            let res = svc.oneshot(get("http://t/old", None)).await.unwrap();
            res.into_body().collect().await.unwrap();
            disk.close().await;
        }
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, calls) = big_origin(LEN);
        let svc = HttpCacheLayer::new(store).max_body(80 << 20).layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/old", Some("bytes=2000000-2000999")))
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        let got = res.into_body().collect().await.unwrap().to_bytes();
        assert!(got == want.slice(2_000_000..2_001_000), "the range's bytes");
        let res = svc.oneshot(get("http://t/old", None)).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert!(res.into_body().collect().await.unwrap().to_bytes() == want);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "served from the old record"
        );
        assert_eq!(disk.stats().corrupt, 0);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_socket_a_body_whose_record_is_replaced_is_cut_short_never_completed() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    tokio::time::timeout(BOUND, async {
        // Larger than what loopback socket buffers hold, so most of it is still on
        // disk when the record is replaced.
        const LEN: usize = 64 << 20;
        let dir = tempfile::tempdir().unwrap();
        let (store, disk) = store_on(dir.path(), 1 << 20);
        let (origin, _) = big_origin(LEN);
        // A newer response does not wait for the download here: the record is replaced
        // while the body streams.
        let svc = HttpCacheLayer::new(store.clone())
            .max_body(80 << 20)
            .replace_wait(std::time::Duration::ZERO)
            .layer(origin);
        let res = svc
            .clone()
            .oneshot(get("http://t/big", None))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
        disk.flush().await.unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = svc.clone();
        let server = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let svc = tower::ServiceBuilder::new()
                    .map_request(|r: Request<hyper::body::Incoming>| r.map(|_| Full::default()))
                    .service(served.clone());
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(tcp),
                    hyper_util::service::TowerToHyperService::new(svc),
                ));
            }
        });

        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let req = Request::get(format!("http://{addr}/big"))
            .header("host", "t")
            .body(Full::default())
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-cache"], "HIT-DISK");
        assert_eq!(res.headers()["content-length"], LEN.to_string().as_str());
        let mut body = res.into_body();
        let old = body_of(1, LEN);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        let mut at = first.len();
        assert!(first == old.slice(..at), "the stored bytes");

        let req = Request::get("http://t/big")
            .header("cache-control", "no-cache")
            .body(Full::default())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
        disk.flush().await.unwrap();

        let ended = loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        assert!(data == old.slice(at..at + data.len()), "old bytes only");
                        at += data.len();
                    }
                }
                Some(Err(e)) => break e,
                None => panic!("the body ended as if complete after {at} bytes"),
            }
        };
        assert!(at < LEN, "cut short at {at}: {ended}");
        server.abort();
    })
    .await
    .expect("bounded");
}
