//! Requests the forwarder answers itself, which never reach a backend.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower_balance_ext::forward::ForwardConfig;

use crate::common::forward::{backend, closed, get, proxy, read_reply, BOUND};

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
