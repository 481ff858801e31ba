//! Upstreams that fail: the statuses clients get, the errors a caller of an
//! `Upstream` sees, and pooled connections found closed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_balance_ext::forward::{
    ForwardConfig, Forwarder, Upstream, UpstreamError, UpstreamErrorKind,
};
use tower_balance_ext::{discover, BalancerBuilder, BoxError, Pick};

use crate::common::forward::{backend, get, proxy, read_reply, BOUND};

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
