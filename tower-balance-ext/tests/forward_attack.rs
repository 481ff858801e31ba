//! Attacks on the forwarder found by review, each of which got through before its fix:
//! the doc comment of each test says what the attack was, the test what the forwarder
//! does about it now.
#![cfg(feature = "http1-forward")]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_balance_ext::forward::ForwardConfig;

/// Every test ends within this.
const BOUND: Duration = Duration::from_secs(20);

/// A scripted backend: for each accepted connection, reads one request head (and
/// records it), then runs `answer` on the socket.
async fn backend<F, Fut>(answer: F) -> (SocketAddr, Arc<Mutex<Vec<String>>>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let record = heads.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).into_owned());
            tokio::spawn(answer(s));
        }
    });
    (addr, heads)
}

use common::forward::proxy;

fn config() -> ForwardConfig {
    ForwardConfig {
        upstream_timeout: Duration::from_secs(2),
        client_timeout: Duration::from_secs(10),
        ..ForwardConfig::default()
    }
}

/// Reads until the proxy ends the connection: the bytes, and whether it ended with a
/// clean close (FIN) rather than an error (RST).
async fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// A close-delimited body (no Content-Length, no Transfer-Encoding) that the upstream
/// cuts with a reset: the forwarder relays the bytes it got and then closes the
/// client's connection cleanly (FIN), so the client has no way to tell the body is
/// truncated. For a close-delimited body the only signal left is an abortive close
/// (RST): the forwarder should send it.
#[tokio::test]
async fn a_close_delimited_body_cut_by_an_upstream_reset_ends_in_a_reset() {
    tokio::time::timeout(BOUND, async {
        let (backend, _) = backend(|mut s: TcpStream| async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nbalance=10")
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Abortive close: RST, the body is cut.
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        })
        .await;
        let proxy = proxy(&[backend], config()).await;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"GET /account HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let (bytes, clean) = read_to_end(&mut c).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.ends_with("balance=10"), "{text:?}");
        assert!(
            !clean,
            "the body was cut by an upstream reset, but the client saw a clean close: {text:?}"
        );
    })
    .await
    .expect("bounded");
}

/// The same with an upstream that stalls in a close-delimited body past the upstream
/// timeout: the forwarder gives up ("the upstream stalled in a body") and closes the
/// client's connection cleanly, which for this framing says "the body is complete".
#[tokio::test]
async fn a_close_delimited_body_cut_by_the_upstream_timeout_ends_in_a_reset() {
    tokio::time::timeout(BOUND, async {
        let (backend, _) = backend(|mut s: TcpStream| async move {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nbalance=10").await;
            // Stall (the rest, "00000", never comes in time).
            tokio::time::sleep(Duration::from_secs(10)).await;
            let _ = s.write_all(b"00000").await;
        })
        .await;
        let proxy = proxy(
            &[backend],
            ForwardConfig {
                upstream_timeout: Duration::from_millis(500),
                ..config()
            },
        )
        .await;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"GET /account HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let (bytes, clean) = read_to_end(&mut c).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.ends_with("balance=10"), "{text:?}");
        assert!(
            !clean,
            "the upstream stalled and the body was cut, but the client saw a clean close: {text:?}"
        );
    })
    .await
    .expect("bounded");
}

/// hyper's client rule for a response's framing (hyper 1.x `headers::is_chunked`): the
/// last Transfer-Encoding line, split at its last comma, is `chunked`.
fn hyper_reads_chunked(head: &str) -> bool {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .last()
        .and_then(|(_, v)| {
            v.rsplit(',')
                .next()
                .map(|e| e.trim().eq_ignore_ascii_case("chunked"))
        })
        .unwrap_or(false)
}

