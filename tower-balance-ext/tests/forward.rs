//! The lean HTTP/1.1 forwarder over real loopback sockets: scripted raw backends that
//! record what reaches them, a raw client that checks what comes back.
#![cfg(feature = "http1-forward")]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_balance_ext::forward::{
    ForwardConfig, Forwarder, Upstream, UpstreamError, UpstreamErrorKind,
};
use tower_balance_ext::{discover, BalancerBuilder, BoxError, Pick};

/// Every test ends within this.
const BOUND: Duration = Duration::from_secs(20);

/// What one backend received: the request heads, exactly, and bodies.
#[derive(Default)]
struct Seen {
    heads: Vec<String>,
    bodies: Vec<Vec<u8>>,
}

/// A raw backend: answers by path, after recording the request.
async fn backend(name: &'static str) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request.
                    let (len, path, body_len) = loop {
                        let mut headers = [httparse::EMPTY_HEADER; 64];
                        let mut req = httparse::Request::new(&mut headers);
                        if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                            let cl = req
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                                .unwrap_or(0usize);
                            break (len, req.path.unwrap().to_owned(), cl);
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buf.len() < len + body_len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
                    let body = buf[len..len + body_len].to_vec();
                    buf.drain(..len + body_len);
                    {
                        let mut r = record.lock().unwrap();
                        r.heads.push(head);
                        r.bodies.push(body.clone());
                    }
                    let ok = format!(
                        "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-length: 2\r\n\r\nok"
                    );
                    match path.as_str() {
                        "/echo" => {
                            let mut out = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            out.extend_from_slice(&body);
                            s.write_all(&out).await.ok();
                        }
                        "/chunked" => {
                            for part in [
                                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"[..],
                                b"lo\r\n6;x=y\r\n world\r",
                                b"\n0\r\nx-trailer: 1\r\n\r\n",
                            ] {
                                if s.write_all(part).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                        "/until-close" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it").await.ok();
                            return;
                        }
                        "/conn-close" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok").await.ok();
                            return;
                        }
                        "/hop" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\nconnection: x-internal\r\nx-internal: secret\r\nkeep-alive: timeout=5\r\nx-kept: 1\r\ncontent-length: 2\r\n\r\nok").await.ok();
                        }
                        "/early-hints" => {
                            s.write_all(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.ok();
                        }
                        "/big" => send_large(&mut s, 4 * 1024 * 1024).await,
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            s.write_all(ok.as_bytes()).await.ok();
                        }
                        "/gzip-until-close" => {
                            s.write_all(
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n\x1f\x8b coded",
                            )
                            .await
                            .ok();
                            return;
                        }
                        "/huge" => send_large(&mut s, 64 * 1024 * 1024).await,
                        "/delay" => {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            s.write_all(ok.as_bytes()).await.ok();
                        }
                        "/cut" => {
                            s.write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789",
                            )
                            .await
                            .ok();
                            return;
                        }
                        "/garbage" => {
                            s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.ok();
                            return;
                        }
                        "/bad-chunks" => {
                            s.write_all(
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                            )
                            .await
                            .ok();
                            return;
                        }
                        "/answer-then-close" => {
                            // Closes an idle keep-alive connection at once, as a server with a
                            // short idle timeout does.
                            s.write_all(ok.as_bytes()).await.ok();
                            return;
                        }
                        _ => s.write_all(ok.as_bytes()).await.unwrap(),
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Answers `size` bytes of 'x' with a Content-Length, 64 KiB per write, stopping when
/// the connection fails.
async fn send_large(s: &mut TcpStream, size: usize) {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
    if s.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let block = vec![b'x'; 64 * 1024];
    for _ in 0..size / block.len() {
        if s.write_all(&block).await.is_err() {
            return;
        }
    }
}

use common::forward::proxy;

/// A forwarder over one backend with `client_timeout`.
async fn proxy_with_client_timeout(client_timeout: Duration) -> SocketAddr {
    let (a, _) = backend("a").await;
    let config = ForwardConfig {
        client_timeout,
        ..ForwardConfig::default()
    };
    proxy(&[a], config).await
}

/// A response as the client read it.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one response from `s` (`buf` keeps bytes read past it): by Content-Length, by
/// chunked framing (kept as is), or to the end of the connection.
async fn read_reply(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Option<Reply> {
    let mut eof = false;
    loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let get = |n: &str| {
                        res.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(n))
                            .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    };
                    Some((
                        len,
                        res.code.unwrap(),
                        get("content-length"),
                        get("transfer-encoding"),
                    ))
                }
                _ => None,
            }
        };
        if let Some((len, status, cl, te)) = parsed {
            let head = String::from_utf8_lossy(&buf[..len]).into_owned();
            let end = if head_request {
                Some(len)
            } else if te.as_deref().is_some_and(|t| t.contains("chunked")) {
                let body = &buf[len..];
                body.windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                    .map(|p| len + p + 5)
                    .or_else(|| {
                        // A trailer section: the end is the first empty line after "0\r\n".
                        let z = body.windows(3).position(|w| w == b"0\r\n")?;
                        let rest = &body[z + 3..];
                        rest.windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map(|e| len + z + 3 + e + 4)
                    })
            } else if let Some(cl) = cl {
                let n: usize = cl.trim().parse().unwrap();
                (buf.len() >= len + n).then_some(len + n)
            } else {
                eof.then_some(buf.len())
            };
            if let Some(end) = end {
                let body = buf[len..end].to_vec();
                buf.drain(..end);
                return Some(Reply { status, head, body });
            }
        }
        if eof {
            return None;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether the proxy closed `s` (reads EOF or reset within a second).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: example.test\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_requests_over_one_client_connection_across_backends() {
    tokio::time::timeout(BOUND, async {
        let (a, seen_a) = backend("a").await;
        let (b, seen_b) = backend("b").await;
        let (c, seen_c) = backend("c").await;
        let addr = proxy(&[a, b, c], ForwardConfig::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let mut names = Vec::new();
        for _ in 0..6 {
            s.write_all(get("/ok").as_bytes()).await.unwrap();
            let r = read_reply(&mut s, &mut buf, false).await.unwrap();
            assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
            let name = r
                .head
                .lines()
                .find_map(|l| l.strip_prefix("x-backend: "))
                .unwrap()
                .to_owned();
            names.push(name);
        }
        names.sort();
        assert_eq!(names, ["a", "a", "b", "b", "c", "c"]);
        // A body goes through whole; the head the backend sees is the one parsed.
        s.write_all(
            b"POST /echo HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\n\r\nhello world",
        )
        .await
        .unwrap();
        let r = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world"[..]));
        let all: Vec<(String, Vec<u8>)> = [seen_a, seen_b, seen_c]
            .iter()
            .flat_map(|s| {
                let s = s.lock().unwrap();
                s.heads
                    .iter()
                    .cloned()
                    .zip(s.bodies.iter().cloned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(all.len(), 7);
        assert!(all.contains(&(
            "POST /echo HTTP/1.1\r\nHost: example.test\r\ncontent-length: 11\r\nx-forwarded-for: 127.0.0.1\r\nforwarded: for=127.0.0.1;proto=http\r\nx-forwarded-proto: http\r\n\r\n".to_owned(),
            b"hello world".to_vec()
        )));
        // Two requests in one write (pipelined) are answered in order.
        s.write_all(format!("{}{}", get("/echo"), get("/ok")).as_bytes())
            .await
            .unwrap();
        let first = read_reply(&mut s, &mut buf, false).await.unwrap();
        let second = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(
            (first.body.as_slice(), second.body.as_slice()),
            (&b""[..], &b"ok"[..])
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_framings_pass_through_and_the_connection_stays_right() {
    tokio::time::timeout(BOUND, async {
        let (a, _) = backend("a").await;
        let addr = proxy(&[a], ForwardConfig::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        // Chunked, written in pieces with an extension and a trailer: passed as is.
        s.write_all(get("/chunked").as_bytes()).await.unwrap();
        let r = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert!(r.head.contains("transfer-encoding: chunked"), "{}", r.head);
        assert_eq!(
            r.body,
            b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
        );
        // The same connection goes on.
        s.write_all(get("/ok").as_bytes()).await.unwrap();
        assert_eq!(
            read_reply(&mut s, &mut buf, false).await.unwrap().body,
            b"ok"
        );
        // HEAD: a Content-Length and no body; the next answer is read right.
        s.write_all(b"HEAD /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let r = read_reply(&mut s, &mut buf, true).await.unwrap();
        assert!(r.head.contains("content-length: 2"), "{}", r.head);
        s.write_all(get("/early-hints").as_bytes()).await.unwrap();
        let r = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"ok"[..]),
            "103 dropped, 200 passed"
        );
        // An upstream's `connection: close` is its own: the client's connection stays.
        s.write_all(get("/conn-close").as_bytes()).await.unwrap();
        let r = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert!(
            !r.head.to_ascii_lowercase().contains("connection"),
            "{}",
            r.head
        );
        s.write_all(get("/ok").as_bytes()).await.unwrap();
        assert_eq!(
            read_reply(&mut s, &mut buf, false).await.unwrap().body,
            b"ok"
        );
        // 4 MiB streams through (no size limit on responses).
        s.write_all(get("/big").as_bytes()).await.unwrap();
        let r = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(r.body.len(), 4 * 1024 * 1024);
        assert!(r.body.iter().all(|b| *b == b'x'));
        // A coding other than chunked, framed by the connection's end: the coding is
        // kept (the client must know the body is gzip), the body read until the close.
        let mut s2 = TcpStream::connect(addr).await.unwrap();
        let mut buf2 = Vec::new();
        s2.write_all(get("/gzip-until-close").as_bytes())
            .await
            .unwrap();
        let r = read_reply(&mut s2, &mut buf2, false).await.unwrap();
        assert!(r.head.contains("transfer-encoding: gzip"), "{}", r.head);
        assert_eq!(r.body, b"\x1f\x8b coded");
        // No length: read until the upstream closes, then the client's connection closes.
        s.write_all(get("/until-close").as_bytes()).await.unwrap();
        let r = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert!(r.head.contains("connection: close"), "{}", r.head);
        assert_eq!(r.body, b"all of it");
        assert!(closed(&mut s).await);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_name_the_peer_and_keep_only_what_trusted_proxies_added() {
    tokio::time::timeout(BOUND, async {
        let client_says = "GET /f HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6, 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nForwarded: for=6.6.6.6, for=\"[2001:db8::1]:80\";proto=https\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: public.example\r\n\r\n";
        // No trusted proxy in front (the default): only what this proxy saw.
        let (a, seen) = backend("a").await;
        let addr = proxy(&[a], ForwardConfig::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(client_says.as_bytes()).await.unwrap();
        read_reply(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(
            seen.lock().unwrap().heads[0],
            "GET /f HTTP/1.1\r\nHost: x\r\nx-forwarded-for: 127.0.0.1\r\nforwarded: for=127.0.0.1;proto=http\r\nx-forwarded-proto: http\r\n\r\n"
        );
        // One trusted proxy in front: the last entry of each chain is its, kept, and
        // the peer is appended; its X-Forwarded-Proto and -Host are kept.
        let (b, seen) = backend("b").await;
        let config = ForwardConfig {
            trusted_hops: 1,
            ..ForwardConfig::default()
        };
        let addr = proxy(&[b], config).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(client_says.as_bytes()).await.unwrap();
        read_reply(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(
            seen.lock().unwrap().heads[0],
            "GET /f HTTP/1.1\r\nHost: x\r\nX-Forwarded-Host: public.example\r\nx-forwarded-for: 10.0.0.2, 127.0.0.1\r\nforwarded: for=\"[2001:db8::1]:80\";proto=https, for=127.0.0.1;proto=http\r\nx-forwarded-proto: https\r\n\r\n"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_at_the_proxy_both_ways() {
    tokio::time::timeout(BOUND, async {
        let (a, seen) = backend("a").await;
        let addr = proxy(&[a], ForwardConfig::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(b"GET /hop HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n")
            .await
            .unwrap();
        let r = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(
            seen.lock().unwrap().heads[0],
            "GET /hop HTTP/1.1\r\nHost: x\r\nX-Kept: yes\r\nx-forwarded-for: 127.0.0.1\r\nforwarded: for=127.0.0.1;proto=http\r\nx-forwarded-proto: http\r\n\r\n"
        );
        let head = r.head.to_ascii_lowercase();
        assert!(head.contains("x-kept: 1"), "{head}");
        for gone in ["x-internal", "keep-alive", "connection"] {
            assert!(!head.contains(gone), "{gone} passed: {head}");
        }
        // The client asks to close: answered, then closed.
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        assert_eq!(read_reply(&mut s, &mut buf, false).await.unwrap().body, b"ok");
        assert!(closed(&mut s).await);
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_forwarded_safely_is_refused_and_never_reaches_a_backend() {
    tokio::time::timeout(BOUND, async {
        let (a, seen) = backend("a").await;
        let config = ForwardConfig {
            max_head: 1024,
            max_request_body: 16,
            ..ForwardConfig::default()
        };
        let addr = proxy(&[a], config).await;
        let long_header = format!("GET / HTTP/1.1\r\nhost: x\r\nx-long: {}\r\n\r\n", "a".repeat(2000));
        let many_headers = format!(
            "GET / HTTP/1.1\r\nhost: x\r\n{}\r\n",
            (0..150).map(|i| format!("x-{i}: 1\r\n")).collect::<String>()
        );
        let cases: Vec<(&str, String, u16)> = vec![
            ("chunked request body", "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(), 501),
            ("CL and TE (smuggling)", "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".into(), 501),
            ("two lengths", "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".into(), 400),
            ("length not a number", "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1x\r\n\r\nab".into(), 400),
            ("negative length", "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n".into(), 400),
            ("no host", "GET / HTTP/1.1\r\n\r\n".into(), 400),
            ("two hosts", "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".into(), 400),
            ("Connection names Host", "GET / HTTP/1.1\r\nhost: x\r\nconnection: host\r\n\r\n".into(), 400),
            ("absolute-form with userinfo", "GET http://u@x/ HTTP/1.1\r\nhost: x\r\n\r\n".into(), 400),
            ("expect", "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n".into(), 417),
            ("body over the limit", "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 17\r\n\r\n".into(), 413),
            ("head over the limit", long_header, 431),
            ("too many headers", many_headers, 431),
            ("garbage", "\x01\x02 nonsense\r\n\r\n".into(), 400),
            ("space before colon", "GET / HTTP/1.1\r\nhost : x\r\n\r\n".into(), 400),
            ("obs-fold", "GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n  folded\r\n\r\n".into(), 400),
        ];
        for (what, request, status) in cases {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let r = read_reply(&mut s, &mut buf, false).await.unwrap_or_else(|| panic!("{what}: no answer"));
            assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
            assert!(r.head.contains("connection: close"), "{what}");
            assert!(closed(&mut s).await, "{what}: connection left open");
        }
        assert!(seen.lock().unwrap().heads.is_empty(), "a refused request reached the backend");
        // A client that stops mid-body: nothing is sent on.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc").await.unwrap();
        drop(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(seen.lock().unwrap().heads.is_empty());
        // And the proxy still serves.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(get("/ok").as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_reply(&mut s, &mut buf, false).await.unwrap().body, b"ok");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_answer_502_503_504_and_closed_idle_connections_are_replaced() {
    tokio::time::timeout(BOUND, async {
        let (a, seen) = backend("a").await;
        let config = ForwardConfig {
            upstream_timeout: Duration::from_millis(300),
            ..ForwardConfig::default()
        };
        let addr = proxy(&[a], config.clone()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        // The backend closes each connection after answering: the pooled one is found
        // closed at the next request, which goes again over a new connection.
        for _ in 0..5 {
            s.write_all(get("/answer-then-close").as_bytes())
                .await
                .unwrap();
            let r = read_reply(&mut s, &mut buf, false).await.unwrap();
            assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.lock().unwrap().heads.len(), 5);
        // A POST, which must not be sent twice, is not sent over the pooled connection
        // the backend has closed in the meantime: it goes over a new one.
        for _ in 0..3 {
            s.write_all(
                b"POST /answer-then-close HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
            )
            .await
            .unwrap();
            let r = read_reply(&mut s, &mut buf, false).await.unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Garbage for a head: 502; the client's connection goes on.
        s.write_all(get("/garbage").as_bytes()).await.unwrap();
        let r = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(r.status, 502, "{r:?}");
        // Too slow: 504.
        s.write_all(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let r = read_reply(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(r.status, 504, "{r:?}");
        // Broken chunked framing after the head went out: the client's connection is
        // closed (its response cannot be completed).
        let mut s2 = TcpStream::connect(addr).await.unwrap();
        s2.write_all(get("/bad-chunks").as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s2.read_to_end(&mut all)).await;
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.starts_with("HTTP/1.1 502") || text.starts_with("HTTP/1.1 200"),
            "{text}"
        );
        assert!(!text.contains("zz"), "bad framing passed on: {text}");

        // The upstream cut mid-body: the client gets what came, then its connection
        // closes (the answer cannot be completed), and the proxy goes on serving.
        let mut s3 = TcpStream::connect(addr).await.unwrap();
        s3.write_all(get("/cut").as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s3.read_to_end(&mut all)).await;
        assert!(read.is_ok(), "the client was left hanging");
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("0123456789"),
            "{text}"
        );
        let mut s4 = TcpStream::connect(addr).await.unwrap();
        s4.write_all(get("/ok").as_bytes()).await.unwrap();
        let mut buf4 = Vec::new();
        assert_eq!(
            read_reply(&mut s4, &mut buf4, false).await.unwrap().body,
            b"ok"
        );

        // Nothing listening: 502 or, once set aside, 503.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let addr = proxy(&[dead], config).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        for _ in 0..3 {
            s.write_all(get("/ok").as_bytes()).await.unwrap();
            let r = read_reply(&mut s, &mut buf, false).await.unwrap();
            assert!(r.status == 502 || r.status == 503, "{r:?}");
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(start_paused = true)]
async fn the_client_timeout_closes_idle_and_stalled_connections_and_only_those() {
    tokio::time::timeout(BOUND, async {
        let addr = proxy_with_client_timeout(Duration::from_secs(1)).await;
        // A client that keeps sending within the timeout is served for several times
        // its length (the timer moves along with it).
        let mut busy = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        for _ in 0..6 {
            busy.write_all(get("/ok").as_bytes()).await.unwrap();
            assert_eq!(
                read_reply(&mut busy, &mut buf, false).await.unwrap().body,
                b"ok"
            );
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        // Idle: closed once the timeout has passed.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let start = tokio::time::Instant::now();
        assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
        assert!(start.elapsed() >= Duration::from_secs(1));
        // Half a head, then nothing: closed too, and nothing was forwarded.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /ok HTTP/1.1\r\nhost:")
            .await
            .unwrap();
        assert!(closed_within(&mut stalled, Duration::from_secs(5)).await);
        // Half a body, then nothing.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
        assert!(closed_within(&mut stalled, Duration::from_secs(5)).await);
    })
    .await
    .expect("bounded");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_off_after_the_client_timeout() {
    tokio::time::timeout(BOUND, async {
        let addr = proxy_with_client_timeout(Duration::from_secs(2)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(get("/huge").as_bytes()).await.unwrap();
        // Reads nothing while the proxy's writes fill the socket buffers.
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Then whatever was buffered, and the end: well short of 64 MiB.
        let mut total = 0usize;
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        assert!(
            total < 64 * 1024 * 1024,
            "read {total} bytes: the proxy never gave up"
        );
    })
    .await
    .expect("bounded");
}

/// Whether `s` reads EOF (or a reset) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(start_paused = true)]
async fn a_drain_finishes_requests_in_progress_closes_idle_connections_and_returns() {
    tokio::time::timeout(BOUND, async {
        let (a, _) = backend("a").await;
        let upstreams = vec![(a, Upstream::new(a))];
        let balancer = BalancerBuilder::new(Pick::RoundRobin)
            .build(discover::fixed(upstreams))
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            Forwarder::new(balancer).serve_with_shutdown(listener, async {
                let _ = stopped.await;
            }),
        );
        // One connection idle after a request, one in the middle of a slow one.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        idle.write_all(get("/ok").as_bytes()).await.unwrap();
        assert_eq!(
            read_reply(&mut idle, &mut buf, false).await.unwrap().body,
            b"ok"
        );
        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(get("/delay").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        // The slow one is answered whole, then closed; the idle one is closed.
        let mut busy_buf = Vec::new();
        let r = read_reply(&mut busy, &mut busy_buf, false).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        assert!(closed_within(&mut busy, Duration::from_secs(5)).await);
        assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
        // serve_with_shutdown returns, and nothing listens any more.
        server.await.unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    })
    .await
    .expect("bounded");
}

#[tokio::test(start_paused = true)]
async fn beyond_max_connections_a_client_waits_until_one_closes() {
    tokio::time::timeout(BOUND, async {
        let (a, _) = backend("a").await;
        let config = ForwardConfig {
            max_connections: 1,
            ..ForwardConfig::default()
        };
        let addr = proxy(&[a], config).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        first.write_all(get("/ok").as_bytes()).await.unwrap();
        assert_eq!(
            read_reply(&mut first, &mut buf, false).await.unwrap().body,
            b"ok"
        );
        // The second is in the backlog: no answer while the first is open.
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(get("/ok").as_bytes()).await.unwrap();
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_secs(3), second.read(&mut byte))
                .await
                .is_err(),
            "served beyond max_connections"
        );
        drop(first);
        let mut buf = Vec::new();
        let r = read_reply(&mut second, &mut buf, false).await.unwrap();
        assert_eq!(r.body, b"ok");
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_settings_work_or_are_refused_with_a_message() {
    tokio::time::timeout(BOUND, async {
        let (a, _) = backend("a").await;
        // The largest values: no overflow, requests go through.
        let huge = ForwardConfig {
            max_head: usize::MAX,
            max_request_body: usize::MAX,
            client_timeout: Duration::MAX,
            upstream_timeout: Duration::MAX,
            max_idle_per_upstream: usize::MAX,
            max_connections: usize::MAX >> 4,
            trusted_hops: usize::MAX,
        };
        // The smallest that make sense: no pooling, no request bodies.
        let small = ForwardConfig {
            max_request_body: 0,
            max_idle_per_upstream: 0,
            max_connections: 1,
            ..ForwardConfig::default()
        };
        for config in [huge, small.clone()] {
            let addr = proxy(&[a], config).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::new();
            for _ in 0..3 {
                s.write_all(get("/ok").as_bytes()).await.unwrap();
                assert_eq!(
                    read_reply(&mut s, &mut buf, false).await.unwrap().body,
                    b"ok"
                );
            }
        }
        let addr = proxy(&[a], small).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx")
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            read_reply(&mut s, &mut buf, false).await.unwrap().status,
            413
        );

        // Settings that cannot work are refused when built, naming the field.
        let upstreams = || vec![(a, Upstream::new(a))];
        for (config, field) in [
            (
                ForwardConfig {
                    client_timeout: Duration::ZERO,
                    ..ForwardConfig::default()
                },
                "client_timeout",
            ),
            (
                ForwardConfig {
                    upstream_timeout: Duration::ZERO,
                    ..ForwardConfig::default()
                },
                "upstream_timeout",
            ),
            (
                ForwardConfig {
                    max_connections: 0,
                    ..ForwardConfig::default()
                },
                "max_connections",
            ),
            (
                ForwardConfig {
                    max_head: 10,
                    ..ForwardConfig::default()
                },
                "max_head",
            ),
        ] {
            let balancer = BalancerBuilder::new(Pick::RoundRobin)
                .build(discover::fixed(upstreams()))
                .unwrap();
            let err = Forwarder::builder(balancer)
                .config(config.clone())
                .build()
                .unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
            // An upstream uses the timeout and the head limit; it has no clients.
            let upstream = Upstream::builder(a).config(config).build();
            if field == "upstream_timeout" || field == "max_head" {
                let err = upstream.unwrap_err();
                assert!(err.to_string().contains(field), "{err}");
            } else {
                assert!(upstream.is_ok());
            }
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_of_a_thousand_clients_at_once_are_all_answered() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (a, seen) = backend("a").await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        for (backends, want) in [(vec![a], 200), (vec![dead], 0)] {
            let addr = proxy(&backends, ForwardConfig::default()).await;
            let clients: Vec<_> = (0..1000)
                .map(|_| {
                    tokio::spawn(async move {
                        let mut s = TcpStream::connect(addr).await.unwrap();
                        s.write_all(get("/ok").as_bytes()).await.unwrap();
                        let mut buf = Vec::new();
                        read_reply(&mut s, &mut buf, false).await.map(|r| r.status)
                    })
                })
                .collect();
            for c in clients {
                let status = c.await.unwrap().expect("every client is answered");
                if want == 200 {
                    assert_eq!(status, 200);
                } else {
                    assert!(status == 502 || status == 503, "{status}");
                }
            }
        }
        assert_eq!(seen.lock().unwrap().heads.len(), 1000);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn upstream_errors_say_which_part_of_the_exchange_failed() {
    tokio::time::timeout(BOUND, async {
        // A backend that answers garbage to /garbage and nothing to /slow.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if buf[..n].starts_with(b"GET /garbage") {
                        let _ = s.write_all(b"garbage\r\n\r\n").await;
                    }
                    // Held open without an answer until the client goes.
                    let _ = s.read(&mut buf).await;
                });
            }
        });
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let config = ForwardConfig {
            upstream_timeout: Duration::from_millis(300),
            ..ForwardConfig::default()
        };
        // The errors the forwarder's balancer sees, as the caller of an Upstream would.
        type Seen = Arc<Mutex<Vec<(SocketAddr, UpstreamErrorKind, u16, bool)>>>;
        let seen: Seen = Arc::default();
        let proxy = |backend: SocketAddr| {
            let seen = seen.clone();
            let upstream = tower::ServiceBuilder::new()
                .map_err(move |e: BoxError| {
                    if let Some(u) = e.downcast_ref::<UpstreamError>() {
                        let io = std::error::Error::source(u)
                            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
                        seen.lock()
                            .unwrap()
                            .push((u.addr(), u.kind(), u.status().as_u16(), io));
                    }
                    e
                })
                .service(
                    Upstream::builder(backend)
                        .config(config.clone())
                        .build()
                        .unwrap(),
                );
            let balancer = BalancerBuilder::new(Pick::RoundRobin)
                .build(discover::fixed([(backend, upstream)]))
                .unwrap();
            let config = config.clone();
            async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                tokio::spawn(
                    Forwarder::builder(balancer)
                        .config(config)
                        .build()
                        .unwrap()
                        .serve(listener),
                );
                addr
            }
        };
        let to_live = proxy(live).await;
        let mut s = TcpStream::connect(to_live).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(get("/garbage").as_bytes()).await.unwrap();
        assert_eq!(
            read_reply(&mut s, &mut buf, false).await.unwrap().status,
            502
        );
        s.write_all(get("/slow").as_bytes()).await.unwrap();
        assert_eq!(
            read_reply(&mut s, &mut buf, false).await.unwrap().status,
            504
        );
        let to_dead = proxy(dead).await;
        let mut s = TcpStream::connect(to_dead).await.unwrap();
        let mut buf = Vec::new();
        s.write_all(get("/").as_bytes()).await.unwrap();
        assert_eq!(
            read_reply(&mut s, &mut buf, false).await.unwrap().status,
            502
        );
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (live, UpstreamErrorKind::Protocol, 502, false),
                (live, UpstreamErrorKind::Timeout, 504, false),
                (dead, UpstreamErrorKind::Connection, 502, true),
            ]
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
#[allow(deprecated)]
async fn the_deprecated_with_config_constructors_check_as_the_builders_do() {
    let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = ForwardConfig {
        upstream_timeout: Duration::ZERO,
        ..ForwardConfig::default()
    };
    let err = Upstream::with_config(a, bad.clone()).unwrap_err();
    assert!(err.to_string().contains("upstream_timeout"), "{err}");
    let upstream = Upstream::with_config(a, ForwardConfig::default()).unwrap();
    assert_eq!(upstream.addr(), a);
    let balancer = BalancerBuilder::new(Pick::RoundRobin)
        .build(discover::fixed([(a, upstream)]))
        .unwrap();
    let err = Forwarder::with_config(balancer.clone(), bad).unwrap_err();
    assert!(err.to_string().contains("upstream_timeout"), "{err}");
    assert!(Forwarder::with_config(balancer, ForwardConfig::default()).is_ok());
}
