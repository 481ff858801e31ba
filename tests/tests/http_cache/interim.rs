//! Interim (1xx) responses (RFC 9110 section 15.2) and the cache: never stored, and what
//! a client of `cache_proxy` sees when the origin sends them.
//!
//! hyper 1.x cannot relay them: its client reads past every 1xx but `101` (a callback,
//! `hyper::ext::on_informational`, can watch them), and its server refuses a 1xx from a
//! service (it sends a `500` instead) and sends no interim response of its own but the
//! `100 Continue` it writes when a service first reads the body of a request with
//! `Expect: 100-continue`. So through `cache_proxy` a client gets the final response
//! only; these tests hold that, and that a 1xx reaching the layer (from any inner
//! service) is passed on and never stored.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use tower_cache::http::HttpCacheLayer;
use tower_layer::Layer;

use super::{Proxy, BOUND};

/// How long a raw-socket read may wait for its bytes.
const READ: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_interim_response_from_the_inner_service_is_passed_on_and_never_stored() {
    // RFC 9110 section 15.2 (interim, not final) and RFC 9111 section 3 (a cache stores
    // final responses only).
    tokio::time::timeout(BOUND, async {
        for status in [100u16, 102, 103] {
            let calls = Arc::new(AtomicUsize::new(0));
            let counter = calls.clone();
            let origin = tower::service_fn(move |_req: Request<Full<Bytes>>| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    // The first answer is the interim one, as a buggy service might give.
                    let code = if n == 0 { status } else { 200 };
                    let res = Response::builder()
                        .status(code)
                        .header("cache-control", "max-age=60")
                        .header("link", "</style.css>; rel=preload")
                        .body(Full::new(Bytes::from(format!("call {n}"))))
                        .unwrap();
                    Ok::<_, Infallible>(res)
                }
            });
            let svc = HttpCacheLayer::default().layer(origin);
            let get = || {
                Request::get("http://a.test/p")
                    .body(Full::default())
                    .unwrap()
            };
            let first = svc.clone().oneshot(get()).await.unwrap();
            assert_eq!(first.status().as_u16(), status);
            assert_eq!(first.headers()["x-cache"], "PASS", "{status}");
            first.into_body().collect().await.unwrap();
            // Not stored: the next request reaches the origin, and its 200 is stored.
            let second = svc.clone().oneshot(get()).await.unwrap();
            assert_eq!(second.status(), StatusCode::OK, "{status}");
            assert_eq!(second.headers()["x-cache"], "MISS", "{status}");
            second.into_body().collect().await.unwrap();
            let third = svc.clone().oneshot(get()).await.unwrap();
            assert_eq!(third.headers()["x-cache"], "HIT-MEM", "{status}");
            let body = third.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "call 1");
            assert_eq!(calls.load(Ordering::SeqCst), 2, "{status}");
        }
    })
    .await
    .expect("bounded");
}

