//! A corpus of malformed and ambiguous requests and responses (the smuggling and
//! desynchronization classics), each checked for what actually arrives: at the backend
//! for a request, at the client for a response.
#![cfg(feature = "http1-forward")]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_balance_ext::forward::ForwardConfig;

/// Every test ends within this.
const BOUND: Duration = Duration::from_secs(60);

/// One request as the backend parsed it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    head: String,
    body: Vec<u8>,
}

impl Received {
    /// The values of the fields named `name`.
    fn values(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<Received>,
    /// Bytes the backend could not parse as a request.
    garbage: Vec<Vec<u8>>,
}

/// A strict backend: parses each request (httparse, Content-Length bodies only),
/// records it, and answers its target as the body. Under `/r/N` it answers with the
/// response `responses[N]` instead, then does what that case says.
async fn backend(responses: Arc<Vec<ResponseCase>>) -> (SocketAddr, Arc<Mutex<Log>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let record = log.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = record.clone();
            let responses = responses.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let (len, req) = loop {
                        let mut headers = [httparse::EMPTY_HEADER; 128];
                        let mut req = httparse::Request::new(&mut headers);
                        match req.parse(&buf) {
                            Ok(httparse::Status::Complete(len)) => {
                                let cl = req
                                    .headers
                                    .iter()
                                    .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
                                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                                    .next_back()
                                    .unwrap_or(0usize);
                                let r = Received {
                                    method: req.method.unwrap().to_owned(),
                                    target: req.path.unwrap().to_owned(),
                                    head: String::from_utf8_lossy(&buf[..len]).into_owned(),
                                    body: vec![0; cl],
                                };
                                break (len, r);
                            }
                            Ok(httparse::Status::Partial) => {}
                            Err(_) => {
                                record
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .garbage
                                    .push(buf.clone());
                                return;
                            }
                        }
                        let mut chunk = [0u8; 8192];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let mut req = req;
                    let body_len = req.body.len();
                    while buf.len() < len + body_len {
                        let mut chunk = [0u8; 8192];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    req.body = buf[len..len + body_len].to_vec();
                    buf.drain(..len + body_len);
                    record
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .requests
                        .push(req.clone());
                    if let Some(n) = req.target.strip_prefix("/r/") {
                        let case = &responses[n.parse::<usize>().unwrap()];
                        if s.write_all(case.raw).await.is_err() {
                            return;
                        }
                        match case.then {
                            Then::KeepOpen => {}
                            Then::Close => return,
                            Then::StrayLater => {
                                tokio::time::sleep(Duration::from_millis(30)).await;
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray")
                                    .await;
                            }
                        }
                        continue;
                    }
                    let body = if req.method == "HEAD" {
                        String::new()
                    } else {
                        req.target.clone()
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        req.target.len()
                    );
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

async fn proxy(backend: SocketAddr) -> SocketAddr {
    let config = ForwardConfig {
        upstream_timeout: Duration::from_secs(5),
        ..ForwardConfig::default()
    };
    common::forward::proxy(&[backend], config).await
}

/// One answer as the client read it.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// The body ended where its framing says (not cut by a close).
    complete: bool,
}

impl Reply {
    fn values(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// Reads one answer from `s` (`buf` keeps what follows it); `None` when the
/// connection closed before a head.
async fn read_reply(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Option<Reply> {
    async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }
    let (len, status, length, chunked) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut res = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = res.parse(buf) {
            let field = |n: &str| {
                res.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(n))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let length = field("content-length").map(|v| v.parse::<usize>().unwrap());
            let chunked = field("transfer-encoding").is_some_and(|v| {
                v.rsplit(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("chunked")
            });
            break (len, res.code.unwrap(), length, chunked);
        }
        if !more(s, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    buf.drain(..len);
    let bodiless = head_request || status == 204 || status == 304 || status < 200;
    let (body, complete) = if bodiless {
        (Vec::new(), true)
    } else if chunked {
        // Find the end of the chunked body (sizes and data, no trailers in the corpus).
        let mut data = Vec::new();
        loop {
            let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
                if !more(s, buf).await {
                    break (data, false);
                }
                continue;
            };
            let size = usize::from_str_radix(
                std::str::from_utf8(&buf[..line_end])
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            if buf.len() < line_end + 2 + size + 2 {
                if !more(s, buf).await {
                    break (data, false);
                }
                continue;
            }
            data.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break (data, true);
            }
        }
    } else if let Some(n) = length {
        while buf.len() < n {
            if !more(s, buf).await {
                let data = std::mem::take(buf);
                return Some(Reply {
                    status,
                    head,
                    body: data,
                    complete: false,
                });
            }
        }
        (buf.drain(..n).collect(), true)
    } else {
        while more(s, buf).await {}
        (std::mem::take(buf), true)
    };
    Some(Reply {
        status,
        head,
        body,
        complete,
    })
}

/// Whether the proxy closed `s` (reads end of stream).
async fn closed(s: &mut TcpStream, buf: &[u8]) -> bool {
    if !buf.is_empty() {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Waits until the backend has seen nothing new for a moment: a request smuggled
/// behind an accepted one would arrive in the same write.
async fn settle(log: &Mutex<Log>) {
    let mut last = usize::MAX;
    loop {
        let now = {
            let l = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            l.requests.len() + l.garbage.len()
        };
        if now == last {
            return;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// What a request case must lead to.
enum Outcome {
    /// Answered by the proxy with this status; nothing reaches the backend.
    Refused(u16),
    /// Reaches the backend as exactly these requests (method, target, host), answered
    /// 200 each, in order; `check` looks at what arrived.
    Forwarded(
        &'static [(&'static str, &'static str, &'static str)],
        fn(&[Received]),
    ),
}

struct RequestCase {
    name: &'static str,
    raw: Vec<u8>,
    outcome: Outcome,
}

fn no_check(_: &[Received]) {}

/// The fields that identify the client say only what the proxy saw.
fn forwarding_set_by_proxy(r: &[Received]) {
    for r in r {
        assert_eq!(r.values("x-forwarded-for"), ["127.0.0.1"], "{}", r.head);
        assert_eq!(
            r.values("forwarded"),
            ["for=127.0.0.1;proto=http"],
            "{}",
            r.head
        );
        assert_eq!(r.values("x-forwarded-proto"), ["http"], "{}", r.head);
        assert!(r.values("x-forwarded-host").is_empty(), "{}", r.head);
        assert!(r.values("x-real-ip").is_empty(), "{}", r.head);
    }
}

/// One `Content-Length` upstream, and the body it frames.
fn one_length_of_five(r: &[Received]) {
    assert_eq!(r[0].values("content-length"), ["5"], "{}", r[0].head);
    assert_eq!(r[0].body, b"hello");
}

fn hop_by_hop_dropped(r: &[Received]) {
    assert!(r[0].values("x-a").is_empty(), "{}", r[0].head);
    assert!(r[0].values("keep-alive").is_empty(), "{}", r[0].head);
    assert!(r[0].values("connection").is_empty(), "{}", r[0].head);
}

fn no_upgrade(r: &[Received]) {
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(r[0].values(name).is_empty(), "{name}: {}", r[0].head);
    }
    assert!(r[0].head.starts_with("GET /"), "{}", r[0].head);
}

fn no_client_identity(r: &[Received]) {
    forwarding_set_by_proxy(r);
    for name in [
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-forwarded-port",
        "x-forwarded-ssl",
        "x-original-url",
    ] {
        assert!(r[0].values(name).is_empty(), "{name}: {}", r[0].head);
    }
}

/// An HTTP/1.0 request goes upstream as HTTP/1.0, asking to close.
fn http10_closes_upstream(r: &[Received]) {
    assert!(
        r[0].head.starts_with("GET /old HTTP/1.0\r\n"),
        "{}",
        r[0].head
    );
    assert_eq!(r[0].values("connection"), ["close"], "{}", r[0].head);
}

fn req(raw: &str) -> Vec<u8> {
    raw.as_bytes().to_vec()
}

fn request_cases() -> Vec<RequestCase> {
    use Outcome::{Forwarded, Refused};
    let case = |name, raw: Vec<u8>, outcome| RequestCase { name, raw, outcome };
    let mut cases = vec![
        // Accepted, and normalized.
        case("plain GET", req("GET /a HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("GET", "/a", "a")], no_check)),
        case("absolute-form, same host", req("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("GET", "/x", "a")], no_check)),
        case("absolute-form, another host than Host", req("GET http://other.example/x HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("GET", "/x", "other.example")], no_check)),
        case("absolute-form, https in capitals, port and query", req("GET HTTPS://b.example:8443/y?z=1 HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("GET", "/y?z=1", "b.example:8443")], no_check)),
        case("absolute-form, empty path", req("GET http://b.example HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("GET", "/", "b.example")], no_check)),
        case("absolute-form, query without path", req("GET http://b.example?q=1 HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("GET", "/?q=1", "b.example")], no_check)),
        case("absolute-form OPTIONS, empty path", req("OPTIONS http://b.example HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("OPTIONS", "*", "b.example")], no_check)),
        case("OPTIONS *", req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("OPTIONS", "*", "a")], no_check)),
        case("IPv6 host", req("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), Forwarded(&[("GET", "/", "[::1]:8080")], no_check)),
        case("Content-Length 5, 5", req("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"), Forwarded(&[("POST", "/p", "a")], one_length_of_five)),
        case("two equal Content-Length fields", req("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), Forwarded(&[("POST", "/p", "a")], one_length_of_five)),
        case("Content-Length with leading zeros", req("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello"), Forwarded(&[("POST", "/p", "a")], one_length_of_five)),
        case("Content-Length 0", req("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"), Forwarded(&[("POST", "/p", "a")], no_check)),
        case("hop-by-hop fields named in Connection", req("GET /h HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-a\r\nx-a: 1\r\nKeep-Alive: timeout=5\r\n\r\n"), Forwarded(&[("GET", "/h", "a")], hop_by_hop_dropped)),
        case("client X-Forwarded-For", req("GET /f HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"), Forwarded(&[("GET", "/f", "a")], forwarding_set_by_proxy)),
        case("client Forwarded", req("GET /f HTTP/1.1\r\nHost: a\r\nForwarded: for=6.6.6.6;proto=https\r\n\r\n"), Forwarded(&[("GET", "/f", "a")], forwarding_set_by_proxy)),
        case("client X-Forwarded-Host", req("GET /f HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: evil.example\r\n\r\n"), Forwarded(&[("GET", "/f", "a")], forwarding_set_by_proxy)),
        case("client X-Real-IP", req("GET /f HTTP/1.1\r\nHost: a\r\nX-Real-IP: 6.6.6.6\r\n\r\n"), Forwarded(&[("GET", "/f", "a")], forwarding_set_by_proxy)),
        case("client X-Forwarded-Proto", req("GET /f HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\n\r\n"), Forwarded(&[("GET", "/f", "a")], forwarding_set_by_proxy)),
        case("HEAD", req("HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("HEAD", "/h", "a")], no_check)),
        case("obs-text in a field value", b"GET /o HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9\r\n\r\n".to_vec(), Forwarded(&[("GET", "/o", "a")], |r| assert!(r[0].head.contains("X-Name: caf\u{fffd}")))),
        case("dot segments and escapes pass as sent", req("GET /a/../b/%2e%2e/%2F HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("GET", "/a/../b/%2e%2e/%2F", "a")], no_check)),
        case("Host with a tab before it", req("GET / HTTP/1.1\r\nHost:\ta\r\n\r\n"), Forwarded(&[("GET", "/", "a")], no_check)),
        case("a method in lowercase passes as sent", req("get /l HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("get", "/l", "a")], no_check)),
        case("pipelined POST then GET", req("POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"), Forwarded(&[("POST", "/1", "a"), ("GET", "/2", "a")], no_check)),
        case("Connection: close", req("GET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), Forwarded(&[("GET", "/c", "a")], no_check)),
        // Framing: the smuggling classics.
        case("CL.TE", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"), Refused(501)),
        case("TE.CL", req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"), Refused(501)),
        case("TE xchunked", req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc"), Refused(501)),
        case("TE chunked, identity", req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"), Refused(501)),
        case("TE in capitals", req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n"), Refused(501)),
        case("TE after a tab", req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n"), Refused(501)),
        case("two TE fields", req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"), Refused(501)),
        case("TE with a space before the colon", req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"), Refused(400)),
        case("TE with an underscore", req("POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello"), Refused(400)),
        case("CL with an underscore", req("POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\nhello"), Refused(400)),
        case("X-Forwarded-For with underscores", req("GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n"), Refused(400)),
        case("CL with a plus", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"), Refused(400)),
        case("CL negative", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"), Refused(400)),
        case("CL with a space inside", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello"), Refused(400)),
        case("CL in hex", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello"), Refused(400)),
        case("CL 5, 6", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!"), Refused(400)),
        case("two different CL fields", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), Refused(400)),
        case("CL empty", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n"), Refused(400)),
        case("CL past u64", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n"), Refused(400)),
        case("CL over the body limit", req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n"), Refused(413)),
        // Line ends and field syntax.
        case("bare LF everywhere", req("GET / HTTP/1.1\nHost: a\n\n"), Refused(400)),
        case("one bare LF", req("GET / HTTP/1.1\r\nHost: a\nX-Smuggled: 1\r\n\r\n"), Refused(400)),
        case("bare CR", req("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n"), Refused(400)),
        case("obs-fold", req("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"), Refused(400)),
        case("obs-fold of Transfer-Encoding", req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"), Refused(400)),
        case("NUL in a field name", b"GET / HTTP/1.1\r\nHost: a\r\nX\0Y: 1\r\n\r\n".to_vec(), Refused(400)),
        case("space in a field name", req("GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n"), Refused(400)),
        case("NUL in a field value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n".to_vec(), Refused(400)),
        case("space before the request line", req(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Refused(400)),
        case("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), Refused(400)),
        // Host.
        case("no Host", req("GET / HTTP/1.1\r\n\r\n"), Refused(400)),
        case("two Hosts", req("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Refused(400)),
        case("two equal Hosts", req("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), Refused(400)),
        case("Host with a path", req("GET /app.js HTTP/1.1\r\nHost: a/static\r\n\r\n"), Refused(400)),
        case("Host with a query", req("GET /b HTTP/1.1\r\nHost: h/q?a=\r\n\r\n"), Refused(400)),
        case("Host with userinfo", req("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"), Refused(400)),
        case("Host with a space", req("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), Refused(400)),
        case("Host empty", req("GET / HTTP/1.1\r\nHost: \r\n\r\n"), Refused(400)),
        case("Host with a port that is not a number", req("GET / HTTP/1.1\r\nHost: a:xx\r\n\r\n"), Refused(400)),
        case("Host with a port past 65535", req("GET / HTTP/1.1\r\nHost: a:70000\r\n\r\n"), Refused(400)),
        case("Host with a fragment", req("GET / HTTP/1.1\r\nHost: a#b\r\n\r\n"), Refused(400)),
        case("Host with a percent-escape", req("GET / HTTP/1.1\r\nHost: a%2fb\r\n\r\n"), Refused(400)),
        // Targets.
        case("absolute-form with userinfo", req("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"), Refused(400)),
        case("absolute-form with a bad port", req("GET http://a:x/ HTTP/1.1\r\nHost: a\r\n\r\n"), Refused(400)),
        case("absolute-form of another scheme", req("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), Refused(400)),
        case("a fragment in the target", req("GET /x#y HTTP/1.1\r\nHost: a\r\n\r\n"), Refused(400)),
        case("a relative target", req("GET x HTTP/1.1\r\nHost: a\r\n\r\n"), Refused(400)),
        case("* for GET", req("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), Refused(400)),
        case("CONNECT", req("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), Refused(501)),
        case("HTTP/1.0", req("GET /old HTTP/1.0\r\nHost: a\r\n\r\n"), Forwarded(&[("GET", "/old", "a")], http10_closes_upstream)),
        case("HTTP/2.0 in a request line", req("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Refused(400)),
        // Connection naming end-to-end fields.
        case("Connection: content-length", req("POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"), Refused(400)),
        case("Connection: Host", req("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Host\r\n\r\n"), Refused(400)),
        case("Connection: transfer-encoding", req("GET / HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding\r\n\r\n"), Refused(400)),
        case("Connection: authorization", req("GET / HTTP/1.1\r\nHost: a\r\nConnection: authorization\r\nAuthorization: Bearer x\r\n\r\n"), Refused(400)),
        case("Connection: cookie", req("GET / HTTP/1.1\r\nHost: a\r\nConnection: Cookie\r\nCookie: a=1\r\n\r\n"), Refused(400)),
        case("Connection: x-forwarded-for", req("GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For\r\n\r\n"), Refused(400)),
        case("Connection: forwarded in a second field", req("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: forwarded\r\n\r\n"), Refused(400)),
        // What the proxy does not carry.
        case("Upgrade: websocket is dropped", req("GET /u HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"), Forwarded(&[("GET", "/u", "a")], no_upgrade)),
        case("curl --http2: an h2c offer is dropped", req("GET /h2c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"), Forwarded(&[("GET", "/h2c", "a")], no_upgrade)),
        case("client identity fields beyond X-Forwarded-For", req("GET /f HTTP/1.1\r\nHost: a\r\nX-Client-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Ssl: on\r\nX-Original-URL: /admin\r\n\r\n"), Forwarded(&[("GET", "/f", "a")], no_client_identity)),
        case("Expect", req("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"), Refused(417)),
        // Limits.
        case("a 70 KiB field", req(&format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(70 * 1024))), Refused(431)),
        case("a 70 KiB target", req(&format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70 * 1024))), Refused(431)),
        case("101 fields", req(&format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: 1\r\n".repeat(100))), Refused(431)),
    ];
    // Pipelined: an accepted request, then one that must be refused; only the first
    // reaches the backend.
    cases.push(case(
        "pipelined GET then a smuggled TE request",
        req("GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST /second HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        Forwarded(&[("GET", "/first", "a")], no_check),
    ));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_of_the_corpus_reaches_the_backend_as_expected_or_not_at_all() {
    tokio::time::timeout(BOUND, async {
        let (backend_addr, log) = backend(Arc::new(Vec::new())).await;
        let addr = proxy(backend_addr).await;
        let cases = request_cases();
        assert!(cases.len() >= 60, "{} cases", cases.len());
        let mut failed = Vec::new();
        for case in &cases {
            let run = std::panic::AssertUnwindSafe(async {
                log.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .requests
                    .clear();
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(&case.raw).await.unwrap();
                let mut buf = Vec::new();
                match &case.outcome {
                    Outcome::Refused(status) => {
                        let r = read_reply(&mut s, &mut buf, false)
                            .await
                            .unwrap_or_else(|| panic!("{}: no answer", case.name));
                        assert_eq!(r.status, *status, "{}: {}", case.name, r.head);
                        assert!(closed(&mut s, &buf).await, "{}: left open", case.name);
                        settle(&log).await;
                        let l = log
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        assert!(
                            l.requests.is_empty(),
                            "{}: reached the backend: {:?}",
                            case.name,
                            l.requests
                        );
                    }
                    Outcome::Forwarded(expected, check) => {
                        let heads = expected.iter().filter(|e| e.0 == "HEAD").count() > 0;
                        for (method, target, _) in expected.iter() {
                            let r = read_reply(&mut s, &mut buf, heads)
                                .await
                                .unwrap_or_else(|| panic!("{}: no answer", case.name));
                            assert_eq!(r.status, 200, "{}: {} {:?}", case.name, r.head, r.body);
                            if *method != "HEAD" {
                                assert_eq!(
                                    r.body,
                                    target.as_bytes(),
                                    "{}: answers out of order",
                                    case.name
                                );
                            }
                        }
                        drop(s);
                        settle(&log).await;
                        let l = log
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let got: Vec<(&str, &str, String)> = l
                            .requests
                            .iter()
                            .map(|r| {
                                let hosts = r.values("host");
                                assert_eq!(hosts.len(), 1, "{}: {}", case.name, r.head);
                                assert!(r.values("transfer-encoding").is_empty(), "{}", case.name);
                                assert!(r.values("content-length").len() <= 1, "{}", case.name);
                                (r.method.as_str(), r.target.as_str(), hosts[0].clone())
                            })
                            .collect();
                        let want: Vec<(&str, &str, String)> = expected
                            .iter()
                            .map(|(m, t, h)| (*m, *t, h.to_string()))
                            .collect();
                        assert_eq!(got, want, "{}", case.name);
                        check(&l.requests);
                    }
                }
                assert!(
                    log.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .garbage
                        .is_empty(),
                    "{}: the backend got garbage",
                    case.name
                );
            });
            if run.catch_unwind().await.is_err() {
                failed.push(case.name);
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {} cases failed: {failed:?}",
            failed.len(),
            cases.len()
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_requests_in_one_write_are_answered_in_order() {
    tokio::time::timeout(BOUND, async {
        let (backend_addr, log) = backend(Arc::new(Vec::new())).await;
        let addr = proxy(backend_addr).await;
        let mut burst = Vec::new();
        for i in 0..1000 {
            burst.extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        }
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&burst).await.unwrap();
        let mut buf = Vec::new();
        for i in 0..1000 {
            let r = read_reply(&mut s, &mut buf, false).await.expect("answer");
            assert_eq!(r.body, format!("/p{i}").as_bytes());
        }
        assert_eq!(
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .requests
                .len(),
            1000
        );
    })
    .await
    .expect("bounded");
}

/// What the backend does after writing a scripted response.
#[derive(Clone, Copy)]
enum Then {
    KeepOpen,
    Close,
    /// Writes a second, unasked-for answer a little later.
    StrayLater,
}

/// What the client must get for a response case.
enum Sees {
    /// 502 from the proxy.
    BadGateway,
    /// This status and body, whole; `check` looks at the head.
    Relayed(u16, &'static [u8], fn(&Reply)),
    /// The head and what came of the body, then a close: never a complete body.
    CutShort,
}

struct ResponseCase {
    name: &'static str,
    raw: &'static [u8],
    then: Then,
    head_request: bool,
    sees: Sees,
}

fn one_length(r: &Reply) {
    assert_eq!(r.values("content-length").len(), 1, "{}", r.head);
}

fn chunked_without_length(r: &Reply) {
    assert!(r.values("content-length").is_empty(), "{}", r.head);
    assert_eq!(r.values("transfer-encoding").len(), 1, "{}", r.head);
}

fn no_framing(r: &Reply) {
    assert!(r.values("content-length").is_empty(), "{}", r.head);
    assert!(r.values("transfer-encoding").is_empty(), "{}", r.head);
}

fn no_check_reply(_: &Reply) {}

fn response_cases() -> Vec<ResponseCase> {
    use Sees::{BadGateway, CutShort, Relayed};
    use Then::{Close, KeepOpen, StrayLater};
    let case = |name, raw, then, sees| ResponseCase {
        name,
        raw,
        then,
        head_request: false,
        sees,
    };
    let mut cases = vec![
        case("plain", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, Relayed(200, b"hello", one_length)),
        case("Content-Length 5, 5", b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello", KeepOpen, Relayed(200, b"hello", one_length)),
        case("two equal Content-Length fields", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\nhello", KeepOpen, Relayed(200, b"hello", one_length)),
        case("two different Content-Lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!", KeepOpen, BadGateway),
        case("Content-Length 5, 6", b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!", KeepOpen, BadGateway),
        case("Content-Length with a plus", b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello", KeepOpen, BadGateway),
        case("Content-Length negative", b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\nhello", KeepOpen, BadGateway),
        case("Content-Length in hex", b"HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\nhello", KeepOpen, BadGateway),
        case("both CL and TE", b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KeepOpen, Relayed(200, b"hello", chunked_without_length)),
        case("TE then CL", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 100\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KeepOpen, Relayed(200, b"hello", chunked_without_length)),
        case("gzip, chunked", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KeepOpen, Relayed(200, b"hello", |r| assert_eq!(r.values("transfer-encoding"), ["gzip, chunked"]))),
        case("chunked with a trailing comma", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KeepOpen, Relayed(200, b"hello", |r| assert_eq!(r.values("transfer-encoding"), ["chunked"]))),
        case("Transfer-Encoding over two lines", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KeepOpen, Relayed(200, b"hello", |r| assert_eq!(r.values("transfer-encoding"), ["gzip, chunked"]))),
        case("Transfer-Encoding with obs-text", b"HTTP/1.1 200 OK\r\ntransfer-encoding: \x80, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KeepOpen, BadGateway),
        case("chunked in capitals", b"HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KeepOpen, Relayed(200, b"hello", chunked_without_length)),
        case("xchunked runs until close", b"HTTP/1.1 200 OK\r\ntransfer-encoding: xchunked\r\n\r\nhello", Close, Relayed(200, b"hello", |r| assert_eq!(r.values("connection"), ["close"]))),
        case("Connection names Content-Length", b"HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, Relayed(200, b"hello", one_length)),
        case("Connection names Transfer-Encoding", b"HTTP/1.1 200 OK\r\nconnection: transfer-encoding\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KeepOpen, Relayed(200, b"hello", chunked_without_length)),
        case("an answer twice", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray", KeepOpen, Relayed(200, b"hello", one_length)),
        case("a second answer later", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", StrayLater, Relayed(200, b"hello", one_length)),
        case("100 Continue nobody asked for", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, Relayed(200, b"hello", one_length)),
        case("103 Early Hints", b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, Relayed(200, b"hello", one_length)),
        case("101 nobody asked for", b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n", KeepOpen, BadGateway),
        case("HTTP/1.0 with a length", b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, Relayed(200, b"hello", one_length)),
        case("no length: until close", b"HTTP/1.1 200 OK\r\n\r\nhello", Close, Relayed(200, b"hello", |r| assert_eq!(r.values("connection"), ["close"]))),
        case("a status of four digits", b"HTTP/1.1 2000 OK\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, BadGateway),
        case("not HTTP", b"NOT HTTP AT ALL\r\n\r\n", Close, BadGateway),
        case("obs-fold", b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, BadGateway),
        case("a space before a colon", b"HTTP/1.1 200 OK\r\ncontent-length : 5\r\n\r\nhello", KeepOpen, BadGateway),
        case("NUL in a value", b"HTTP/1.1 200 OK\r\nx-a: a\0b\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, BadGateway),
        case("cut mid-body", b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello", Close, CutShort),
        case("chunked cut mid-chunk", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nhello", Close, CutShort),
        case("a chunk size that is not hex", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", KeepOpen, BadGateway),
        case("a chunk size past u64", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n", KeepOpen, BadGateway),
        case("204 with a length and a body", b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, Relayed(204, b"", no_framing)),
        case("304 with a body", b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\nhello", KeepOpen, Relayed(304, b"", one_length)),
        case("Connection: close", b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello", Close, Relayed(200, b"hello", one_length)),
        case("HTTP/1.0 with Transfer-Encoding", b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", KeepOpen, Relayed(200, b"hello", no_check_reply)),
    ];
    cases.push(ResponseCase {
        name: "HEAD with a length",
        raw: b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
        then: KeepOpen,
        head_request: true,
        sees: Relayed(200, b"", one_length),
    });
    let huge: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 5\r\n\r\nhello",
            "a".repeat(70 * 1024)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    cases.push(case("a head over the limit", huge, KeepOpen, BadGateway));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_response_of_the_corpus_reaches_the_client_as_expected_and_never_a_later_client() {
    tokio::time::timeout(BOUND, async {
        let cases = Arc::new(response_cases());
        assert!(cases.len() >= 30, "{} cases", cases.len());
        let (backend_addr, _log) = backend(cases.clone()).await;
        let addr = proxy(backend_addr).await;
        let mut failed = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let run = std::panic::AssertUnwindSafe(async {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let method = if case.head_request { "HEAD" } else { "GET" };
                s.write_all(format!("{method} /r/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut buf = Vec::new();
                let r = read_reply(&mut s, &mut buf, case.head_request)
                    .await
                    .unwrap_or_else(|| panic!("{}: no answer", case.name));
                match &case.sees {
                    Sees::BadGateway => {
                        assert_eq!(r.status, 502, "{}: {}", case.name, r.head);
                    }
                    Sees::Relayed(status, body, check) => {
                        assert_eq!(r.status, *status, "{}: {}", case.name, r.head);
                        assert_eq!(r.body, *body, "{}", case.name);
                        assert!(r.complete, "{}", case.name);
                        check(&r);
                    }
                    Sees::CutShort => {
                        assert_eq!(r.status, 200, "{}", case.name);
                        assert!(
                            !r.complete,
                            "{}: a cut body was presented as complete",
                            case.name
                        );
                        buf.clear();
                        assert!(closed(&mut s, &buf).await, "{}", case.name);
                    }
                }
                if matches!(case.then, Then::StrayLater) {
                    // Let the stray answer land in the idle pooled connection.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The next requests, on this connection when it is open and on new ones,
                // get their own answers: nothing the backend sent out of turn.
                let mut next = if closed_or_unusable(&r, &case.sees) {
                    TcpStream::connect(addr).await.unwrap()
                } else {
                    s
                };
                let mut buf = Vec::new();
                for n in 0..3 {
                    let target = format!("/next{i}-{n}");
                    next.write_all(format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
                        .await
                        .unwrap();
                    let r = read_reply(&mut next, &mut buf, false)
                        .await
                        .unwrap_or_else(|| panic!("{}: no answer to the next request", case.name));
                    assert_eq!(
                        (r.status, String::from_utf8_lossy(&r.body).into_owned()),
                        (200, target),
                        "{}: the next client got another answer",
                        case.name
                    );
                }
            });
            if run.catch_unwind().await.is_err() {
                failed.push(case.name);
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {} cases failed: {failed:?}",
            failed.len(),
            cases.len()
        );
    })
    .await
    .expect("bounded");
}

/// Whether the client's connection ends with this answer.
fn closed_or_unusable(r: &Reply, sees: &Sees) -> bool {
    matches!(sees, Sees::BadGateway | Sees::CutShort)
        || r.values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"))
}
