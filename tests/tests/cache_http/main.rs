//! The cache layer in real HTTP stacks: over tower's `Timeout` (whose error is `BoxError`,
//! as in most stacks), spawned onto tokio and served by hyper on 127.0.0.1.
//!
//! This is first a compile test: a `CacheService` over an inner service whose error is
//! `BoxError` must be `Send` so that `tokio::spawn` and hyper's `serve_connection` take it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_cache::{Cache, CacheLayer, MemoryTier, ResponseCodec, StoreSuccessful, UrlKey};

const BOUND: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_cache_over_a_timeout_is_served_by_hyper() {
    tokio::time::timeout(BOUND, async {
        let calls = Arc::new(AtomicUsize::new(0));
        let store = Cache::new(MemoryTier::builder().max_entries(100).build().unwrap());
        let cache = CacheLayer::new(
            store,
            UrlKey,
            ResponseCodec::default(),
            Duration::from_secs(60),
        )
        .store_policy(StoreSuccessful);
        let svc = ServiceBuilder::new()
            .layer(cache)
            .timeout(Duration::from_secs(5))
            .service_fn({
                let calls = calls.clone();
                move |_req: Request<Incoming>| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("origin")))) }
                }
            });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let svc = TowerToHyperService::new(svc.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        for _ in 0..3 {
            let (status, body) = support::get(addr, "/report").await.unwrap();
            assert_eq!((status.as_u16(), &body[..]), (200, &b"origin"[..]));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "two of three were hits");
        server.abort();
    })
    .await
    .expect("bounded");
}

/// The cache over any `BoxError` service, in generic code: the bounds a library that
/// wraps user services would write.
fn cached<S>(
    inner: S,
) -> impl tower_service::Service<
    Request<Full<Bytes>>,
    Response = Response<tower_cache::CacheBody<Full<Bytes>>>,
    Error = tower_cache::BoxError,
    Future = impl Send,
> + Clone
       + Send
       + 'static
where
    S: tower_service::Service<
            Request<Full<Bytes>>,
            Response = Response<Full<Bytes>>,
            Error = tower_cache::BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let store = Cache::new(MemoryTier::builder().max_entries(100).build().unwrap());
    let cache = CacheLayer::new(
        store,
        UrlKey,
        ResponseCodec::default(),
        Duration::from_secs(60),
    )
    .store_policy(StoreSuccessful);
    tower_layer::Layer::layer(&cache, inner)
}

#[tokio::test]
async fn calls_spawned_onto_tokio_over_a_generic_boxerror_service() {
    use tower::ServiceExt;
    tokio::time::timeout(BOUND, async {
        let inner = ServiceBuilder::new()
            .timeout(Duration::from_secs(5))
            .service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("origin"))))
            });
        let svc = cached(inner);
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let req = Request::get("/x").body(Full::default()).unwrap();
                    svc.oneshot(req).await.map(|r| r.status())
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 200);
        }
    })
    .await
    .expect("bounded");
}