/// A backend's `Transfer-Encoding: chunked,` (an empty list element after chunked).
/// The forwarder reads it as chunked (its `last_token` skips empty elements) and keeps
/// the client's connection open after the last chunk, but passes the value on
/// unchanged; hyper's client (last element `""`: not chunked) reads the body until the
/// connection closes: chunk framing bytes in the body, and a hang until the client
/// timeout. The framing the client reads must be the one the forwarder decided on:
/// the value should be rewritten (`chunked`), or the field dropped and the
/// connection closed.
#[tokio::test]
async fn a_transfer_encoding_with_a_trailing_comma_is_written_as_the_proxy_read_it() {
    tokio::time::timeout(BOUND, async {
        let (backend, _) = backend(|mut s: TcpStream| async move {
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                )
                .await;
            tokio::time::sleep(Duration::from_secs(15)).await;
        })
        .await;
        let proxy = proxy(&[backend], config()).await;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"0\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let head = &text[..text.find("\r\n\r\n").unwrap() + 2];
        // The forwarder framed it as chunked: the connection stays open for the next
        // request (nothing more comes within a second).
        let mut byte = [0u8; 1];
        let closed_after =
            tokio::time::timeout(Duration::from_secs(1), c.read(&mut byte)).await.is_ok();
        assert!(
            hyper_reads_chunked(head) || closed_after,
            "the forwarder framed the body as chunked and kept the connection, but sent a \
             head a hyper client reads as close-delimited: {head:?}"
        );
    })
    .await
    .expect("bounded");
}

/// The same class with a value hyper cannot read as text: `Transfer-Encoding:
/// \x80, chunked` (obs-text before chunked). hyper's `HeaderValue::to_str` fails and it
/// would read until close while the forwarder framed the body as chunked: such an
/// answer is refused with 502.
#[tokio::test]
async fn a_transfer_encoding_with_obs_text_is_answered_502() {
    tokio::time::timeout(BOUND, async {
        let (backend, _) = backend(|mut s: TcpStream| async move {
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: \x80, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                )
                .await;
            tokio::time::sleep(Duration::from_secs(15)).await;
        })
        .await;
        let proxy = proxy(&[backend], config()).await;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = read_to_end(&mut c).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 502 "), "{text:?}");
        assert!(!text.contains("hello"), "{text:?}");
    })
    .await
    .expect("bounded");
}

/// A client names its own address in the fields that backends and their libraries
/// read for the client's IP besides `X-Forwarded-For` and `Forwarded` (the npm
/// `request-ip` order starts with `X-Client-IP`; Akamai's `True-Client-IP`,
/// Cloudflare's `CF-Connecting-IP`, `X-Cluster-Client-IP`, `Forwarded-For`,
/// `X-Forwarded`), or the scheme and port (`X-Forwarded-Scheme`, `X-Forwarded-Ssl`,
/// `X-Forwarded-Port`, `Front-End-Https`): with `trusted_hops` 0 they all reach the
/// backend as if a proxy had set them.
#[tokio::test]
async fn client_identity_fields_of_every_common_name_are_dropped() {
    tokio::time::timeout(BOUND, async {
        let (backend, heads) = backend(|mut s: TcpStream| async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        })
        .await;
        let proxy = proxy(&[backend], config()).await;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        let forged = [
            "X-Client-IP",
            "True-Client-IP",
            "CF-Connecting-IP",
            "X-Cluster-Client-IP",
            "Fastly-Client-IP",
            "Forwarded-For",
            "X-Forwarded",
            "X-Original-Forwarded-For",
        ];
        let mut req = String::from("GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n");
        for f in forged {
            req.push_str(&format!("{f}: 6.6.6.6\r\n"));
        }
        req.push_str(
            "X-Forwarded-Ssl: on\r\nX-Forwarded-Scheme: https\r\nX-Forwarded-Port: 443\r\n\r\n",
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let (bytes, _) = read_to_end(&mut c).await;
        assert!(bytes.starts_with(b"HTTP/1.1 200"));
        let head = heads.lock().unwrap()[0].clone();
        assert!(
            !head.contains("6.6.6.6") && !head.to_ascii_lowercase().contains("x-forwarded-ssl"),
            "the client's own identity fields reached the backend:\n{head}"
        );
    })
    .await
    .expect("bounded");
}

/// What real clients send that the forwarder refuses, though a proxy may forward it by
/// dropping or downgrading a hop-by-hop part (documented refusals, listed here because
/// they turn away ordinary clients): `curl --http2 http://...` (an `Upgrade: h2c`
/// offer, which a server may ignore, RFC 9110 §7.8) gets 501; an HTTP/1.0 request
/// (`curl -0`, ApacheBench, many health checkers, nginx's default `proxy_http_version`)
/// gets 505.
#[tokio::test]
async fn h2c_offers_and_http10_requests_of_ordinary_clients_are_forwarded() {
    tokio::time::timeout(BOUND, async {
        let (backend, _) = backend(|mut s: TcpStream| async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        })
        .await;
        let proxy = proxy(&[backend], config()).await;
        let cases: [(&str, &[u8]); 2] = [
            (
                "curl --http2 http://a/",
                b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\
                  Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
                  HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
            ),
            (
                "curl -0 http://a/ (HTTP/1.0)",
                b"GET / HTTP/1.0\r\nHost: a\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
            ),
        ];
        let mut refused = Vec::new();
        for (name, raw) in cases {
            let mut c = TcpStream::connect(proxy).await.unwrap();
            c.write_all(raw).await.unwrap();
            let (bytes, _) = read_to_end(&mut c).await;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if !text.starts_with("HTTP/1.1 200") {
                refused.push(format!("{name}: {}", text.lines().next().unwrap_or("")));
            }
        }
        assert!(refused.is_empty(), "refused: {refused:#?}");
    })
    .await
    .expect("bounded");
}

