//! The health monitor against real servers on 127.0.0.1: a target killed and restarted,
//! targets that answer garbage, close the connection or hang, passive reports, and the
//! monitor driving a readiness gate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower_health::{Gate, HealthMonitor, ReadinessLayer, Target, TargetReport, TargetState};
use tower_layer::Layer;
use tower_service::Service;

const BOUND: Duration = Duration::from_secs(20);

fn fast(name: &str, addr: impl ToString) -> Target {
    Target::new(name, addr.to_string())
        .interval(Duration::from_millis(100))
        .timeout(Duration::from_millis(80))
        .max_backoff(Duration::from_millis(200))
}

async fn healthy_server() -> TestServer {
    TestServer::start(|req| async move {
        let status = if req.uri().path() == "/health" {
            200
        } else {
            404
        };
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
        res
    })
    .await
    .unwrap()
}

/// Waits (bounded) until `name` reaches `state`.
async fn wait_for(monitor: &HealthMonitor, name: &str, state: TargetState) -> TargetReport {
    let mut rx = monitor.watch(name).unwrap();
    tokio::time::timeout(BOUND, async {
        loop {
            let h = monitor.health(name).unwrap();
            if h.state == state {
                return h;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{name} did not become {state:?}: {:?}",
            monitor.health(name)
        )
    })
}

#[tokio::test]
async fn a_killed_target_is_unhealthy_after_its_threshold_and_healthy_again_after_restart() {
    support::init_tracing();
    let server = healthy_server().await;
    let addr = server.addr();
    let monitor = HealthMonitor::new();
    let changes: Arc<Mutex<Vec<(TargetReport, TargetState)>>> = Arc::default();
    monitor.on_health_change({
        let changes = changes.clone();
        move |t, was| changes.lock().unwrap().push((t.clone(), was))
    });
    monitor
        .register(fast("svc", addr).failure_threshold(2))
        .unwrap();
    assert!(!monitor.is_ready_for_traffic("svc"), "unknown is not ready");
    wait_for(&monitor, "svc", TargetState::Healthy).await;
    assert!(monitor.is_ready_for_traffic("svc"));

    server.kill().await;
    let down = wait_for(&monitor, "svc", TargetState::Unhealthy).await;
    assert!(down.last_error.is_some());
    {
        let changes = changes.lock().unwrap();
        let (snap, was) = changes.last().unwrap();
        assert_eq!(*was, TargetState::Healthy);
        // Marked at exactly the threshold: two failed checks, each at most one interval
        // apart and bounded by the timeout, i.e. within interval x 2 + timeout.
        assert_eq!(snap.consecutive_failures, 2, "{snap:?}");
    }
    let checks_when_down = monitor.health("svc").unwrap().checks;

    let again = TestServer::start_on(addr, |_req| async {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    })
    .await
    .unwrap();
    let up = wait_for(&monitor, "svc", TargetState::Healthy).await;
    assert!(
        up.checks > checks_when_down,
        "the dead target kept being checked"
    );
    {
        let changes = changes.lock().unwrap();
        let (snap, was) = changes.last().unwrap();
        assert_eq!(
            (*was, snap.consecutive_successes),
            (TargetState::Unhealthy, 1)
        );
        assert_eq!(
            changes.iter().map(|(s, _)| s.state).collect::<Vec<_>>(),
            [
                TargetState::Healthy,
                TargetState::Unhealthy,
                TargetState::Healthy
            ]
        );
    }
    again.shutdown().await;
}

/// A raw TCP target that misbehaves in one way.
async fn raw_target(behaviour: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                match behaviour {
                    "garbage" => {
                        let _ = stream.read(&mut buf).await;
                        let _ = stream.write_all(b"this is not http\r\n\r\n").await;
                    }
                    "close" => drop(stream),
                    "hang" => {
                        let _ = stream.read(&mut buf).await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    _ => unreachable!(),
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn garbage_closed_connections_hangs_and_wrong_statuses_are_failures() {
    support::init_tracing();
    let monitor = HealthMonitor::new();
    for behaviour in ["garbage", "close", "hang"] {
        let addr = raw_target(behaviour).await;
        monitor
            .register(fast(behaviour, addr).failure_threshold(1))
            .unwrap();
    }
    let server = healthy_server().await;
    monitor
        .register(
            fast("wrong-path", server.addr())
                .path("/nope")
                .failure_threshold(1),
        )
        .unwrap();
    for name in ["garbage", "close", "hang", "wrong-path"] {
        let h = wait_for(&monitor, name, TargetState::Unhealthy).await;
        let err = h.last_error.unwrap_or_default();
        assert!(!err.is_empty(), "{name}: a reason is kept");
        match name {
            "hang" => assert!(err.contains("no answer within"), "{name}: {err}"),
            "wrong-path" => assert!(err.contains("status 404"), "{name}: {err}"),
            _ => {}
        }
    }
    assert_eq!(
        monitor.all_health().len(),
        4,
        "failing targets are never forgotten"
    );
}

#[tokio::test]
async fn passive_reports_drive_the_same_state_machine() {
    let server = healthy_server().await;
    let monitor = HealthMonitor::new();
    // Active checks far apart, so only the first one runs during the test.
    monitor
        .register(
            Target::new("svc", server.addr().to_string())
                .interval(Duration::from_secs(60))
                .timeout(Duration::from_secs(1))
                .max_backoff(Duration::from_secs(60))
                .failure_threshold(2),
        )
        .unwrap();
    wait_for(&monitor, "svc", TargetState::Healthy).await;
    monitor.report_failure("svc", "circuit opened");
    assert_eq!(monitor.health("svc").unwrap().state, TargetState::Healthy);
    monitor.report_failure("svc", "circuit opened");
    let h = monitor.health("svc").unwrap();
    assert_eq!(h.state, TargetState::Unhealthy);
    assert_eq!(h.last_error.as_deref(), Some("circuit opened"));
    monitor.report_success("svc");
    assert!(monitor.is_ready_for_traffic("svc"));
    monitor.report_failure("nobody", "ignored");
    assert!(monitor.unregister("svc"));
    assert!(monitor.health("svc").is_none());
}

#[tokio::test]
async fn the_monitor_drives_a_pending_readiness_gate() {
    let server = healthy_server().await;
    let addr = server.addr();
    let monitor = HealthMonitor::new();
    monitor.register(fast("endpoint", addr)).unwrap();
    let gate = Gate::new(monitor.watch("endpoint").unwrap());
    let mut svc = ReadinessLayer::pending(gate).layer(tower::service_fn(|x: u32| async move {
        Ok::<_, std::convert::Infallible>(x)
    }));

    wait_for(&monitor, "endpoint", TargetState::Healthy).await;
    let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_ready_ok!(ready.poll());
    drop(ready);
    assert_eq!(svc.call(7).await.unwrap(), 7);

    server.kill().await;
    wait_for(&monitor, "endpoint", TargetState::Unhealthy).await;
    let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_pending!(ready.poll());
    let _again = TestServer::start_on(addr, |_req| async {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    })
    .await
    .unwrap();
    tokio::time::timeout(BOUND, async {
        while !ready.is_woken() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gate wakes the balancer's poll when the endpoint recovers");
    assert_ready_ok!(ready.poll());
}

#[tokio::test]
async fn unregistering_a_target_closes_the_gates_that_follow_it() {
    tokio::time::timeout(BOUND, async {
        let server = healthy_server().await;
        let monitor = HealthMonitor::new();
        monitor.register(fast("gone", server.addr())).unwrap();
        wait_for(&monitor, "gone", TargetState::Healthy).await;
        let gate = Gate::new(monitor.watch("gone").unwrap());
        assert!(gate.is_open());
        assert!(monitor.unregister("gone"));
        assert!(
            !gate.is_open(),
            "a gate following a removed instance must close"
        );
        // A pending-mode endpoint behind it is no longer ready.
        let mut svc = ReadinessLayer::pending(gate).layer(tower::service_fn(|_: ()| async {
            Ok::<_, std::convert::Infallible>(())
        }));
        let mut ready = task::spawn(std::future::poll_fn(|cx| svc.poll_ready(cx)));
        assert_pending!(ready.poll());
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn one_active_success_does_not_wipe_out_a_streak_of_passive_failures() {
    tokio::time::timeout(BOUND, async {
        let server = healthy_server().await;
        let monitor = HealthMonitor::new();
        monitor
            .register(
                Target::new("svc", server.addr().to_string())
                    .interval(Duration::from_millis(300))
                    .timeout(Duration::from_millis(200))
                    .max_backoff(Duration::from_millis(300))
                    .failure_threshold(2),
            )
            .unwrap();
        wait_for(&monitor, "svc", TargetState::Healthy).await;
        // Real traffic fails twice: unhealthy, though every active check passes.
        monitor.report_failure("svc", "503 from the endpoint");
        monitor.report_failure("svc", "503 from the endpoint");
        let tripped = monitor.health("svc").unwrap();
        assert_eq!(tripped.state, TargetState::Unhealthy);
        assert_eq!(tripped.passive_failures, 2);
        // The next active check succeeds, and the target stays unhealthy...
        let next = wait_for_checks(&monitor, "svc", tripped.checks + 1).await;
        assert_eq!(next.last_error, None, "the active check passed");
        assert_eq!(
            next.state,
            TargetState::Unhealthy,
            "one active success wiped out the passive failures"
        );
        // ...until as many active successes as it took failures to trip it.
        wait_for(&monitor, "svc", TargetState::Healthy).await;
        // Passive successes alone also end a passive failure state.
        monitor.report_failure("svc", "reset");
        monitor.report_failure("svc", "reset");
        assert_eq!(monitor.health("svc").unwrap().state, TargetState::Unhealthy);
        monitor.report_success("svc");
        assert_eq!(monitor.health("svc").unwrap().state, TargetState::Healthy);
    })
    .await
    .expect("bounded");
}

/// Waits until `name` has had `checks` results.
async fn wait_for_checks(monitor: &HealthMonitor, name: &str, checks: u64) -> TargetReport {
    loop {
        let h = monitor.health(name).unwrap();
        if h.checks >= checks {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
