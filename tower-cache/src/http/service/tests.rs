use super::*;

fn stored(status: StatusCode) -> HttpEntry {
    let mut headers = HeaderMap::new();
    headers.insert(::http::header::ETAG, HeaderValue::from_static("\"e\""));
    HttpEntry {
        status,
        headers,
        body: Bytes::new(),
        freshness: policy::Freshness {
            response_time: 0,
            initial_age: 0,
            lifetime: 60_000,
            must_revalidate: false,
            no_cache: false,
            validator: true,
            stale_while_revalidate: 0,
            stale_if_error: 0,
        },
        vary: Vec::new(),
        on_disk: None,
    }
}

#[test]
fn only_a_stored_2xx_is_answered_not_modified() {
    for inm in ["*", "\"e\""] {
        let mut req = HeaderMap::new();
        req.insert(::http::header::IF_NONE_MATCH, HeaderValue::from_static(inm));
        assert!(not_modified(&req, &stored(StatusCode::OK)), "{inm}");
        for status in [StatusCode::NOT_FOUND, StatusCode::MOVED_PERMANENTLY] {
            assert!(!not_modified(&req, &stored(status)), "{inm} {status}");
        }
    }
}

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

/// A cache over an origin that answers `cache-control` (and `vary`) as `answer` says
/// for each request, counting its calls.
fn cache_over(
    answer: fn(&HeaderMap) -> (&'static str, Option<&'static str>),
) -> (
    impl Service<
            Request<()>,
            Response = Response<HttpCacheBody<TestBody>>,
            Error = Infallible,
            Future = impl Send,
        > + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let origin = tower::service_fn(move |req: Request<()>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let (cc, vary) = answer(req.headers());
        async move {
            let mut b = Response::builder().header("cache-control", cc);
            if let Some(v) = vary {
                b = b.header("vary", v);
            }
            let body = Full::new(Bytes::from(format!("answer-{n}"))).boxed_unsync();
            Ok::<Response<TestBody>, Infallible>(b.body(body).unwrap())
        }
    });
    let store = Cache::new(crate::MemoryTier::builder().build().unwrap());
    (HttpCacheLayer::new(store).layer(origin), calls)
}

async fn x_cache<S>(svc: &S, req: Request<()>) -> String
where
    S: Service<Request<()>, Response = Response<HttpCacheBody<TestBody>>, Error = Infallible>
        + Clone,
{
    let res = svc.clone().oneshot(req).await.unwrap();
    let x = res.headers()["x-cache"].to_str().unwrap().to_owned();
    res.into_body().collect().await.unwrap();
    x
}

fn get() -> ::http::request::Builder {
    Request::get("/p").header("host", "a.test")
}

#[tokio::test]
async fn content_and_unevaluated_preconditions_are_passed_and_not_stored() {
    let (svc, calls) = cache_over(|_| ("max-age=60", None));
    for b in [
        get().header("content-length", "5"),
        get().header("transfer-encoding", "chunked"),
        get().header("if-match", "\"x\""),
        get().header("if-unmodified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ] {
        assert_eq!(x_cache(&svc, b.body(()).unwrap()).await, "PASS");
    }
    assert_eq!(x_cache(&svc, get().body(()).unwrap()).await, "MISS");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_response_varying_on_a_forwarding_field_is_not_stored() {
    let (svc, calls) = cache_over(|_| ("max-age=60", Some("X-Forwarded-For")));
    assert_eq!(x_cache(&svc, get().body(()).unwrap()).await, "PASS");
    assert_eq!(x_cache(&svc, get().body(()).unwrap()).await, "PASS");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_private_answer_to_a_cookie_leaves_the_shared_entry() {
    let (svc, _) = cache_over(|h| {
        if h.contains_key("cookie") {
            ("private", None)
        } else {
            ("max-age=60", None)
        }
    });
    assert_eq!(x_cache(&svc, get().body(()).unwrap()).await, "MISS");
    let reload = get()
        .header("cookie", "s=1")
        .header("cache-control", "no-cache")
        .body(())
        .unwrap();
    x_cache(&svc, reload).await;
    assert_eq!(x_cache(&svc, get().body(()).unwrap()).await, "HIT-MEM");
}
