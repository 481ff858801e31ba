//! The router: targets by name and address, weights, removal, unknown services.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{until, LIMIT};
use tower::ServiceExt;
use tower_balance_ext::{
    BalancerBuilder, EndpointState, Pick, Router, TargetError, UnknownService,
};

type Req = (String, u32);

fn router() -> Router<tower::util::BoxCloneService<Req, u16, std::convert::Infallible>, Req> {
    Router::new(
        BalancerBuilder::new(Pick::WeightedRoundRobin),
        |addr: SocketAddr| {
            tower::util::BoxCloneService::new(tower::service_fn(move |_: Req| async move {
                Ok::<_, std::convert::Infallible>(addr.port())
            }))
        },
        |req: &Req| (!req.0.is_empty()).then(|| req.0.clone()),
    )
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn targets_come_and_go_by_name_and_address_with_their_weights() {
    tokio::time::timeout(LIMIT, async {
        let r = router();
        r.add_target("budget", addr(3001), 1).unwrap();
        r.add_target("budget", addr(3002), 3).unwrap();
        r.add_target("reports", addr(4001), 1).unwrap();
        until(|| r.targets("budget").len() == 2 && r.targets("reports").len() == 1).await;
        let mut counts = HashMap::<u16, usize>::new();
        for i in 0..400 {
            let port = r.clone().oneshot(("budget".into(), i)).await.unwrap();
            *counts.entry(port).or_default() += 1;
        }
        assert_eq!((counts[&3001], counts[&3002]), (100, 300));
        assert_eq!(
            r.clone().oneshot(("reports".into(), 1)).await.unwrap(),
            4001
        );
        // A weight change through add_target on a known address.
        r.add_target("budget", addr(3001), 3).unwrap();
        let mut counts = HashMap::<u16, usize>::new();
        for i in 0..600 {
            let port = r.clone().oneshot(("budget".into(), i)).await.unwrap();
            *counts.entry(port).or_default() += 1;
        }
        assert_eq!((counts[&3001], counts[&3002]), (300, 300));
        assert!(r.remove_target("budget", addr(3002)));
        until(|| r.targets("budget") == vec![(addr(3001), EndpointState::Ready)]).await;
        for i in 0..10 {
            assert_eq!(r.clone().oneshot(("budget".into(), i)).await.unwrap(), 3001);
        }
        assert!(!r.remove_target("nothing", addr(1)));
        let stats = r.stats();
        assert_eq!(
            stats.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["budget", "reports"]
        );
        assert_eq!(stats[0].1.snapshot().requests, 1_010);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_targets_and_unknown_services_get_clear_errors() {
    let r = router();
    assert!(matches!(
        r.add_target("", addr(1), 1),
        Err(TargetError::EmptyName)
    ));
    assert!(matches!(
        r.add_target("x", addr(1), 0),
        Err(TargetError::ZeroWeight(_))
    ));
    let e = r.clone().oneshot(("ghost".into(), 1)).await.unwrap_err();
    let e = e.downcast_ref::<UnknownService>().expect("UnknownService");
    assert_eq!(e.status(), http::StatusCode::NOT_FOUND);
    assert!(e.to_string().contains("no service named `ghost`"));
    let e = r.clone().oneshot((String::new(), 1)).await.unwrap_err();
    assert!(e.to_string().contains("names no service"), "{e}");
    // A service whose every target left: NoReadyEndpoints after the wait.
    let r = Router::new(
        BalancerBuilder::new(Pick::RoundRobin).ready_timeout(Duration::from_millis(10)),
        |addr: SocketAddr| {
            tower::util::BoxCloneService::new(tower::service_fn(move |_: Req| async move {
                Ok::<_, std::convert::Infallible>(addr.port())
            }))
        },
        |req: &Req| Some(req.0.clone()),
    );
    r.add_target("a", addr(5), 1).unwrap();
    r.remove_target("a", addr(5));
    until(|| r.targets("a").is_empty()).await;
    let e = r.clone().oneshot(("a".into(), 1)).await.unwrap_err();
    assert!(e.is::<tower_balance_ext::NoReadyEndpoints>(), "{e}");
}

#[tokio::test]
async fn a_target_removed_and_added_again_at_once_stays() {
    tokio::time::timeout(LIMIT, async {
        let r = router();
        r.add_target("svc", addr(3001), 1).unwrap();
        until(|| r.targets("svc").len() == 1).await;
        // Both before the balancer has applied the removal.
        assert!(r.remove_target("svc", addr(3001)));
        r.add_target("svc", addr(3001), 1).unwrap();
        // A later change, to know when the ones before it were applied.
        r.add_target("svc", addr(3002), 1).unwrap();
        until(|| r.targets("svc").iter().any(|(a, _)| *a == addr(3002))).await;
        let targets: Vec<SocketAddr> = r.targets("svc").iter().map(|(a, _)| *a).collect();
        assert!(targets.contains(&addr(3001)), "{targets:?}");
        assert_eq!(targets.len(), 2, "{targets:?}");
        // And the other way: added and removed at once leaves nothing.
        r.add_target("svc", addr(3003), 1).unwrap();
        assert!(r.remove_target("svc", addr(3003)));
        r.add_target("svc", addr(3004), 1).unwrap();
        until(|| r.targets("svc").iter().any(|(a, _)| *a == addr(3004))).await;
        let targets: Vec<SocketAddr> = r.targets("svc").iter().map(|(a, _)| *a).collect();
        assert!(!targets.contains(&addr(3003)), "{targets:?}");
        for i in 0..6 {
            let port = r.clone().oneshot(("svc".into(), i)).await.unwrap();
            assert!([3001, 3002, 3004].contains(&port), "{port}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unknown_service_error_names_the_service_asked_for() {
    let r = router();
    let e = r.clone().oneshot(("ghost".into(), 1)).await.unwrap_err();
    let e = e.downcast_ref::<UnknownService>().expect("UnknownService");
    assert_eq!(e.name(), Some("ghost"));
    let e = r.clone().oneshot((String::new(), 1)).await.unwrap_err();
    let e = e.downcast_ref::<UnknownService>().expect("UnknownService");
    assert_eq!(e.name(), None);
}
