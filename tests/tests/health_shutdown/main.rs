//! Graceful shutdown of a real server on 127.0.0.1: readiness turns off first, requests
//! in flight finish, then the listener closes; a request that outlives the grace period
//! is cut off and reported.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_health::{GracefulServer, HealthEndpoints, Probes};
use tower_service::Service;

const BOUND: Duration = Duration::from_secs(20);

/// `/slow/<ms>` sleeps that long (counting in `started` when it begins); `/health/*` are
/// the probe endpoints.
fn app(
    probes: Probes,
    started: Arc<AtomicUsize>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    let endpoints = HealthEndpoints::new(probes);
    tower::service_fn(move |req: Request<Incoming>| {
        let mut endpoints = endpoints.clone();
        let started = started.clone();
        async move {
            let path = req.uri().path().to_string();
            if let Some(ms) = path.strip_prefix("/slow/") {
                started.fetch_add(1, Ordering::SeqCst);
                let ms: u64 = ms.parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                return Ok(Response::new(Full::new(Bytes::from("done"))));
            }
            endpoints.call(req).await
        }
    })
}

/// A running test server: its address, its probes, the count of slow requests begun, the
/// switch that starts shutdown, and the task that returns the report.
struct Running {
    addr: std::net::SocketAddr,
    probes: Probes,
    started: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<tower_health::ShutdownReport>>,
}

async fn start(drain_delay: Duration, grace: Duration) -> Running {
    let probes = Probes::new();
    let started = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, signal) = oneshot::channel::<()>();
    let server = tokio::spawn(
        GracefulServer::new()
            .probes(probes.clone())
            .drain_delay(drain_delay)
            .grace(grace)
            .serve(listener, app(probes.clone(), started.clone()), async {
                let _ = signal.await;
            }),
    );
    Running {
        addr,
        probes,
        started,
        stop,
        server,
    }
}

#[tokio::test]
async fn shutdown_turns_readiness_off_then_finishes_in_flight_requests() {
    support::init_tracing();
    tokio::time::timeout(BOUND, async {
        let Running {
            addr,
            probes,
            started,
            stop,
            server,
        } = start(Duration::from_millis(300), Duration::from_secs(5)).await;
        assert_eq!(support::get(addr, "/health/ready").await.unwrap().0, 200);

        let in_flight = tokio::spawn(support::get(addr, "/slow/800"));
        until_started(&started, 1).await;
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        // During the drain delay the server still answers, and says it is not ready.
        let (status, _) = support::get(addr, "/health/ready").await.unwrap();
        assert_eq!(status, 503, "readiness is off as soon as shutdown starts");
        assert!(probes.status().draining);

        let (status, body) = in_flight.await.unwrap().unwrap();
        assert_eq!(
            (status.as_u16(), &body[..]),
            (200, &b"done"[..]),
            "the in-flight request finished"
        );
        let report = server.await.unwrap().unwrap();
        assert_eq!(report.cut_off, 0);
        assert!(report.connections >= 3);
        assert!(
            support::get(addr, "/health/live").await.is_err(),
            "the listener is closed"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn a_request_past_the_grace_period_is_cut_off_and_reported() {
    tokio::time::timeout(BOUND, async {
        let Running {
            addr,
            started,
            stop,
            server,
            ..
        } = start(Duration::from_millis(50), Duration::from_millis(200)).await;
        let stuck = tokio::spawn(support::get(addr, "/slow/60000"));
        until_started(&started, 1).await;
        stop.send(()).unwrap();
        let report = server.await.unwrap().unwrap();
        assert_eq!(report.cut_off, 1);
        assert!(
            stuck.await.unwrap().is_err(),
            "the cut-off request sees its connection close"
        );
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn http2_clients_are_served_too() {
    tokio::time::timeout(BOUND, async {
        let Running {
            addr, stop, server, ..
        } = start(Duration::from_millis(10), Duration::from_secs(5)).await;
        // HTTP/2 with prior knowledge, as gRPC clients speak it.
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("http://{addr}/slow/1"))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.status(), 200);
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap();
        assert_eq!(body.to_bytes(), "done");
        drop(send);
        stop.send(()).unwrap();
        let report = server.await.unwrap().unwrap();
        assert_eq!(report.cut_off, 0);
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn only_connections_still_busy_at_the_deadline_count_as_cut_off() {
    tokio::time::timeout(BOUND, async {
        let Running {
            addr,
            started,
            stop,
            server,
            ..
        } = start(Duration::from_millis(20), Duration::from_millis(600)).await;
        // Three requests that finish within the grace period, one that does not.
        let quick: Vec<_> = (0..3)
            .map(|_| tokio::spawn(support::get(addr, "/slow/150")))
            .collect();
        let stuck = tokio::spawn(support::get(addr, "/slow/60000"));
        until_started(&started, 4).await;
        stop.send(()).unwrap();
        for q in quick {
            assert_eq!(q.await.unwrap().unwrap().0, 200);
        }
        let report = server.await.unwrap().unwrap();
        assert_eq!(report.cut_off, 1, "{report:?}");
        assert!(stuck.await.unwrap().is_err());
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn an_endless_drain_delay_does_not_panic_and_keeps_serving() {
    tokio::time::timeout(BOUND, async {
        let Running {
            addr,
            probes,
            stop,
            server,
            ..
        } = start(Duration::MAX, Duration::MAX).await;
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(probes.status().draining);
        // Still serving (and saying it is not ready) long after the signal.
        assert_eq!(support::get(addr, "/health/ready").await.unwrap().0, 503);
        assert!(!server.is_finished(), "the server task panicked or stopped");
        server.abort();
    })
    .await
    .expect("bounded");
}

/// Waits (bounded by the test's own timeout) until `n` slow requests are being served.
async fn until_started(started: &AtomicUsize, n: usize) {
    while started.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
