//! `ProcessScaler` with real child processes behind a real balancer: 1 to 3 to 1
//! instances on unique ports, no failed request while scaling down (no retries), a
//! killed instance restarted, manual scaling bounded by the policy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_autoscale::{
    DecisionEngine, InstanceState, LoadSample, ManualScaleError, ProcessConfig, ProcessScaler,
    ScalingManager, ScalingPolicy,
};
use tower_balance_ext::{BalancerBuilder, HttpEndpoint, Pick};

const BOUND: Duration = Duration::from_secs(90);

fn config() -> ProcessConfig {
    support::instance_server_config(env!("CARGO_BIN_EXE_instance-server")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_one_to_three_to_one_with_real_processes_and_no_failed_request() {
    support::init_tracing();
    tokio::time::timeout(BOUND, async {
        let (scaler, discovery) = ProcessScaler::new(config(), |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        let balancer = BalancerBuilder::new(Pick::LeastConnections)
            .ready_timeout(Duration::from_secs(10))
            .build(discovery)
            .unwrap();
        assert_eq!(scaler.scale_to(1).await.unwrap(), 1);

        // Load from four workers for the whole run; every answer must be a 200.
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (b, stop, ok, failed) =
                (balancer.clone(), stop.clone(), ok.clone(), failed.clone());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let req = Request::get("/work").body(Full::new(Bytes::new())).unwrap();
                    match b.clone().oneshot(req).await {
                        Ok(res) if res.status() == 200 => {
                            let _ = res.into_body().collect().await;
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(res) => {
                            eprintln!("status {}", res.status());
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            eprintln!("error {e}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }));
        }

        assert_eq!(scaler.scale_to(3).await.unwrap(), 3);
        let details = scaler.instance_details();
        let mut ports: Vec<u16> = details.iter().map(|d| d.port).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 3, "unique ports: {details:?}");
        let mut pids: Vec<u32> = details.iter().filter_map(|d| d.pid).collect();
        pids.sort();
        pids.dedup();
        assert_eq!(pids.len(), 3);
        assert!(details
            .iter()
            .all(|d| d.state == InstanceState::Ready && d.healthy));
        // All three take traffic.
        let before = ok.load(Ordering::SeqCst);
        while ok.load(Ordering::SeqCst) < before + 60 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let snap = balancer.stats().snapshot();
        assert_eq!(snap.endpoints.len(), 3);

        // Down to one while the load runs: drained first, so no request fails.
        assert_eq!(scaler.scale_to(1).await.unwrap(), 1);
        let before = ok.load(Ordering::SeqCst);
        while ok.load(Ordering::SeqCst) < before + 40 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }
        assert_eq!(
            failed.load(Ordering::SeqCst),
            0,
            "{} ok",
            ok.load(Ordering::SeqCst)
        );
        eprintln!(
            "{} requests answered, none failed",
            ok.load(Ordering::SeqCst)
        );
        // The stopped processes are gone.
        for pid in &pids {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z");
            let kept = scaler
                .instance_details()
                .iter()
                .any(|d| d.pid == Some(*pid));
            assert_eq!(alive, kept, "pid {pid}");
        }

        // A killed instance is restarted, on a port of its own, and serves.
        let victim = scaler.instance_details()[0].pid.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        while scaler.restarts() == 0
            || scaler
                .instance_details()
                .iter()
                .all(|d| d.pid == Some(victim) || d.state != InstanceState::Ready)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let req = Request::get("/work").body(Full::new(Bytes::new())).unwrap();
        assert_eq!(balancer.clone().oneshot(req).await.unwrap().status(), 200);
        // Migrate: a new instance first, then the old one drained and stopped.
        let old = scaler.instance_details()[0].port;
        let new = scaler.migrate_instance(old).await.unwrap();
        let ports: Vec<u16> = scaler.instance_details().iter().map(|d| d.port).collect();
        assert_eq!(ports, vec![new], "only the new one is left");
        assert_ne!(new, old);
        let req = Request::get("/work").body(Full::new(Bytes::new())).unwrap();
        let res = balancer.clone().oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, new.to_string());
        scaler.shutdown().await;
        assert!(scaler.instance_details().is_empty());
    })
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_and_bounds_are_clear_errors() {
    tokio::time::timeout(BOUND, async {
        // A command that cannot start.
        let mut cfg = config();
        cfg.program = "/nonexistent/program".into();
        let (scaler, _d) = ProcessScaler::new(cfg, |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        let e = scaler.scale_to(1).await.unwrap_err();
        assert!(e.to_string().contains("cannot start"), "{e}");
        assert_eq!(scaler.failures(), 1);
        // One that never becomes ready (exits at once: no --port).
        let mut cfg = config();
        cfg.args = vec!["--nope".into(), "{port}".into()];
        let (scaler, _d) = ProcessScaler::new(cfg, |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        let e = scaler.scale_to(1).await.unwrap_err();
        assert!(e.to_string().contains("exited before it was ready"), "{e}");
        // One that runs but never serves its health check: stopped after the start
        // timeout, counted.
        let mut cfg = config();
        cfg.program = "sleep".into();
        cfg.args = vec!["{port}".into()];
        cfg.start_timeout = Duration::from_millis(500);
        cfg.stop_timeout = Duration::from_millis(500);
        let (scaler, _d) = ProcessScaler::new(cfg, |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        let e = scaler.scale_to(1).await.unwrap_err();
        assert!(e.to_string().contains("was not ready after"), "{e}");
        assert_eq!(scaler.failures(), 1);
        assert!(
            scaler.instance_details().is_empty(),
            "the process was stopped"
        );
        // A range with no port, and a template without {port}.
        let mut cfg = config();
        cfg.args = vec!["--port".into(), "3000".into()];
        assert!(ProcessScaler::new(cfg, |a: SocketAddr| a)
            .unwrap_err()
            .to_string()
            .contains("{port}"));
        let mut cfg = config();
        cfg.ports = (5000, 4000);
        assert!(ProcessScaler::new(cfg, |a: SocketAddr| a).is_err());
        // A one-port range already in use: exhausted.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let mut cfg = config();
        cfg.ports = (port, port);
        let (scaler, _d) = ProcessScaler::new(cfg, |a: SocketAddr| a).unwrap();
        let e = scaler.scale_to(1).await.unwrap_err();
        assert!(e.to_string().contains("no free port"), "{e}");

        // Manual scaling through the manager never passes the policy's max.
        let (scaler, _d) = ProcessScaler::new(config(), |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        let engine = DecisionEngine::new();
        let s2 = scaler.clone();
        engine
            .add_service(
                "training",
                ScalingPolicy {
                    min_instances: 1,
                    max_instances: 2,
                    ..Default::default()
                },
                move || LoadSample::new(s2.current()),
            )
            .unwrap();
        let manager = ScalingManager::new(engine);
        manager.add_scaler("training", scaler.clone());
        assert_eq!(manager.scale_by("training", 2).await.unwrap(), 2);
        let e = manager.scale_by("training", 1).await.unwrap_err();
        assert!(matches!(e, ManualScaleError::BeyondBounds(_)), "{e}");
        assert!(
            e.to_string()
                .contains("3 instances is outside the policy's 1..=2"),
            "{e}"
        );
        assert_eq!(scaler.current(), 2, "nothing changed");
        let json = manager.history_json();
        assert!(
            json.contains("\"by\":\"manual\"") && json.contains("outside the policy"),
            "{json}"
        );
        scaler.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// The process that runs the scaler is SIGKILLed (no destructor runs): its instance does
/// not live on as an orphan holding its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_do_not_outlive_a_killed_scaler() {
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(BOUND, async {
        let mut host = tokio::process::Command::new(env!("CARGO_BIN_EXE_scaler-host"))
            .arg(env!("CARGO_BIN_EXE_instance-server"))
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(host.stdout.take().unwrap()).lines();
        let pid: i32 = lines
            .next_line()
            .await
            .unwrap()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let alive = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z"))
                .unwrap_or(false)
        };
        assert!(alive(pid), "the instance runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(host.id().unwrap() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = host.wait().await;
        // Bounded by the test's timeout.
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the instance died with its scaler");
}

/// A scale to the same count while a crashed instance waits for its restart starts
/// nothing: the crash is counted until the restart takes its place, so the count never
/// ends above what was asked (the fleet's chaos run once ended 5 instances over a max
/// of 4 this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_during_a_crash_restart_does_not_overshoot() {
    tokio::time::timeout(BOUND, async {
        let (scaler, _discovery) = ProcessScaler::new(config(), |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        assert_eq!(scaler.scale_to(2).await.unwrap(), 2);
        let victim = scaler.instance_details()[0].pid.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        while scaler.restarts() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The restart waits 100 ms before it starts: the crash still counts.
        assert_eq!(scaler.current(), 2);
        assert_eq!(scaler.scale_to(2).await.unwrap(), 2);
        while scaler
            .instance_details()
            .iter()
            .filter(|d| d.state == InstanceState::Ready && d.pid != Some(victim))
            .count()
            < 2
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            scaler.instance_details().len(),
            2,
            "{:?}",
            scaler.instance_details()
        );
        assert_eq!(scaler.current(), 2);
        scaler.shutdown().await;
        assert_eq!(scaler.current(), 0);
    })
    .await
    .expect("bounded");
}

/// An instance that stops being ready after it joined the balancer gets no requests
/// until it is ready again: its endpoint is gated on the scaler's health monitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_turns_unready_gets_no_requests_until_ready_again() {
    tokio::time::timeout(BOUND, async {
        let (scaler, discovery) = ProcessScaler::new(config(), |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        let balancer = BalancerBuilder::new(Pick::RoundRobin)
            .ready_timeout(Duration::from_secs(10))
            .build(discovery)
            .unwrap();
        assert_eq!(scaler.scale_to(2).await.unwrap(), 2);
        let sick = scaler.instance_details()[0].port;
        let flip = |path: &'static str| async move {
            let addr = SocketAddr::from(([127, 0, 0, 1], sick));
            assert_eq!(support::get(addr, path).await.unwrap().0, 200);
        };
        let answers = |n: usize| {
            let balancer = balancer.clone();
            async move {
                let mut ports = Vec::new();
                for _ in 0..n {
                    let req = Request::get("/work").body(Full::new(Bytes::new())).unwrap();
                    let res = balancer.clone().oneshot(req).await.unwrap();
                    let body = res.into_body().collect().await.unwrap().to_bytes();
                    ports.push(String::from_utf8_lossy(&body).parse::<u16>().unwrap());
                }
                ports
            }
        };
        assert!(answers(10).await.contains(&sick), "both serve at first");
        flip("/unready").await;
        while scaler
            .instance_details()
            .iter()
            .any(|d| d.port == sick && d.healthy)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ports = answers(20).await;
        assert!(
            !ports.contains(&sick),
            "the unready instance served: {ports:?}"
        );
        flip("/ready").await;
        while !scaler
            .instance_details()
            .iter()
            .any(|d| d.port == sick && d.healthy)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Re-admitted once the balancer sees the gate open again.
        let mut back = false;
        for _ in 0..50 {
            if answers(4).await.contains(&sick) {
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(back, "the instance never came back");
        scaler.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// A command that exits at once fails its start, and that is all: the start-up failure
/// belongs to the start that reported it, so no crash restart runs behind it (restart
/// loops doubled and the count climbed with no instance listed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_at_once_fails_its_start_and_is_not_restarted() {
    tokio::time::timeout(BOUND, async {
        let mut cfg = config();
        cfg.program = "sh".into();
        cfg.args = vec!["-c".into(), "exit 1".into(), "sh".into(), "{port}".into()];
        let (scaler, _d) = ProcessScaler::new(cfg, |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        let e = scaler.scale_to(1).await.unwrap_err();
        assert!(e.to_string().contains("exited before it was ready"), "{e}");
        // Several first-restart waits (100 ms by default) go by: nothing restarts.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(scaler.restarts(), 0, "{:?}", scaler.instance_details());
            assert_eq!(scaler.current(), 0);
            assert!(scaler.instance_details().is_empty());
        }
        assert_eq!(scaler.failures(), 1);
        scaler.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// An instance whose restarts keep exiting at once is one instance in a crash loop:
/// restarted by one loop whose wait doubles up to its cap, shown as
/// `CrashLoopBackOff` with its streak, last exit and wait, still counted once (a scale to
/// the same count starts nothing), ready again once its command works, and removed
/// first by a scale-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_backs_off_to_its_cap_and_counts_once() {
    tokio::time::timeout(BOUND, async {
        let flag = std::env::temp_dir().join(format!("crash-loop-{}", std::process::id()));
        let _ = std::fs::remove_file(&flag);
        let mut cfg = config();
        cfg.program = "sh".into();
        cfg.args = vec![
            "-c".into(),
            r#"if [ -e "$0" ]; then exit 3; fi; exec "$1" --port "$2""#.into(),
            flag.display().to_string(),
            env!("CARGO_BIN_EXE_instance-server").into(),
            "{port}".into(),
        ];
        cfg.restart_backoff = Duration::from_millis(50);
        cfg.restart_backoff_max = Duration::from_millis(400);
        let (scaler, _d) = ProcessScaler::new(cfg.clone(), |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        assert_eq!(scaler.scale_to(1).await.unwrap(), 1);

        let crash_loop_at_cap = |scaler: ProcessScaler<_>| async move {
            let victim = scaler.instance_details()[0].pid.unwrap();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            loop {
                let details = scaler.instance_details();
                assert_eq!(details.len(), 1, "{details:?}");
                assert_eq!(scaler.current(), 1, "{details:?}");
                if details[0].backoff_ms == Some(400) {
                    return details[0].clone();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };

        std::fs::write(&flag, b"").unwrap();
        let d = crash_loop_at_cap(scaler.clone()).await;
        // 50, 100, 200, then 400 ms: the fourth failure in a row reaches the cap.
        assert_eq!(d.state, InstanceState::CrashLoopBackOff, "{d:?}");
        assert!(d.crash_streak >= 4, "{d:?}");
        assert_eq!(d.pid, None);
        assert!(!d.healthy);
        assert!(
            d.last_exit
                .as_deref()
                .is_some_and(|e| e.contains("exited before it was ready")),
            "{d:?}"
        );
        assert_eq!(scaler.crash_looping(), 1);
        assert_eq!(scaler.restarts(), 1, "one crash, one restart loop");
        assert!(scaler.failures() >= 3);
        // InstanceEndpoint once: a scale to one starts nothing more.
        assert_eq!(scaler.scale_to(1).await.unwrap(), 1);
        assert_eq!(scaler.instance_details().len(), 1);
        // Stays at the cap.
        let streak = d.crash_streak;
        while scaler.instance_details()[0].crash_streak < streak + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(scaler.instance_details()[0].backoff_ms, Some(400));

        // The command works again: the next restart makes it ready.
        std::fs::remove_file(&flag).unwrap();
        while scaler.instance_details()[0].state != InstanceState::Ready {
            assert_eq!(scaler.current(), 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(scaler.crash_looping(), 0);
        assert!(scaler.instance_details()[0].restarts >= 1);

        // In a crash loop again, then scaled down to none: the crashed place goes, and
        // its restart loop with it.
        std::fs::write(&flag, b"").unwrap();
        crash_loop_at_cap(scaler.clone()).await;
        assert_eq!(scaler.scale_to(0).await.unwrap(), 0);
        let failures = scaler.failures();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(scaler.instance_details().is_empty());
        assert_eq!(
            scaler.failures(),
            failures,
            "no restart after the scale-down"
        );
        scaler.shutdown().await;
        let _ = std::fs::remove_file(&flag);

        // Backoff settings that cannot work are refused, naming the setting.
        let mut bad = cfg.clone();
        bad.restart_backoff = Duration::ZERO;
        let e = ProcessScaler::new(bad, |a: SocketAddr| a).unwrap_err();
        assert!(e.to_string().contains("restart_backoff is zero"), "{e}");
        let mut bad = cfg;
        bad.restart_backoff_max = Duration::from_millis(10);
        let e = ProcessScaler::new(bad, |a: SocketAddr| a).unwrap_err();
        assert!(e.to_string().contains("restart_backoff_max"), "{e}");
    })
    .await
    .expect("bounded");
}

/// Flips the instance on `port` unready (`/unready`) or ready again (`/ready`) and waits
/// until the scaler's monitor agrees.
async fn flip_health<S: Send + 'static>(scaler: &ProcessScaler<S>, port: u16, ready: bool) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let path = if ready { "/ready" } else { "/unready" };
    assert_eq!(support::get(addr, path).await.unwrap().0, 200);
    while scaler
        .instance_details()
        .iter()
        .any(|d| d.port == port && d.healthy != ready)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An instance its monitor calls unhealthy (cut off, paused, or saying so) is not ready
/// in the scaler's load sample: what it reports (no requests in flight, no CPU) is not
/// load it serves, so the engine leaves it out of its averages as the HPA leaves out
/// unready pods. It counted as ready, pulling the averages down towards a scale-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_instance_is_not_ready_in_the_load_sample() {
    use tower_autoscale::LoadSource;
    tokio::time::timeout(BOUND, async {
        let (scaler, _discovery) = ProcessScaler::new(config(), |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        assert_eq!(scaler.scale_to(2).await.unwrap(), 2);
        let sick = scaler.instance_details()[1].port;
        let ready_in_sample = || {
            let sample = scaler.sample();
            assert_eq!(sample.instances, 2, "both still count: {sample:?}");
            sample
                .per_instance
                .iter()
                .map(|i| (i.name.clone(), i.ready))
                .collect::<Vec<_>>()
        };
        assert!(ready_in_sample().iter().all(|(_, r)| *r));
        flip_health(&scaler, sick, false).await;
        let sample = ready_in_sample();
        for (name, ready) in &sample {
            assert_eq!(
                *ready,
                *name != format!("127.0.0.1:{sick}"),
                "only the unhealthy one is not ready: {sample:?}"
            );
        }
        flip_health(&scaler, sick, true).await;
        assert!(ready_in_sample().iter().all(|(_, r)| *r));
        scaler.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// A scale-down stops an instance its monitor calls unhealthy before one that serves:
/// it stopped the ready instance with the fewest requests in flight, which could be a
/// serving one while the cut-off one (gated out, or holding requests that will time
/// out) stayed, leaving fewer instances serving than the count says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_stops_an_unhealthy_instance_before_a_serving_one() {
    tokio::time::timeout(BOUND, async {
        let (scaler, _discovery) = ProcessScaler::new(config(), |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        assert_eq!(scaler.scale_to(2).await.unwrap(), 2);
        let (serving, sick) = {
            let d = scaler.instance_details();
            (d[0].port, d[1].port)
        };
        flip_health(&scaler, sick, false).await;
        assert_eq!(scaler.scale_to(1).await.unwrap(), 1);
        let left: Vec<(u16, bool)> = scaler
            .instance_details()
            .iter()
            .map(|d| (d.port, d.healthy))
            .collect();
        assert_eq!(left, vec![(serving, true)], "the serving instance stays");
        scaler.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// A request a balancer sends to an instance just as a scale-down takes it out of
/// discovery (the balancer picked it before it read the removal) is served: the
/// instance is stopped only once nothing has been in flight for `drain_settle`. It was
/// stopped as soon as nothing was in flight, before such a request arrived, which then
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_just_as_a_scale_down_begins_is_served() {
    use futures_core::Stream;
    use tower_service::Service;
    tokio::time::timeout(BOUND, async {
        let mut cfg = config();
        cfg.drain_settle = Duration::from_secs(2);
        let (scaler, mut discovery) = ProcessScaler::new(cfg, |addr: SocketAddr| {
            HttpEndpoint::<Full<Bytes>>::new(addr)
        })
        .unwrap();
        assert_eq!(scaler.scale_to(1).await.unwrap(), 1);
        // The endpoint as a balancer holds it.
        let change = std::future::poll_fn(|cx| std::pin::Pin::new(&mut discovery).poll_next(cx))
            .await
            .unwrap()
            .unwrap();
        let tower::discover::Change::Insert(_, mut endpoint) = change else {
            panic!("the first change is an insert");
        };
        let port = scaler.instance_details()[0].port;
        let stopper = tokio::spawn({
            let scaler = scaler.clone();
            async move { scaler.scale_to(0).await }
        });
        // The scale-down is under way: out of discovery, draining.
        while scaler
            .instance_details()
            .iter()
            .any(|d| d.port == port && d.state != InstanceState::Draining)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // (An instance already stopped leaves its endpoint not ready for good.)
        let res = tokio::time::timeout(Duration::from_secs(10), async {
            std::future::poll_fn(|cx| endpoint.poll_ready(cx)).await?;
            let req = Request::get("/work").body(Full::new(Bytes::new())).unwrap();
            endpoint.call(req).await.map(|r| r.status())
        })
        .await;
        assert!(
            matches!(res, Ok(Ok(http::StatusCode::OK))),
            "the request sent as the scale-down began failed: {res:?}"
        );
        assert_eq!(stopper.await.unwrap().unwrap(), 0);
        assert!(scaler.instance_details().is_empty());
    })
    .await
    .expect("bounded");
}
