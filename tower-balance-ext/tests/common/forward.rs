//! The forwarder's tests' helpers: a forwarder to test (round robin over raw upstreams,
//! retries of idempotent requests), a scripted raw backend that records what reaches it,
//! and a raw client that reads answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_balance_ext::forward::{self, Exchange, ForwardConfig, Forwarder, Upstream};
use tower_balance_ext::{discover, BalancerBuilder, Pick};

/// A forwarder over `backends` with `config`, serving on a fresh loopback port.
pub async fn proxy(backends: &[SocketAddr], config: ForwardConfig) -> SocketAddr {
    let upstreams: Vec<(SocketAddr, Upstream)> = backends
        .iter()
        .map(|a| {
            (
                *a,
                Upstream::builder(*a)
                    .config(config.clone())
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    let balancer = BalancerBuilder::new(Pick::RoundRobin)
        .failure_if(forward::server_error)
        .retry(Exchange::retry_copy)
        .ready_timeout(Duration::from_millis(200))
        .build(discover::fixed(upstreams))
        .unwrap();
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

/// Every test ends within this.
pub const BOUND: Duration = Duration::from_secs(20);

/// What one backend received: the request heads, exactly, and bodies.
#[derive(Default)]
pub struct Seen {
    pub heads: Vec<String>,
    pub bodies: Vec<Vec<u8>>,
}

/// A raw backend: answers by path, after recording the request.
pub async fn backend(name: &'static str) -> (SocketAddr, Arc<Mutex<Seen>>) {
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
pub async fn send_large(s: &mut TcpStream, size: usize) {
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

/// A forwarder over one backend with `client_timeout`.
pub async fn proxy_with_client_timeout(client_timeout: Duration) -> SocketAddr {
    let (a, _) = backend("a").await;
    let config = ForwardConfig {
        client_timeout,
        ..ForwardConfig::default()
    };
    proxy(&[a], config).await
}

/// A response as the client read it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// Reads one response from `s` (`buf` keeps bytes read past it): by Content-Length, by
/// chunked framing (kept as is), or to the end of the connection.
pub async fn read_reply(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Option<Reply> {
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
pub async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: example.test\r\n\r\n")
}

/// Whether `s` reads EOF (or a reset) within `limit`.
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}
