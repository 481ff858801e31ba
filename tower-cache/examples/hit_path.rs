//! A memory hit through the cache layer, in a loop, for instruction counts:
//!
//! ```sh
//! cargo build --release -p tower-cache --example hit_path
//! valgrind --tool=callgrind target/release/examples/hit_path
//! ```
//!
//! The first argument is `layer`, `raw` (a raw quick_cache get of the same keys) or
//! `http` (a 1 KiB response served from memory by `HttpCacheLayer`, request to response
//! head), the second the number of hits. Run it twice with different counts: the difference of
//! callgrind's totals divided by the difference of the counts is the instructions per
//! hit, which repeat exactly where timings on a shared machine do not.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tower_cache::{BytesCodec, Cache, CacheLayer, MemoryTier, RequestAsKey, TimeSource};
use tower_layer::Layer;
use tower_service::Service;

const KEYS: usize = 1000;

fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a hit must be ready at once"),
    }
}

fn main() {
    let keys: Vec<&'static str> = (0..KEYS)
        .map(|i| &*Box::leak(format!("user:{i:05}").into_boxed_str()))
        .collect();
    let value = Bytes::from(vec![b'v'; 100]);
    let loops: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    if std::env::args().nth(1).as_deref() == Some("http") {
        return http_hits(loops);
    }
    if std::env::args().nth(1).as_deref() == Some("raw") {
        let raw = quick_cache::sync::Cache::<String, Bytes>::new(KEYS * 2);
        for k in &keys {
            raw.insert(k.to_string(), value.clone());
        }
        for i in 0..loops {
            black_box(raw.get(keys[i % KEYS]));
        }
        return;
    }
    let store = Cache::new(
        MemoryTier::builder()
            .max_entries(KEYS as u64 * 2)
            .time_source(TimeSource::Coarse)
            .build()
            .unwrap(),
    );
    for k in &keys {
        store
            .memory()
            .set(k, value.clone(), Duration::from_secs(3600))
            .unwrap();
    }
    let layer = CacheLayer::new(store, RequestAsKey, BytesCodec, Duration::from_secs(3600));
    let mut svc = layer.layer(tower::service_fn(|_: &'static str| async {
        Ok::<_, std::convert::Infallible>(Bytes::new())
    }));
    for i in 0..loops {
        ready(std::future::poll_fn(|cx| svc.poll_ready(cx))).unwrap();
        black_box(ready(svc.call(keys[i % KEYS])).unwrap());
    }
}

/// 1 KiB hits through `HttpCacheLayer`: the URLs are stored by a first round of misses.
fn http_hits(loops: usize) {
    use http::{Request, Response};
    use http_body_util::Full;
    use tower_cache::http::HttpCacheLayer;

    let origin = tower::service_fn(|_req: Request<Full<Bytes>>| async {
        let mut res = Response::new(Full::new(Bytes::from(vec![b'x'; 1024])));
        res.headers_mut().insert(
            "cache-control",
            http::HeaderValue::from_static("max-age=3600"),
        );
        Ok::<_, std::convert::Infallible>(res)
    });
    let store = Cache::new(
        MemoryTier::builder()
            .max_entries(KEYS as u64 * 2)
            .time_source(TimeSource::Coarse)
            .build()
            .unwrap(),
    );
    let mut svc = HttpCacheLayer::new(store).layer(origin);
    let uris: Vec<String> = (0..KEYS)
        .map(|i| format!("http://a.test/item/{i:05}"))
        .collect();
    let get = |i: usize| {
        Request::get(uris[i % KEYS].as_str())
            .header("accept", "*/*")
            .body(Full::default())
            .unwrap()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..KEYS {
            use http_body_util::BodyExt;
            let res = svc.call(get(i)).await.unwrap();
            res.into_body().collect().await.unwrap();
        }
    });
    let _guard = rt.enter();
    for i in 0..loops {
        let res = ready(svc.call(get(i))).unwrap();
        assert!(res.headers().contains_key("age"));
        black_box(res);
    }
}
