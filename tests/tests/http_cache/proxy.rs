//! Through the standalone proxy, as a child process: caching, forwarding, upstream
//! failures and purges (also across peers).

use axum::response::IntoResponse;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

// === through the standalone proxy, as a child process ===

/// The proxy as a child process, killed when dropped.
pub(crate) struct Proxy {
    pub(crate) child: tokio::process::Child,
    pub(crate) addr: std::net::SocketAddr,
}

impl Proxy {
    pub(crate) async fn start(upstream: &str) -> Proxy {
        Self::start_with(support::free_addr().unwrap(), upstream, &[]).await
    }

    pub(crate) async fn start_with(
        addr: std::net::SocketAddr,
        upstream: &str,
        extra: &[String],
    ) -> Proxy {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cache-proxy"))
            .args(["--listen", &addr.to_string(), "--upstream", upstream])
            .args(["--upstream-timeout-ms", "2000"])
            .args(extra)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Until it listens (the whole test is bounded).
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Proxy { child, addr }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub(crate) async fn send_via(
    proxy: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (u16, http::HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let res = client
        .request(
            req.body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, b) = res.into_parts();
    let b = b.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&b).into_owned(),
    )
}

pub(crate) async fn echo(req: axum::extract::Request) -> impl IntoResponse {
    let method = req.method().to_string();
    let custom = req
        .headers()
        .get("x-custom")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let hop = req.headers().contains_key("x-hop");
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    format!(
        "{method} custom={custom} hop={hop} body={}",
        String::from_utf8_lossy(&body)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_proxy_caches_forwards_and_reports_upstream_failure() {
    tokio::time::timeout(BOUND, async {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route("/echo", axum::routing::any(echo))
            .fallback(origin)
            .with_state(Origin {
                calls: calls.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = Proxy::start(&format!("http://{origin_addr}")).await;

        // Cached per the policy.
        let (s, h, b1) = send_via(proxy.addr, "GET", "/a/x?cc=max-age%3D60", &[], "").await;
        assert_eq!((s, h["x-cache"].to_str().unwrap()), (200, "MISS"));
        let (s, h, b2) = send_via(proxy.addr, "GET", "/a/x?cc=max-age%3D60", &[], "").await;
        assert_eq!((s, h["x-cache"].to_str().unwrap()), (200, "HIT-MEM"));
        assert_eq!(b1, b2);
        assert!(h.contains_key("age"));
        let (_, h, _) = send_via(proxy.addr, "GET", "/b/x?cc=no-store", &[], "").await;
        assert_eq!(h["x-cache"], "PASS");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // Every method, header and body forwarded; hop-by-hop fields are not.
        let (s, _, b) = send_via(
            proxy.addr,
            "PATCH",
            "/echo",
            &[
                ("x-custom", "kept"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
            ],
            "payload",
        )
        .await;
        assert_eq!(
            (s, b.as_str()),
            (200, "PATCH custom=kept hop=false body=payload")
        );

        // The upstream goes away: 502.
        server.abort();
        let _ = server.await;
        let (s, _, _) = send_via(proxy.addr, "GET", "/c/x?cc=max-age%3D60", &[], "").await;
        assert_eq!(s, 502);
        // What was stored is still served.
        let (s, h, _) = send_via(proxy.addr, "GET", "/a/x?cc=max-age%3D60", &[], "").await;
        assert_eq!((s, h["x-cache"].to_str().unwrap()), (200, "HIT-MEM"));
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn the_proxy_answers_504_when_the_upstream_hangs() {
    tokio::time::timeout(BOUND, async {
        // Accepts connections and never answers.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hang_addr = hang.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = hang.accept().await {
                held.push(s);
            }
        });
        let proxy = Proxy::start(&format!("http://{hang_addr}")).await;
        let (s, _, _) = send_via(proxy.addr, "GET", "/slow", &[], "").await;
        assert_eq!(s, 504);
        holder.abort();
    })
    .await
    .expect("bounded");
}

pub(crate) const TOKEN: &str = "a purge token of some length";

pub(crate) async fn origin_server() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let app = axum::Router::new()
        .fallback(origin)
        .with_state(Origin::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (
        addr,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    )
}

pub(crate) fn x_cache_of(h: &http::HeaderMap) -> String {
    h.get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_purges_by_url_and_tag_only_with_the_token() {
    tokio::time::timeout(BOUND, async {
        let (origin_addr, server) = origin_server().await;
        let proxy = Proxy::start_with(
            support::free_addr().unwrap(),
            &format!("http://{origin_addr}"),
            &["--purge-token".into(), TOKEN.into()],
        )
        .await;
        let url = "/p/x?cc=max-age%3D60&skey=group-1";
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "MISS"
        );
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "HIT-MEM"
        );
        // Without the token, or with another: 401, nothing purged.
        let (s, _, _) = send_via(proxy.addr, "PURGE", url, &[], "").await;
        assert_eq!(s, 401);
        let bad = [("authorization", "Bearer not-the-token-at-all!!")];
        let (s, _, _) = send_via(proxy.addr, "PURGE", url, &bad, "").await;
        assert_eq!(s, 401);
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "HIT-MEM"
        );
        let auth = format!("Bearer {TOKEN}");
        let (s, _, b) = send_via(proxy.addr, "PURGE", url, &[("authorization", &auth)], "").await;
        assert_eq!((s, b.as_str()), (200, r#"{"removed":1}"#));
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "MISS"
        );
        // By surrogate key.
        let (s, _, b) = send_via(
            proxy.addr,
            "POST",
            "/anything",
            &[("authorization", &auth), ("x-purge-tag", "group-1")],
            "",
        )
        .await;
        assert_eq!((s, b.as_str()), (200, r#"{"removed":1}"#));
        assert_eq!(
            x_cache_of(&send_via(proxy.addr, "GET", url, &[], "").await.1),
            "MISS"
        );
        server.abort();
    })
    .await
    .expect("bounded");
}

/// Two proxies, A and B, started with the flags `flags(other's address)` gives; a purge
/// on A must empty B's entry too.
/// `connected` returns once the bus links them.
pub(crate) async fn a_purge_spreads<F: std::future::Future<Output = ()>>(
    flags: impl Fn(std::net::SocketAddr) -> Vec<String>,
    connected: F,
) {
    let (origin_addr, server) = origin_server().await;
    let (a_addr, b_addr) = (support::free_addr().unwrap(), support::free_addr().unwrap());
    let upstream = format!("http://{origin_addr}");
    let a = Proxy::start_with(a_addr, &upstream, &flags(b_addr)).await;
    let b = Proxy::start_with(b_addr, &upstream, &flags(a_addr)).await;
    connected.await;
    let url = "/q/x?cc=max-age%3D60";
    // Clients reach every proxy by the same public name, so the keys agree.
    let host = ("host", "app.test");
    for p in [&a, &b] {
        send_via(p.addr, "GET", url, &[host], "").await;
        assert_eq!(
            x_cache_of(&send_via(p.addr, "GET", url, &[host], "").await.1),
            "HIT-MEM"
        );
    }
    let auth = format!("Bearer {TOKEN}");
    let (s, _, _) = send_via(a.addr, "PURGE", url, &[("authorization", &auth), host], "").await;
    assert_eq!(s, 200);
    // B hears of it over the bus (bounded by the test's timeout).
    loop {
        let only = ("cache-control", "only-if-cached");
        let (status, _, _) = send_via(b.addr, "GET", url, &[host, only], "").await;
        if status == 504 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_proxy_reaches_its_peers() {
    tokio::time::timeout(
        BOUND,
        a_purge_spreads(
            |peer| {
                vec![
                    "--purge-token".to_string(),
                    TOKEN.into(),
                    "--secret".into(),
                    "a secret every proxy shares".into(),
                    "--peer".into(),
                    format!("http://{peer}/_cache/invalidate"),
                ]
            },
            async {},
        ),
    )
    .await
    .expect("bounded");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_proxy_reaches_the_others_over_redis() {
    let redis = support::RedisServer::start().unwrap();
    let url = redis.url();
    tokio::time::timeout(
        BOUND,
        a_purge_spreads(
            |_| {
                vec![
                    "--purge-token".to_string(),
                    TOKEN.into(),
                    "--secret".into(),
                    "a secret every proxy shares".into(),
                    "--redis".into(),
                    url.clone(),
                ]
            },
            async {
                // Both proxies subscribed, or A's purge could go out before B listens.
                while redis.subscribers("cache_proxy:invalidate").unwrap() < 2 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        ),
    )
    .await
    .expect("bounded");
}
