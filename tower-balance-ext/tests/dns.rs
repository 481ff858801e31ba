//! DNS discovery: the system resolver on `localhost`, and (feature `dns`) hickory-resolver
//! against a DNS responder this test runs on a real UDP socket on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{until, LIMIT};
use tower::ServiceExt;
use tower_balance_ext::discover::{self, SystemResolver};
use tower_balance_ext::{BalancerBuilder, Pick};

fn echo_addr(
    addr: SocketAddr,
) -> tower::util::BoxCloneService<(), SocketAddr, std::convert::Infallible> {
    tower::util::BoxCloneService::new(tower::service_fn(move |_: ()| async move {
        Ok::<_, std::convert::Infallible>(addr)
    }))
}

#[tokio::test]
async fn the_system_resolver_finds_localhost() {
    tokio::time::timeout(LIMIT, async {
        let d = discover::dns(
            SystemResolver,
            "localhost",
            4321,
            Duration::from_millis(50),
            echo_addr,
        );
        let b = BalancerBuilder::new(Pick::RoundRobin).build(d).unwrap();
        until(|| !b.endpoints().is_empty()).await;
        let addr = b.clone().oneshot(()).await.unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 4321);
    })
    .await
    .unwrap();
}

#[cfg(feature = "dns")]
mod hickory {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::{Arc, Mutex};
    use tower_balance_ext::discover::HickoryResolver;

    /// Answers A queries for any name with the addresses in `ips` (TTL 0), and
    /// other queries with no records.
    async fn responder(ips: Arc<Mutex<Vec<Ipv4Addr>>>) -> SocketAddr {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let q = &buf[..n];
                if q.len() < 12 {
                    continue;
                }
                // The question: labels up to the zero byte, then type and class.
                let mut i = 12;
                while i < q.len() && q[i] != 0 {
                    i += 1 + q[i] as usize;
                }
                if i + 5 > q.len() {
                    continue;
                }
                let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
                let question = &q[12..i + 5];
                let answers: Vec<Ipv4Addr> = if qtype == 1 {
                    ips.lock().unwrap().clone()
                } else {
                    Vec::new()
                };
                let mut r = Vec::new();
                r.extend_from_slice(&q[0..2]); // id
                r.extend_from_slice(&[0x85, 0x80]); // response, authoritative, no error
                r.extend_from_slice(&1u16.to_be_bytes());
                r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
                r.extend_from_slice(&[0, 0, 0, 0]);
                r.extend_from_slice(question);
                for ip in answers {
                    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
                    r.extend_from_slice(&ip.octets());
                }
                let _ = sock.send_to(&r, from).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn hickory_follows_a_name_whose_addresses_change() {
        tokio::time::timeout(LIMIT, async {
            let ips = Arc::new(Mutex::new(vec![
                Ipv4Addr::new(127, 0, 0, 1),
                Ipv4Addr::new(127, 0, 0, 2),
            ]));
            let server = responder(ips.clone()).await;
            let d = discover::dns(
                HickoryResolver::with_server(server),
                "training.fleet.test.",
                3000,
                Duration::from_millis(50),
                echo_addr,
            );
            let b = BalancerBuilder::new(Pick::RoundRobin).build(d).unwrap();
            let set = |b: &tower_balance_ext::Balancer<SocketAddr, _, ()>| {
                let mut v: Vec<SocketAddr> = b.endpoints().into_iter().map(|(a, _)| a).collect();
                v.sort();
                v
            };
            let addr = |last: u8| SocketAddr::from(([127, 0, 0, last], 3000));
            until(|| set(&b) == vec![addr(1), addr(2)]).await;
            // One instance leaves, another arrives.
            *ips.lock().unwrap() = vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
            until(|| set(&b) == vec![addr(2), addr(3)]).await;
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..4 {
                seen.insert(b.clone().oneshot(()).await.unwrap());
            }
            assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![addr(2), addr(3)]);
            // The name has no address any more: every endpoint leaves.
            ips.lock().unwrap().clear();
            until(|| set(&b).is_empty()).await;
        })
        .await
        .unwrap();
    }
}