/// A raw HTTP/1.1 origin: answers every request head it reads with `interim` (whole
/// 1xx heads) and then a stored-for-a-minute `200` whose body names the call.
async fn raw_origin(interim: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // One answer per request head (GETs: no bodies).
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        let body = format!("final {n}");
                        let res = format!(
                            "{interim}HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\n\
                             content-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(res.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, calls)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response head (interim or final) and, for a final one with
/// `content-length`, its body.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let head = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            break head;
        }
        let n = tokio::time::timeout(READ, s.read(&mut chunk))
            .await
            .expect("a response within the read bound")
            .unwrap();
        assert!(n > 0, "connection closed before a whole head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    if head.starts_with("HTTP/1.1 1") {
        return (head, Vec::new());
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < len {
        let n = tokio::time::timeout(READ, s.read(&mut chunk))
            .await
            .expect("a body within the read bound")
            .unwrap();
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..len).collect();
    (head, body)
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_proxy_the_client_gets_the_final_response_which_is_stored() {
    // RFC 9110 section 15.2: a 103 Early Hints, and 1xx nobody asked for (100 to a GET
    // without Expect, 102), before the final response. hyper's client reads past them
    // and its server cannot send them: the client sees the final response first.
    tokio::time::timeout(BOUND, async {
        let table: &[(&str, &str)] = &[
            (
                "103 Early Hints",
                "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
            ),
            (
                "unasked 100 and 102",
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
            ),
        ];
        for (name, interim) in table {
            let (origin, calls) = raw_origin(interim).await;
            let proxy = Proxy::start(&format!("http://{origin}")).await;
            let mut s = TcpStream::connect(proxy.addr).await.unwrap();
            let mut buf = Vec::new();
            let req = format!("GET /page HTTP/1.1\r\nhost: {}\r\n\r\n", proxy.addr);
            for (i, expect) in ["MISS", "HIT-MEM"].into_iter().enumerate() {
                s.write_all(req.as_bytes()).await.unwrap();
                let (head, body) = read_response(&mut s, &mut buf).await;
                assert!(
                    head.starts_with("HTTP/1.1 200"),
                    "{name}, request {i}: {head}"
                );
                assert_eq!(header(&head, "x-cache"), Some(expect), "{name}: {head}");
                // The interim response's fields are not merged into the final one.
                assert_eq!(header(&head, "link"), None, "{name}: {head}");
                assert_eq!(body, b"final 1", "{name}, request {i}");
            }
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{name}");
        }
    })
    .await
    .expect("bounded");
}

async fn echo(req: axum::extract::Request) -> String {
    let expect = req
        .headers()
        .get("expect")
        .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    format!("expect={expect} body={}", String::from_utf8_lossy(&body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_works_through_the_proxy_against_a_real_origin() {
    // RFC 9110 section 10.1.1: the client waits for 100 Continue before its content.
    tokio::time::timeout(BOUND, async {
        let app = axum::Router::new().fallback(echo);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = Proxy::start(&format!("http://{origin}")).await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let mut buf = Vec::new();
        for method in ["POST", "PUT"] {
            let head = format!(
                "{method} /echo HTTP/1.1\r\nhost: {}\r\nexpect: 100-continue\r\n\
                 content-length: 7\r\n\r\n",
                proxy.addr
            );
            s.write_all(head.as_bytes()).await.unwrap();
            // Nothing of the content is sent before the 100 (bounded by the read bound).
            let (interim, _) = read_response(&mut s, &mut buf).await;
            assert!(interim.starts_with("HTTP/1.1 100"), "{method}: {interim}");
            s.write_all(b"payload").await.unwrap();
            let (head, body) = read_response(&mut s, &mut buf).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{method}: {head}");
            assert_eq!(
                String::from_utf8_lossy(&body),
                "expect=100-continue body=payload",
                "{method}"
            );
        }
        // A GET with the expectation and no content is answered as any GET.
        let get = format!(
            "GET /echo HTTP/1.1\r\nhost: {}\r\nexpect: 100-continue\r\n\r\n",
            proxy.addr
        );
        s.write_all(get.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut s, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            String::from_utf8_lossy(&body).ends_with("body="),
            "{body:?}"
        );
        server.abort();
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn hyper_s_server_sends_no_interim_response_a_service_returns() {
    // What the docs say of hyper 1.x, held here so that a hyper that learns to send
    // interim responses shows up (and the docs, and `cache_proxy`, can follow).
    tokio::time::timeout(BOUND, async {
        let server = support::TestServer::start(|_req| async {
            Response::builder()
                .status(103)
                .header("link", "</style.css>; rel=preload")
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
        .await
        .unwrap();
        let mut s = TcpStream::connect(server.addr()).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr());
        s.write_all(req.as_bytes()).await.unwrap();
        let (head, _) = read_response(&mut s, &mut Vec::new()).await;
        assert!(head.starts_with("HTTP/1.1 500"), "{head}");
        assert_eq!(header(&head, "link"), None, "{head}");
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}
