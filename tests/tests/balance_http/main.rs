//! The balancer over real HTTP servers on 127.0.0.1: each endpoint a pooled
//! `HttpEndpoint` behind `tower-health`'s pending readiness gate that follows a
//! `HealthMonitor` target. A server failing its health check gets no traffic; a killed
//! one costs no request (GETs are retried on another server); a recovered one comes back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use support::TestServer;
use tower::{Layer, ServiceExt};
use tower_balance_ext::{BalancerBuilder, EndpointState, HttpEndpoint, Pick, Router};
use tower_health::{Gate, HealthMonitor, ReadinessLayer, Target};

const BOUND: Duration = Duration::from_secs(60);

async fn server(i: usize, healthy: Arc<AtomicBool>) -> TestServer {
    TestServer::start(move |req: Request<hyper::body::Incoming>| {
        let healthy = healthy.clone();
        async move {
            if req.uri().path() == "/health" {
                let ok = healthy.load(Ordering::SeqCst);
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            Response::new(Full::new(Bytes::from(i.to_string())))
        }
    })
    .await
    .unwrap()
}

async fn until(mut ok: impl FnMut() -> bool) {
    while !ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gated_http_balancing_skips_sick_servers_and_loses_no_request() {
    support::init_tracing();
    tokio::time::timeout(BOUND, async {
        let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect();
        let mut servers = Vec::new();
        for (i, f) in flags.iter().enumerate() {
            servers.push(Some(server(i, f.clone()).await));
        }
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.as_ref().unwrap().addr()).collect();
        let monitor = HealthMonitor::new();
        for a in &addrs {
            monitor
                .register(
                    Target::new(a.to_string(), a.to_string())
                        .interval(Duration::from_millis(50))
                        .timeout(Duration::from_millis(40)),
                )
                .unwrap();
        }
        let m = monitor.clone();
        let router = Router::new(
            BalancerBuilder::new(Pick::RoundRobin)
                .http()
                .retry_idempotent()
                .ready_timeout(Duration::from_secs(5)),
            move |addr: SocketAddr| {
                let gate = Gate::new(m.watch(&addr.to_string()).expect("registered"));
                ReadinessLayer::pending(gate).layer(HttpEndpoint::<Full<Bytes>>::new(addr))
            },
            |_: &Request<Full<Bytes>>| Some("work".to_string()),
        );
        for a in &addrs {
            router.add_target("work", *a, 1).unwrap();
        }
        let send = |router: &Router<_, _>| {
            let req = Request::get("/work").body(Full::new(Bytes::new())).unwrap();
            let r = router.clone();
            async move {
                let res: Response<hyper::body::Incoming> = r.oneshot(req).await.expect("answered");
                assert_eq!(res.status(), StatusCode::OK);
                let body = res.into_body().collect().await.unwrap().to_bytes();
                String::from_utf8(body.to_vec())
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            }
        };
        let tally = |n: usize| {
            let router = router.clone();
            async move {
                let mut counts = HashMap::<usize, usize>::new();
                for _ in 0..n {
                    *counts.entry(send(&router).await).or_default() += 1;
                }
                counts
            }
        };
        // All three healthy (the first requests wait for the monitor's first checks).
        until(|| {
            addrs
                .iter()
                .all(|a| monitor.is_ready_for_traffic(&a.to_string()))
        })
        .await;
        let counts = tally(90).await;
        assert_eq!(counts.len(), 3, "{counts:?}");

        // Server 1 fails its health check: it gets nothing, and no request fails.
        flags[1].store(false, Ordering::SeqCst);
        until(|| !monitor.is_ready_for_traffic(&addrs[1].to_string())).await;
        let counts = tally(60).await;
        assert_eq!(counts.get(&1), None, "{counts:?}");
        let b = router.balancer("work").unwrap();
        assert_eq!(b.endpoints()[1].1, EndpointState::NotReady);

        // Server 2 is killed: requests that reach it before the monitor notices are
        // retried on server 0; none is lost.
        servers[2].take().unwrap().kill().await;
        let counts = tally(60).await;
        assert_eq!(counts.get(&0), Some(&60), "{counts:?}");
        until(|| !monitor.is_ready_for_traffic(&addrs[2].to_string())).await;

        // Server 1 recovers: it takes traffic again.
        flags[1].store(true, Ordering::SeqCst);
        until(|| monitor.is_ready_for_traffic(&addrs[1].to_string())).await;
        until(|| b.endpoints()[1].1 == EndpointState::Ready).await;
        let counts = tally(60).await;
        // Shared between the two live servers (the turn may shift by one while the
        // balancer first finds the killed one not ready).
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts[&0] >= 28 && counts[&1] >= 28, "{counts:?}");
        let snap = b.stats().snapshot();
        assert_eq!(snap.no_ready_endpoints, 0);
    })
    .await
    .expect("bounded");
}

