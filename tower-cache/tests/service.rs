//! `CacheLayer` / `CacheService` around real and mock inner services.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_cache::{
    BytesCodec, Cache, CacheLayer, DiskTier, MemoryTier, ResponseCodec, StoreSuccessful, UrlKey,
};
use tower_service::Service;

const TTL: Duration = Duration::from_secs(60);
const BOUND: Duration = Duration::from_secs(30);

fn memory_store() -> Cache {
    Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap())
}

fn key_layer(store: Cache) -> CacheLayer<fn(&String) -> Option<String>, BytesCodec> {
    #[allow(clippy::ptr_arg)] // the request type is `String`
    fn key(k: &String) -> Option<String> {
        (!k.starts_with("nocache")).then(|| k.clone())
    }
    CacheLayer::new(store, key as fn(&String) -> Option<String>, BytesCodec, TTL)
}

#[tokio::test]
async fn hit_is_served_while_inner_is_not_ready() {
    tokio::time::timeout(BOUND, hit_is_served_while_inner_is_not_ready_body())
        .await
        .expect("bounded");
}

async fn hit_is_served_while_inner_is_not_ready_body() {
    let _w = common::watchdog("hit_is_served_while_inner_is_not_ready_body", common::LIMIT);
    let layer = key_layer(memory_store());
    let (mut svc, mut handle) = tower_test::mock::spawn_layer::<String, Bytes, _>(layer);

    // A miss reaches the inner service.
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut first = task::spawn(svc.call("k".to_string()));
    assert_pending!(first.poll());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "k");
    send.send_response(Bytes::from("v"));
    assert_eq!(first.await.unwrap(), "v");

    // Now the inner service is not ready; the cache still is, and answers the hit.
    handle.allow(0);
    assert_ready_ok!(svc.poll_ready());
    let mut hit = task::spawn(svc.call("k".to_string()));
    let res = assert_ready_ok!(hit.poll());
    assert_eq!(res, "v");

    // A miss waits for the inner service inside its future, not in poll_ready.
    assert_ready_ok!(svc.poll_ready());
    let mut miss = task::spawn(svc.call("other".to_string()));
    assert_pending!(miss.poll());
    handle.allow(1);
    assert!(
        miss.is_woken(),
        "readiness of the inner service wakes the miss"
    );
    assert_pending!(miss.poll());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, "other");
    send.send_response(Bytes::from("w"));
    assert_eq!(miss.await.unwrap(), "w");
}

#[tokio::test]
async fn a_hundred_concurrent_misses_make_exactly_one_origin_call() {
    tokio::time::timeout(BOUND, async {
        let calls = Arc::new(AtomicUsize::new(0));
        let origin = service_fn({
            let calls = calls.clone();
            move |key: String| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, Infallible>(Bytes::from(format!("v:{key}")))
                }
            }
        });
        let svc = ServiceBuilder::new()
            .layer(key_layer(memory_store()))
            .service(origin);
        let tasks: Vec<_> = (0..100)
            .map(|_| tokio::spawn(svc.clone().oneshot("hot".to_string())))
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "v:hot");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let st = svc.store().stats();
        assert_eq!(st.loads, 1);
        assert_eq!(
            st.memory_hits, 99,
            "the 99 others were answered by the one load"
        );
    })
    .await
    .expect("bounded");
}

/// An origin that takes `latency` (of tokio's clock) per call and answers with `answer`
/// for the call's number; counts its calls.
fn slow_origin(
    latency: Duration,
    answer: fn(usize) -> Result<Bytes, std::io::Error>,
) -> (
    impl Service<String, Response = Bytes, Error = std::io::Error, Future = impl Send> + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = service_fn({
        let calls = calls.clone();
        move |_key: String| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(latency).await;
                answer(n)
            }
        }
    });
    (origin, calls)
}