/// The forwarder's own error answers carry a body even to a HEAD request, and keep
/// the connection open (a 502/503/504 does not close it): a client that sent `HEAD`
/// reads the head only (RFC 9110 §9.3.2), so the text body that follows
/// ("...upstream...\n") is read as the start of the answer to its next request on that
/// connection: the client's connection is desynchronized, every later answer shifted.
#[tokio::test]
async fn an_error_answer_to_head_has_no_body() {
    tokio::time::timeout(BOUND, async {
        // An upstream address nothing listens on: every forward fails (502 or 503).
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let proxy = proxy(&[dead], config()).await;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before an answer");
            got.extend_from_slice(&chunk[..n]);
        }
        // Whatever else arrives within half a second.
        loop {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(500), c.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let end = text.find("\r\n\r\n").unwrap() + 4;
        assert!(
            text[end..].is_empty(),
            "the answer to HEAD is followed by body bytes, read by the client as the next answer: {text:?}"
        );
    })
    .await
    .expect("bounded");
}

/// CL.0 through the pool: a backend that answers some requests without reading their
/// body (a static-file handler that ignores Content-Length: the "CL.0" backends of
/// Kettle's browser-powered desync) and keeps its connection. The forwarder writes the
/// whole request before it reads the answer, so it cannot tell that the answer came
/// before the body was read; it pools the connection, and the body of one client's
/// request (a request of the attacker's choosing) is read by the backend as the next
/// request: the next client, on another connection, is served the answer to the
/// attacker's smuggled request. The pool check sees nothing (the leftover is on the
/// backend's side, an unfinished head). A proxy guards against it only by not reusing a connection whose
/// request had a body when the answer is not a success, or by reading the answer while
/// writing and closing on an early answer; this test states what the client must see.
#[tokio::test]
async fn a_body_a_backend_leaves_unread_never_reaches_the_next_client() {
    tokio::time::timeout(BOUND, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let parsed = {
                            let mut headers = [httparse::EMPTY_HEADER; 64];
                            let mut req = httparse::Request::new(&mut headers);
                            match req.parse(&buf) {
                                Ok(httparse::Status::Complete(len)) => {
                                    Some((len, req.path.unwrap().to_owned()))
                                }
                                Ok(httparse::Status::Partial) => None,
                                Err(_) => return,
                            }
                        };
                        if let Some((len, target)) = parsed {
                            // Answers at once, body not read (CL.0).
                            buf.drain(..len);
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{target}",
                                target.len()
                            );
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        let proxy = proxy(&[backend], config()).await;
        // The attacker: a POST to a static path, its body the start of a request (left
        // open, so the backend waits and nothing stray shows before the next request;
        // the victim's request line and fields, cookies among them, become the value
        // of `x-ignore`).
        let smuggled = "GET /admin/secret HTTP/1.1\r\nhost: internal\r\nx-ignore: ";
        let mut a = TcpStream::connect(proxy).await.unwrap();
        a.write_all(
            format!(
                "POST /static/logo.png HTTP/1.1\r\nhost: a\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (got_a, _) = read_to_end(&mut a).await;
        assert!(got_a.ends_with(b"/static/logo.png"), "{:?}", String::from_utf8_lossy(&got_a));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The victim, on a connection of its own.
        let mut b = TcpStream::connect(proxy).await.unwrap();
        b.write_all(b"GET /victim HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got_b, _) = read_to_end(&mut b).await;
        let text = String::from_utf8_lossy(&got_b);
        assert!(
            text.ends_with("/victim"),
            "the victim was served another request's answer: {text:?}"
        );
    })
    .await
    .expect("bounded");
}