/// The README's stack: breaker (pending while open) around the health gate around the
/// pooled client, under a latency-aware router that retries idempotent requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_stack_serves_and_its_breaker_opens_on_5xx() {
    use tower_balance_ext::breaker::{BreakerState, CircuitBreakerLayer, WhenOpen};
    tokio::time::timeout(BOUND, async {
        let healthy = Arc::new(AtomicBool::new(true));
        let failing = Arc::new(AtomicBool::new(false));
        let f = failing.clone();
        let h = healthy.clone();
        let srv = TestServer::start(move |req: Request<hyper::body::Incoming>| {
            let (f, h) = (f.clone(), h.clone());
            async move {
                let status = if req.uri().path() == "/health/ready" {
                    if h.load(Ordering::SeqCst) {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                } else if f.load(Ordering::SeqCst) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from("ok")))
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let addr = srv.addr();
        let monitor = HealthMonitor::new();
        let breaker = CircuitBreakerLayer::builder()
            .http()
            .consecutive_failures(3)
            .when_open(WhenOpen::Wait)
            .build()
            .unwrap();
        let handles = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, hs) = (monitor.clone(), handles.clone());
        let router = Router::new(
            BalancerBuilder::new(Pick::LatencyAware)
                .http()
                .retry_idempotent()
                .ready_timeout(Duration::from_millis(300)),
            move |addr: SocketAddr| {
                let gate = Gate::new(m.watch(&addr.to_string()).expect("registered first"));
                let svc =
                    breaker.layer(
                        ReadinessLayer::pending(gate).layer(HttpEndpoint::<Full<Bytes>>::new(addr)),
                    );
                hs.lock().unwrap().push(svc.handle());
                svc
            },
            |req: &Request<Full<Bytes>>| req.uri().path().split('/').nth(3).map(str::to_owned),
        );
        monitor
            .register(
                Target::new(addr.to_string(), addr.to_string())
                    .path("/health/ready")
                    .interval(Duration::from_millis(50))
                    .timeout(Duration::from_millis(40)),
            )
            .unwrap();
        router.add_target("training", addr, 1).unwrap();
        until(|| monitor.is_ready_for_traffic(&addr.to_string())).await;
        let get = || {
            let r = router.clone();
            async move {
                let req = Request::get("/api/v1/training/run")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                r.oneshot(req).await
            }
        };
        assert_eq!(get().await.unwrap().status(), StatusCode::OK);
        // Three 500s in a row open the breaker; the balancer then has no ready endpoint.
        failing.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(
                get().await.unwrap().status(),
                StatusCode::INTERNAL_SERVER_ERROR
            );
        }
        assert_eq!(handles.lock().unwrap()[0].state(), BreakerState::Open);
        let e = get().await.unwrap_err();
        assert!(e.is::<tower_balance_ext::NoReadyEndpoints>(), "{e}");
    })
    .await
    .expect("bounded");
}

/// A peer that accepts connections and never answers: its requests time out and, being
/// GETs, are retried on the live server; none hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_costs_a_timeout_not_a_hang() {
    tokio::time::timeout(BOUND, async {
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mute_addr = mute.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = mute.accept().await {
                conns.push(c); // read nothing, answer nothing
            }
        });
        let live = server(7, Arc::new(AtomicBool::new(true))).await;
        let endpoints = [mute_addr, live.addr()].map(|a| {
            (
                a,
                HttpEndpoint::<Full<Bytes>>::new(a).timeout(Duration::from_millis(200)),
            )
        });
        let b = BalancerBuilder::new(Pick::RoundRobin)
            .http()
            .retry_idempotent()
            .build(tower_balance_ext::discover::fixed(endpoints))
            .unwrap();
        while b.endpoints().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..6 {
            let req = Request::get("/work").body(Full::new(Bytes::new())).unwrap();
            let res = b
                .clone()
                .oneshot(req)
                .await
                .expect("retried on the live server");
            assert_eq!(res.status(), StatusCode::OK);
        }
        let snap = b.stats().snapshot();
        let mute_errors = snap.endpoints[0].errors;
        assert!(mute_errors >= 1, "the mute peer was tried: {snap:?}");
        assert_eq!(
            snap.retries, mute_errors,
            "each of its timeouts was retried"
        );
        assert_eq!(snap.endpoints[1].errors, 0);
        // Without a retry the timeout is the answer, with its reason.
        let single = BalancerBuilder::new(Pick::RoundRobin)
            .build(tower_balance_ext::discover::fixed([(
                mute_addr,
                HttpEndpoint::<Full<Bytes>>::new(mute_addr).timeout(Duration::from_millis(100)),
            )]))
            .unwrap();
        while single.endpoints().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let req = Request::get("/work").body(Full::new(Bytes::new())).unwrap();
        let e = single.oneshot(req).await.unwrap_err();
        assert!(e.is::<tower_balance_ext::HeadTimeout>(), "{e}");
        assert!(e.to_string().contains("sent no response within"), "{e}");
    })
    .await
    .expect("bounded");
}