/// Sends `n` concurrent requests for one key; returns (successes, errors, tokio time taken).
async fn storm<S>(svc: &S, n: usize) -> (usize, usize, Duration)
where
    S: Service<String, Response = Bytes, Error = tower_cache::BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(svc.clone().oneshot("k".to_string())))
        .collect();
    let (mut ok, mut err) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    (ok, err, start.elapsed())
}

// Paused clock: the origin's latency is tokio time, so "how many latencies" is exact.
#[tokio::test(start_paused = true)]
async fn when_the_leader_fails_every_waiter_calls_the_origin_at_once() {
    let _w = common::watchdog("leader_fails_waiters_go_at_once", common::LIMIT);
    let latency = Duration::from_millis(100);
    let (origin, calls) = slow_origin(latency, |n| {
        if n == 0 {
            Err(std::io::Error::other("origin down"))
        } else {
            Ok(Bytes::from("recovered"))
        }
    });
    let svc = ServiceBuilder::new()
        .layer(key_layer(memory_store()))
        .service(origin);
    let (ok, errors, took) = storm(&svc, 20).await;
    assert_eq!(
        (ok, errors),
        (19, 1),
        "only the failed leader sees the error"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        20,
        "every waiter called the origin"
    );
    assert!(
        took <= latency * 2 + Duration::from_millis(10),
        "the waiters went at once, not one after another: {took:?} for 20 requests"
    );
    let st = svc.store().stats();
    assert_eq!((st.loads, st.load_errors), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn uncacheable_responses_release_every_waiter_and_later_requests_skip_the_queue() {
    let _w = common::watchdog("uncacheable_storm", common::LIMIT);
    let latency = Duration::from_millis(100);
    let (origin, calls) = slow_origin(latency, |_| Ok(Bytes::from("private")));
    let layer = key_layer(memory_store())
        .store_policy(|_: &Bytes| None::<Duration>)
        .pass_ttl(Duration::from_secs(30));
    let svc = ServiceBuilder::new().layer(layer).service(origin);
    let (ok, _, took) = storm(&svc, 1000).await;
    assert_eq!(ok, 1000);
    assert!(
        took <= latency * 2 + Duration::from_millis(10),
        "1000 requests for a no-store key took {took:?}; one or two origin latencies expected"
    );
    // Hit-for-pass: later requests go straight to the origin, concurrently.
    let (ok, _, took) = storm(&svc, 10).await;
    assert_eq!(ok, 10);
    assert!(took <= latency + Duration::from_millis(10), "{took:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1010);
    assert_eq!(
        svc.store().stats().passes,
        999 + 10,
        "999 waiters, then 10 requests"
    );
}

#[tokio::test(start_paused = true)]
async fn errors_are_never_cached() {
    let _w = common::watchdog("errors_are_never_cached", common::LIMIT);
    let (origin, calls) = slow_origin(Duration::from_millis(1), |n| {
        if n < 2 {
            Err(std::io::Error::other("boom"))
        } else {
            Ok(Bytes::from("ok"))
        }
    });
    let svc = ServiceBuilder::new()
        .layer(key_layer(memory_store()))
        .service(origin);
    assert!(svc.clone().oneshot("k".into()).await.is_err());
    // The key is marked pass for a second after an error: the next request goes straight
    // to the origin (and fails again), nothing is stored.
    assert!(svc.clone().oneshot("k".into()).await.is_err());
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert_eq!(svc.clone().oneshot("k".into()).await.unwrap(), "ok");
    assert_eq!(svc.clone().oneshot("k".into()).await.unwrap(), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the success was cached");
}

#[tokio::test]
async fn requests_without_a_key_bypass_the_cache() {
    let _w = common::watchdog("requests_without_a_key_bypass_the_cache", common::LIMIT);
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = service_fn({
        let calls = calls.clone();
        move |_: String| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Bytes::from("fresh")) }
        }
    });
    let svc = ServiceBuilder::new()
        .layer(key_layer(memory_store()))
        .service(origin);
    for _ in 0..3 {
        assert_eq!(
            svc.clone().oneshot("nocache:1".into()).await.unwrap(),
            "fresh"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(svc.store().stats().memory.entries, 0);
}

#[tokio::test(start_paused = true)]
async fn responses_expire_after_the_layer_ttl() {
    let _w = common::watchdog("responses_expire_after_the_layer_ttl", common::LIMIT);
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = service_fn({
        let calls = calls.clone();
        move |_: String| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(Bytes::from(format!("v{n}"))) }
        }
    });
    let svc = ServiceBuilder::new()
        .layer(key_layer(memory_store()))
        .service(origin);
    assert_eq!(svc.clone().oneshot("k".into()).await.unwrap(), "v0");
    tokio::time::advance(TTL - Duration::from_millis(1)).await;
    assert_eq!(svc.clone().oneshot("k".into()).await.unwrap(), "v0");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(svc.clone().oneshot("k".into()).await.unwrap(), "v1");
}

fn http_origin(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let path = req.uri().path().to_string();
            let res = match path.as_str() {
                "/error" => Response::builder().status(500).body(Full::from("oops")),
                "/private" => Response::builder()
                    .header("cache-control", "private, max-age=60")
                    .body(Full::from("mine")),
                "/big" => Response::builder().body(Full::from(vec![b'x'; 10_000])),
                _ => Response::builder()
                    .header("content-type", "text/plain")
                    .header("x-origin", "1")
                    .body(Full::from(format!("hello {path}"))),
            };
            Ok::<_, Infallible>(res.unwrap())
        }
    })
}

