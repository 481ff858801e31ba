//! A tonic client balancing over three gRPC servers, each endpoint behind a readiness
//! gate that follows the server's own `grpc.health.v1` status, which tower-health's
//! gRPC bridge drives from the server's probes. To copy.
//!
//! ```sh
//! cargo run --release -p examples --example grpc_balanced --features grpc
//! ```
//!
//! Each server is a tonic `Server` on 127.0.0.1 with `tonic-health`'s service, its
//! status set by `tower_health::grpc::report_readiness` from its `Probes` (a readiness
//! probe the demo flips). The client watches each server's health with the standard
//! `Watch` stream, closes that endpoint's gate while it is `NOT_SERVING`, and sends its
//! calls (here the health `Check` itself, the one RPC every server has) through
//! tower-balance-ext's `Balancer` over the three tonic `Channel`s: a server that says
//! it is not serving gets no calls until it serves again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower_balance_ext::{discover, BalancerBuilder, Pick};
use tower_health::{Gate, Probe, Probes, ReadinessLayer};
use tower_layer::Layer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One gRPC server: the health service, its status following `probes`' readiness,
/// which follows `serving`.
async fn server(serving: Arc<AtomicBool>) -> Result<SocketAddr, BoxError> {
    let probes = Probes::new();
    probes.register(
        Probe::readiness("model", move || {
            let ok = serving.load(Ordering::Relaxed);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("model reloading")
                }
            }
        })
        .period(Duration::from_millis(100))
        .timeout(Duration::from_millis(50))
        .failure_threshold(1)
        .success_threshold(1),
    )?;
    probes.start();
    let (reporter, health) = tonic_health::server::health_reporter();
    // The bridge: `grpc.health.v1` answers SERVING exactly while the probes are ready.
    let bridge = tower_health::grpc::report_readiness(&probes, reporter, [""]);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _keep = (probes, bridge);
        if let Err(e) = Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
        {
            eprintln!("server {addr}: {e}");
        }
    });
    Ok(addr)
}

/// A gate that is open while the server at `channel` says `SERVING` on its health
/// `Watch` stream (closed while the stream is down; re-watched after a pause).
fn follow_health(channel: Channel) -> Gate {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut client = HealthClient::new(channel);
        loop {
            if let Ok(stream) = client
                .watch(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                let mut stream = stream.into_inner();
                while let Ok(Some(msg)) = stream.message().await {
                    let _ = tx.send(msg.status == ServingStatus::Serving as i32);
                }
            }
            let _ = tx.send(false);
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Gate::new(rx)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut flags = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        let serving = Arc::new(AtomicBool::new(true));
        let addr = server(serving.clone()).await?;
        let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
        let gate = follow_health(channel.clone());
        endpoints.push((addr, ReadinessLayer::pending(gate).layer(channel)));
        flags.push((addr, serving));
    }
    let balancer = BalancerBuilder::new(Pick::LeastConnections)
        .ready_timeout(Duration::from_secs(2))
        .build(discover::fixed(endpoints))?;
    let stats = balancer.stats();
    let client = HealthClient::new(balancer);

    let calls = |label: &'static str, n: usize| {
        let before = stats.snapshot();
        let mut client = client.clone();
        let stats = stats.clone();
        async move {
            let mut ok = 0;
            for _ in 0..n {
                let req = HealthCheckRequest {
                    service: String::new(),
                };
                if client.check(req).await.is_ok() {
                    ok += 1;
                }
            }
            let after = stats.snapshot();
            let spread: Vec<String> = after
                .endpoints
                .iter()
                .map(|e| {
                    let was = before
                        .endpoints
                        .iter()
                        .find(|b| b.name == e.name)
                        .map_or(0, |b| b.requests);
                    format!("{} {}", e.name, e.requests - was)
                })
                .collect();
            println!(
                "{label:<44} {ok}/{n} calls ok; per server: {}",
                spread.join(", ")
            );
        }
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    calls("three servers serving:", 300).await;
    println!(
        "server {} starts reloading its model (readiness fails)",
        flags[1].0
    );
    flags[1].1.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    calls("it reports NOT_SERVING over grpc.health.v1:", 300).await;
    flags[1].1.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    calls("it serves again:", 300).await;
    Ok(())
}
