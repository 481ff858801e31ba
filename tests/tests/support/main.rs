//! Tests of the shared test helpers themselves, against real loopback sockets.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use support::{free_addr, free_port, get, init_tracing, TestServer};

const BOUND: Duration = Duration::from_secs(20);

#[test]
fn free_port_can_be_bound_on_loopback() {
    let port = free_port().expect("free port");
    assert_ne!(port, 0);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("port is bindable");
    assert_eq!(listener.local_addr().unwrap().port(), port);
    assert!(free_addr().unwrap().ip().is_loopback());
}

#[test]
fn init_tracing_installs_a_global_subscriber_once() {
    init_tracing();
    init_tracing();
    assert!(tracing::dispatcher::has_been_set());
}

#[tokio::test]
async fn server_answers_with_its_handler_then_shuts_down() {
    tokio::time::timeout(BOUND, async {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let server = TestServer::start(move |req| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Response::new(Full::new(Bytes::from(format!("path={}", req.uri().path()))))
            }
        })
        .await
        .unwrap();
        let addr = server.addr();
        assert!(addr.ip().is_loopback());

        let (status, body) = get(addr, "/hello").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "path=/hello");
        get(addr, "/again").await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        server.shutdown().await;
        assert!(
            get(addr, "/").await.is_err(),
            "no server should answer after shutdown"
        );
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test]
async fn killed_server_can_restart_on_the_same_address() {
    tokio::time::timeout(BOUND, async {
        let ok = |_req| async { Response::new(Full::new(Bytes::from_static(b"up"))) };
        let server = TestServer::start(ok).await.unwrap();
        let addr = server.addr();
        assert_eq!(get(addr, "/").await.unwrap().1, "up");

        server.kill().await;
        assert!(
            get(addr, "/").await.is_err(),
            "a killed server must not answer"
        );

        let again = TestServer::start_on(addr, ok).await.unwrap();
        assert_eq!(again.addr(), addr);
        assert_eq!(get(addr, "/").await.unwrap().1, "up");
        again.shutdown().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test]
async fn servers_refuse_non_loopback_addresses() {
    let addr = "0.0.0.0:0".parse().unwrap();
    let err = TestServer::start_on(addr, |_req| async {
        Response::new(Full::new(Bytes::new()))
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