async fn get<S>(svc: &S, path: &str) -> (StatusCode, http::HeaderMap, Bytes)
where
    S: Service<Request<Full<Bytes>>, Response = Response<tower_cache::CacheBody<Full<Bytes>>>>
        + Clone,
    S::Error: std::fmt::Debug,
{
    let res = svc
        .clone()
        .oneshot(Request::get(path).body(Full::default()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

type HttpResponse = Response<tower_cache::CacheBody<Full<Bytes>>>;

/// The HTTP origin behind a memory-only cache storing successful responses of up to
/// 4 KiB, with the origin's call counter.
fn http_service() -> (
    impl Service<Request<Full<Bytes>>, Response = HttpResponse, Error = tower_cache::BoxError> + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = CacheLayer::new(memory_store(), UrlKey, ResponseCodec::new(4096), TTL)
        .store_policy(StoreSuccessful);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(http_origin(calls.clone()));
    (svc, calls)
}

#[tokio::test]
async fn http_responses_round_trip_with_status_and_headers() {
    let _w = common::watchdog(
        "http_responses_round_trip_with_status_and_headers",
        common::LIMIT,
    );
    let (svc, calls) = http_service();
    let first = get(&svc, "/a?x=1").await;
    let second = get(&svc, "/a?x=1").await;
    assert_eq!(first, second);
    assert_eq!(second.0, 200);
    assert_eq!(second.1["x-origin"], "1");
    assert_eq!(second.2, "hello /a");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    get(&svc, "/a?x=2").await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the query is part of the key"
    );
}

#[tokio::test]
async fn unsuccessful_private_and_oversized_responses_are_not_stored() {
    let _w = common::watchdog(
        "unsuccessful_private_and_oversized_responses_are_not_stored",
        common::LIMIT,
    );
    let (svc, calls) = http_service();
    for path in ["/error", "/private", "/big"] {
        let a = get(&svc, path).await;
        let b = get(&svc, path).await;
        assert_eq!(a, b);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        6,
        "nothing was served from the cache"
    );
    let (status, _, body) = get(&svc, "/big").await;
    assert_eq!(status, 200);
    assert_eq!(
        body.len(),
        10_000,
        "an oversized body still reaches the client whole"
    );
    assert_eq!(get(&svc, "/error").await.0, 500);
}

#[tokio::test]
async fn a_streaming_body_over_the_limit_is_passed_through_in_order() {
    let _w = common::watchdog(
        "a_streaming_body_over_the_limit_is_passed_through_in_order",
        common::LIMIT,
    );
    let origin = service_fn(|_req: Request<Full<Bytes>>| async {
        let chunks = (0..10).map(|i| {
            Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(vec![b'0' + i; 1000])))
        });
        Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(
            chunks,
        ))))
    });
    let layer = CacheLayer::new(memory_store(), UrlKey, ResponseCodec::new(2500), TTL);
    let svc = ServiceBuilder::new().layer(layer).service(origin);
    let res = svc
        .oneshot(Request::get("/s").body(Full::default()).unwrap())
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let expected: Vec<u8> = (0..10u8).flat_map(|i| vec![b'0' + i; 1000]).collect();
    assert_eq!(body, expected);
}

