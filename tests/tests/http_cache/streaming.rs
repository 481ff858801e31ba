//! Streaming and single flight: the head and first bytes arrive before the origin
//! finishes, and an aborted body is not stored.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_cache::{Cache, MemoryTier};
use tower_layer::Layer;

use super::*;

// === streaming and single flight ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_and_first_bytes_arrive_before_the_origin_finishes_and_the_whole_is_stored() {
    use tokio::sync::mpsc;
    tokio::time::timeout(BOUND, async {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
        let calls = Arc::new(AtomicUsize::new(0));
        let origin = tower::service_fn({
            let (rx, calls) = (rx.clone(), calls.clone());
            move |_req: Request<Full<Bytes>>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let rx = rx.lock().unwrap().take().expect("one origin call");
                async move {
                    let body = http_body_util::StreamBody::new(ChannelStream(rx));
                    let res = http::Response::builder()
                        .header("cache-control", "max-age=60")
                        .body(body)
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(res)
                }
            }
        });
        let store = Cache::new(MemoryTier::builder().max_entries(100).build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(origin);
        let res = svc
            .clone()
            .oneshot(
                Request::get("http://t/stream")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            res.headers()["x-cache"],
            "MISS",
            "the head came before the body ended"
        );
        let mut body = res.into_body();
        tx.send(Ok(Bytes::from("first "))).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(
            frame.into_data().unwrap(),
            "first ",
            "bytes stream through at once"
        );
        // A second request for the URL waits for the first (single flight), then hits.
        let second = tokio::spawn({
            let svc = svc.clone();
            async move {
                let res = svc
                    .oneshot(
                        Request::get("http://t/stream")
                            .body(Full::default())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                let status = res.headers()["x-cache"].to_str().unwrap().to_string();
                (status, res.into_body().collect().await.unwrap().to_bytes())
            }
        });
        tx.send(Ok(Bytes::from("second"))).await.unwrap();
        drop(tx);
        let mut rest = Vec::new();
        while let Some(f) = body.frame().await {
            rest.extend_from_slice(&f.unwrap().into_data().unwrap());
        }
        assert_eq!(rest, b"second");
        let (status, bytes) = second.await.unwrap();
        assert_eq!(
            (status.as_str(), &bytes[..]),
            ("HIT-MEM", &b"first second"[..])
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    })
    .await
    .expect("bounded");
}

/// The sending end of a [`ChannelStream`].
pub(crate) type ChunkSender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A `Stream` over a channel of body chunks.
pub(crate) struct ChannelStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<http_body::Frame<Bytes>, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_body_is_not_stored_and_waiters_go_on() {
    use tokio::sync::mpsc;
    tokio::time::timeout(BOUND, async {
        let calls = Arc::new(AtomicUsize::new(0));
        let senders: Arc<std::sync::Mutex<Vec<ChunkSender>>> = Arc::default();
        let origin = tower::service_fn({
            let (calls, senders) = (calls.clone(), senders.clone());
            move |_req: Request<Full<Bytes>>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = mpsc::channel(4);
                senders.lock().unwrap().push(tx);
                async move {
                    let res = http::Response::builder()
                        .header("cache-control", "max-age=60")
                        .body(http_body_util::StreamBody::new(ChannelStream(rx)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(res)
                }
            }
        });
        let store = Cache::new(MemoryTier::builder().max_entries(100).build().unwrap());
        let svc = HttpCacheLayer::new(store).layer(origin);
        let first = svc
            .clone()
            .oneshot(
                Request::get("http://t/abort")
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        let mut body = first.into_body();
        let tx = senders.lock().unwrap().remove(0);
        tx.send(Ok(Bytes::from("part"))).await.unwrap();
        body.frame().await.unwrap().unwrap();
        tx.send(Err(std::io::Error::other("origin reset")))
            .await
            .unwrap();
        assert!(
            body.frame().await.unwrap().is_err(),
            "the client sees the abort"
        );
        drop(body);
        // Nothing was stored: the next request goes to the origin.
        let again = tokio::spawn({
            let svc = svc.clone();
            async move {
                svc.oneshot(
                    Request::get("http://t/abort")
                        .body(Full::default())
                        .unwrap(),
                )
                .await
                .unwrap()
                .headers()["x-cache"]
                    .to_str()
                    .unwrap()
                    .to_string()
            }
        });
        let status = again.await.unwrap();
        assert_eq!(status, "MISS");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    })
    .await
    .expect("bounded");
}
