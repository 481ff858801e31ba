//! Extreme settings: working, or refused at build time with a message naming them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower_balance_ext::forward::{ForwardConfig, Forwarder, Upstream};
use tower_balance_ext::{discover, BalancerBuilder, Pick};

use crate::common::forward::{backend, get, proxy, read_reply, BOUND};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_settings_work_or_are_refused_with_a_message() {
    tokio::time::timeout(BOUND, async {
        let (a, _) = backend("a").await;
        // The largest values: no overflow, requests go through.
        let huge = ForwardConfig {
            max_head: usize::MAX,
            max_request_body: usize::MAX,
            client_timeout: Duration::MAX,
            upstream_timeout: Duration::MAX,
            max_idle_per_upstream: usize::MAX,
            max_connections: usize::MAX >> 4,
            trusted_hops: usize::MAX,
        };
        // The smallest that make sense: no pooling, no request bodies.
        let small = ForwardConfig {
            max_request_body: 0,
            max_idle_per_upstream: 0,
            max_connections: 1,
            ..ForwardConfig::default()
        };
        for config in [huge, small.clone()] {
            let addr = proxy(&[a], config).await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::new();
            for _ in 0..3 {
                s.write_all(get("/ok").as_bytes()).await.unwrap();
                assert_eq!(
                    read_reply(&mut s, &mut buf, false).await.unwrap().body,
                    b"ok"
                );
            }
        }
        let addr = proxy(&[a], small).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx")
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            read_reply(&mut s, &mut buf, false).await.unwrap().status,
            413
        );

        // Settings that cannot work are refused when built, naming the field.
        let upstreams = || vec![(a, Upstream::new(a))];
        for (config, field) in [
            (
                ForwardConfig {
                    client_timeout: Duration::ZERO,
                    ..ForwardConfig::default()
                },
                "client_timeout",
            ),
            (
                ForwardConfig {
                    upstream_timeout: Duration::ZERO,
                    ..ForwardConfig::default()
                },
                "upstream_timeout",
            ),
            (
                ForwardConfig {
                    max_connections: 0,
                    ..ForwardConfig::default()
                },
                "max_connections",
            ),
            (
                ForwardConfig {
                    max_head: 10,
                    ..ForwardConfig::default()
                },
                "max_head",
            ),
        ] {
            let balancer = BalancerBuilder::new(Pick::RoundRobin)
                .build(discover::fixed(upstreams()))
                .unwrap();
            let err = Forwarder::builder(balancer)
                .config(config.clone())
                .build()
                .unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
            // An upstream uses the timeout and the head limit; it has no clients.
            let upstream = Upstream::builder(a).config(config).build();
            if field == "upstream_timeout" || field == "max_head" {
                let err = upstream.unwrap_err();
                assert!(err.to_string().contains(field), "{err}");
            } else {
                assert!(upstream.is_ok());
            }
        }
    })
    .await
    .expect("bounded");
}

#[tokio::test]
#[allow(deprecated)]
async fn the_deprecated_with_config_constructors_check_as_the_builders_do() {
    let a: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = ForwardConfig {
        upstream_timeout: Duration::ZERO,
        ..ForwardConfig::default()
    };
    let err = Upstream::with_config(a, bad.clone()).unwrap_err();
    assert!(err.to_string().contains("upstream_timeout"), "{err}");
    let upstream = Upstream::with_config(a, ForwardConfig::default()).unwrap();
    assert_eq!(upstream.addr(), a);
    let balancer = BalancerBuilder::new(Pick::RoundRobin)
        .build(discover::fixed([(a, upstream)]))
        .unwrap();
    let err = Forwarder::with_config(balancer.clone(), bad).unwrap_err();
    assert!(err.to_string().contains("upstream_timeout"), "{err}");
    assert!(Forwarder::with_config(balancer, ForwardConfig::default()).is_ok());
}
