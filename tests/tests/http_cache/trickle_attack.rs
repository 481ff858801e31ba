//! A body that trickles in (frames slower than the disk takes them) is still written to
//! its spool file in gathered writes, not one write per frame.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_layer::Layer;

use super::disk_parts::{get, store_on};
use super::*;

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
