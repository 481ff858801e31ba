//! Differential tests: whatever the forwarder sends upstream parses, with httparse and
//! with hyper's server, to exactly the one request it accepted.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::head::{request_head, Peer, Refusal, RequestHead};
use super::MAX_HEADERS;

fn peer() -> Peer {
    Peer::new(Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))), 0)
}

/// Parses `raw` as the forwarder does and checks it.
fn forward(raw: &[u8]) -> Option<Result<RequestHead, Refusal>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(len)) => Some(request_head(&req, raw, len, 1 << 20, peer())),
        _ => None,
    }
}

/// One request as an upstream parser read it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    host: String,
    body: Vec<u8>,
}

/// What httparse reads from `bytes`: one request, and the bytes it leaves over.
fn with_httparse(bytes: &[u8]) -> (Seen, usize) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("upstream head does not parse: {other:?}"),
    };
    let hosts: Vec<_> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .collect();
    assert_eq!(hosts.len(), 1, "one Host upstream");
    assert!(
        !req.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")),
        "no Transfer-Encoding upstream"
    );
    let lengths: Vec<_> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .collect();
    assert!(lengths.len() <= 1, "at most one Content-Length upstream");
    let body_len: usize = lengths
        .first()
        .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
        .unwrap_or(0);
    let body = bytes[len..len + body_len].to_vec();
    let seen = Seen {
        method: req.method.unwrap().to_owned(),
        target: req.path.unwrap().to_owned(),
        host: String::from_utf8(hosts[0].value.to_vec()).unwrap(),
        body,
    };
    (seen, bytes.len() - len - body_len)
}

/// What hyper's HTTP/1 server reads from `bytes`: every request on the connection.
fn with_hyper(bytes: Vec<u8>) -> Vec<Seen> {
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut client, server) = tokio::io::duplex(1 << 22);
        let log = seen.clone();
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let log = log.clone();
                async move {
                    let method = req.method().to_string();
                    let target = req.uri().to_string();
                    let host = req
                        .headers()
                        .get_all("host")
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect::<Vec<_>>()
                        .join("|");
                    let body = req.into_body().collect().await?.to_bytes().to_vec();
                    log.lock().unwrap().push(Seen {
                        method,
                        target,
                        host,
                        body,
                    });
                    Ok::<_, hyper::Error>(http::Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let drive = tokio::spawn(conn);
        client.write_all(&bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_to_end(&mut sink),
        )
        .await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drive).await;
        let taken = std::mem::take(&mut *seen.lock().unwrap());
        taken
    })
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_owned()),
        Just("HEAD".to_owned()),
        Just("POST".to_owned()),
        Just("PUT".to_owned()),
        Just("DELETE".to_owned()),
        Just("OPTIONS".to_owned()),
        "[A-Z]{1,8}",
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9.-]{0,20}(:[0-9]{1,5})?",
        1 => "\\[::1\\](:[0-9]{1,4})?",
        1 => "[a-z]{1,5}[/?#@ ][a-z/?=]{0,5}",
        1 => "",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "/[a-zA-Z0-9._~%/-]{0,30}(\\?[a-z0-9=&%]{0,12})?",
        1 => Just("*".to_owned()),
        1 => "//[a-z.]{1,10}/x",
        1 => "[a-z]{1,8}",
    ]
}

/// Extra fields, including every kind that frames, routes or identifies a request.
fn field() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        4 => ("x-[a-z]{1,8}", "[ -~]{0,16}"),
        1 => (Just("Content-Length".to_owned()), "[0-9+ ,-]{1,6}"),
        1 => (Just("Transfer-Encoding".to_owned()), prop_oneof![Just("chunked".to_owned()), Just("xchunked".to_owned()), Just("chunked, identity".to_owned())]),
        1 => (Just("Connection".to_owned()), prop_oneof![Just("close".to_owned()), Just("keep-alive, x-a".to_owned()), Just("content-length".to_owned()), Just("Host".to_owned()), Just("x-forwarded-for".to_owned())]),
        1 => (Just("Host".to_owned()), "[a-z]{1,8}"),
        1 => (Just("X-Forwarded-For".to_owned()), "[0-9.]{1,15}"),
        1 => (Just("Forwarded".to_owned()), "for=[0-9.]{1,15}"),
        1 => (Just("Keep-Alive".to_owned()), "timeout=[0-9]{1,2}"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Generated heads, valid and not: an accepted one reaches the upstream as exactly
    /// one request, with the same method, target, host and body, as both httparse and
    /// hyper's server read it; a refused one is never sent.
    #[test]
    fn what_is_sent_upstream_parses_as_the_one_request_accepted(
        method in method(),
        absolute in any::<bool>(),
        host in host(),
        path in path(),
        fields in proptest::collection::vec(field(), 0..5),
        body in proptest::collection::vec(any::<u8>(), 0..40),
        with_length in any::<bool>(),
    ) {
        let target = if absolute && path.starts_with('/') {
            format!("http://{host}{path}")
        } else {
            path.clone()
        };
        let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
        for (name, value) in &fields {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = if with_length { body } else { Vec::new() };
        if with_length {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(&body);

        let Some(result) = forward(&raw) else { return Ok(()) };
        let Ok(head) = result else { return Ok(()) };
        // What the forwarder sends: its head, then exactly the body it read.
        let body_start = head.len;
        if raw.len() < body_start + head.body {
            // The forwarder would wait for the rest of the body.
            return Ok(());
        }
        let sent_body = &raw[body_start..body_start + head.body];
        let mut sent = head.exchange_head.clone();
        sent.extend_from_slice(sent_body);

        let (seen, left) = with_httparse(&sent);
        prop_assert_eq!(left, 0, "bytes after the request would be a second request");
        prop_assert_eq!(&seen.method, &method);
        let expected_target = if target.starts_with("http://") {
            if path.is_empty() { "/".to_owned() } else { path.clone() }
        } else {
            target.clone()
        };
        prop_assert_eq!(&seen.target, &expected_target);
        // Whitespace around a field value is not part of it (RFC 9110 §5.5).
        let host = host.trim_matches([' ', '\t']).to_owned();
        prop_assert_eq!(&seen.host, &host);
        prop_assert_eq!(&seen.body[..], sent_body);

        let by_hyper = with_hyper(sent.clone());
        prop_assert_eq!(by_hyper.len(), 1, "hyper read {} requests", by_hyper.len());
        let h = &by_hyper[0];
        prop_assert_eq!(&h.method, &method);
        prop_assert_eq!(&h.target, &expected_target);
        prop_assert_eq!(&h.host, &host);
        prop_assert_eq!(&h.body[..], sent_body);
    }
}

/// The property above is not vacuous: ordinary requests of every shape it generates
/// are accepted.
#[test]
fn ordinary_requests_are_accepted() {
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST /x?y=1 HTTP/1.1\r\nHost: a.example:8080\r\nContent-Length: 3\r\n\r\nabc",
        b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-a\r\nx-a: 1\r\n\r\n",
    ] {
        let head = forward(raw).expect("complete").expect("accepted");
        let mut sent = head.exchange_head.clone();
        sent.extend_from_slice(&raw[head.len..head.len + head.body]);
        assert_eq!(with_hyper(sent).len(), 1);
    }
}
