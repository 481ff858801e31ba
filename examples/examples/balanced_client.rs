//! A hyper client balancing over three local servers, each endpoint behind a readiness
//! gate that follows a health monitor, to copy:
//!
//! ```sh
//! cargo run --release -p examples --example balanced_client
//! ```
//!
//! It starts three servers on 127.0.0.1 (each with `/health` and `/work`), watches them
//! with a `HealthMonitor`, and sends requests through a latency-aware `Balancer` whose
//! endpoints are pooled `HttpEndpoint`s behind pending-mode gates. Then one server
//! starts failing its health check and another is killed: no request fails, and the
//! spread and the balancer's statistics are printed at each step.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt};
use tower_balance_ext::{discover, BalancerBuilder, HttpEndpoint, Pick};
use tower_health::{Gate, HealthMonitor, ReadinessLayer, Target};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A server answering `/work` with its name after `ms`, and `/health` with 200 while
/// `healthy`. Returns its address and the task to abort to kill it.
async fn server(
    name: &'static str,
    ms: u64,
    healthy: Arc<AtomicBool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let healthy = healthy.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let healthy = healthy.clone();
                async move {
                    if req.uri().path() == "/health" {
                        let s = if healthy.load(Ordering::SeqCst) {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        return Ok::<_, Infallible>(
                            Response::builder()
                                .status(s)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(Response::new(Full::new(Bytes::from(name))))
                }
            });
            conns.spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let names = ["alpha", "beta", "gamma"];
    let flags: Vec<Arc<AtomicBool>> = names
        .iter()
        .map(|_| Arc::new(AtomicBool::new(true)))
        .collect();
    let mut servers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // gamma is the slowest; the latency-aware pick sends it less.
        servers.push(server(name, 5 + 10 * i as u64, flags[i].clone()).await?);
    }
    let monitor = HealthMonitor::new();
    for (addr, _) in &servers {
        monitor.register(
            Target::new(addr.to_string(), addr.to_string())
                .interval(Duration::from_millis(100))
                .timeout(Duration::from_millis(80)),
        )?;
    }
    let endpoints = servers.iter().map(|(addr, _)| {
        let gate = Gate::new(monitor.watch(&addr.to_string()).expect("registered above"));
        (
            *addr,
            ReadinessLayer::pending(gate).layer(HttpEndpoint::<Full<Bytes>>::new(*addr)),
        )
    });
    let balancer = BalancerBuilder::new(Pick::LatencyAware)
        .http()
        .retry_idempotent()
        .build(discover::fixed(endpoints.collect::<Vec<_>>()))?;
    while !servers
        .iter()
        .all(|(a, _)| monitor.is_ready_for_traffic(&a.to_string()))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let round = |label: &'static str| {
        let balancer = balancer.clone();
        async move {
            let mut spread = BTreeMap::<String, usize>::new();
            let mut failed = 0;
            for _ in 0..200 {
                let req = Request::get("/work").body(Full::new(Bytes::new()))?;
                match balancer.clone().oneshot(req).await {
                    Ok(res) if res.status() == StatusCode::OK => {
                        let body = res.into_body().collect().await?.to_bytes();
                        *spread
                            .entry(String::from_utf8_lossy(&body).into_owned())
                            .or_default() += 1;
                    }
                    _ => failed += 1,
                }
            }
            println!("{label:<34} {spread:?}, {failed} failed");
            Ok::<_, BoxError>(())
        }
    };
    round("all healthy (gamma slowest):").await?;
    flags[0].store(false, Ordering::SeqCst);
    let a0 = servers[0].0.to_string();
    while monitor.is_ready_for_traffic(&a0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    round("alpha fails its health check:").await?;
    servers[1].1.abort();
    round("beta killed as well:").await?;
    let s = balancer.stats().snapshot();
    println!(
        "balancer: {} requests, {} retried on another endpoint, p99 {:?}",
        s.requests, s.retries, s.p99
    );
    for e in s.endpoints {
        println!(
            "  {}: {} requests, {} errors, EWMA {:?}, last seen {:?}",
            e.name, e.requests, e.errors, e.ewma, e.state
        );
    }
    Ok(())
}
