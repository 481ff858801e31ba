//! A forwarder to test: round robin over raw upstreams, retries of idempotent requests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tower_balance_ext::forward::{self, Exchange, ForwardConfig, Forwarder, Upstream};
use tower_balance_ext::{discover, BalancerBuilder, Pick};

/// A forwarder over `backends` with `config`, serving on a fresh loopback port.
pub async fn proxy(backends: &[SocketAddr], config: ForwardConfig) -> SocketAddr {
    let upstreams: Vec<(SocketAddr, Upstream)> = backends
        .iter()
        .map(|a| {
            (
                *a,
                Upstream::builder(*a)
                    .config(config.clone())
                    .build()
                    .unwrap(),
            )
        })
        .collect();
    let balancer = BalancerBuilder::new(Pick::RoundRobin)
        .failure_if(forward::server_error)
        .retry(Exchange::retry_copy)
        .ready_timeout(Duration::from_millis(200))
        .build(discover::fixed(upstreams))
        .unwrap();
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
