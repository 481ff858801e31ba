//! What reaches the backend and what comes back: requests over one client
//! connection, response framings, forwarding fields, hop-by-hop fields.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower_balance_ext::forward::ForwardConfig;

use crate::common::forward::{backend, closed, get, proxy, read_reply, BOUND};

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