#[tokio::test]
async fn a_restarted_service_answers_from_its_disk_tier() {
    let _w = common::watchdog("restart_from_disk", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    for round in 0..2 {
        let disk = DiskTier::builder(dir.path())
            .map_size(16 << 20)
            .open()
            .unwrap();
        let store = memory_store().with_disk(disk.clone());
        let svc = ServiceBuilder::new()
            .layer(CacheLayer::new(
                store,
                UrlKey,
                ResponseCodec::default(),
                TTL,
            ))
            .service(http_origin(calls.clone()));
        let (status, headers, body) = get(&svc, "/report").await;
        assert_eq!(
            (status, body.as_ref()),
            (StatusCode::OK, &b"hello /report"[..]),
            "round {round}"
        );
        assert_eq!(headers["content-type"], "text/plain");
        disk.flush().await.unwrap();
        disk.close().await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the second process life read the disk tier"
    );
}

#[tokio::test]
async fn a_failed_disk_never_fails_a_request() {
    let _w = common::watchdog("disk_failure_service", common::LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let disk = DiskTier::builder(dir.path())
        .map_size(16 << 20)
        .open()
        .unwrap();
    disk.close().await;
    let store = memory_store().with_disk(disk);
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(
            store,
            UrlKey,
            ResponseCodec::default(),
            TTL,
        ))
        .service(http_origin(calls.clone()));
    for _ in 0..3 {
        assert_eq!(get(&svc, "/x").await.2, "hello /x");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "memory still caches");
    let st = svc.store().stats();
    assert!(st.disk_faults >= 2, "{st:?}");
}

/// A layer is a value: building one never fails. A zero TTL stores nothing (every
/// request reaches the inner service); one over the maximum is the maximum.
#[tokio::test]
async fn a_zero_ttl_stores_nothing_and_a_huge_one_is_the_maximum() {
    let _w = common::watchdog("layer_ttl", common::LIMIT);
    for (ttl, origin_calls) in [(Duration::ZERO, 3), (Duration::MAX, 1)] {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = ServiceBuilder::new()
            .layer(CacheLayer::new(
                memory_store(),
                UrlKey,
                ResponseCodec::default(),
                ttl,
            ))
            .service(http_origin(calls.clone()));
        for _ in 0..3 {
            assert_eq!(get(&svc, "/x").await.2, "hello /x");
        }
        assert_eq!(calls.load(Ordering::SeqCst), origin_calls, "ttl {ttl:?}");
    }
}

/// The old names of the generic layer's HTTP pieces still build a layer (deprecated).
#[test]
#[allow(deprecated)]
fn the_old_names_of_the_http_key_and_codec_still_work() {
    let layer: CacheLayer<UrlKey, ResponseCodec> = CacheLayer::new(
        memory_store(),
        tower_cache::HttpKey,
        tower_cache::HttpCodec::new(4096),
        TTL,
    );
    drop(layer);
}
