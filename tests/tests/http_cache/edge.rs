//! Keys and fields a client cannot forge.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_cache::{Cache, MemoryTier};
use tower_layer::Layer;

use super::*;

// === keys and fields a client cannot forge ===

/// An origin that reflects what it was asked: the `Host`, the path, and the fields an
/// origin may act on. `/v*` varies on `X-V`; `/obs*` is private, said on a line with
/// obs-text in an extension; everything is fresh for 60 s.
pub(crate) async fn reflecting_origin(req: axum::extract::Request) -> impl IntoResponse {
    let field = |name: &str| {
        req.headers().get(name).map_or("-".to_string(), |v| {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        })
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = format!(
        "host={} path={path} x-v={} xfh={} user={}",
        field("host"),
        field("x-v"),
        field("x-forwarded-host"),
        field("x-user"),
    );
    let mut h = HeaderMap::new();
    if path.starts_with("/swr") {
        // Stale on arrival, refreshed in the background; the body counts the calls.
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        let n = CALLS.fetch_add(1, Ordering::SeqCst);
        h.append(
            "cache-control",
            HeaderValue::from_static("max-age=1, stale-while-revalidate=600"),
        );
        h.append("age", HeaderValue::from_static("5"));
        return (h, format!("{body} n={n}"));
    }
    h.append("cache-control", HeaderValue::from_static("max-age=60"));
    if path.starts_with("/v") {
        h.append("vary", HeaderValue::from_static("x-v"));
    }
    if path.starts_with("/obs") {
        h.append(
            "cache-control",
            HeaderValue::from_bytes(b"private, ext=\"caf\xe9\"").unwrap(),
        );
    }
    (h, body)
}

/// The cache over a forwarder that does what a reverse proxy does after the cache: sends
/// the request on in origin-form to the origin, without the fields `Connection` names.
pub(crate) type EdgeService = tower::util::BoxCloneService<
    Request<Full<Bytes>>,
    http::Response<tower_cache::http::HttpCacheBody<hyper::body::Incoming>>,
    hyper_util::client::legacy::Error,
>;

pub(crate) async fn edge_stack(
    forwarded: tower_cache::http::ForwardedFields,
) -> (EdgeService, tokio::task::JoinHandle<std::io::Result<()>>) {
    let app = axum::Router::new().fallback(reflecting_origin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let forward = tower::service_fn(move |mut req: Request<Full<Bytes>>| {
        let client = client.clone();
        async move {
            let named: Vec<http::HeaderName> = req
                .headers()
                .get_all("connection")
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .filter_map(|t| http::HeaderName::from_bytes(t.trim_ascii()).ok())
                .collect();
            for n in named {
                req.headers_mut().remove(n);
            }
            req.headers_mut().remove("connection");
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = format!("http://{origin}{path}").parse().unwrap();
            client.request(req).await
        }
    });
    let store = Cache::new(MemoryTier::builder().max_entries(1000).build().unwrap());
    let svc = HttpCacheLayer::new(store)
        .forwarded_fields(forwarded)
        .layer(forward);
    (tower::util::BoxCloneService::new(svc), server)
}

/// Sends `GET path` with `fields` through `svc`: status, `x-cache`, body.
pub(crate) async fn edge_get(
    svc: &EdgeService,
    path: &str,
    fields: &[(&str, &[u8])],
) -> (u16, String, String) {
    let mut req = Request::get(path);
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    let res = svc
        .clone()
        .oneshot(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let x_cache = x_cache_of(res.headers());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, x_cache, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_a_path_or_query_cannot_fill_another_urls_entry() {
    tokio::time::timeout(BOUND, async {
        let (svc, server) = edge_stack(Default::default()).await;
        // The poisoning attempts are refused...
        let (s, _, _) = edge_get(&svc, "/app.js", &[("host", b"proxy:8080/static")]).await;
        assert_eq!(s, 400);
        let (s, _, _) = edge_get(&svc, "/b", &[("host", b"h/q?a=")]).await;
        assert_eq!(s, 400);
        // ...so the URLs they aimed at get their own responses.
        let (s, _, b) = edge_get(&svc, "/static/app.js", &[("host", b"proxy:8080")]).await;
        assert_eq!(
            (s, b.as_str()),
            (
                200,
                "host=proxy:8080 path=/static/app.js x-v=- xfh=- user=-"
            )
        );
        let (s, _, b) = edge_get(&svc, "/q?a=/b", &[("host", b"h")]).await;
        assert_eq!(
            (s, b.as_str()),
            (200, "host=h path=/q?a=/b x-v=- xfh=- user=-")
        );
        for bad in [&b"h#x"[..], b"u@h", b"h h", b"h:99999", b"caf\xe9"] {
            let (s, _, _) = edge_get(&svc, "/", &[("host", bad)]).await;
            assert_eq!(s, 400, "{}", String::from_utf8_lossy(bad));
        }
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_no_host_or_a_host_the_target_contradicts_are_refused() {
    tokio::time::timeout(BOUND, async {
        let (svc, server) = edge_stack(Default::default()).await;
        let two = [("host", &b"a.test"[..]), ("host", b"b.test")];
        assert_eq!(edge_get(&svc, "/x", &two).await.0, 400);
        assert_eq!(edge_get(&svc, "/x", &[]).await.0, 400);
        assert_eq!(
            edge_get(&svc, "http://a.test/x", &[("host", b"b.test")])
                .await
                .0,
            400
        );
        // The same host both ways, or only in the target (HTTP/2's `:authority`): served,
        // the origin getting the authority lower-cased, as the key has it.
        let (s, _, b) = edge_get(&svc, "http://a.test/x", &[("host", b"A.test")]).await;
        assert_eq!(
            (s, b.as_str()),
            (200, "host=a.test path=/x x-v=- xfh=- user=-")
        );
        let (s, x, _) = edge_get(&svc, "http://a.test/x", &[]).await;
        assert_eq!((s, x.as_str()), (200, "HIT-MEM"));
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_hide_a_field_the_cache_reads() {
    tokio::time::timeout(BOUND, async {
        let (svc, server) = edge_stack(Default::default()).await;
        let host = ("host", &b"a.test"[..]);
        // `X-V` named in Connection is gone before the cache reads it: the response made
        // without it is stored as the variant without it...
        let hidden = [host, ("connection", b"X-V"), ("x-v", b"fr")];
        let (s, _, b) = edge_get(&svc, "/v", &hidden).await;
        assert_eq!(
            (s, b.as_str()),
            (200, "host=a.test path=/v x-v=- xfh=- user=-")
        );
        // ...and the variant for `X-V: fr` is made with it.
        let (s, _, b) = edge_get(&svc, "/v", &[host, ("x-v", b"fr")]).await;
        assert_eq!(
            (s, b.as_str()),
            (200, "host=a.test path=/v x-v=fr xfh=- user=-")
        );
        let (_, x, b) = edge_get(&svc, "/v", &[host]).await;
        assert_eq!(
            (x.as_str(), b.as_str()),
            ("HIT-MEM", "host=a.test path=/v x-v=- xfh=- user=-")
        );
        // Options that name end-to-end fields are refused.
        for named in [
            "Host",
            "content-length",
            "Authorization",
            "cookie",
            "x-forwarded-for",
        ] {
            let (s, _, _) = edge_get(&svc, "/", &[host, ("connection", named.as_bytes())]).await;
            assert_eq!(s, 400, "Connection: {named}");
        }
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_never_reach_the_origin_unkeyed() {
    use tower_cache::http::ForwardedFields;
    tokio::time::timeout(BOUND, async {
        let host = ("host", &b"a.test"[..]);
        let evil = ("x-forwarded-host", &b"evil.test"[..]);
        // By default they are dropped: the origin never sees them.
        let (svc, server) = edge_stack(ForwardedFields::Drop).await;
        let (_, _, b) = edge_get(&svc, "/f", &[host, evil]).await;
        assert_eq!(b, "host=a.test path=/f x-v=- xfh=- user=-");
        let (_, x, b) = edge_get(&svc, "/f", &[host]).await;
        assert_eq!(
            (x.as_str(), b.as_str()),
            ("HIT-MEM", "host=a.test path=/f x-v=- xfh=- user=-")
        );
        server.abort();
        // Keyed: passed on, and each value its own entry.
        let (svc, server) = edge_stack(ForwardedFields::Key).await;
        let (_, _, b) = edge_get(&svc, "/f", &[host, evil]).await;
        assert_eq!(b, "host=a.test path=/f x-v=- xfh=evil.test user=-");
        let (_, x, b) = edge_get(&svc, "/f", &[host]).await;
        assert_eq!(
            (x.as_str(), b.as_str()),
            ("MISS", "host=a.test path=/f x-v=- xfh=- user=-")
        );
        let (_, x, b) = edge_get(&svc, "/f", &[host, evil]).await;
        assert_eq!(
            (x.as_str(), b.as_str()),
            ("HIT-MEM", "host=a.test path=/f x-v=- xfh=evil.test user=-")
        );
        // A background refresh asks with the values the entry is keyed by.
        let (_, _, first) = edge_get(&svc, "/swr", &[host, evil]).await;
        loop {
            let (_, x, b) = edge_get(&svc, "/swr", &[host, evil]).await;
            assert_eq!(x, "STALE");
            assert!(b.contains("xfh=evil.test"), "{b}");
            if b != first {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_control_line_with_obs_text_keeps_its_directives() {
    tokio::time::timeout(BOUND, async {
        let (svc, server) = edge_stack(Default::default()).await;
        let host = ("host", &b"a.test"[..]);
        // `private` sits on a line with obs-text: one user's page never reaches another.
        let (_, _, b) = edge_get(&svc, "/obs", &[host, ("x-user", b"alice")]).await;
        assert!(b.ends_with("user=alice"), "{b}");
        let (_, _, b) = edge_get(&svc, "/obs", &[host, ("x-user", b"bob")]).await;
        assert!(b.ends_with("user=bob"), "bob got {b}");
        // A request's `no-store` on such a line is heard: not answered from the cache.
        edge_get(&svc, "/s", &[host]).await;
        assert_eq!(edge_get(&svc, "/s", &[host]).await.1, "HIT-MEM");
        let no_store = ("cache-control", &b"no-store, ext=\"caf\xe9\""[..]);
        assert_eq!(edge_get(&svc, "/s", &[host, no_store]).await.1, "PASS");
        // A line that is no directive list at all: neither served nor stored.
        let broken = ("cache-control", &b"max-age=60, ext=caf\xe9"[..]);
        assert_eq!(edge_get(&svc, "/s", &[host, broken]).await.1, "PASS");
        server.abort();
    })
    .await
    .expect("bounded");
}
