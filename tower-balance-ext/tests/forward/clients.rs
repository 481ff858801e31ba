//! Client connections: the client timeout, clients that stop reading, draining,
//! the connection limit, storms of clients.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_balance_ext::forward::{ForwardConfig, Forwarder, Upstream};
use tower_balance_ext::{discover, BalancerBuilder, Pick};

use crate::common::forward::{
    backend, closed_within, get, proxy, proxy_with_client_timeout, read_reply, BOUND,
};

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
